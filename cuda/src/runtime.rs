//! The device runtime: open a GPU, compile (once per device) and launch the kernels, and keep
//! C in device memory for openings.

use crate::kernels::{self, CompileError, Output};
use crate::reference;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg, sys,
};
use parking_lot::Mutex;
use polylith_protocol::gemm::{Dtype, GemmSpec, MAX_K, MerkleTree, Operand, leaf_hash};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The sentinel written into output buffers before a run, so a kernel that skips an element
/// cannot pass by leaving an earlier, correct result in reused memory.
pub const DEFAULT_POISON: i32 = 0x7EAD_BEEF;

/// Errors from the CUDA runtime. None of them is a panic: a machine without a GPU gets
/// [`CudaError::DriverMissing`] or [`CudaError::NoDevice`].
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda (the driver) could not be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver: libcuda.so not loadable")]
    DriverMissing,
    /// libnvrtc could not be loaded, so kernels cannot be compiled.
    #[error(
        "libnvrtc not found: install NVRTC 13 (e.g. .ci/install-nvrtc.sh) and put it on LD_LIBRARY_PATH"
    )]
    NvrtcMissing,
    /// The driver loaded but the device cannot be opened.
    #[error("no usable CUDA device {ordinal}: {reason}")]
    NoDevice {
        /// Requested ordinal.
        ordinal: usize,
        /// The driver's reason.
        reason: String,
    },
    /// The device is older than sm_80 (no bf16/int8 mma.sync).
    #[error("device {name} is sm_{major}{minor}; the kernels need sm_80 or newer")]
    Unsupported {
        /// Device name.
        name: String,
        /// Compute capability major.
        major: i32,
        /// Compute capability minor.
        minor: i32,
    },
    /// Kernel compilation failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// cuBLAS failed (benchmarks only).
    #[error("cuBLAS: {0}")]
    Cublas(String),
    /// The task is invalid or too large for this device.
    #[error("task too large or invalid: {0}")]
    TooLarge(String),
    /// A row index outside the product.
    #[error("row {row} out of range (n = {n})")]
    RowOutOfRange {
        /// Requested row.
        row: u32,
        /// Rows of C.
        n: u32,
    },
    /// The start-up self-test computed a wrong result; the device must not be used.
    #[error("self-test failed: {0}")]
    SelfTest(String),
    /// The LLM engine's KV cache or sequence slots are exhausted (a configured limit, not a
    /// fault: retry later or raise `LlmLimits`).
    #[error("LLM limit reached: {0}")]
    LimitExceeded(String),
    /// A caller-supplied input is invalid (token id outside the vocabulary, empty feed).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The model cannot run on these kernels (shape constraint) or its weights are unreadable.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver(e.to_string())
    }
}

/// Where the time of one proof went on the device, in milliseconds (device events).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceTimings {
    /// Operand generation (and output poisoning).
    pub generate_ms: f64,
    /// The GEMM kernel.
    pub gemm_ms: f64,
    /// Row hashes and the Merkle root.
    pub hash_ms: f64,
    /// Device-to-host copies (leaves and root).
    pub copy_ms: f64,
}

/// The loaded kernels of one device.
struct Kernels {
    gen_bf16: CudaFunction,
    gen_i8: CudaFunction,
    gen_i32: CudaFunction,
    fill_i32: CudaFunction,
    gemm_bf16: CudaFunction,
    gemm_i8: CudaFunction,
    row_single: CudaFunction,
    row_chunks: CudaFunction,
    row_merge: CudaFunction,
    merkle_level: CudaFunction,
}

pub(crate) struct Device {
    pub(crate) ctx: Arc<CudaContext>,
    kernels: Arc<Kernels>,
    pub(crate) name: String,
    pub(crate) arch: String,
}

/// Compiled modules, cached per device ordinal for the life of the process.
fn cache() -> &'static Mutex<HashMap<usize, Arc<Device>>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Device>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// True when both libcuda and libnvrtc can be loaded (no device is opened).
pub fn libraries_present() -> bool {
    // SAFETY: only probes dlopen.
    (unsafe { cudarc::driver::sys::is_culib_present() }) && kernels::nvrtc_available()
}

