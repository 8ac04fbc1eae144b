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
