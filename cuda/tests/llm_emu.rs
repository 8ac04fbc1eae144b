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

/// A fake device for plans: buffers are numbered, addresses are `(id << 40) | offset`, and
/// every operation is recorded in the emulator's plan format.
#[derive(Default)]
struct PlanFile {
    sizes: Vec<u64>,
    ops: Vec<u8>,
}

impl PlanFile {
    fn buf(&mut self, bytes: usize) -> u64 {
        self.sizes.push(bytes.max(4) as u64);
        (self.sizes.len() as u64) << 40
    }
    fn word(&mut self, v: u32) {
        self.ops.extend(v.to_le_bytes());
    }
    fn long(&mut self, v: u64) {
        self.ops.extend(v.to_le_bytes());
    }
    fn upload(&mut self, addr: u64, bytes: &[u8]) {
        self.word(1);
        self.long(addr);
        self.long(bytes.len() as u64);
        self.ops.extend(bytes);
    }
    fn filled(&mut self, bytes: Vec<u8>) -> u64 {
        let a = self.buf(bytes.len());
        self.upload(a, &bytes);
        a
    }
    fn launch(&mut self, l: &polylith_cuda::llm::plan::Launch) {
        use polylith_cuda::llm::plan::Arg;
        self.word(2);
        self.word(l.kernel as u32);
        for v in [l.grid.0, l.grid.1, l.grid.2, l.block, l.args.len() as u32] {
            self.word(v);
        }
        for a in &l.args {
            let (tag, bits) = match *a {
                Arg::Ptr(p) => (0, p),
                Arg::U32(v) => (1, u64::from(v)),
                Arg::U64(v) => (2, v),
                Arg::F32(v) => (3, u64::from(v.to_bits())),
            };
            self.word(tag);
            self.long(bits);
        }
    }
    fn download(&mut self, addr: u64, bytes: usize) {
        self.word(3);
        self.long(addr);
        self.long(bytes as u64);
    }
    fn finish(mut self) -> Vec<u8> {
        self.word(0);
        let mut out = Vec::new();
        out.extend((self.sizes.len() as u32).to_le_bytes());
        for s in &self.sizes {
            out.extend(s.to_le_bytes());
        }
        out.extend(self.ops);
        out
    }
}