pub(crate) fn open_device(ordinal: usize) -> Result<Arc<Device>, CudaError> {
    // The guards come first: cudarc panics if a library is missing when a call is made.
    // SAFETY: only probes dlopen.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::DriverMissing);
    }
    if !kernels::nvrtc_available() {
        return Err(CudaError::NvrtcMissing);
    }
    let mut cache = cache().lock();
    if let Some(d) = cache.get(&ordinal) {
        return Ok(d.clone());
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| CudaError::NoDevice {
        ordinal,
        reason: e.to_string(),
    })?;
    let name = ctx.name().unwrap_or_else(|_| "unknown".to_string());
    let (major, minor) = ctx.compute_capability()?;
    if major < 8 {
        return Err(CudaError::Unsupported { name, major, minor });
    }
    let arch = format!("sm_{major}{minor}");
    let include = crate::check::cuda_include_dir().map(|p| p.to_string_lossy().into_owned());
    let load = |src: &kernels::KernelSource| -> Result<Arc<cudarc::driver::CudaModule>, CudaError> {
        let cubin = kernels::compile(
            src.name,
            src.source,
            &arch,
            include.as_deref(),
            Output::Cubin,
        )?;
        tracing::debug!(kernel = src.name, %arch, bytes = cubin.image.len(), ms = cubin.elapsed.as_millis() as u64, "compiled");
        Ok(ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin.image))?)
    };
    let gen_m = load(&kernels::GEN)?;
    let gemm_m = load(&kernels::GEMM)?;
    let commit_m = load(&kernels::COMMIT)?;
    let k = Kernels {
        gen_bf16: gen_m.load_function("pl_gen_bf16")?,
        gen_i8: gen_m.load_function("pl_gen_i8")?,
        gen_i32: gen_m.load_function("pl_gen_i32")?,
        fill_i32: gen_m.load_function("pl_fill_i32")?,
        gemm_bf16: gemm_m.load_function("pl_gemm_bf16")?,
        gemm_i8: gemm_m.load_function("pl_gemm_i8")?,
        row_single: commit_m.load_function("pl_row_hash_single")?,
        row_chunks: commit_m.load_function("pl_row_chunks")?,
        row_merge: commit_m.load_function("pl_row_merge")?,
        merkle_level: commit_m.load_function("pl_merkle_level")?,
    };
    for f in [&k.gemm_bf16, &k.gemm_i8] {
        // SAFETY: f is a live function of a loaded module.
        unsafe {
            cudarc::driver::result::function::set_function_attribute(
                f.cu_function(),
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                kernels::GEMM_SMEM_BYTES as i32,
            )?;
        }
    }
    let dev = Arc::new(Device {
        ctx,
        kernels: Arc::new(k),
        name,
        arch,
    });
    cache.insert(ordinal, dev.clone());
    Ok(dev)
}

/// Padded shapes of one task (see `kernels/gen.cu`).
#[derive(Debug, Clone, Copy)]
struct Shape {
    n: u32,
    k: u32,
    m: u32,
    n_pad: u32,
    m_pad: u32,
    k_pad: u32,
    elt: u32,
}

