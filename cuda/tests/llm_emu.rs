//! Runs every LLM kernel on the CPU: `emu/llm_emu.cpp` includes `kernels/llm.cu` through a
//! small emulation of the CUDA features it uses (`emu/emu.h`: a thread per CUDA thread,
//! barriers for `__syncthreads` and warp shuffles) and checks each kernel against a reference
//! on random inputs. This is the only execution of the kernels on machines without a GPU: it
//! catches index, reduction and synchronisation bugs, not GPU-specific ones. Needs g++ with
//! C++20; without it the test says SKIPPED and passes.

use std::path::Path;
use std::process::Command;

#[test]
fn llm_kernels_match_their_references_under_cpu_emulation() {
    let name = "llm_kernels_match_their_references_under_cpu_emulation";
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_string());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("SKIPPED {name}: no C++ compiler ({cxx}) to build the emulator");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("llm_emu");
    let build = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O1",
            "-pthread",
            "-Wall",
            "-Werror",
            "-Wno-unknown-pragmas",
        ])
        .arg("-I")
        .arg(root.join("kernels"))
        .arg(root.join("emu/llm_emu.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C++ compiler");
    let log = String::from_utf8_lossy(&build.stderr);
    if !build.status.success() && log.contains("barrier") && log.contains("No such file") {
        eprintln!("SKIPPED {name}: {cxx} lacks C++20 <barrier>");
        return;
    }
    assert!(
        build.status.success(),
        "building the emulator failed:\n{log}"
    );
    let run = Command::new(&exe).output().expect("run the emulator");
    let out = String::from_utf8_lossy(&run.stdout);
    eprintln!("{out}");
    assert!(run.status.success(), "kernel checks failed:\n{out}");
    assert!(out.contains("all passed"), "{out}");
    // Every kernel family member was exercised.
    for what in [
        "rmsnorm",
        "linear 1x",
        "linear 3x",
        "linear 70x",
        "rope q",
        "attention split",
        "swiglu",
        "argmax",
        "log_softmax",
        "topk",
        "embed",
        "fill_random",
    ] {
        assert!(out.contains(what), "no check of {what} in:\n{out}");
    }
}

fn build_emulator(name: &str, source: &str, dir: &Path) -> Option<std::path::PathBuf> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_string());
    if Command::new(&cxx).arg("--version").output().is_err() {
        eprintln!("SKIPPED {name}: no C++ compiler ({cxx}) to build the emulator");
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join("emu");
    let build = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O2",
            "-pthread",
            "-Wall",
            "-Werror",
            "-Wno-unknown-pragmas",
        ])
        .arg("-I")
        .arg(root.join("kernels"))
        .arg(root.join("emu").join(source))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C++ compiler");
    let log = String::from_utf8_lossy(&build.stderr);
    if !build.status.success() && log.contains("barrier") && log.contains("No such file") {
        eprintln!("SKIPPED {name}: {cxx} lacks C++20 <barrier>");
        return None;
    }
    assert!(
        build.status.success(),
        "building the emulator failed:\n{log}"
    );
    Some(exe)
}