fn le<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// The engine's own launch plans (`llm::plan::step`, what `CudaDecoder` executes), replayed on
/// the CPU through the emulator on the builtin model's bf16 weights, give the CPU model's
/// logits. Three steps: a 12-token prefill (matmul path), one decode token (matvec1, with the
/// maximal split count of a captured graph) and a step mixing two sequences (matvec, 8 tokens).
/// Checks the plan's argument lists, grids, layouts and order against candle's model.
#[test]
fn engine_plans_replayed_under_emulation_match_the_cpu_model() {
    use polylith_cuda::llm::plan::{
        self, LayerAddrs, Layout, ScratchAddrs, ScratchSizes, StepInputs,
    };
    use polylith_cuda::llm::{ATTN_SPLIT, bf16_bits, rope_tables};
    let name = "engine_plans_replayed_under_emulation_match_the_cpu_model";
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(exe) = build_emulator(name, "llm_plan_emu.cpp", dir.path()) else {
        return;
    };
    let model = polylith_model::Model::builtin().expect("builtin");
    let c = model.config().clone();
    let v = c.vocab_size;
    let (slots, positions, max_tokens) = (2usize, c.max_position_embeddings, 16usize);
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
    let bf = |names: &[String]| -> Vec<u8> {
        names
            .iter()
            .flat_map(|n| get(n))
            .flat_map(|x| bf16_bits(x).to_le_bytes())
            .collect()
    };
    let f32b = |x: &[f32]| le(x, |v| v.to_le_bytes().to_vec());
    let mut f = PlanFile::default();
    let embed = f.filled(bf(&["model.embed_tokens.weight".into()]));
    let lm_head = f.filled(bf(&["lm_head.weight".into()]));
    let norm = f.filled(f32b(&get("model.norm.weight")));
    let (cos, sin) = rope_tables(&c, positions);
    let (cos, sin) = (f.filled(f32b(&cos)), f.filled(f32b(&sin)));
    let kv_bytes = 4 * slots * c.num_key_value_heads * positions * c.head_dim;
    let layers: Vec<LayerAddrs> = (0..c.num_hidden_layers)
        .map(|i| {
            let p = format!("model.layers.{i}");
            let [qkv, o, gu, down] = plan::layer_matrices(&c, i).map(|(names, _, _)| bf(&names));
            LayerAddrs {
                in_norm: f.filled(f32b(&get(&format!("{p}.input_layernorm.weight")))),
                qkv: f.filled(qkv),
                o: f.filled(o),
                post_norm: f.filled(f32b(&get(&format!("{p}.post_attention_layernorm.weight")))),
                gate_up: f.filled(gu),
                down: f.filled(down),
                k_cache: f.buf(kv_bytes),
                v_cache: f.buf(kv_bytes),
                ..LayerAddrs::default()
            }
        })
        .collect();
    let z = ScratchSizes::new(&c, max_tokens, slots, positions);
    let mut b4 = |n: usize| f.buf(4 * n);
    let scratch = ScratchAddrs {
        tokens: b4(z.tokens),
        slot: b4(z.tokens),
        pos: b4(z.tokens),
        rows: b4(z.rows),
        x: b4(z.x),
        h: b4(z.x),
        qkv: b4(z.qkv),
        q: b4(z.q),
        att: b4(z.q),
        part: b4(z.part),
        gu: b4(z.gu),
        act: b4(z.act),
        last: b4(z.last),
        logits: b4(z.logits),
        ids: b4(z.rows),
    };
    let layout = Layout {
        cfg: c.clone(),
        max_positions: positions,
        embed,
        lm_head,
        norm,
        cos,
        sin,
        layers,
        scratch,
    };
    let ids = model
        .encode_prompt("Hello, emulated world!")
        .expect("prompt");
    assert!(ids.len() >= 16);
    let graph_splits = positions.div_ceil(ATTN_SPLIT);
    type Piece<'a> = (u32, usize, &'a [u32]);
    let steps: [(Vec<Piece<'_>>, Option<usize>); 3] = [
        (vec![(0, 0, &ids[..12])], None),
        (vec![(0, 12, &ids[12..13])], Some(graph_splits)),
        (vec![(0, 13, &ids[13..16]), (1, 0, &ids[..5])], None),
    ];
    for (pieces, splits) in &steps {
        let s = StepInputs::new(pieces.iter().copied());
        let u32b = |x: &[u32]| le(x, |v| v.to_le_bytes().to_vec());
        f.upload(scratch.tokens, &u32b(&s.tokens));
        f.upload(scratch.slot, &u32b(&s.slot));
        f.upload(scratch.pos, &u32b(&s.pos));
        f.upload(scratch.rows, &u32b(&s.rows));
        let splits = splits.unwrap_or(s.longest.div_ceil(ATTN_SPLIT));
        for l in plan::step(&layout, s.tokens.len(), s.rows.len(), splits) {
            f.launch(&l);
        }
        f.download(scratch.logits, 4 * v * s.rows.len());
    }
    let (ppath, opath) = (dir.path().join("plan.bin"), dir.path().join("logits.bin"));
    std::fs::write(&ppath, f.finish()).expect("write plan");
    let run = Command::new(&exe)
        .arg(&ppath)
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
    assert_eq!(got.len(), want_pos.len() * v, "one logit row per piece");
    let full = model.logits(&ids[..16]).expect("cpu logits");
    let twin = polylith_cuda::llm::cpu_twin(&model)
        .expect("bf16 twin")
        .logits(&ids[..16])
        .expect("twin logits");
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