impl Shape {
    fn new(spec: &GemmSpec, dtype: Dtype) -> Result<Self, CudaError> {
        let (n, k, m) = (spec.n, spec.k, spec.m);
        if n == 0 || k == 0 || m == 0 {
            return Err(CudaError::TooLarge(format!(
                "zero dimension in {n}×{k}×{m}"
            )));
        }
        if k > MAX_K {
            return Err(CudaError::TooLarge(format!("k = {k} exceeds {MAX_K}")));
        }
        let elt = match dtype {
            Dtype::Int8 => 1u32,
            Dtype::Bf16 | Dtype::F32 => 2,
        };
        let t = kernels::GEMM_TILE as u64;
        let n_pad = (n as u64).div_ceil(t) * t;
        let m_pad = (m as u64).div_ceil(t) * t;
        let kb = kernels::GEMM_K_BYTES as u64;
        let k_bytes = (k as u64 * elt as u64).div_ceil(kb) * kb;
        if n_pad / t > 65_535 {
            return Err(CudaError::TooLarge(format!(
                "n = {n} needs more than 65535 row tiles"
            )));
        }
        if n_pad > u32::MAX as u64 || m_pad > u32::MAX as u64 {
            return Err(CudaError::TooLarge(
                "dimension overflows u32 after padding".into(),
            ));
        }
        Ok(Self {
            n,
            k,
            m,
            n_pad: n_pad as u32,
            m_pad: m_pad as u32,
            k_pad: (k_bytes / elt as u64) as u32,
            elt,
        })
    }
    fn a_bytes(&self) -> usize {
        self.n_pad as usize * self.k_pad as usize * self.elt as usize
    }
    fn b_bytes(&self) -> usize {
        self.m_pad as usize * self.k_pad as usize * self.elt as usize
    }
    fn c_len(&self) -> usize {
        self.n as usize * self.m as usize
    }
    /// BLAKE3 chunks per row message (4m + 1 bytes).
    fn chunks(&self) -> u32 {
        (4 * self.m as u64 + 1).div_ceil(1024) as u32
    }
    fn device_bytes(&self) -> usize {
        let leaves = self.n as usize * 32;
        let cvs = if self.chunks() > 1 {
            self.n as usize * self.chunks() as usize * 32
        } else {
            0
        };
        self.a_bytes() + self.b_bytes() + self.c_len() * 4 + 2 * leaves + cvs
    }
}

/// Blocks for one thread per element. Never clamped below the element count: only the
/// generator and fill kernels are grid-stride loops, the hash kernels are not.
fn grid_for(total: u64, threads: u32) -> u32 {
    total.div_ceil(threads as u64).clamp(1, i32::MAX as u64) as u32
}

fn launch_cfg(total: u64) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid_for(total, 256), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// GEMM proofs on one CUDA device.
pub struct CudaGemm {
    dev: Arc<Device>,
    stream: Arc<CudaStream>,
    poison: Option<i32>,
    /// One proof at a time per handle: each needs most of the device's memory bandwidth.
    busy: Mutex<()>,
}

impl std::fmt::Debug for CudaGemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGemm")
            .field("device", &self.dev.name)
            .field("arch", &self.dev.arch)
            .finish()
    }
}

/// Operands generated on the device, K-major and zero-padded (kept for benchmarks).
pub struct DeviceOperands {
    a: CudaSlice<u8>,
    bt: CudaSlice<u8>,
    shape: Shape,
    dtype: Dtype,
}

impl DeviceOperands {
    /// Rows of A (unpadded).
    pub fn n(&self) -> u32 {
        self.shape.n
    }
    /// Columns of B (unpadded).
    pub fn m(&self) -> u32 {
        self.shape.m
    }
    /// K padded to whole 64-byte pipeline stages (the row stride of both operands).
    pub fn k_pad(&self) -> u32 {
        self.shape.k_pad
    }
    /// The operands' dtype.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }
    /// A: n_pad × k_pad, row-major.
    pub fn a_slice(&self) -> &CudaSlice<u8> {
        &self.a
    }
    /// Bt = Bᵀ: m_pad × k_pad, row-major.
    pub fn bt_slice(&self) -> &CudaSlice<u8> {
        &self.bt
    }
}

