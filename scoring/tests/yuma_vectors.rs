//! Every epoch and function-level vector of `spec/yuma_vectors.json`, bit for bit.

use polylith_scoring::yuma::EpochOutput;
use polylith_scoring::yuma::io::EpochCase;
use polylith_scoring::yuma::math::{
    self, SparseRow, col_clip_sparse, mat_ema_alpha_dense, mat_ema_alpha_sparse_row,
    weighted_median_col_sparse,
};
use serde_json::Value;
use substrate_fixed::types::I32F32;

fn vectors() -> Value {
    let text = include_str!("data/yuma_vectors.json");
    serde_json::from_str(text).expect("vector file is JSON")
}

/// Names of the fields where two outputs differ, with both values.
fn diff(got: &EpochOutput, want: &EpochOutput) -> Vec<String> {
    let g = serde_json::to_value(got).unwrap();
    let w = serde_json::to_value(want).unwrap();
    let (Value::Object(g), Value::Object(w)) = (g, w) else {
        panic!("outputs serialise as objects")
    };
    w.iter()
        .filter(|(k, v)| g.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{k}: got {} want {v}",
                g.get(k).cloned().unwrap_or(Value::Null)
            )
        })
        .collect()
}

#[test]
fn every_vector_epoch_matches_emulator_outputs_bit_for_bit() {
    let v = vectors();
    let cases = v["cases"].as_array().expect("cases");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        for ep in case["epochs"].as_array().expect("epochs") {
            // Each epoch element is itself a valid CLI input (extra keys are ignored).
            let parsed = EpochCase::from_json(&ep.to_string()).expect("epoch parses");
            let want: EpochOutput = serde_json::from_value(ep["emulator_outputs"].clone())
                .expect("emulator_outputs has exactly the EpochOutput fields");
            let got = parsed.run().expect("epoch runs");
            let d = diff(&got, &want);
            if !d.is_empty() {
                failures.push(format!("{name} epoch {}: {}", ep["index"], d.join("; ")));
            }
            checked += 1;
        }
    }
    assert!(checked >= 35, "expected all vector epochs, saw {checked}");
    assert!(
        failures.is_empty(),
        "{} epochs differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn subtensor_assertions_hold() {
    // The `asserted` entries are subtensor's own test assertions (with their tolerances).
    let v = vectors();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        for ep in case["epochs"].as_array().unwrap() {
            let got = EpochCase::from_json(&ep.to_string())
                .unwrap()
                .run()
                .unwrap();
            for a in ep["asserted"].as_array().unwrap() {
                let field = a["field"].as_str().unwrap();
                let tol = a["tol"].as_f64().unwrap_or(0.0);
                // Booleans (permits) compare as 0/1.
                let as_num = |x: &Value| {
                    x.as_f64()
                        .or_else(|| x.as_bool().map(|b| f64::from(u8::from(b))))
                };
                let want = as_num(&a["value"]).unwrap();
                let idx = &a["index"];
                let value: f64 = match field {
                    "bonds_u16" => {
                        let (i, j) = (
                            idx[0].as_u64().unwrap() as usize,
                            idx[1].as_u64().unwrap() as u16,
                        );
                        got.bonds_after[i]
                            .iter()
                            .find(|(c, _)| *c == j)
                            .map_or(0.0, |(_, b)| f64::from(*b))
                    }
                    "dividends_u16_as_fraction" => {
                        let d = got.dividends_u16[idx.as_u64().unwrap() as usize];
                        math::u16_proportion_to_fixed(d).to_num::<f64>()
                    }
                    f if f.ends_with("_float") => {
                        let base = f.trim_end_matches("_float");
                        let out = serde_json::to_value(&got).unwrap();
                        let key = format!("{base}_bits");
                        let b = out[key.as_str()][idx.as_u64().unwrap() as usize]
                            .as_i64()
                            .unwrap();
                        I32F32::from_bits(b).to_num::<f64>()
                    }
                    f => {
                        let out = serde_json::to_value(&got).unwrap();
                        as_num(&out[f][idx.as_u64().unwrap() as usize]).unwrap()
                    }
                };
                assert!(
                    (value - want).abs() <= tol + 1e-12,
                    "{} epoch {}: {field}{idx} = {value}, subtensor asserts {want} ± {tol}",
                    case["name"],
                    ep["index"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} assertions checked");
}

fn f32_fixed(x: &Value) -> I32F32 {
    I32F32::saturating_from_num(x.as_f64().unwrap() as f32)
}

fn dense_rows(v: &Value) -> Vec<Vec<I32F32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(f32_fixed).collect())
        .collect()
}

/// Dense rows to sparse rows, dropping zeros as subtensor's test helper does.
fn sparse(rows: &[Vec<I32F32>]) -> Vec<SparseRow> {
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .filter(|(_, x)| **x != math::ZERO)
                .map(|(j, x)| (j as u16, *x))
                .collect()
        })
        .collect()
}

