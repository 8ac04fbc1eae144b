//! The LLM engine: a Llama decoder on one GPU from the kernels of `kernels/llm.cu`.
//!
//! Weights live on the device in bf16 (uploaded once), activations and the KV cache in f32.
//! [`CudaDecoder`] implements [`polylith_model::Decoder`], so the miner's generation loop
//! (sampling on the host with `polylith_model::sampling`, EOS, stop strings, streaming) serves
//! it exactly as it serves the CPU model. Concurrent [`Sequence::feed`] calls are gathered into
//! one forward step: whoever holds the step lock runs every queued request at once (prefill
//! chunks and single decode tokens mixed), so batching happens whenever there is load, with
//! no timer. [`CudaBatch`] drives a fixed batch directly (benchmarks, greedy decode on the
//! device).

use crate::kernels::{self, Output};
use crate::runtime::{CudaError, open_device};
use cudarc::driver::{
    CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig,
    PushKernelArg, sys,
};
use parking_lot::Mutex;
use polylith_model::{Decoder, LlamaConfig, Model, ModelError, Sequence};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock, mpsc};

pub mod plan;

pub use plan::{ATTN_SPLIT, MATVEC_MAX_BATCH};
use plan::{
    Arg, AttnAddrs, Kernel, Launch, LayerAddrs, Layout, ScratchAddrs, ScratchSizes, StepInputs,
};

/// Most tokens one forward step runs (longer prompts are prefilled in chunks of this size).
pub const MAX_STEP_TOKENS: usize = 256;
/// Largest head_dim the attention kernel supports.
pub const MAX_HEAD_DIM: usize = 256;
/// Most alternatives the device top-k kernel returns.
pub const MAX_TOP_K: usize = 64;

/// Capacity of a [`CudaDecoder`]: the KV cache holds `max_sequences × max_positions` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmLimits {
    /// Sequences that can be open at once (each owns one KV-cache slot).
    pub max_sequences: usize,
    /// Positions (prompt + completion) per sequence; at most the model's
    /// `max_position_embeddings`.
    pub max_positions: usize,
}

impl Default for LlmLimits {
    fn default() -> Self {
        LlmLimits {
            max_sequences: 8,
            max_positions: 512,
        }
    }
}

impl From<CudaError> for ModelError {
    fn from(e: CudaError) -> Self {
        match e {
            CudaError::LimitExceeded(m) | CudaError::InvalidInput(m) => ModelError::InvalidInput(m),
            CudaError::UnsupportedModel(m) => ModelError::Unsupported(m),
            other => ModelError::Backend(format!("CUDA: {other}")),
        }
    }
}

/// The LLM kernels of one device.
struct LlmKernels {
    embed: CudaFunction,
    rmsnorm: CudaFunction,
    matvec: CudaFunction,
    matvec1: CudaFunction,
    matmul: CudaFunction,
    rope_kv: CudaFunction,
    attention: CudaFunction,
    combine: CudaFunction,
    swiglu: CudaFunction,
    add: CudaFunction,
    argmax: CudaFunction,
    log_softmax: CudaFunction,
    topk: CudaFunction,
    fill: CudaFunction,
}

fn module_cache() -> &'static Mutex<HashMap<usize, Arc<LlmKernels>>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<LlmKernels>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Opens device `ordinal` and compiles (once per process and device) the LLM family.
fn open(
    ordinal: usize,
) -> Result<(Arc<cudarc::driver::CudaContext>, Arc<LlmKernels>, String), CudaError> {
    let dev = open_device(ordinal)?;
    let mut cache = module_cache().lock();
    if let Some(k) = cache.get(&ordinal) {
        return Ok((dev.ctx.clone(), k.clone(), dev.name.clone()));
    }
    let include = crate::check::cuda_include_dir().map(|p| p.to_string_lossy().into_owned());
    let src = &kernels::LLM;
    let cubin = kernels::compile(
        src.name,
        src.source,
        &dev.arch,
        include.as_deref(),
        Output::Cubin,
    )?;
    let m: Arc<CudaModule> = dev
        .ctx
        .load_module(cudarc::nvrtc::Ptx::from_binary(cubin.image))?;
    let f = |n: &str| m.load_function(n);
    let k = Arc::new(LlmKernels {
        embed: f("pl_llm_embed")?,
        rmsnorm: f("pl_llm_rmsnorm")?,
        matvec: f("pl_llm_matvec")?,
        matvec1: f("pl_llm_matvec1")?,
        matmul: f("pl_llm_matmul")?,
        rope_kv: f("pl_llm_rope_kv")?,
        attention: f("pl_llm_attention")?,
        combine: f("pl_llm_attn_combine")?,
        swiglu: f("pl_llm_swiglu")?,
        add: f("pl_llm_add")?,
        argmax: f("pl_llm_argmax")?,
        log_softmax: f("pl_llm_log_softmax")?,
        topk: f("pl_llm_topk")?,
        fill: f("pl_llm_fill_random_bf16")?,
    });
    cache.insert(ordinal, k.clone());
    Ok((dev.ctx.clone(), k, dev.name.clone()))
}

/// Raw device address of a buffer. Kernel arguments are passed as addresses so that one buffer
/// can be both an input and the output (the residual epilogue) and so that the arguments of a
/// step never change between steps.
fn addr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _guard) = s.device_ptr(stream);
    p
}

fn blocks(total: u64, threads: u32) -> u32 {
    total.div_ceil(threads as u64).clamp(1, 65_535 * 64) as u32
}