/// The engine's whole launch sequence, run on the CPU through the emulator on the builtin
/// model's bf16 weights, gives the CPU model's logits: prefill (matmul path), one decode token
/// (matvec1, maximal split count as in a captured graph), and a step mixing two sequences
/// (matvec, 8 tokens). This checks the layouts and the launch order against candle's model.
#[test]
fn emulated_engine_forward_matches_the_cpu_model() {
    use polylith_cuda::llm::{bf16_bits, rope_tables};
    let name = "emulated_engine_forward_matches_the_cpu_model";
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(exe) = build_emulator(name, "llm_forward_emu.cpp", dir.path()) else {
        return;
    };
    let model = polylith_model::Model::builtin().expect("builtin");
    let c = model.config().clone();
    let mut w: Vec<u8> = Vec::new();
    let u = |w: &mut Vec<u8>, v: usize| w.extend((v as u32).to_le_bytes());
    let f32s = |w: &mut Vec<u8>, v: &[f32]| w.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    let get = |n: &str| -> Vec<f32> {
        model
            .weights()
            .get(n)
            .expect(n)
            .flatten_all()
            .expect(n)
            .to_vec1::<f32>()
            .expect(n)
    };
    let bf = |w: &mut Vec<u8>, names: &[String]| {
        for n in names {
            w.extend(get(n).into_iter().flat_map(|x| bf16_bits(x).to_le_bytes()));
        }
    };
    let slots = 2;
    for v in [
        c.hidden_size,
        c.intermediate_size,
        c.vocab_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.max_position_embeddings,
        slots,
    ] {
        u(&mut w, v);
    }
    f32s(&mut w, &[c.rms_norm_eps as f32]);
    let (cos, sin) = rope_tables(&c, c.max_position_embeddings);
    f32s(&mut w, &cos);
    f32s(&mut w, &sin);
    bf(&mut w, &["model.embed_tokens.weight".into()]);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        f32s(&mut w, &get(&format!("{p}.input_layernorm.weight")));
        bf(
            &mut w,
            &["q_proj", "k_proj", "v_proj"].map(|n| format!("{p}.self_attn.{n}.weight")),
        );
        bf(&mut w, &[format!("{p}.self_attn.o_proj.weight")]);
        f32s(
            &mut w,
            &get(&format!("{p}.post_attention_layernorm.weight")),
        );
        bf(
            &mut w,
            &["gate_proj", "up_proj"].map(|n| format!("{p}.mlp.{n}.weight")),
        );
        bf(&mut w, &[format!("{p}.mlp.down_proj.weight")]);
    }
    f32s(&mut w, &get("model.norm.weight"));
    bf(&mut w, &["lm_head.weight".into()]);
    let ids = model
        .encode_prompt("Hello, emulated world!")
        .expect("prompt");
    assert!(ids.len() >= 16);
    // (pieces: (slot, start, tokens), splits) per step.
    type Step<'a> = (Vec<(usize, usize, &'a [u32])>, usize);
    let steps: Vec<Step<'_>> = vec![
        (vec![(0, 0, &ids[..12])], 1),
        (vec![(0, 12, &ids[12..13])], 2),
        (vec![(0, 13, &ids[13..16]), (1, 0, &ids[..5])], 1),
    ];
    u(&mut w, steps.len());
    for (pieces, splits) in &steps {
        u(&mut w, pieces.len());
        u(&mut w, *splits);
        for &(slot, start, toks) in pieces {
            u(&mut w, slot);
            u(&mut w, start);
            u(&mut w, toks.len());
            w.extend(toks.iter().flat_map(|t| t.to_le_bytes()));
        }
    }
    let (wpath, opath) = (
        dir.path().join("weights.bin"),
        dir.path().join("logits.bin"),
    );
    std::fs::write(&wpath, &w).expect("write weights");
    let run = Command::new(&exe)
        .arg(&wpath)
        .arg(&opath)
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "emulator failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let raw = std::fs::read(&opath).expect("logits");
    let got: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // Positions whose logits the pieces' last tokens give, in output order.
    let want_pos = [11usize, 12, 15, 4];
    let v = c.vocab_size;
    assert_eq!(got.len(), want_pos.len() * v, "one logit row per piece");
    let full = model.logits(&ids[..16]).expect("cpu logits");
    let twin = engine_twin(&model).logits(&ids[..16]).expect("twin logits");
    let delta = polylith_model::Tolerances::default().logit;
    let mut worst = (0.0f64, 0.0f64);
    for (row, &p) in got.chunks(v).zip(&want_pos) {
        for (i, &g) in row.iter().enumerate() {
            let g = f64::from(g);
            worst.0 = worst.0.max((g - f64::from(full[p][i])).abs());
            worst.1 = worst.1.max((g - f64::from(twin[p][i])).abs());
        }
        assert_eq!(
            polylith_model::sampling::argmax(row),
            polylith_model::sampling::argmax(&full[p]),
            "greedy pick at position {p}"
        );
    }
    eprintln!(
        "max |Δlogit|: {:.2e} vs the f32 model, {:.2e} vs the engine's CPU twin",
        worst.0, worst.1
    );
    // Against the f32 model: the verifier's per-logit tolerance. Against the twin (same bf16
    // matrices, f32 everything else): only f32 summation order differs.
    assert!(
        worst.0 <= delta,
        "max |Δlogit| {} vs the f32 model",
        worst.0
    );
    assert!(
        worst.1 <= 1e-3,
        "max |Δlogit| {} vs the engine's CPU twin",
        worst.1
    );
}

/// The CPU model with exactly the engine's weights: every matrix rounded to bf16, norm
/// weights kept in f32.
fn engine_twin(model: &polylith_model::Model) -> polylith_model::Model {
    use candle_core::DType;
    let tensors = model
        .weights()
        .tensors()
        .iter()
        .map(|(name, t)| {
            let t = if name.ends_with("norm.weight") {
                t.clone()
            } else {
                t.to_dtype(DType::BF16)
                    .and_then(|b| b.to_dtype(DType::F32))
                    .expect("round")
            };
            (name.clone(), t)
        })
        .collect();
    let w =
        polylith_model::Weights::from_tensors(model.config().clone(), tensors).expect("weights");
    polylith_model::Model::from_weights("twin".into(), w, model.tokenizer().clone()).expect("model")
}
