//! CUDA kernels compiled at run time with NVRTC, and the cudarc runtime that launches them.
//!
//! Owns: the CUDA C sources under `kernels/` (embedded with `include_str!`), their NVRTC
//! compilation (CUBIN for the device's own architecture, cached per device), the device-side
//! matrix generator, the tensor-core GEMM, the BLAKE3 row hashes and Merkle root, the LLM
//! inference engine (`llm::CudaDecoder`, a `polylith_model::Decoder` on the GPU), and
//! `check::check_all` for `polylith kernels check`.
//!
//! Must not: link against CUDA at build time (libcuda and libnvrtc are dlopen'ed, and their
//! absence is a typed error, never a panic), define the protocol (the generator and the hash
//! follow `docs/protocol.md`; `polylith_protocol::gemm` is the reference), or serve requests.
#![warn(missing_docs)]

pub mod bench;
pub mod check;
pub mod kernels;
pub mod llm;
pub mod reference;

pub use check::{CheckError, KernelReport, check_all};
pub mod runtime;

pub use bench::GemmBench;
pub use llm::{CudaBatch, CudaDecoder, LlmLimits, LlmOps};
pub use runtime::{CudaError, CudaGemm, DeviceOperands, DeviceProof, DeviceTimings};