fn lc(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// f32 → bf16 bits, round to nearest even (what `Model::rounded(DType::BF16)` does).
pub fn bf16_bits(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

/// bf16 bits → f32 (exact).
pub fn bf16_value(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// The rotary tables `(cos, sin)`, each `positions × head_dim/2`, with the CPU model's formula
/// (f32 inverse frequencies and angles, as transformers).
pub fn rope_tables(cfg: &LlamaConfig, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let hd = cfg.head_dim;
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / hd as f32))
        .collect();
    let mut cos = Vec::with_capacity(positions * hd / 2);
    let mut sin = Vec::with_capacity(positions * hd / 2);
    for p in 0..positions {
        for f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// What [`LlmOps::rope_kv`] returns.
#[derive(Debug, Clone)]
pub struct RopeKv {
    /// Rotated queries, `T × nh·hd`.
    pub q: Vec<f32>,
    /// Key cache, `slots × nkv × max_pos × hd` (zero where nothing was written).
    pub k_cache: Vec<f32>,
    /// Value cache, same layout.
    pub v_cache: Vec<f32>,
}

/// Low-level launches of single kernels on host data: what the twin tests compare with CPU
/// computations. Every call copies its inputs up, runs one or two kernels and copies the result
/// back (not for serving).
pub struct LlmOps {
    stream: Arc<CudaStream>,
    k: Arc<LlmKernels>,
}

impl std::fmt::Debug for LlmOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LlmOps")
    }
}

impl LlmOps {
    /// Opens device `ordinal` and compiles the LLM kernels.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        let (ctx, k, _) = open(ordinal)?;
        Ok(LlmOps {
            stream: ctx.new_stream()?,
            k,
        })
    }

    fn up<T: cudarc::driver::DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>, CudaError> {
        if v.is_empty() {
            return Err(CudaError::InvalidInput("empty input".into()));
        }
        Ok(self.stream.clone_htod(v)?)
    }

    fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        Ok(self.stream.alloc_zeros::<T>(n.max(1))?)
    }

    /// `embed[tokens[t]]` rows as f32 (`embed` is `vocab × hidden` bf16 bits).
    pub fn embed(
        &self,
        embed: &[u16],
        hidden: usize,
        tokens: &[u32],
    ) -> Result<Vec<f32>, CudaError> {
        let vocab = embed.len() / hidden.max(1);
        let (e, t) = (self.up(embed)?, self.up(tokens)?);
        let out = self.zeros::<f32>(tokens.len() * hidden)?;
        let s = &self.stream;
        let (ea, ta, oa) = (addr(&e, s), addr(&t, s), addr(&out, s));
        let (h, v) = (hidden as u32, vocab as u32);
        let mut b = s.launch_builder(&self.k.embed);
        b.arg(&ea).arg(&ta).arg(&oa).arg(&h).arg(&v);
        // SAFETY: pl_llm_embed(const u16*, const u32*, float*, u32, u32); out holds T·hidden.
        unsafe { b.launch(lc((tokens.len() as u32, 1, 1), 128)) }?;
        Ok(s.clone_dtoh(&out)?)
    }

    /// RMSNorm of each `hidden`-sized row of `x`.
    pub fn rmsnorm(&self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>, CudaError> {
        let hidden = w.len();
        if hidden == 0 || !x.len().is_multiple_of(hidden) {
            return Err(CudaError::InvalidInput(
                "x is not rows of w's length".into(),
            ));
        }
        let rows = (x.len() / hidden) as u32;
        let (xd, wd) = (self.up(x)?, self.up(w)?);
        let out = self.zeros::<f32>(x.len())?;
        let s = &self.stream;
        let (xa, wa, oa, none) = (addr(&xd, s), addr(&wd, s), addr(&out, s), 0u64);
        let h = hidden as u32;
        let mut b = s.launch_builder(&self.k.rmsnorm);
        b.arg(&xa).arg(&none).arg(&wa).arg(&oa).arg(&h).arg(&eps);
        // SAFETY: pl_llm_rmsnorm(const float*, const u32* (null), const float*, float*, u32, float).
        unsafe { b.launch(lc((rows, 1, 1), 256)) }?;
        Ok(s.clone_dtoh(&out)?)
    }

    /// `Y = X·Wᵀ + bias + res` for `X` of `t` rows; `W` is `n × k` bf16 bits. Uses the
    /// matrix-vector kernel for `t ≤ MATVEC_MAX_BATCH`, the tiled matmul above.
    pub fn linear(
        &self,
        x: &[f32],
        w: &[u16],
        bias: Option<&[f32]>,
        res: Option<&[f32]>,
        n: usize,
    ) -> Result<Vec<f32>, CudaError> {
        if n == 0 || !w.len().is_multiple_of(n) {
            return Err(CudaError::InvalidInput("w is not n rows".into()));
        }
        let k = w.len() / n;
        if !k.is_multiple_of(8) || !x.len().is_multiple_of(k) {
            return Err(CudaError::InvalidInput(
                "k must be a multiple of 8 dividing x".into(),
            ));
        }
        let t = x.len() / k;
        let (xd, wd) = (self.up(x)?, self.up(w)?);
        let bd = bias.map(|b| self.up(b)).transpose()?;
        let rd = res.map(|r| self.up(r)).transpose()?;
        let out = self.zeros::<f32>(t * n)?;
        let s = &self.stream;
        let mut p = Vec::new();
        plan::linear(
            &mut p,
            addr(&xd, s),
            addr(&wd, s),
            bd.as_ref().map_or(0, |b| addr(b, s)),
            rd.as_ref().map_or(0, |r| addr(r, s)),
            addr(&out, s),
            t,
            n,
            k,
        );
        execute(&self.k, s, &p)?;
        Ok(s.clone_dtoh(&out)?)
    }

    /// Rotary embedding and KV write for one layer: `qkv` is `T × (nh + 2·nkv)·hd`; returns the
    /// rotated queries (`T × nh·hd`) and the caches (`slots × nkv × max_pos × hd`, zero where
    /// nothing was written).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv(
        &self,
        cfg_: &LlamaConfig,
        qkv: &[f32],
        tok_slot: &[u32],
        tok_pos: &[u32],
        slots: usize,
        max_pos: usize,
    ) -> Result<RopeKv, CudaError> {
        let (nh, nkv, hd) = (
            cfg_.num_attention_heads,
            cfg_.num_key_value_heads,
            cfg_.head_dim,
        );
        let t = tok_slot.len();
        if qkv.len() != t * (nh + 2 * nkv) * hd || tok_pos.len() != t {
            return Err(CudaError::InvalidInput(
                "qkv/slot/pos lengths disagree".into(),
            ));
        }
        if tok_slot.iter().any(|&s| s as usize >= slots)
            || tok_pos.iter().any(|&p| p as usize >= max_pos)
        {
            return Err(CudaError::InvalidInput(
                "slot or position out of range".into(),
            ));
        }
        let (cos, sin) = rope_tables(cfg_, max_pos);
        let (qd, sd, pd, cd, snd) = (
            self.up(qkv)?,
            self.up(tok_slot)?,
            self.up(tok_pos)?,
            self.up(&cos)?,
            self.up(&sin)?,
        );
        let qo = self.zeros::<f32>(t * nh * hd)?;
        let kc = self.zeros::<f32>(slots * nkv * max_pos * hd)?;
        let vc = self.zeros::<f32>(slots * nkv * max_pos * hd)?;
        let s = &self.stream;
        let (qa, sa, pa, ca, sna, qoa, ka, va) = (
            addr(&qd, s),
            addr(&sd, s),
            addr(&pd, s),
            addr(&cd, s),
            addr(&snd, s),
            addr(&qo, s),
            addr(&kc, s),
            addr(&vc, s),
        );
        let (nh_, nkv_, hd_, mp) = (nh as u32, nkv as u32, hd as u32, max_pos as u32);
        let mut b = s.launch_builder(&self.k.rope_kv);
        b.arg(&qa)
            .arg(&sa)
            .arg(&pa)
            .arg(&ca)
            .arg(&sna)
            .arg(&qoa)
            .arg(&ka)
            .arg(&va);
        b.arg(&nh_).arg(&nkv_).arg(&hd_).arg(&mp);
        // SAFETY: matches pl_llm_rope_kv; slots and positions were checked against the caches.
        unsafe { b.launch(lc((t as u32, 1, 1), 256)) }?;
        Ok(RopeKv {
            q: s.clone_dtoh(&qo)?,
            k_cache: s.clone_dtoh(&kc)?,
            v_cache: s.clone_dtoh(&vc)?,
        })
    }

    /// Attention of queries `q` (`T × nh × hd`) over caches laid out as [`LlmOps::rope_kv`]
    /// returns them; output `T × nh·hd`. `split_len` keys per split (exercises the merge).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        cfg_: &LlamaConfig,
        q: &[f32],
        k_cache: &[f32],
        v_cache: &[f32],
        tok_slot: &[u32],
        tok_pos: &[u32],
        max_pos: usize,
        split_len: usize,
    ) -> Result<Vec<f32>, CudaError> {
        let (nh, nkv, hd) = (
            cfg_.num_attention_heads,
            cfg_.num_key_value_heads,
            cfg_.head_dim,
        );
        let t = tok_slot.len();
        let slots = k_cache.len() / (nkv * max_pos * hd).max(1);
        if q.len() != t * nh * hd
            || k_cache.len() != v_cache.len()
            || k_cache.len() != slots * nkv * max_pos * hd
            || tok_slot.iter().any(|&s| s as usize >= slots)
            || tok_pos.iter().any(|&p| p as usize >= max_pos)
            || split_len == 0
            || hd > MAX_HEAD_DIM
        {
            return Err(CudaError::InvalidInput("attention shapes disagree".into()));
        }
        let longest = tok_pos.iter().map(|&p| p as usize + 1).max().unwrap_or(1);
        let splits = longest.div_ceil(split_len);
        let (qd, kd, vd, sd, pd) = (
            self.up(q)?,
            self.up(k_cache)?,
            self.up(v_cache)?,
            self.up(tok_slot)?,
            self.up(tok_pos)?,
        );
        let part = self.zeros::<f32>(t * nh * splits * (hd + 2))?;
        let out = self.zeros::<f32>(t * nh * hd)?;
        let s = &self.stream;
        let a = AttnAddrs {
            q: addr(&qd, s),
            k: addr(&kd, s),
            v: addr(&vd, s),
            slot: addr(&sd, s),
            pos: addr(&pd, s),
            part: addr(&part, s),
            out: addr(&out, s),
        };
        let mut p = Vec::new();
        plan::attention(&mut p, cfg_, &a, t, max_pos, split_len, splits);
        execute(&self.k, s, &p)?;
        Ok(s.clone_dtoh(&out)?)
    }

    /// silu(gate)·up of `gu` rows laid out `[gate (inter) | up (inter)]`.
    pub fn swiglu(&self, gu: &[f32], inter: usize) -> Result<Vec<f32>, CudaError> {
        if inter == 0 || !gu.len().is_multiple_of(2 * inter) {
            return Err(CudaError::InvalidInput("gu is not rows of 2·inter".into()));
        }
        let total = (gu.len() / 2) as u64;
        let g = self.up(gu)?;
        let out = self.zeros::<f32>(total as usize)?;
        let s = &self.stream;
        let (ga, oa, i) = (addr(&g, s), addr(&out, s), inter as u32);
        let mut b = s.launch_builder(&self.k.swiglu);
        b.arg(&ga).arg(&oa).arg(&i).arg(&total);
        // SAFETY: pl_llm_swiglu(const float*, float*, u32, u64) over total = rows·inter.
        unsafe { b.launch(lc((blocks(total, 256), 1, 1), 256)) }?;
        Ok(s.clone_dtoh(&out)?)
    }

    /// `x + d`, elementwise.
    pub fn add(&self, x: &[f32], d: &[f32]) -> Result<Vec<f32>, CudaError> {
        if x.len() != d.len() {
            return Err(CudaError::InvalidInput("lengths differ".into()));
        }
        let (xd, dd) = (self.up(x)?, self.up(d)?);
        let s = &self.stream;
        let (xa, da, n) = (addr(&xd, s), addr(&dd, s), x.len() as u64);
        let mut b = s.launch_builder(&self.k.add);
        b.arg(&xa).arg(&da).arg(&n);
        // SAFETY: pl_llm_add(float*, const float*, u64) over n elements.
        unsafe { b.launch(lc((blocks(n, 256), 1, 1), 256)) }?;
        Ok(s.clone_dtoh(&xd)?)
    }

    /// Argmax of each `vocab`-sized row (ties to the lowest id, NaN never wins).
    pub fn argmax(&self, logits: &[f32], vocab: usize) -> Result<Vec<u32>, CudaError> {
        let rows = rows_of(logits, vocab)?;
        let l = self.up(logits)?;
        let out = self.zeros::<u32>(rows)?;
        let s = &self.stream;
        let (la, oa, v) = (addr(&l, s), addr(&out, s), vocab as u32);
        let mut b = s.launch_builder(&self.k.argmax);
        b.arg(&la).arg(&oa).arg(&v);
        // SAFETY: pl_llm_argmax(const float*, u32*, u32); out holds one id per row.
        unsafe { b.launch(lc((rows as u32, 1, 1), 256)) }?;
        Ok(s.clone_dtoh(&out)?)
    }

    /// log-softmax of each `vocab`-sized row.
    pub fn log_softmax(&self, logits: &[f32], vocab: usize) -> Result<Vec<f32>, CudaError> {
        let rows = rows_of(logits, vocab)?;
        let l = self.up(logits)?;
        let out = self.zeros::<f32>(logits.len())?;
        let s = &self.stream;
        let (la, oa, v) = (addr(&l, s), addr(&out, s), vocab as u32);
        let mut b = s.launch_builder(&self.k.log_softmax);
        b.arg(&la).arg(&oa).arg(&v);
        // SAFETY: pl_llm_log_softmax(const float*, float*, u32) row by row.
        unsafe { b.launch(lc((rows as u32, 1, 1), 256)) }?;
        Ok(s.clone_dtoh(&out)?)
    }

    /// The `k` highest (id, value) of each row, sorted by (value desc, id asc).
    pub fn top_k(
        &self,
        x: &[f32],
        vocab: usize,
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>, CudaError> {
        let rows = rows_of(x, vocab)?;
        if k == 0 || k > MAX_TOP_K {
            return Err(CudaError::InvalidInput(format!(
                "k must be in 1..={MAX_TOP_K}"
            )));
        }
        let xd = self.up(x)?;
        let ids = self.zeros::<u32>(rows * k)?;
        let vals = self.zeros::<f32>(rows * k)?;
        let s = &self.stream;
        let (xa, ia, va, v, kk) = (
            addr(&xd, s),
            addr(&ids, s),
            addr(&vals, s),
            vocab as u32,
            k as u32,
        );
        let mut b = s.launch_builder(&self.k.topk);
        b.arg(&xa).arg(&v).arg(&kk).arg(&ia).arg(&va);
        // SAFETY: pl_llm_topk(const float*, u32, u32, u32*, float*); outputs hold rows·k.
        unsafe { b.launch(lc((rows as u32, 1, 1), 256)) }?;
        let (ids, vals) = (s.clone_dtoh(&ids)?, s.clone_dtoh(&vals)?);
        Ok(ids
            .chunks(k)
            .zip(vals.chunks(k))
            .map(|(i, v)| i.iter().copied().zip(v.iter().copied()).collect())
            .collect())
    }
}

