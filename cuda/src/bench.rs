//! GEMM throughput on the device: our kernel against cuBLAS on the same operands, timed with
//! device events (median of repeated runs after warm-up). Used by `polylith bench gemm`.

use crate::runtime::{CudaError, CudaGemm};
use cudarc::driver::{CudaSlice, DevicePtr, sys};
use polylith_protocol::gemm::{Dtype, GemmSpec};

/// Result of one benchmarked size.
#[derive(Debug, Clone)]
pub struct GemmBench {
    /// Rows of A and C.
    pub n: u32,
    /// Inner dimension.
    pub k: u32,
    /// Columns of B and C.
    pub m: u32,
    /// Input dtype.
    pub dtype: Dtype,
    /// Median time of our kernel, ms.
    pub ours_ms: f64,
    /// Median time of cuBLAS on the same data, ms; `None` when libcublas is absent.
    pub cublas_ms: Option<f64>,
    /// Whether cuBLAS's output equals ours on the sampled rows (`None` without cuBLAS).
    pub matches_cublas: Option<bool>,
}

impl GemmBench {
    /// 2·n·k·m.
    pub fn ops(&self) -> f64 {
        2.0 * self.n as f64 * self.k as f64 * self.m as f64
    }
    /// Our throughput in tera-operations per second.
    pub fn ours_tops(&self) -> f64 {
        self.ops() / (self.ours_ms * 1e-3) / 1e12
    }
    /// cuBLAS's throughput in tera-operations per second.
    pub fn cublas_tops(&self) -> Option<f64> {
        self.cublas_ms.map(|ms| self.ops() / (ms * 1e-3) / 1e12)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// True when libcublas can be loaded (cudarc panics on a missing library otherwise).
pub fn cublas_available() -> bool {
    // SAFETY: only probes dlopen.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}

impl CudaGemm {
    /// Times our GEMM (and cuBLAS's, when available) on the operands of `spec`, generated on
    /// the device: `warmup` untimed runs, then `repeats` timed ones. `tick` is called after every
    /// run (progress bars).
    pub fn bench_gemm(
        &self,
        spec: &GemmSpec,
        dtype: Dtype,
        warmup: u32,
        repeats: u32,
        tick: &mut dyn FnMut(),
    ) -> Result<GemmBench, CudaError> {
        let GemmSpec { n, k, m, .. } = *spec;
        let ops = self.generate(spec, dtype)?;
        let stream = self.stream().clone();
        let ctx = stream.context().clone();
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (e0, e1) = (ctx.new_event(timing)?, ctx.new_event(timing)?);
        // SAFETY: fully written by the GEMM before being read.
        let mut c = unsafe { stream.alloc::<i32>(n as usize * m as usize) }?;
        let mut ours = Vec::new();
        for i in 0..warmup + repeats.max(1) {
            e0.record(&stream)?;
            self.gemm(&ops, &mut c)?;
            e1.record(&stream)?;
            e1.synchronize()?;
            if i >= warmup {
                ours.push(e0.elapsed_ms(&e1)? as f64);
            }
            tick();
        }
        let (cublas_ms, matches_cublas) = if cublas_available() {
            let (ms, ok) = self.bench_cublas(&ops, &c, warmup, repeats.max(1), tick)?;
            (Some(ms), Some(ok))
        } else {
            (None, None)
        };
        Ok(GemmBench {
            n,
            k,
            m,
            dtype,
            ours_ms: median(ours),
            cublas_ms,
            matches_cublas,
        })
    }

    fn bench_cublas(
        &self,
        ops: &crate::runtime::DeviceOperands,
        ours: &CudaSlice<i32>,
        warmup: u32,
        repeats: u32,
        tick: &mut dyn FnMut(),
    ) -> Result<(f64, bool), CudaError> {
        use cudarc::cublas::sys as bs;
        let stream = self.stream().clone();
        let blas = cudarc::cublas::CudaBlas::new(stream.clone())
            .map_err(|e| CudaError::Cublas(e.to_string()))?;
        let (n, m, k_pad) = (ops.n(), ops.m(), ops.k_pad());
        let ctx = stream.context().clone();
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (e0, e1) = (ctx.new_event(timing)?, ctx.new_event(timing)?);
        // SAFETY: fully written by cuBLAS (beta = 0) before being read.
        let out = unsafe { stream.alloc::<i32>(n as usize * m as usize) }?;
        let int8 = ops.dtype() == Dtype::Int8;
        let (in_type, out_type, compute) = if int8 {
            (
                bs::cudaDataType::CUDA_R_8I,
                bs::cudaDataType::CUDA_R_32I,
                bs::cublasComputeType_t::CUBLAS_COMPUTE_32I,
            )
        } else {
            (
                bs::cudaDataType::CUDA_R_16BF,
                bs::cudaDataType::CUDA_R_32F,
                bs::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            )
        };
        let (alpha_f, beta_f, alpha_i, beta_i) = (1.0f32, 0.0f32, 1i32, 0i32);
        let (alpha, beta): (*const std::ffi::c_void, *const std::ffi::c_void) = if int8 {
            (&alpha_i as *const i32 as _, &beta_i as *const i32 as _)
        } else {
            (&alpha_f as *const f32 as _, &beta_f as *const f32 as _)
        };
        let mut times = Vec::new();
        for i in 0..warmup + repeats {
            let (a_ptr, _s1) = ops.a_slice().device_ptr(&stream);
            let (b_ptr, _s2) = ops.bt_slice().device_ptr(&stream);
            let (c_ptr, _s3) = out.device_ptr(&stream);
            e0.record(&stream)?;
            // Row-major C (n×m) is column-major Cᵀ (m×n) = Btᵀᵀ·Aᵀ: Bt (m×k_pad row-major) is
            // column-major k_pad×m, used transposed; A is column-major k_pad×n, used as is.
            // SAFETY: pointers are live device buffers of the stated shapes; the zero padding
            // of K contributes nothing.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *blas.handle(),
                    bs::cublasOperation_t::CUBLAS_OP_T,
                    bs::cublasOperation_t::CUBLAS_OP_N,
                    m as i32,
                    n as i32,
                    k_pad as i32,
                    alpha,
                    b_ptr as *const _,
                    in_type,
                    k_pad as i32,
                    a_ptr as *const _,
                    in_type,
                    k_pad as i32,
                    beta,
                    c_ptr as *mut _,
                    out_type,
                    m as i32,
                    compute,
                    bs::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| CudaError::Cublas(e.to_string()))?;
            e1.record(&stream)?;
            e1.synchronize()?;
            if i >= warmup {
                times.push(e0.elapsed_ms(&e1)? as f64);
            }
            tick();
        }
        // Compare a few rows (first, middle, last): cuBLAS's f32 holds exact integers.
        let mut same = true;
        for row in [0, n / 2, n - 1] {
            let range = row as usize * m as usize..(row as usize + 1) * m as usize;
            let a = stream.clone_dtoh(&ours.slice(range.clone()))?;
            let b = stream.clone_dtoh(&out.slice(range))?;
            let b: Vec<i32> = if int8 {
                b
            } else {
                b.iter()
                    .map(|&bits| f32::from_bits(bits as u32) as i32)
                    .collect()
            };
            same &= a == b;
        }
        Ok((median(times), same))
    }
}
