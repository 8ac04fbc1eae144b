//! The CUDA C sources, embedded at build time, and NVRTC compilation of them.
//!
//! Every compile reads the program log even on success: NVRTC reports warnings only there,
//! and a warning counts as a failure (a kernel that warns today miscompiles tomorrow).

use std::ffi::{CString, c_char};
use std::time::{Duration, Instant};

/// A shared header, included by the kernels as `#include "name"`.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// The include name.
    pub name: &'static str,
    /// The header text.
    pub source: &'static str,
}

/// One kernel family: one `.cu` file, compiled as one NVRTC program and loaded as one module.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Family name (the file stem), e.g. `gemm`.
    pub name: &'static str,
    /// The `.cu` text.
    pub source: &'static str,
    /// The `extern "C"` entry points the runtime looks up.
    pub entries: &'static [&'static str],
}

/// Headers shared by the kernels.
pub const HEADERS: &[Header] = &[
    Header {
        name: "common.cuh",
        source: include_str!("../kernels/common.cuh"),
    },
    Header {
        name: "blake3.cuh",
        source: include_str!("../kernels/blake3.cuh"),
    },
];

/// The generator family (`kernels/gen.cu`).
pub const GEN: KernelSource = KernelSource {
    name: "gen",
    source: include_str!("../kernels/gen.cu"),
    entries: &["pl_gen_bf16", "pl_gen_i8", "pl_gen_i32", "pl_fill_i32"],
};

/// The tensor-core GEMM family (`kernels/gemm.cu`).
pub const GEMM: KernelSource = KernelSource {
    name: "gemm",
    source: include_str!("../kernels/gemm.cu"),
    entries: &["pl_gemm_bf16", "pl_gemm_i8"],
};

/// The commitment family (`kernels/commit.cu`).
pub const COMMIT: KernelSource = KernelSource {
    name: "commit",
    source: include_str!("../kernels/commit.cu"),
    entries: &[
        "pl_row_hash_single",
        "pl_row_chunks",
        "pl_row_merge",
        "pl_merkle_level",
    ],
};

/// The LLM inference family (`kernels/llm.cu`).
pub const LLM: KernelSource = KernelSource {
    name: "llm",
    source: include_str!("../kernels/llm.cu"),
    entries: &[
        "pl_llm_embed",
        "pl_llm_rmsnorm",
        "pl_llm_matvec",
        "pl_llm_matvec1",
        "pl_llm_matmul",
        "pl_llm_rope_kv",
        "pl_llm_attention",
        "pl_llm_attn_combine",
        "pl_llm_swiglu",
        "pl_llm_add",
        "pl_llm_argmax",
        "pl_llm_log_softmax",
        "pl_llm_topk",
        "pl_llm_fill_random_bf16",
    ],
};

/// Every kernel family, in the order `polylith kernels check` reports them.
pub const ALL: &[KernelSource] = &[GEN, GEMM, COMMIT, LLM];

/// Dynamic shared memory the GEMM kernels need per block (4 stages × 256 rows × 64 bytes).
pub const GEMM_SMEM_BYTES: u32 = 4 * 256 * 64;
/// Rows and columns of C per GEMM block (n and m are padded to this).
pub const GEMM_TILE: u32 = 128;
/// Bytes of K per GEMM pipeline stage (k·element size is padded to this).
pub const GEMM_K_BYTES: u32 = 64;
/// Threads per GEMM block.
pub const GEMM_THREADS: u32 = 256;

/// What to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// PTX text (what `kernels check` sizes).
    Ptx,
    /// A CUBIN for the exact architecture (what the runtime loads: no driver JIT, so no PTX
    /// ISA version mismatch between NVRTC and the driver).
    Cubin,
}

/// Errors from NVRTC.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// libnvrtc could not be loaded.
    #[error(
        "libnvrtc not found (install it with .ci/install-nvrtc.sh and source .ci/cuda/env.sh, or put the CUDA lib64 directory on LD_LIBRARY_PATH)"
    )]
    NvrtcMissing,
    /// The compiler rejected the source or warned about it.
    #[error("{kernel} ({arch}): {what}\n{log}")]
    Rejected {
        /// Kernel family.
        kernel: String,
        /// Target architecture, e.g. `sm_90`.
        arch: String,
        /// `compile error` or `warnings`.
        what: String,
        /// The compiler's log.
        log: String,
    },
    /// An NVRTC call failed outside compilation proper.
    #[error("nvrtc: {0}")]
    Nvrtc(String),
}

/// A compiled kernel family.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The PTX text or CUBIN bytes.
    pub image: Vec<u8>,
    /// Wall time of the compile.
    pub elapsed: Duration,
}

/// True when libnvrtc can be loaded (checked before any NVRTC call, which would panic).
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes dlopen with the candidate names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// NVRTC's version, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32), CompileError> {
    if !nvrtc_available() {
        return Err(CompileError::NvrtcMissing);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for writes.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CompileError::Nvrtc(format!("{e:?}")))?;
    Ok((major, minor))
}

