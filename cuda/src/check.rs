//! `polylith kernels check`: compile every kernel family with NVRTC for each requested
//! architecture and report sizes, failing on any error or warning.

use crate::kernels::{self, CompileError, KernelSource, Output};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One kernel family compiled for one architecture.
#[derive(Debug, Clone)]
pub struct KernelReport {
    /// Family name (`gen`, `gemm`, `commit`).
    pub name: String,
    /// Architecture, e.g. `sm_90`.
    pub arch: String,
    /// Size of the PTX text in bytes.
    pub ptx_bytes: usize,
    /// The PTX ISA version NVRTC emitted (e.g. `9.0`).
    pub ptx_version: Option<String>,
    /// Entry points the runtime will look up (all present in the PTX).
    pub entries: Vec<String>,
    /// Size of the CUBIN (the runtime's form; compiling it also runs ptxas, whose warnings
    /// count too).
    pub cubin_bytes: usize,
    /// Compile time (PTX and CUBIN).
    pub elapsed: Duration,
}

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No architecture was requested, or one is malformed.
    #[error("bad architecture list: {0}")]
    BadArch(String),
    /// Compilation failed (or warned); carries the compiler log.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The PTX lacks an entry point the runtime expects.
    #[error("{kernel} ({arch}): entry point {entry} missing from the PTX")]
    MissingEntry {
        /// Kernel family.
        kernel: String,
        /// Architecture.
        arch: String,
        /// The missing `extern "C"` name.
        entry: String,
    },
}

/// The CUDA include directory: `$CUDA_INCLUDE`, else `/usr/local/cuda/include`, else the pip
/// wheel's `nvidia/cu13/include` under `.ci/cuda` (walking up from the current directory).
/// `None` when none exists; the kernels themselves need no CUDA header.
pub fn cuda_include_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CUDA_INCLUDE") {
        let p = PathBuf::from(dir);
        if p.is_dir() {
            return Some(p);
        }
    }
    let system = Path::new("/usr/local/cuda/include");
    if system.is_dir() {
        return Some(system.to_path_buf());
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|d| d.join(".ci/cuda/nvidia/cu13/include"))
        .find(|p| p.is_dir())
}

fn valid_arch(arch: &str) -> bool {
    arch.strip_prefix("sm_").is_some_and(|v| {
        let digits = v.trim_end_matches('a');
        digits.len() >= 2 && digits.chars().all(|c| c.is_ascii_digit())
    })
}

/// Compiles `sources` for every arch and checks their entry points exist.
pub fn check_sources(
    sources: &[KernelSource],
    archs: &[String],
    include_dir: Option<&Path>,
) -> Result<Vec<KernelReport>, CheckError> {
    if archs.is_empty() {
        return Err(CheckError::BadArch("no architecture given".to_string()));
    }
    if let Some(bad) = archs.iter().find(|a| !valid_arch(a)) {
        return Err(CheckError::BadArch(format!(
            "{bad:?} (expected sm_XY, e.g. sm_80)"
        )));
    }
    let include = include_dir.map(|p| p.to_string_lossy().into_owned());
    let mut reports = Vec::new();
    for arch in archs {
        for src in sources {
            let out =
                kernels::compile(src.name, src.source, arch, include.as_deref(), Output::Ptx)?;
            let cubin = kernels::compile(
                src.name,
                src.source,
                arch,
                include.as_deref(),
                Output::Cubin,
            )?;
            let text = String::from_utf8_lossy(&out.image);
            for entry in src.entries {
                if !text.contains(&format!(".entry {entry}(")) {
                    return Err(CheckError::MissingEntry {
                        kernel: src.name.to_string(),
                        arch: arch.clone(),
                        entry: entry.to_string(),
                    });
                }
            }
            reports.push(KernelReport {
                name: src.name.to_string(),
                arch: arch.clone(),
                ptx_bytes: out.image.len(),
                ptx_version: kernels::ptx_version(&out.image),
                entries: src.entries.iter().map(|e| e.to_string()).collect(),
                cubin_bytes: cubin.image.len(),
                elapsed: out.elapsed + cubin.elapsed,
            });
        }
    }
    Ok(reports)
}

/// Compiles every kernel family for every arch in `archs` (e.g. `["sm_80", "sm_90"]`).
pub fn check_all(
    archs: &[String],
    include_dir: Option<&Path>,
) -> Result<Vec<KernelReport>, CheckError> {
    check_sources(kernels::ALL, archs, include_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archs() -> Vec<String> {
        vec!["sm_80".to_string(), "sm_90".to_string()]
    }

    /// NVRTC is installed in CI (.ci/install-nvrtc.sh); elsewhere these tests say so and pass.
    fn skip_without_nvrtc(test: &str) -> bool {
        if kernels::nvrtc_available() {
            return false;
        }
        eprintln!(
            "SKIPPED {test}: libnvrtc not found (run .ci/install-nvrtc.sh and source .ci/cuda/env.sh)"
        );
        true
    }

    #[test]
    fn every_kernel_compiles_without_warnings_for_sm80_and_sm90() {
        if skip_without_nvrtc("every_kernel_compiles_without_warnings_for_sm80_and_sm90") {
            return;
        }
        let reports = check_all(&archs(), cuda_include_dir().as_deref()).expect("kernels compile");
        assert_eq!(reports.len(), kernels::ALL.len() * 2);
        for r in &reports {
            assert!(r.ptx_bytes > 0, "{} {} has empty PTX", r.name, r.arch);
        }
    }

    #[test]
    fn a_broken_kernel_fails_the_check_with_the_compilers_message() {
        if skip_without_nvrtc("a_broken_kernel_fails_the_check_with_the_compilers_message") {
            return;
        }
        let broken = KernelSource {
            name: "broken",
            source: "#include \"common.cuh\"\nextern \"C\" __global__ void pl_broken(i32 *o) { o[0] = undefined_thing; }\n",
            entries: &["pl_broken"],
        };
        let err = check_sources(&[broken], &archs(), None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("undefined_thing"), "log missing: {msg}");
        assert!(msg.contains("compile error"), "{msg}");
    }

    #[test]
    fn a_warning_fails_the_check() {
        if skip_without_nvrtc("a_warning_fails_the_check") {
            return;
        }
        // An unused variable is a warning, not an error, in NVRTC.
        let warns = KernelSource {
            name: "warns",
            source: "extern \"C\" __global__ void pl_warns(int *o) { int unused; o[0] = 1; }\n",
            entries: &["pl_warns"],
        };
        let err = check_sources(&[warns], &archs(), None).unwrap_err();
        assert!(err.to_string().contains("warning"), "{err}");
    }

    #[test]
    fn a_missing_entry_point_fails_the_check() {
        if skip_without_nvrtc("a_missing_entry_point_fails_the_check") {
            return;
        }
        let src = KernelSource {
            name: "noentry",
            source: "extern \"C\" __global__ void pl_other(int *o) { o[0] = 1; }\n",
            entries: &["pl_expected"],
        };
        let err = check_sources(&[src], &archs(), None).unwrap_err();
        assert!(matches!(err, CheckError::MissingEntry { .. }), "{err}");
    }

    #[test]
    fn malformed_arch_is_rejected_before_compiling() {
        assert!(matches!(
            check_all(&["90".to_string()], None),
            Err(CheckError::BadArch(_))
        ));
        assert!(matches!(check_all(&[], None), Err(CheckError::BadArch(_))));
    }
}