fn densify(rows: &[SparseRow], cols: usize) -> Vec<Vec<I32F32>> {
    rows.iter()
        .map(|r| {
            let mut d = vec![math::ZERO; cols];
            for (j, x) in r {
                d[*j as usize] = *x;
            }
            d
        })
        .collect()
}

#[test]
fn function_level_vectors_match() {
    let v = vectors();
    let mut seen = 0;
    for f in v["function_level"].as_array().unwrap() {
        let name = f["function"].as_str().unwrap();
        if name.starts_with("weighted_median_col") {
            let stake: Vec<I32F32> = f["stake"]
                .as_array()
                .unwrap()
                .iter()
                .map(f32_fixed)
                .collect();
            let rows = dense_rows(&f["weights_rows"]);
            let cols = rows[0].len();
            let want: Vec<I32F32> = f["expected"]
                .as_array()
                .unwrap()
                .iter()
                .map(f32_fixed)
                .collect();
            // Dense rows kept whole (zeros included) and as sparse rows must both give the median.
            let full: Vec<SparseRow> = rows
                .iter()
                .map(|r| r.iter().enumerate().map(|(j, x)| (j as u16, *x)).collect())
                .collect();
            let majority = f32_fixed(&f["majority"]);
            assert_eq!(
                weighted_median_col_sparse(&stake, &full, cols, majority),
                want,
                "{f}"
            );
            assert_eq!(
                weighted_median_col_sparse(&stake, &sparse(&rows), cols, majority),
                want,
                "{f}"
            );
        } else if name == "col_clip_sparse" {
            let t: Vec<I32F32> = f["thresholds"]
                .as_array()
                .unwrap()
                .iter()
                .map(f32_fixed)
                .collect();
            let rows = dense_rows(&f["matrix_rows"]);
            let want = dense_rows(&f["expected_rows"]);
            let got = col_clip_sparse(&sparse(&rows), &t);
            assert_eq!(densify(&got, t.len()), want);
            // The sparse version removes (not zeroes) entries clipped by a zero threshold.
            assert!(
                got.iter()
                    .all(|r| r.iter().all(|(j, _)| t[*j as usize] != math::ZERO))
            );
        } else if name.starts_with("mat_ema_alpha_sparse") {
            let old = sparse(&dense_rows(&f["old_rows"]));
            let new = sparse(&dense_rows(&f["new_rows"]));
            let want = dense_rows(&f["expected_rows"]);
            let cols = want[0].len();
            let alpha = f32_fixed(&f["alpha"]);
            let got: Vec<SparseRow> = new
                .iter()
                .zip(&old)
                .map(|(n, o)| mat_ema_alpha_sparse_row(n, o, &vec![alpha; cols]))
                .collect();
            let got = densify(&got, cols);
            for (gr, wr) in got.iter().zip(&want) {
                for (g, w) in gr.iter().zip(wr) {
                    assert!(
                        (g.to_num::<f64>() - w.to_num::<f64>()).abs() < 1e-6,
                        "{got:?} vs {want:?}"
                    );
                }
            }
        } else if name.starts_with("mat_ema_alpha (dense)") {
            let shape = f["shape"].as_array().unwrap();
            let (r, c) = (
                shape[0].as_u64().unwrap() as usize,
                shape[1].as_u64().unwrap() as usize,
            );
            let to_m = |key: &str| -> Vec<Vec<I32F32>> {
                let flat: Vec<I32F32> = f[key].as_array().unwrap().iter().map(f32_fixed).collect();
                flat.chunks(c).map(<[I32F32]>::to_vec).collect()
            };
            let alpha = vec![vec![f32_fixed(&f["alpha"]); c]; r];
            let got = mat_ema_alpha_dense(&to_m("new"), &to_m("old"), &alpha);
            let want = to_m("expected");
            let tol = f["tolerance"].as_f64().unwrap();
            for (gr, wr) in got.iter().zip(&want) {
                for (g, w) in gr.iter().zip(wr) {
                    assert!(
                        (g.to_num::<f64>() - w.to_num::<f64>()).abs() <= tol,
                        "{got:?} vs {want:?}"
                    );
                }
            }
        } else {
            panic!("unhandled function-level vector {name}");
        }
        seen += 1;
    }
    assert_eq!(seen, 7);
}