fn rows_of(x: &[f32], vocab: usize) -> Result<usize, CudaError> {
    if vocab == 0 || x.is_empty() || !x.len().is_multiple_of(vocab) {
        return Err(CudaError::InvalidInput(
            "input is not whole rows of vocab".into(),
        ));
    }
    Ok(x.len() / vocab)
}

impl LlmKernels {
    fn get(&self, k: Kernel) -> &CudaFunction {
        match k {
            Kernel::Embed => &self.embed,
            Kernel::RmsNorm => &self.rmsnorm,
            Kernel::Matvec => &self.matvec,
            Kernel::Matvec1 => &self.matvec1,
            Kernel::Matmul => &self.matmul,
            Kernel::RopeKv => &self.rope_kv,
            Kernel::Attention => &self.attention,
            Kernel::Combine => &self.combine,
            Kernel::Swiglu => &self.swiglu,
        }
    }
}

/// Launches a plan (see [`plan`]) in order on `s`.
fn execute(k: &LlmKernels, s: &CudaStream, launches: &[Launch]) -> Result<(), CudaError> {
    for l in launches {
        let mut b = s.launch_builder(k.get(l.kernel));
        for a in &l.args {
            match a {
                Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: `plan` builds every launch with its kernel's exact parameter list (the same
        // plans are replayed against the kernels under CPU emulation in tests/llm_emu.rs), over
        // buffers sized by `ScratchSizes` and the engine's allocations, with shapes checked by
        // `check_shapes` and the step validation in `Engine::forward`.
        unsafe { b.launch(lc(l.grid, l.block)) }?;
    }
    Ok(())
}

/// A Llama-shaped config of about 1.2 B parameters (hidden 2048, 16 layers, 32 heads, 8 KV
/// heads, MLP 8192, vocabulary 32000), for speed benchmarks with random weights.
pub fn synthetic_1b_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 32_000,
        hidden_size: 2048,
        intermediate_size: 8192,
        num_hidden_layers: 16,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        head_dim: 64,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
        attention_bias: false,
        mlp_bias: false,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// Checks that `cfg` fits the kernels' constraints and `limits` are sane.
pub fn check_shapes(cfg: &LlamaConfig, limits: &LlmLimits) -> Result<(), CudaError> {
    cfg.validate()
        .map_err(|e| CudaError::UnsupportedModel(e.to_string()))?;
    let bad = |m: String| Err(CudaError::UnsupportedModel(m));
    let q = cfg.num_attention_heads * cfg.head_dim;
    for (what, v) in [
        ("hidden_size", cfg.hidden_size),
        ("num_attention_heads·head_dim", q),
        ("intermediate_size", cfg.intermediate_size),
    ] {
        if !v.is_multiple_of(8) {
            return bad(format!(
                "{what} = {v} is not a multiple of 8 (128-bit weight loads)"
            ));
        }
    }
    if cfg.head_dim > MAX_HEAD_DIM {
        return bad(format!("head_dim {} > {MAX_HEAD_DIM}", cfg.head_dim));
    }
    if cfg.vocab_size > u32::MAX as usize / 2 {
        return bad(format!("vocabulary of {} ids", cfg.vocab_size));
    }
    if limits.max_sequences == 0 || limits.max_sequences > 4096 {
        return Err(CudaError::InvalidInput(format!(
            "max_sequences {} not in 1..=4096",
            limits.max_sequences
        )));
    }
    if limits.max_positions == 0 || limits.max_positions > cfg.max_position_embeddings {
        return Err(CudaError::InvalidInput(format!(
            "max_positions {} not in 1..={} (the model's max_position_embeddings)",
            limits.max_positions, cfg.max_position_embeddings
        )));
    }
    Ok(())
}

/// Where the weights come from.
enum Source<'a> {
    Model(&'a Model),
    /// Uniform random bf16 generated on the device (speed benchmarks); norms are 1.
    Random(u64),
}

struct DeviceLayer {
    in_norm: CudaSlice<f32>,
    qkv: CudaSlice<u16>,
    qkv_b: Option<CudaSlice<f32>>,
    o: CudaSlice<u16>,
    o_b: Option<CudaSlice<f32>>,
    post_norm: CudaSlice<f32>,
    gate_up: CudaSlice<u16>,
    gate_up_b: Option<CudaSlice<f32>>,
    down: CudaSlice<u16>,
    down_b: Option<CudaSlice<f32>>,
    k_cache: CudaSlice<f32>,
    v_cache: CudaSlice<f32>,
}

/// Per-step scratch buffers, sized for `max_tokens` tokens and `max_rows` logit rows.
struct Scratch {
    tokens: CudaSlice<u32>,
    slot: CudaSlice<u32>,
    pos: CudaSlice<u32>,
    rows: CudaSlice<u32>,
    x: CudaSlice<f32>,
    h: CudaSlice<f32>,
    qkv: CudaSlice<f32>,
    q: CudaSlice<f32>,
    att: CudaSlice<f32>,
    part: CudaSlice<f32>,
    gu: CudaSlice<f32>,
    act: CudaSlice<f32>,
    last: CudaSlice<f32>,
    logits: CudaSlice<f32>,
    ids: CudaSlice<u32>,
}

/// One piece of a step: `tokens` appended to `slot` at positions `start..`.
struct Piece<'a> {
    slot: u32,
    start: usize,
    tokens: &'a [u32],
}

/// Everything on the device; one step at a time (behind the decoder's step lock).
struct Engine {
    cfg: LlamaConfig,
    limits: LlmLimits,
    stream: Arc<CudaStream>,
    k: Arc<LlmKernels>,
    max_tokens: usize,
    max_rows: usize,
    // Owned for their addresses below.
    _embed: CudaSlice<u16>,
    _lm_head: Option<CudaSlice<u16>>,
    _norm: CudaSlice<f32>,
    _cos: CudaSlice<f32>,
    _sin: CudaSlice<f32>,
    _layers: Vec<DeviceLayer>,
    /// Every address a step refers to, taken once: no `device_ptr` call (which may record or
    /// wait on cudarc events) happens inside a graph capture.
    layout: Layout,
    s: Scratch,
    weight_bytes: u64,
    /// Whether decode steps replay CUDA graphs (`POLYLITH_CUDA_GRAPHS=0` turns them off).
    use_graphs: bool,
    graphs: HashMap<usize, SendGraph>,
}

/// A captured decode step. CUDA graphs are not internally synchronised; this one is only
/// touched under the decoder's step lock, which is the external serialisation the CUDA
/// documentation asks for, so moving it between threads is sound.
struct SendGraph(CudaGraph);
// SAFETY: see the type's comment: all access is serialised by the engine's mutex.
unsafe impl Send for SendGraph {}

fn opt_addr(b: &Option<CudaSlice<f32>>, s: &CudaStream) -> u64 {
    b.as_ref().map_or(0, |b| addr(b, s))
}

impl Engine {
    fn build(
        ordinal: usize,
        cfg: LlamaConfig,
        src: Source<'_>,
        limits: LlmLimits,
    ) -> Result<Self, CudaError> {
        check_shapes(&cfg, &limits)?;
        let (ctx, k, _) = open(ordinal)?;
        let stream = ctx.new_stream()?;
        let (h, inter, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let (q, kv) = (nh * hd, nkv * hd);
        let (layers_n, slots, positions) = (
            cfg.num_hidden_layers,
            limits.max_sequences,
            limits.max_positions,
        );
        let max_tokens = MAX_STEP_TOKENS.max(slots);
        let max_rows = slots.max(1);

        // Refuse before allocating if it cannot fit.
        let per_layer_w = (q + 2 * kv) * h + h * q + 2 * inter * h + h * inter;
        let lm = if cfg.tie_word_embeddings { 0 } else { v * h };
        let weight_elems = v * h + lm + layers_n * per_layer_w;
        let kv_elems = 2 * layers_n * slots * nkv * positions * hd;
        let sizes = ScratchSizes::new(&cfg, max_tokens, max_rows, positions);
        let need = 2 * weight_elems + 4 * kv_elems + sizes.bytes();
        let (free, _) = ctx.mem_get_info()?;
        if need > free {
            return Err(CudaError::TooLarge(format!(
                "the model needs {} MiB of device memory (weights {} MiB, KV cache {} MiB for {slots} × {positions} positions), {} MiB free",
                need >> 20,
                (2 * weight_elems) >> 20,
                (4 * kv_elems) >> 20,
                free >> 20
            )));
        }

        let mut seed_ctr = 0u64;
        let upload_mat = |names: &[String],
                          rows: usize,
                          cols: usize,
                          seed_ctr: &mut u64|
         -> Result<CudaSlice<u16>, CudaError> {
            match &src {
                Source::Model(m) => {
                    let mut bits = Vec::with_capacity(rows * cols);
                    for n in names {
                        bits.extend(tensor_f32(m, n)?.into_iter().map(bf16_bits));
                    }
                    if bits.len() != rows * cols {
                        return Err(CudaError::UnsupportedModel(format!(
                            "{names:?}: {} values, expected {rows}×{cols}",
                            bits.len()
                        )));
                    }
                    Ok(stream.clone_htod(&bits)?)
                }
                Source::Random(seed) => {
                    *seed_ctr += 1;
                    let n = (rows * cols) as u64;
                    // SAFETY: the fill kernel writes all n elements.
                    let buf = unsafe { stream.alloc::<u16>(rows * cols) }?;
                    let (a, sd, scale) = (
                        addr(&buf, &stream),
                        seed ^ seed_ctr.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        1.0f32 / (cols as f32).sqrt(),
                    );
                    let mut b = stream.launch_builder(&k.fill);
                    b.arg(&a).arg(&n).arg(&sd).arg(&scale);
                    // SAFETY: pl_llm_fill_random_bf16(u16*, u64, u64, float) over n elements.
                    unsafe { b.launch(lc((blocks(n, 256).min(65_535), 1, 1), 256)) }?;
                    Ok(buf)
                }
            }
        };
        let upload_vec =
            |names: &[String], len: usize, ones: bool| -> Result<CudaSlice<f32>, CudaError> {
                let vals = match &src {
                    Source::Model(m) => {
                        let mut v = Vec::with_capacity(len);
                        for n in names {
                            v.extend(tensor_f32(m, n)?);
                        }
                        v
                    }
                    Source::Random(_) => vec![if ones { 1.0 } else { 0.0 }; len],
                };
                if vals.len() != len {
                    return Err(CudaError::UnsupportedModel(format!(
                        "{names:?}: {} values, expected {len}",
                        vals.len()
                    )));
                }
                Ok(stream.clone_htod(&vals)?)
            };
        let embed = upload_mat(&["model.embed_tokens.weight".into()], v, h, &mut seed_ctr)?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(upload_mat(&["lm_head.weight".into()], v, h, &mut seed_ctr)?)
        };
        let norm = upload_vec(&["model.norm.weight".into()], h, true)?;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let p = format!("model.layers.{i}");
            let names = |parts: &[&str], suffix: &str| -> Vec<String> {
                parts.iter().map(|n| format!("{p}.{n}.{suffix}")).collect()
            };
            let qkv_n = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];
            let gu_n = ["mlp.gate_proj", "mlp.up_proj"];
            let (ab, mb) = (cfg.attention_bias, cfg.mlp_bias);
            let bias = |parts: &[&str],
                        on: bool,
                        len: usize|
             -> Result<Option<CudaSlice<f32>>, CudaError> {
                if on {
                    Ok(Some(upload_vec(&names(parts, "bias"), len, false)?))
                } else {
                    Ok(None)
                }
            };
            let kv_len = slots * nkv * positions * hd;
            let [m_qkv, m_o, m_gu, m_down] = plan::layer_matrices(&cfg, i);
            let mut mat = |(names, rows, cols): (Vec<String>, usize, usize)| {
                upload_mat(&names, rows, cols, &mut seed_ctr)
            };
            layers.push(DeviceLayer {
                in_norm: upload_vec(&[format!("{p}.input_layernorm.weight")], h, true)?,
                qkv: mat(m_qkv)?,
                qkv_b: bias(&qkv_n, ab, q + 2 * kv)?,
                o: mat(m_o)?,
                o_b: bias(&["self_attn.o_proj"], ab, h)?,
                post_norm: upload_vec(&[format!("{p}.post_attention_layernorm.weight")], h, true)?,
                gate_up: mat(m_gu)?,
                gate_up_b: bias(&gu_n, mb, 2 * inter)?,
                down: mat(m_down)?,
                down_b: bias(&["mlp.down_proj"], mb, h)?,
                // Zeroed so that a kernel bug reads zeros, never stale data of another sequence.
                k_cache: stream.alloc_zeros::<f32>(kv_len)?,
                v_cache: stream.alloc_zeros::<f32>(kv_len)?,
            });
        }
        let (cos, sin) = rope_tables(&cfg, positions);
        let (cos, sin) = (stream.clone_htod(&cos)?, stream.clone_htod(&sin)?);
        let z32 = |n: usize| stream.alloc_zeros::<f32>(n.max(1));
        let zu = |n: usize| stream.alloc_zeros::<u32>(n.max(1));
        let z = &sizes;
        let s = Scratch {
            tokens: zu(z.tokens)?,
            slot: zu(z.tokens)?,
            pos: zu(z.tokens)?,
            rows: zu(z.rows)?,
            x: z32(z.x)?,
            h: z32(z.x)?,
            qkv: z32(z.qkv)?,
            q: z32(z.q)?,
            att: z32(z.q)?,
            part: z32(z.part)?,
            gu: z32(z.gu)?,
            act: z32(z.act)?,
            last: z32(z.last)?,
            logits: z32(z.logits)?,
            ids: zu(z.rows)?,
        };
        let st = &stream;
        let sa = ScratchAddrs {
            tokens: addr(&s.tokens, st),
            slot: addr(&s.slot, st),
            pos: addr(&s.pos, st),
            rows: addr(&s.rows, st),
            x: addr(&s.x, st),
            h: addr(&s.h, st),
            qkv: addr(&s.qkv, st),
            q: addr(&s.q, st),
            att: addr(&s.att, st),
            part: addr(&s.part, st),
            gu: addr(&s.gu, st),
            act: addr(&s.act, st),
            last: addr(&s.last, st),
            logits: addr(&s.logits, st),
            ids: addr(&s.ids, st),
        };
        let layer_addrs = layers
            .iter()
            .map(|l| LayerAddrs {
                in_norm: addr(&l.in_norm, st),
                qkv: addr(&l.qkv, st),
                qkv_b: opt_addr(&l.qkv_b, st),
                o: addr(&l.o, st),
                o_b: opt_addr(&l.o_b, st),
                post_norm: addr(&l.post_norm, st),
                gate_up: addr(&l.gate_up, st),
                gate_up_b: opt_addr(&l.gate_up_b, st),
                down: addr(&l.down, st),
                down_b: opt_addr(&l.down_b, st),
                k_cache: addr(&l.k_cache, st),
                v_cache: addr(&l.v_cache, st),
            })
            .collect();
        // Bytes one decode step reads: every matrix once (the output head included, the
        // embedding only by rows) plus the norms.
        let head = if cfg.tie_word_embeddings { v * h } else { 0 };
        let weight_bytes =
            (2 * (lm + head + layers_n * per_layer_w) + 4 * (h + 2 * layers_n * h)) as u64;
        let embed_a = addr(&embed, st);
        let layout = Layout {
            cfg: cfg.clone(),
            max_positions: positions,
            embed: embed_a,
            lm_head: lm_head.as_ref().map_or(embed_a, |l| addr(l, st)),
            norm: addr(&norm, st),
            cos: addr(&cos, st),
            sin: addr(&sin, st),
            layers: layer_addrs,
            scratch: sa,
        };
        stream.synchronize()?;
        Ok(Engine {
            layout,
            _embed: embed,
            _lm_head: lm_head,
            _norm: norm,
            _cos: cos,
            _sin: sin,
            _layers: layers,
            cfg,
            limits,
            stream,
            k,
            max_tokens,
            max_rows,
            s,
            weight_bytes,
            use_graphs: std::env::var("POLYLITH_CUDA_GRAPHS").map_or(true, |v| v != "0"),
            graphs: HashMap::new(),
        })
    }

    /// Runs one forward step over `pieces` (distinct or consecutive positions of their slots)
    /// and leaves the logits after each piece's last token in rows `0..pieces.len()` of
    /// `s.logits`.
    fn forward(&mut self, pieces: &[Piece<'_>]) -> Result<(), CudaError> {
        let t: usize = pieces.iter().map(|p| p.tokens.len()).sum();
        let r = pieces.len();
        if t == 0 || t > self.max_tokens || r > self.max_rows {
            return Err(CudaError::InvalidInput(format!(
                "step of {t} tokens in {r} pieces (limits {} tokens, {} pieces)",
                self.max_tokens, self.max_rows
            )));
        }
        for p in pieces {
            let end = p.start + p.tokens.len();
            if end > self.limits.max_positions || p.slot as usize >= self.limits.max_sequences {
                return Err(CudaError::LimitExceeded(format!(
                    "sequence would reach {end} positions (limit {})",
                    self.limits.max_positions
                )));
            }
            if let Some(&bad) = p
                .tokens
                .iter()
                .find(|&&id| id as usize >= self.cfg.vocab_size)
            {
                return Err(CudaError::InvalidInput(format!(
                    "token id {bad} outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        let StepInputs {
            tokens,
            slot,
            pos,
            rows,
            longest,
        } = StepInputs::new(pieces.iter().map(|p| (p.slot, p.start, p.tokens)));
        let st = self.stream.clone();
        st.memcpy_htod(&tokens, &mut self.s.tokens.slice_mut(0..t))?;
        st.memcpy_htod(&slot, &mut self.s.slot.slice_mut(0..t))?;
        st.memcpy_htod(&pos, &mut self.s.pos.slice_mut(0..t))?;
        st.memcpy_htod(&rows, &mut self.s.rows.slice_mut(0..r))?;
        let decode_only = pieces.iter().all(|p| p.tokens.len() == 1);
        if decode_only && self.use_graphs {
            return self.replay(t);
        }
        self.launch_all(t, r, longest.div_ceil(ATTN_SPLIT))
    }

    /// Replays (capturing it on first use) the decode step of `t` single-token sequences. The
    /// graph is keyed by `t` alone: every argument is a fixed device address or a size fixed
    /// for that `t`, the per-step data (tokens, slots, positions) is in device buffers
    /// uploaded before the launch, and attention always runs the maximal number of splits
    /// (splits past a sequence's length exit at once and weigh nothing in the merge). A failed
    /// capture turns graphs off for this decoder and falls back to plain launches.
    fn replay(&mut self, t: usize) -> Result<(), CudaError> {
        if !self.graphs.contains_key(&t) {
            let splits = self.limits.max_positions.div_ceil(ATTN_SPLIT);
            let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
            self.stream.begin_capture(mode)?;
            let launched = self.launch_all(t, t, splits);
            // Always end the capture, even after a failed launch, so the stream is usable.
            let ended = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
            match (launched, ended) {
                (Ok(()), Ok(Some(g))) => {
                    self.graphs.insert(t, SendGraph(g));
                }
                (launched, ended) => {
                    tracing::warn!(
                        ?launched,
                        ended = ?ended.map(|g| g.is_some()),
                        "CUDA graph capture of the decode step failed; using plain launches"
                    );
                    self.use_graphs = false;
                    return self.launch_all(t, t, splits);
                }
            }
        }
        match self.graphs.get(&t) {
            Some(g) => Ok(g.0.launch()?),
            None => Err(CudaError::Driver("captured graph missing".into())),
        }
    }

    /// Launches every kernel of one step over the `t` tokens and `r` logit rows already in
    /// the step buffers, attention over `splits` splits. Touches no host memory and makes no
    /// synchronising call, so it can be captured into a graph.
    fn launch_all(&self, t: usize, r: usize, splits: usize) -> Result<(), CudaError> {
        execute(
            &self.k,
            &self.stream,
            &plan::step(&self.layout, t, r, splits),
        )
    }

    /// Copies the first `r` logit rows back.
    fn read_logits(&self, r: usize) -> Result<Vec<Vec<f32>>, CudaError> {
        let v = self.cfg.vocab_size;
        let all = self.stream.clone_dtoh(&self.s.logits.slice(0..r * v))?;
        Ok(all.chunks(v).map(|c| c.to_vec()).collect())
    }

    /// Device argmax of the first `r` logit rows (only the ids are copied back).
    fn argmax(&self, r: usize) -> Result<Vec<u32>, CudaError> {
        let s = &self.stream;
        let sa = &self.layout.scratch;
        let (l, o, v) = (sa.logits, sa.ids, self.cfg.vocab_size as u32);
        let mut b = s.launch_builder(&self.k.argmax);
        b.arg(&l).arg(&o).arg(&v);
        // SAFETY: pl_llm_argmax over r ≤ max_rows rows; ids holds max_rows.
        unsafe { b.launch(lc((r as u32, 1, 1), 256)) }?;
        Ok(s.clone_dtoh(&self.s.ids.slice(0..r))?)
    }
}

fn tensor_f32(m: &Model, name: &str) -> Result<Vec<f32>, CudaError> {
    let read = || -> polylith_model::Result<Vec<f32>> {
        Ok(m.weights().get(name)?.flatten_all()?.to_vec1::<f32>()?)
    };
    read().map_err(|e| CudaError::UnsupportedModel(format!("{name}: {e}")))
}

/// A queued feed of one sequence, answered by whichever caller runs the step.
struct Pending {
    slot: u32,
    start: usize,
    tokens: Vec<u32>,
    reply: mpsc::SyncSender<Result<Vec<f32>, CudaError>>,
}

/// The CPU model with exactly the engine's weights: every matrix rounded to bf16 (as uploaded),
/// norm weights kept in f32 (`Model::rounded` would round the norms too). The engine's twin
/// tests compare against it, so that only summation order separates the two.
pub fn cpu_twin(model: &Model) -> Result<Model, ModelError> {
    use candle_core::DType;
    let mut tensors = HashMap::new();
    for (name, t) in model.weights().tensors() {
        let t = if name.ends_with("norm.weight") {
            t.clone()
        } else {
            t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?
        };
        tensors.insert(name.clone(), t);
    }
    let w = polylith_model::Weights::from_tensors(model.config().clone(), tensors)?;
    Model::from_weights(
        format!("{}-bf16-twin", model.name()),
        w,
        model.tokenizer().clone(),
    )
}

/// A Llama decoder on one GPU. `Send + Sync`: share it (e.g. in an `Arc`) between request
/// threads; each request opens its own [`Sequence`] with [`Decoder::new_sequence`].
pub struct CudaDecoder {
    engine: Mutex<Engine>,
    queue: Mutex<VecDeque<Pending>>,
    free: Mutex<Vec<u32>>,
    cfg: LlamaConfig,
    limits: LlmLimits,
    device: String,
    weight_bytes: u64,
    max_tokens: usize,
    max_rows: usize,
}

impl std::fmt::Debug for CudaDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDecoder")
            .field("device", &self.device)
            .field("limits", &self.limits)
            .finish()
    }
}

impl CudaDecoder {
    /// Uploads `model`'s weights (as bf16) to device `ordinal` and allocates a KV cache for
    /// `limits`. Fails with a typed error (never a panic) without a driver, NVRTC or device,
    /// when the model's shapes do not suit the kernels, or when it does not fit in memory.
    pub fn new(ordinal: usize, model: &Model, limits: LlmLimits) -> Result<Self, CudaError> {
        let cfg = model.config().clone();
        Self::from_engine(Engine::build(ordinal, cfg, Source::Model(model), limits)?)
    }

    /// A model of architecture `cfg` with random bf16 weights generated on the device (norms
    /// 1, biases 0): speed benchmarks of large shapes without materialising them on the host.
    pub fn synthetic(
        ordinal: usize,
        cfg: &LlamaConfig,
        seed: u64,
        limits: LlmLimits,
    ) -> Result<Self, CudaError> {
        Self::from_engine(Engine::build(
            ordinal,
            cfg.clone(),
            Source::Random(seed),
            limits,
        )?)
    }

    fn from_engine(e: Engine) -> Result<Self, CudaError> {
        let device = e
            .stream
            .context()
            .name()
            .unwrap_or_else(|_| "unknown".into());
        Ok(CudaDecoder {
            cfg: e.cfg.clone(),
            limits: e.limits,
            weight_bytes: e.weight_bytes,
            max_tokens: e.max_tokens,
            max_rows: e.max_rows,
            // Slots are handed out lowest first.
            free: Mutex::new((0..e.limits.max_sequences as u32).rev().collect()),
            queue: Mutex::new(VecDeque::new()),
            engine: Mutex::new(e),
            device,
        })
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.device
    }

    /// The architecture served.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The configured limits.
    pub fn limits(&self) -> LlmLimits {
        self.limits
    }

    /// Sequences open now.
    pub fn active_sequences(&self) -> usize {
        self.limits.max_sequences - self.free.lock().len()
    }

    /// Turns CUDA-graph replay of decode steps on or off (on by default unless the environment
    /// sets `POLYLITH_CUDA_GRAPHS=0`; a failed capture turns it off by itself).
    pub fn set_cuda_graphs(&self, on: bool) {
        let mut e = self.engine.lock();
        e.use_graphs = on;
        if !on {
            e.graphs.clear();
        }
    }

    /// Whether decode steps replay CUDA graphs.
    pub fn cuda_graphs(&self) -> bool {
        self.engine.lock().use_graphs
    }

    /// Weight bytes one decode step reads from device memory (the bandwidth floor's numerator).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    fn take_slot(&self) -> Result<u32, CudaError> {
        self.free.lock().pop().ok_or_else(|| {
            CudaError::LimitExceeded(format!(
                "all {} sequence slots are busy",
                self.limits.max_sequences
            ))
        })
    }

    fn check_feed(&self, start: usize, tokens: &[u32]) -> Result<(), CudaError> {
        if tokens.is_empty() {
            return Err(CudaError::InvalidInput("no tokens to run".into()));
        }
        if start + tokens.len() > self.limits.max_positions {
            return Err(CudaError::LimitExceeded(format!(
                "sequence of {} tokens exceeds the KV cache's {} positions",
                start + tokens.len(),
                self.limits.max_positions
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(CudaError::InvalidInput(format!(
                "token id {bad} outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Pops what the next step runs: queued feeds in order while they fit one step; a feed
    /// longer than a step goes alone (it is chunked).
    fn take_batch(&self) -> Vec<Pending> {
        let mut q = self.queue.lock();
        let mut out = Vec::new();
        let mut tokens = 0;
        while let Some(front) = q.front() {
            let n = front.tokens.len();
            if out.is_empty() && n > self.max_tokens {
                out.extend(q.pop_front());
                break;
            }
            if tokens + n > self.max_tokens || out.len() == self.max_rows {
                break;
            }
            tokens += n;
            out.extend(q.pop_front());
        }
        out
    }

    /// Runs `batch` (one step, or the chunks of one long feed) and returns each feed's logits.
    fn run(&self, eng: &mut Engine, batch: &[Pending]) -> Result<Vec<Vec<f32>>, CudaError> {
        if let [one] = batch
            && one.tokens.len() > self.max_tokens
        {
            let mut start = one.start;
            let mut last = Vec::new();
            for chunk in one.tokens.chunks(self.max_tokens) {
                eng.forward(&[Piece {
                    slot: one.slot,
                    start,
                    tokens: chunk,
                }])?;
                start += chunk.len();
                last = eng.read_logits(1)?;
            }
            return Ok(last);
        }
        let pieces: Vec<Piece<'_>> = batch
            .iter()
            .map(|p| Piece {
                slot: p.slot,
                start: p.start,
                tokens: &p.tokens,
            })
            .collect();
        eng.forward(&pieces)?;
        eng.read_logits(batch.len())
    }

    /// Queues a feed and returns its logits once some caller (maybe this one) has run it.
    fn submit(&self, slot: u32, start: usize, tokens: &[u32]) -> Result<Vec<f32>, CudaError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.queue.lock().push_back(Pending {
            slot,
            start,
            tokens: tokens.to_vec(),
            reply: tx,
        });
        loop {
            // The step lock: its holder runs everything queued, so feeds that arrive while a
            // step is running are batched into the next one.
            let mut eng = self.engine.lock();
            match rx.try_recv() {
                Ok(r) => return r,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(CudaError::Driver("a batched step was abandoned".into()));
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let batch = self.take_batch();
            if batch.is_empty() {
                // Unreachable while our feed is neither answered nor queued; never spin.
                return Err(CudaError::Driver("feed lost from the batch queue".into()));
            }
            match self.run(&mut eng, &batch) {
                Ok(rows) => {
                    for (p, row) in batch.into_iter().zip(rows) {
                        let _ = p.reply.send(Ok(row));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for p in batch {
                        let _ = p.reply.send(Err(CudaError::Driver(msg.clone())));
                    }
                }
            }
        }
    }

    /// A batch of `n` sequences driven in lock-step (benchmarks; greedy decode on the device).
    pub fn new_batch(&self, n: usize) -> Result<CudaBatch<'_>, CudaError> {
        if n == 0 || n > self.max_rows {
            return Err(CudaError::InvalidInput(format!(
                "batch of {n} (1..={} sequences)",
                self.max_rows
            )));
        }
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            match self.take_slot() {
                Ok(s) => slots.push(s),
                Err(e) => {
                    self.free.lock().extend(slots);
                    return Err(e);
                }
            }
        }
        Ok(CudaBatch {
            dec: self,
            lens: vec![0; n],
            slots,
        })
    }

    /// Measured device-to-device copy bandwidth in bytes/s (read + write counted), median of 5
    /// copies of up to 512 MiB after 2 warm-up copies: the bandwidth floor's denominator.
    pub fn copy_bandwidth(&self) -> Result<f64, CudaError> {
        let eng = self.engine.lock();
        let s = &eng.stream;
        let (free, _) = s.context().mem_get_info()?;
        let bytes = (512usize << 20).min(free / 4) & !255;
        if bytes < (1 << 20) {
            return Err(CudaError::TooLarge(
                "less than 4 MiB of device memory free".into(),
            ));
        }
        let a = s.alloc_zeros::<u8>(bytes)?;
        let mut b = s.alloc_zeros::<u8>(bytes)?;
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (e0, e1) = (
            s.context().new_event(timing)?,
            s.context().new_event(timing)?,
        );
        let mut times = Vec::new();
        for i in 0..7 {
            e0.record(s)?;
            s.memcpy_dtod(&a, &mut b)?;
            e1.record(s)?;
            e1.synchronize()?;
            if i >= 2 {
                times.push(e0.elapsed_ms(&e1)? as f64 * 1e-3);
            }
        }
        times.sort_by(|x, y| x.total_cmp(y));
        Ok(2.0 * bytes as f64 / times[times.len() / 2])
    }
}

/// `n` sequences stepped together; see [`CudaDecoder::new_batch`]. Releases its slots on drop.
pub struct CudaBatch<'a> {
    dec: &'a CudaDecoder,
    slots: Vec<u32>,
    lens: Vec<usize>,
}

impl std::fmt::Debug for CudaBatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBatch")
            .field("lens", &self.lens)
            .finish()
    }
}

impl CudaBatch<'_> {
    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Never true (a batch has at least one sequence); for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Positions fed so far, per sequence.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Feeds `prompts[i]` to sequence i (packed into as few steps as fit) and returns the
    /// logits after each prompt's last token.
    pub fn prefill(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, CudaError> {
        if prompts.len() != self.slots.len() {
            return Err(CudaError::InvalidInput(format!(
                "{} prompts for a batch of {}",
                prompts.len(),
                self.slots.len()
            )));
        }
        for (i, p) in prompts.iter().enumerate() {
            self.dec.check_feed(self.lens[i], p)?;
        }
        let (max_t, max_r) = (self.dec.max_tokens, self.dec.max_rows);
        // (sequence, start, chunk) in order; a step takes chunks while they fit.
        let mut chunks = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let mut start = self.lens[i];
            for c in p.chunks(max_t) {
                chunks.push((i, start, c));
                start += c.len();
            }
        }
        let mut out = vec![Vec::new(); prompts.len()];
        let mut eng = self.dec.engine.lock();
        let mut at = 0;
        while at < chunks.len() {
            let mut end = at;
            let mut tokens = 0;
            while end < chunks.len() && end - at < max_r && tokens + chunks[end].2.len() <= max_t {
                tokens += chunks[end].2.len();
                end += 1;
            }
            let pieces: Vec<Piece<'_>> = chunks[at..end]
                .iter()
                .map(|&(i, start, c)| Piece {
                    slot: self.slots[i],
                    start,
                    tokens: c,
                })
                .collect();
            eng.forward(&pieces)?;
            for (&(i, _, _), row) in chunks[at..end].iter().zip(eng.read_logits(end - at)?) {
                out[i] = row; // later chunks of the same prompt overwrite earlier ones
            }
            at = end;
        }
        for (i, p) in prompts.iter().enumerate() {
            self.lens[i] += p.len();
        }
        Ok(out)
    }

    fn decode_step(
        &mut self,
        tokens: &[u32],
    ) -> Result<parking_lot::MutexGuard<'_, Engine>, CudaError> {
        if tokens.len() != self.slots.len() {
            return Err(CudaError::InvalidInput(format!(
                "{} tokens for a batch of {}",
                tokens.len(),
                self.slots.len()
            )));
        }
        for (i, t) in tokens.iter().enumerate() {
            self.dec.check_feed(self.lens[i], std::slice::from_ref(t))?;
        }
        let pieces: Vec<Piece<'_>> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| Piece {
                slot: self.slots[i],
                start: self.lens[i],
                tokens: std::slice::from_ref(t),
            })
            .collect();
        let mut eng = self.dec.engine.lock();
        eng.forward(&pieces)?;
        for l in &mut self.lens {
            *l += 1;
        }
        Ok(eng)
    }

    /// Appends `tokens[i]` to sequence i in one batched step and returns the logits.
    pub fn decode(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, CudaError> {
        let n = self.slots.len();
        self.decode_step(tokens)?.read_logits(n)
    }

    /// As [`CudaBatch::decode`], returning each row's argmax computed on the device (greedy
    /// decode: only the ids cross the bus).
    pub fn decode_greedy(&mut self, tokens: &[u32]) -> Result<Vec<u32>, CudaError> {
        let n = self.slots.len();
        self.decode_step(tokens)?.argmax(n)
    }
}

impl Drop for CudaBatch<'_> {
    fn drop(&mut self) {
        self.dec.free.lock().extend(self.slots.drain(..));
    }
}

/// One sequence of a [`CudaDecoder`]: a KV-cache slot and its length. Releases the slot on drop.
struct CudaSequence<'a> {
    dec: &'a CudaDecoder,
    slot: u32,
    len: usize,
}

