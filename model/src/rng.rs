//! Counter-based pseudo-random numbers (splitmix64), the same on every platform.
//!
//! Every random value the crate needs (builtin weights, adversarial noise, sampling draws,
//! prompts) is a pure function of a seed and a counter, so a GPU thread, another language or a
//! validator can recompute any single value without replaying a stream.

/// The golden-ratio increment of splitmix64.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finalizer: a bijection on u64 with good avalanche.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A key for stream `tag` under `seed`: `mix64(seed + tag * GOLDEN)`.
pub fn key(seed: u64, tag: u64) -> u64 {
    mix64(seed.wrapping_add(tag.wrapping_mul(GOLDEN)))
}

/// The `counter`-th 64-bit value of the stream keyed by `key`: `mix64(key ^ (counter * 0xD1B54A32D192ED03))`.
pub fn at(key: u64, counter: u64) -> u64 {
    mix64(key ^ counter.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// A uniform f64 in [0, 1) from the top 53 bits of `at(key, counter)`.
pub fn uniform(key: u64, counter: u64) -> f64 {
    (at(key, counter) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix64_matches_reference_splitmix_values() {
        // splitmix64 with state 0: first output is mix64(GOLDEN) = 0xE220A8397B1DCDAF.
        assert_eq!(mix64(GOLDEN), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn uniform_is_in_unit_interval() {
        for c in 0..10_000 {
            let u = uniform(key(7, 1), c);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