/// The options every compile uses. Warnings are surfaced (and then treated as errors by
/// [`compile`]).
pub fn options(arch: &str, include_dir: Option<&str>) -> Vec<String> {
    let mut o = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        // NVRTC prints front-end warnings by default; numbering them makes the log greppable,
        // and spills in the CUBIN path are a performance bug worth failing on.
        "--display-error-number".to_string(),
        "--ptxas-options=--warn-on-spills".to_string(),
        "--fmad=false".to_string(),
    ];
    if let Some(dir) = include_dir {
        o.push(format!("--include-path={dir}"));
    }
    o
}

fn c_string(s: &str, what: &str) -> Result<CString, CompileError> {
    CString::new(s).map_err(|_| CompileError::Nvrtc(format!("{what} contains a NUL byte")))
}

fn log_of(prog: cudarc::nvrtc::sys::nvrtcProgram) -> String {
    // SAFETY: prog is a live program.
    match unsafe { cudarc::nvrtc::result::get_program_log(prog) } {
        Ok(chars) => {
            let bytes: Vec<u8> = chars
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect();
            String::from_utf8_lossy(&bytes).trim().to_string()
        }
        Err(e) => format!("(no log: {e:?})"),
    }
}

/// Compiles `src` (a family name for messages) for `arch` (`sm_80`, `sm_90`, ...) with the
/// shared headers. Fails on a compile error and on any warning in the log.
pub fn compile(
    name: &str,
    src: &str,
    arch: &str,
    include_dir: Option<&str>,
    output: Output,
) -> Result<Compiled, CompileError> {
    use cudarc::nvrtc::sys;
    if !nvrtc_available() {
        return Err(CompileError::NvrtcMissing);
    }
    let start = Instant::now();
    let src_c = c_string(src, "kernel source")?;
    let name_c = c_string(&format!("{name}.cu"), "kernel name")?;
    let header_src: Vec<CString> = HEADERS
        .iter()
        .map(|h| c_string(h.source, h.name))
        .collect::<Result<_, _>>()?;
    let header_names: Vec<CString> = HEADERS
        .iter()
        .map(|h| c_string(h.name, h.name))
        .collect::<Result<_, _>>()?;
    let header_src_ptrs: Vec<*const c_char> = header_src.iter().map(|s| s.as_ptr()).collect();
    let header_name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string that outlives the program
    // (dropped at the end of this function, after nvrtcDestroyProgram).
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src_c.as_ptr(),
            name_c.as_ptr(),
            HEADERS.len() as i32,
            header_src_ptrs.as_ptr(),
            header_name_ptrs.as_ptr(),
        )
    }
    .result()
    .map_err(|e| CompileError::Nvrtc(format!("nvrtcCreateProgram: {e:?}")))?;

    let result = (|| {
        let opts = options(arch, include_dir);
        // SAFETY: prog is live; options are plain strings without NUL bytes.
        let compiled = unsafe { cudarc::nvrtc::result::compile_program(prog, &opts) };
        let log = log_of(prog);
        let reject = |what: &str| CompileError::Rejected {
            kernel: name.to_string(),
            arch: arch.to_string(),
            what: what.to_string(),
            log: log.clone(),
        };
        if compiled.is_err() {
            return Err(reject("compile error"));
        }
        if !log.is_empty() {
            return Err(reject("warnings (treated as errors)"));
        }
        let image = match output {
            Output::Ptx => {
                // SAFETY: prog compiled successfully.
                let chars = unsafe { cudarc::nvrtc::result::get_ptx(prog) }
                    .map_err(|e| CompileError::Nvrtc(format!("nvrtcGetPTX: {e:?}")))?;
                let mut bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
                while bytes.last() == Some(&0) {
                    bytes.pop();
                }
                bytes
            }
            Output::Cubin => {
                let mut size = 0usize;
                // SAFETY: prog compiled for a real sm_XX architecture; size is writable.
                unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
                    .result()
                    .map_err(|e| CompileError::Nvrtc(format!("nvrtcGetCUBINSize: {e:?}")))?;
                let mut bytes = vec![0u8; size];
                // SAFETY: the buffer has exactly the size NVRTC reported.
                unsafe { sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr() as *mut c_char) }
                    .result()
                    .map_err(|e| CompileError::Nvrtc(format!("nvrtcGetCUBIN: {e:?}")))?;
                bytes
            }
        };
        Ok(image)
    })();
    // SAFETY: prog is live and not used afterwards.
    let _ = unsafe { cudarc::nvrtc::result::destroy_program(prog) };
    Ok(Compiled {
        image: result?,
        elapsed: start.elapsed(),
    })
}

/// Parses a PTX text's `.version` line (e.g. `9.0`), for reports.
pub fn ptx_version(ptx: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(ptx).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .map(|v| v.trim().to_string())
}