impl Sequence for CudaSequence<'_> {
    fn feed(&mut self, tokens: &[u32]) -> polylith_model::Result<Vec<f32>> {
        self.dec.check_feed(self.len, tokens)?;
        let logits = self.dec.submit(self.slot, self.len, tokens)?;
        self.len += tokens.len();
        Ok(logits)
    }
}

impl Drop for CudaSequence<'_> {
    fn drop(&mut self) {
        self.dec.free.lock().push(self.slot);
    }
}

impl Decoder for CudaDecoder {
    fn new_sequence(&self) -> polylith_model::Result<Box<dyn Sequence + '_>> {
        let slot = self.take_slot()?;
        Ok(Box::new(CudaSequence {
            dec: self,
            slot,
            len: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_conversion_rounds_to_nearest_even_and_widens_exactly() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even mantissa (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        // Just above halfway rounds up.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0 + 1.0 / 65536.0), 0x3F81);
        for v in [0.0f32, -2.5, 3.140625, 1e-3, -7e5] {
            let b = bf16_bits(v);
            assert_eq!(bf16_bits(bf16_value(b)), b, "{v}");
            assert!((bf16_value(b) - v).abs() <= v.abs() / 256.0, "{v}");
        }
    }

    #[test]
    fn rope_tables_follow_the_cpu_models_formula() {
        let cfg = polylith_model::builtin_config();
        let (cos, sin) = rope_tables(&cfg, 10);
        let half = cfg.head_dim / 2;
        assert_eq!(cos.len(), 10 * half);
        // Position 0: no rotation.
        assert!(cos[..half].iter().all(|&c| c == 1.0));
        assert!(sin[..half].iter().all(|&s| s == 0.0));
        // Position 3, frequency 0 is 1: angle 3.
        assert_eq!(cos[3 * half], 3.0f32.cos());
        // The last frequency: theta^(-(hd-2)/hd).
        let f = 1.0 / (cfg.rope_theta as f32).powf((cfg.head_dim - 2) as f32 / cfg.head_dim as f32);
        assert_eq!(sin[7 * half + half - 1], (7.0 * f).sin());
    }

    #[test]
    fn shapes_the_kernels_cannot_run_are_refused() {
        let ok = polylith_model::builtin_config();
        let limits = LlmLimits::default();
        check_shapes(&ok, &limits).expect("builtin fits");
        check_shapes(&synthetic_1b_config(), &limits).expect("synthetic fits");
        let odd = LlamaConfig {
            hidden_size: 190,
            ..ok.clone()
        };
        assert!(matches!(
            check_shapes(&odd, &limits),
            Err(CudaError::UnsupportedModel(_))
        ));
        let wide = LlamaConfig {
            head_dim: 512,
            num_attention_heads: 1,
            num_key_value_heads: 1,
            ..ok.clone()
        };
        assert!(check_shapes(&wide, &limits).is_err());
        for bad in [
            LlmLimits {
                max_sequences: 0,
                max_positions: 10,
            },
            LlmLimits {
                max_sequences: 1,
                max_positions: 0,
            },
            LlmLimits {
                max_sequences: 1,
                max_positions: ok.max_position_embeddings + 1,
            },
        ] {
            assert!(
                matches!(check_shapes(&ok, &bad), Err(CudaError::InvalidInput(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn synthetic_1b_is_about_a_billion_parameters() {
        let c = synthetic_1b_config();
        let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let q = c.num_attention_heads * c.head_dim;
        let kv = c.num_key_value_heads * c.head_dim;
        let per_layer = (q + 2 * kv) * h + h * q + 3 * i * h;
        let params = c.num_hidden_layers * per_layer + 2 * v * h;
        assert!((1.0e9..1.5e9).contains(&(params as f64)), "{params}");
    }

    #[test]
    fn engine_errors_map_to_the_models_error_kinds() {
        let m: ModelError = CudaError::LimitExceeded("full".into()).into();
        assert!(matches!(m, ModelError::InvalidInput(_)));
        let m: ModelError = CudaError::UnsupportedModel("odd".into()).into();
        assert!(matches!(m, ModelError::Unsupported(_)));
        let m: ModelError = CudaError::Driver("boom".into()).into();
        assert!(m.to_string().contains("boom"), "{m}");
    }
}