impl CudaGemm {
    /// Opens device `ordinal`, compiles the kernels for its architecture (cached per device)
    /// and runs a small self-test against the host reference. Fails cleanly, without
    /// touching the driver, when libcuda or libnvrtc is absent.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let dev = open_device(ordinal)?;
        let stream = dev.ctx.new_stream()?;
        let g = Self {
            dev,
            stream,
            poison: Some(DEFAULT_POISON),
            busy: Mutex::new(()),
        };
        g.self_test()?;
        Ok(g)
    }

    /// Sets the sentinel written into output buffers before each run (`None` skips it).
    pub fn with_poison(mut self, poison: Option<i32>) -> Self {
        self.poison = poison;
        self
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn device_name(&self) -> &str {
        &self.dev.name
    }

    /// The architecture the kernels were compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.dev.arch
    }

    fn k(&self) -> &Kernels {
        &self.dev.kernels
    }

    fn fill(&self, buf: &mut CudaSlice<i32>, value: i32) -> Result<(), CudaError> {
        let len = buf.len() as u64;
        let mut b = self.stream.launch_builder(&self.k().fill_i32);
        b.arg(buf).arg(&len).arg(&value);
        // SAFETY: pl_fill_i32(i32*, u64, i32) writes exactly len elements.
        unsafe { b.launch(launch_cfg(len)) }?;
        Ok(())
    }

    /// Generates A (n_pad × k_pad) and Bt (m_pad × k_pad) in `dtype` on the device.
    pub fn generate(&self, spec: &GemmSpec, dtype: Dtype) -> Result<DeviceOperands, CudaError> {
        let shape = Shape::new(spec, dtype)?;
        let (free, _) = self.dev.ctx.mem_get_info()?;
        if shape.device_bytes() > free {
            return Err(CudaError::TooLarge(format!(
                "{}×{}×{} needs {} MiB of device memory, {} MiB free",
                spec.n,
                spec.k,
                spec.m,
                shape.device_bytes() >> 20,
                free >> 20
            )));
        }
        // SAFETY: the generator writes every element, padding included.
        let mut a = unsafe { self.stream.alloc::<u8>(shape.a_bytes()) }?;
        let mut bt = unsafe { self.stream.alloc::<u8>(shape.b_bytes()) }?;
        let r = reference::bound(shape.k);
        let f = match dtype {
            Dtype::Int8 => &self.k().gen_i8,
            Dtype::Bf16 | Dtype::F32 => &self.k().gen_bf16,
        };
        for (buf, op, rows) in [
            (&mut a, Operand::A, shape.n_pad),
            (&mut bt, Operand::B, shape.m_pad),
        ] {
            let key = reference::operand_key(spec.seed, op);
            let real_rows = if op == Operand::A { shape.n } else { shape.m };
            let total = rows as u64 * shape.k_pad as u64;
            let transposed: i32 = (op == Operand::B) as i32;
            let mut b = self.stream.launch_builder(f);
            b.arg(buf)
                .arg(&key)
                .arg(&r)
                .arg(&real_rows)
                .arg(&shape.k)
                .arg(&shape.k_pad)
                .arg(&total)
                .arg(&transposed);
            // SAFETY: (out, u64 key, i32 r, u32 rows, u32 k, u32 k_pad, u64 total, int) matches
            // pl_gen_*; `total` elements fit the buffer by construction.
            unsafe { b.launch(launch_cfg(total)) }?;
        }
        Ok(DeviceOperands {
            a,
            bt,
            shape,
            dtype,
        })
    }

    /// Launches the tensor-core GEMM: C (n×m) = A·B from generated operands.
    pub fn gemm(&self, ops: &DeviceOperands, c: &mut CudaSlice<i32>) -> Result<(), CudaError> {
        let s = ops.shape;
        if c.len() < s.c_len() {
            return Err(CudaError::TooLarge("output buffer smaller than n×m".into()));
        }
        let f = match ops.dtype {
            Dtype::Int8 => &self.k().gemm_i8,
            Dtype::Bf16 | Dtype::F32 => &self.k().gemm_bf16,
        };
        let ld_bytes = s.k_pad as u64 * s.elt as u64;
        let cfg = LaunchConfig {
            grid_dim: (
                s.m_pad / kernels::GEMM_TILE,
                s.n_pad / kernels::GEMM_TILE,
                1,
            ),
            block_dim: (kernels::GEMM_THREADS, 1, 1),
            shared_mem_bytes: kernels::GEMM_SMEM_BYTES,
        };
        let mut b = self.stream.launch_builder(f);
        b.arg(&ops.a)
            .arg(&ops.bt)
            .arg(c)
            .arg(&s.n)
            .arg(&s.m)
            .arg(&ld_bytes);
        // SAFETY: the operands are n_pad×k_pad and m_pad×k_pad with ld_bytes a multiple of 64
        // and n_pad, m_pad multiples of 128, as the kernel requires; C has n·m elements.
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    /// Row hashes of C (n×m) into `leaves` (n × 8 words), on the device.
    fn hash_rows(
        &self,
        c: &CudaSlice<i32>,
        shape: &Shape,
        leaves: &mut CudaSlice<u32>,
    ) -> Result<(), CudaError> {
        let (n, m, chunks) = (shape.n, shape.m, shape.chunks());
        if chunks == 1 {
            let mut b = self.stream.launch_builder(&self.k().row_single);
            b.arg(c).arg(&n).arg(&m).arg(leaves);
            // SAFETY: pl_row_hash_single(const i32*, u32, u32, u32*); C is n×m, leaves n×8.
            unsafe { b.launch(launch_cfg(n as u64)) }?;
            return Ok(());
        }
        let total = n as u64 * chunks as u64;
        // SAFETY: pass 1 writes every (row, chunk) chaining value before pass 2 reads it.
        let mut cvs = unsafe { self.stream.alloc::<u32>(total as usize * 8) }?;
        let mut b = self.stream.launch_builder(&self.k().row_chunks);
        b.arg(c).arg(&n).arg(&m).arg(&chunks).arg(&mut cvs);
        // SAFETY: pl_row_chunks(const i32*, u32, u32, u32, u32*); cvs holds n·chunks·8 words.
        unsafe { b.launch(launch_cfg(total)) }?;
        let mut b = self.stream.launch_builder(&self.k().row_merge);
        b.arg(&cvs).arg(&n).arg(&chunks).arg(leaves);
        // SAFETY: pl_row_merge(const u32*, u32, u32, u32*).
        unsafe { b.launch(launch_cfg(n as u64)) }?;
        Ok(())
    }

    /// The Merkle root over `leaves` (count × 8 words), level by level on the device.
    fn merkle_root(&self, leaves: &CudaSlice<u32>, count: u32) -> Result<[u32; 8], CudaError> {
        if count == 1 {
            let root = self.stream.clone_dtoh(&leaves.slice(0..8))?;
            return Ok(root.try_into().unwrap_or([0; 8]));
        }
        let half = count.div_ceil(2) as usize;
        // SAFETY: each level writes all the nodes the next level reads.
        let mut bufs = [unsafe { self.stream.alloc::<u32>(half * 8) }?, unsafe {
            self.stream.alloc::<u32>(half * 8)
        }?];
        let mut cur: Option<usize> = None;
        let mut count = count;
        while count > 1 {
            let dst_i = match cur {
                None | Some(1) => 0,
                Some(_) => 1,
            };
            let (lo, hi) = bufs.split_at_mut(1);
            let (src, dst) = match (cur, dst_i) {
                (None, _) => (leaves, &mut lo[0]),
                (Some(1), _) => (&hi[0], &mut lo[0]),
                _ => (&lo[0], &mut hi[0]),
            };
            let mut b = self.stream.launch_builder(&self.k().merkle_level);
            b.arg(src).arg(&count).arg(dst);
            let outputs = count.div_ceil(2) as u64;
            // SAFETY: pl_merkle_level(const u32*, u32, u32*); src has count nodes, dst room
            // for ceil(count/2).
            unsafe { b.launch(launch_cfg(outputs)) }?;
            count = outputs as u32;
            cur = Some(dst_i);
        }
        let top = &bufs[cur.unwrap_or(0)];
        let root = self.stream.clone_dtoh(&top.slice(0..8))?;
        Ok(root.try_into().unwrap_or([0; 8]))
    }

    /// Generates A and B, multiplies, hashes the rows and builds the Merkle root, all on the
    /// device; C stays in device memory for [`DeviceProof::row`]. `Dtype::F32` runs as bf16
    /// (exact for the bounded entries, and twice as fast on tensor cores).
    pub fn prove(&self, spec: &GemmSpec, dtype: Dtype) -> Result<DeviceProof, CudaError> {
        let _guard = self.busy.lock();
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let ctx = &self.dev.ctx;
        let ev: Vec<_> = (0..5)
            .map(|_| ctx.new_event(timing))
            .collect::<Result<_, _>>()?;
        ev[0].record(&self.stream)?;
        let ops = self.generate(spec, dtype)?;
        let shape = ops.shape;
        // SAFETY: poisoned below, or fully written by the GEMM (every row < n, col < m).
        let mut c = unsafe { self.stream.alloc::<i32>(shape.c_len()) }?;
        // SAFETY: every leaf is written by the row-hash kernels.
        let mut leaves = unsafe { self.stream.alloc::<u32>(shape.n as usize * 8) }?;
        if let Some(p) = self.poison {
            self.fill(&mut c, p)?;
            // SAFETY: reinterpreting u32 leaf words as i32 for the fill is layout-identical.
            let mut lv = unsafe { leaves.transmute_mut::<i32>(leaves.len()) }
                .ok_or_else(|| CudaError::Driver("leaf buffer view".into()))?;
            let len = lv.len() as u64;
            let mut b = self.stream.launch_builder(&self.k().fill_i32);
            b.arg(&mut lv).arg(&len).arg(&p);
            // SAFETY: pl_fill_i32(i32*, u64, i32) over exactly the view's length.
            unsafe { b.launch(launch_cfg(len)) }?;
        }
        ev[1].record(&self.stream)?;
        self.gemm(&ops, &mut c)?;
        ev[2].record(&self.stream)?;
        drop(ops);
        self.hash_rows(&c, &shape, &mut leaves)?;
        let root_words = self.merkle_root(&leaves, shape.n)?;
        ev[3].record(&self.stream)?;
        let leaf_words = self.stream.clone_dtoh(&leaves)?;
        ev[4].record(&self.stream)?;
        ev[4].synchronize()?;
        let ms =
            |a: usize, b: usize| -> Result<f64, CudaError> { Ok(ev[a].elapsed_ms(&ev[b])? as f64) };
        let timings = DeviceTimings {
            generate_ms: ms(0, 1)?,
            gemm_ms: ms(1, 2)?,
            hash_ms: ms(2, 3)?,
            copy_ms: ms(3, 4)?,
        };
        let leaves: Vec<[u8; 32]> = leaf_words.chunks_exact(8).map(words_to_hash).collect();
        Ok(DeviceProof {
            c,
            stream: self.stream.clone(),
            n: shape.n,
            m: shape.m,
            leaves,
            root: words_to_hash(&root_words),
            timings,
        })
    }

    /// Compares the device against the host reference on small, awkward shapes (edge tiles,
    /// multi-chunk rows, odd Merkle levels) for both dtypes. Any difference is an error.
    pub fn self_test(&self) -> Result<(), CudaError> {
        // The generator alone, through the i32 kernel, so a failure names its stage.
        let spec = GemmSpec {
            seed: 0x5EED,
            n: 5,
            k: 77,
            m: 3,
        };
        let total = spec.n as u64 * spec.k as u64;
        // SAFETY: the generator writes all `total` elements.
        let mut a = unsafe { self.stream.alloc::<i32>(total as usize) }?;
        let key = reference::operand_key(spec.seed, Operand::A);
        let r = reference::bound(spec.k);
        let zero: i32 = 0;
        let mut b = self.stream.launch_builder(&self.k().gen_i32);
        b.arg(&mut a)
            .arg(&key)
            .arg(&r)
            .arg(&spec.n)
            .arg(&spec.k)
            .arg(&spec.k)
            .arg(&total)
            .arg(&zero);
        // SAFETY: as in generate(), with k_pad = k.
        unsafe { b.launch(launch_cfg(total)) }?;
        let got = self.stream.clone_dtoh(&a)?;
        for (idx, v) in got.iter().enumerate() {
            let want = reference::entry_with_key(key, r, idx as u64);
            if *v != want {
                return Err(CudaError::SelfTest(format!(
                    "generator: A[{idx}] = {v}, expected {want}"
                )));
            }
        }
        for dtype in [Dtype::Bf16, Dtype::Int8] {
            for (n, k, m) in [(1, 1, 1), (130, 67, 260), (3, 200, 5)] {
                let spec = GemmSpec {
                    seed: 0xC0FFEE ^ n as u64,
                    n,
                    k,
                    m,
                };
                let proof = self.prove(&spec, dtype)?;
                let mut leaves = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let want = reference::row_of_c(spec.seed, n, k, m, i).unwrap_or_default();
                    let got = proof.row(i)?;
                    if got != want {
                        let j = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
                        return Err(CudaError::SelfTest(format!(
                            "{dtype:?} {n}×{k}×{m}: C[{i}][{j}] = {}, expected {}",
                            got.get(j).copied().unwrap_or_default(),
                            want.get(j).copied().unwrap_or_default()
                        )));
                    }
                    let leaf = leaf_hash(&want);
                    if proof.leaves[i as usize] != leaf {
                        return Err(CudaError::SelfTest(format!(
                            "{dtype:?} {n}×{k}×{m}: leaf {i} differs from the host hash"
                        )));
                    }
                    leaves.push(leaf);
                }
                if MerkleTree::from_leaves(leaves).root() != proof.root {
                    return Err(CudaError::SelfTest(format!(
                        "{dtype:?} {n}×{k}×{m}: Merkle root differs from the host tree"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The stream all work runs on (benchmarks record events on it).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

fn words_to_hash(words: &[u32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (dst, w) in out.chunks_exact_mut(4).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// A product computed and committed on the device; C stays in device memory.
pub struct DeviceProof {
    c: CudaSlice<i32>,
    stream: Arc<CudaStream>,
    n: u32,
    m: u32,
    /// Row hashes (Merkle leaves), computed on the device.
    pub leaves: Vec<[u8; 32]>,
    /// The Merkle root, computed on the device.
    pub root: [u8; 32],
    /// Where the time went.
    pub timings: DeviceTimings,
}

impl std::fmt::Debug for DeviceProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceProof")
            .field("n", &self.n)
            .field("m", &self.m)
            .field("root", &self.root)
            .field("timings", &self.timings)
            .finish()
    }
}

impl DeviceProof {
    /// Rows of C.
    pub fn rows(&self) -> u32 {
        self.n
    }

    /// Columns of C.
    pub fn cols(&self) -> u32 {
        self.m
    }

    /// Copies row `i` of C back from device memory.
    pub fn row(&self, i: u32) -> Result<Vec<i32>, CudaError> {
        if i >= self.n {
            return Err(CudaError::RowOutOfRange { row: i, n: self.n });
        }
        let m = self.m as usize;
        let start = i as usize * m;
        Ok(self.stream.clone_dtoh(&self.c.slice(start..start + m))?)
    }

    /// Device bytes held (C) plus host bytes (leaves).
    pub fn bytes(&self) -> usize {
        self.c.len() * 4 + self.leaves.len() * 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_pad_to_whole_tiles_and_k_stages() {
        let spec = GemmSpec {
            seed: 1,
            n: 17,
            k: 33,
            m: 65,
        };
        let s = Shape::new(&spec, Dtype::Bf16).unwrap();
        assert_eq!((s.n_pad, s.m_pad, s.k_pad, s.elt), (128, 128, 64, 2));
        let s = Shape::new(&spec, Dtype::Int8).unwrap();
        assert_eq!((s.n_pad, s.m_pad, s.k_pad, s.elt), (128, 128, 64, 1));
        let big = GemmSpec {
            seed: 1,
            n: 8192,
            k: 8192,
            m: 8192,
        };
        let s = Shape::new(&big, Dtype::Bf16).unwrap();
        assert_eq!((s.n_pad, s.m_pad, s.k_pad), (8192, 8192, 8192));
        assert_eq!(s.chunks(), 33); // 32769 bytes per row message
    }

    #[test]
    fn invalid_shapes_are_errors() {
        let zero = GemmSpec {
            seed: 1,
            n: 0,
            k: 4,
            m: 4,
        };
        assert!(matches!(
            Shape::new(&zero, Dtype::Bf16),
            Err(CudaError::TooLarge(_))
        ));
        let wide = GemmSpec {
            seed: 1,
            n: 4,
            k: MAX_K + 1,
            m: 4,
        };
        assert!(Shape::new(&wide, Dtype::Int8).is_err());
        let tall = GemmSpec {
            seed: 1,
            n: u32::MAX,
            k: 4,
            m: 4,
        };
        assert!(Shape::new(&tall, Dtype::Int8).is_err());
    }

    #[test]
    fn opening_a_device_without_a_driver_is_a_typed_error() {
        // SAFETY: only probes dlopen.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            eprintln!(
                "SKIPPED opening_a_device_without_a_driver_is_a_typed_error: a CUDA driver is present"
            );
            return;
        }
        assert!(matches!(CudaGemm::new(0), Err(CudaError::DriverMissing)));
    }
}
