//! Seeded prompts for validators: fresh, varied and never repeated.
//!
//! `generate(seed, index)` fills a template with words chosen by the counter-based generator and
//! appends a reference code that encodes (seed, index) injectively, so two different pairs can
//! never give the same prompt.

use crate::rng;

const ADJECTIVES: &[&str] = &[
    "quiet", "amber", "restless", "ancient", "bright", "hollow", "curious", "frozen", "gentle",
    "crooked", "silver", "distant", "humble", "wild", "patient", "broken", "velvet", "hidden",
    "golden", "stubborn", "tiny", "endless", "rusty", "clever",
];
const NOUNS: &[&str] = &[
    "lighthouse",
    "river",
    "engine",
    "garden",
    "library",
    "mountain",
    "clockmaker",
    "harbor",
    "robot",
    "violin",
    "desert",
    "market",
    "satellite",
    "forest",
    "bakery",
    "bridge",
    "comet",
    "village",
    "compass",
    "orchard",
    "train",
    "island",
    "lantern",
    "archive",
];
const VERBS: &[&str] = &[
    "repairs",
    "remembers",
    "follows",
    "paints",
    "guards",
    "measures",
    "builds",
    "forgets",
    "crosses",
    "studies",
    "answers",
    "collects",
    "opens",
    "counts",
    "hears",
    "maps",
];
const TEMPLATES: &[&str] = &[
    "Write a short story about a {a} {n} that {v} the {b} {m}.",
    "Describe, in three sentences, how the {a} {n} {v} a {b} {m}.",
    "Explain to a child why the {n} {v} the {m} every {a} morning.",
    "Give a list of five facts about a {a} {n} and the {b} {m} it {v}.",
    "Compose a brief poem in which a {b} {m} {v} the {a} {n}.",
    "Summarize the history of the {a} {n} that {v} the {b} {m}.",
    "Write a dialogue between a {a} {n} and a {b} {m}.",
    "Plan a journey from the {a} {n} to the {b} {m}, step by step.",
];

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// The prompt number `index` of the stream `seed`.
pub fn generate(seed: u64, index: u64) -> String {
    let k = rng::key(seed, 0x7072_6F6D); // "prom"
    let pick = |j: u64, list: &[&'static str]| -> &'static str {
        list[(rng::at(k, index.wrapping_mul(8).wrapping_add(j)) % list.len() as u64) as usize]
    };
    let text = pick(0, TEMPLATES)
        .replace("{a}", pick(1, ADJECTIVES))
        .replace("{b}", pick(2, ADJECTIVES))
        .replace("{n}", pick(3, NOUNS))
        .replace("{m}", pick(4, NOUNS))
        .replace("{v}", pick(5, VERBS));
    // (mix64(seed), mix64(index ^ mix64(seed))) is injective in (seed, index) because mix64 is
    // a bijection; both halves are printed in base 36.
    let a = rng::mix64(seed);
    let b = rng::mix64(index ^ a);
    format!("{text} (ref {}-{})", base36(a), base36(b))
}

fn base36(mut v: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn prompts_are_deterministic() {
        assert_eq!(generate(3, 17), generate(3, 17));
    }

    #[test]
    fn prompts_never_repeat_across_seeds_and_indices() {
        let mut seen = HashSet::new();
        for seed in 0..20 {
            for index in 0..500 {
                assert!(
                    seen.insert(generate(seed, index)),
                    "repeat at ({seed}, {index})"
                );
            }
        }
    }

    #[test]
    fn prompts_vary_in_wording() {
        let bodies: HashSet<String> = (0..200)
            .map(|i| {
                generate(9, i)
                    .split(" (ref")
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(bodies.len() > 150, "only {} distinct bodies", bodies.len());
    }
}
