//! CUDA kernels compiled at run time with NVRTC and the cudarc runtime that launches them.
#![warn(missing_docs)]
