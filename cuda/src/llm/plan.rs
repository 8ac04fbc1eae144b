//! The launch plan of one forward step: which kernels run, in what order, with which grids and
//! arguments. It is a pure function of the model's shape, the buffer addresses and the step's
//! size, so the engine executes it on the GPU and `tests/llm_emu.rs` replays the very same plan
//! through the CPU emulator of `emu/` (addresses there name host buffers).

use polylith_model::LlamaConfig;

/// Keys per attention split (flash-decoding chunk).
pub const ATTN_SPLIT: usize = 256;
/// Batch size up to which the matrix-vector kernels are used (above it, the tiled matmul).
pub const MATVEC_MAX_BATCH: usize = 8;

/// A kernel of the LLM family (`kernels/llm.cu`); the discriminant is the emulator's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `pl_llm_embed`.
    Embed = 0,
    /// `pl_llm_rmsnorm`.
    RmsNorm = 1,
    /// `pl_llm_matvec` (2..=8 tokens).
    Matvec = 2,
    /// `pl_llm_matvec1` (one token).
    Matvec1 = 3,
    /// `pl_llm_matmul`.
    Matmul = 4,
    /// `pl_llm_rope_kv`.
    RopeKv = 5,
    /// `pl_llm_attention`.
    Attention = 6,
    /// `pl_llm_attn_combine`.
    Combine = 7,
    /// `pl_llm_swiglu`.
    Swiglu = 8,
}

impl Kernel {
    /// The `extern "C"` entry point.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Embed => "pl_llm_embed",
            Kernel::RmsNorm => "pl_llm_rmsnorm",
            Kernel::Matvec => "pl_llm_matvec",
            Kernel::Matvec1 => "pl_llm_matvec1",
            Kernel::Matmul => "pl_llm_matmul",
            Kernel::RopeKv => "pl_llm_rope_kv",
            Kernel::Attention => "pl_llm_attention",
            Kernel::Combine => "pl_llm_attn_combine",
            Kernel::Swiglu => "pl_llm_swiglu",
        }
    }
}

/// One kernel argument, in the kernel's parameter order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    /// A device address (0 = null).
    Ptr(u64),
    /// `u32`.
    U32(u32),
    /// `u64`.
    U64(u64),
    /// `float`.
    F32(f32),
}

/// One kernel launch.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// Which kernel.
    pub kernel: Kernel,
    /// Grid dimensions.
    pub grid: (u32, u32, u32),
    /// Threads per block (1-D).
    pub block: u32,
    /// Arguments in parameter order.
    pub args: Vec<Arg>,
}

/// Addresses of one layer's weights and KV cache (0 = no bias).
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerAddrs {
    /// Input RMSNorm weight, f32 `[hidden]`.
    pub in_norm: u64,
    /// Fused q/k/v weight, bf16 `[(nh + 2·nkv)·hd, hidden]`.
    pub qkv: u64,
    /// Fused q/k/v bias, f32.
    pub qkv_b: u64,
    /// Output projection, bf16 `[hidden, nh·hd]`.
    pub o: u64,
    /// Output projection bias.
    pub o_b: u64,
    /// Post-attention RMSNorm weight.
    pub post_norm: u64,
    /// Fused gate/up weight, bf16 `[2·inter, hidden]` (gate rows first).
    pub gate_up: u64,
    /// Fused gate/up bias.
    pub gate_up_b: u64,
    /// Down projection, bf16 `[hidden, inter]`.
    pub down: u64,
    /// Down projection bias.
    pub down_b: u64,
    /// Key cache, f32 `[slot][nkv][max_positions][hd]`.
    pub k_cache: u64,
    /// Value cache, same layout.
    pub v_cache: u64,
}

/// Addresses of the per-step buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScratchAddrs {
    /// Token ids, u32 `[T]`.
    pub tokens: u64,
    /// Sequence slot of each token, u32 `[T]`.
    pub slot: u64,
    /// Position of each token, u32 `[T]`.
    pub pos: u64,
    /// Index of each piece's last token, u32 `[R]`.
    pub rows: u64,
    /// Residual stream, f32 `[T, hidden]`.
    pub x: u64,
    /// Normed activations, f32 `[T, hidden]`.
    pub h: u64,
    /// Fused q/k/v output, f32 `[T, (nh + 2·nkv)·hd]`.
    pub qkv: u64,
    /// Rotated queries, f32 `[T, nh·hd]`.
    pub q: u64,
    /// Attention output, f32 `[T, nh·hd]`.
    pub att: u64,
    /// Attention partials, f32 `[T, nh, splits, hd + 2]`.
    pub part: u64,
    /// Fused gate/up output, f32 `[T, 2·inter]`.
    pub gu: u64,
    /// SwiGLU output, f32 `[T, inter]`.
    pub act: u64,
    /// Final-normed last tokens, f32 `[R, hidden]`.
    pub last: u64,
    /// Logits, f32 `[R, vocab]`.
    pub logits: u64,
    /// Device argmax ids, u32 `[R]`.
    pub ids: u64,
}

/// Elements of each per-step buffer (same fields as [`ScratchAddrs`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScratchSizes {
    /// See [`ScratchAddrs::tokens`] (also `slot` and `pos`).
    pub tokens: usize,
    /// See [`ScratchAddrs::rows`] (also `ids`).
    pub rows: usize,
    /// See [`ScratchAddrs::x`] (also `h`).
    pub x: usize,
    /// See [`ScratchAddrs::qkv`].
    pub qkv: usize,
    /// See [`ScratchAddrs::q`] (also `att`).
    pub q: usize,
    /// See [`ScratchAddrs::part`].
    pub part: usize,
    /// See [`ScratchAddrs::gu`].
    pub gu: usize,
    /// See [`ScratchAddrs::act`].
    pub act: usize,
    /// See [`ScratchAddrs::last`].
    pub last: usize,
    /// See [`ScratchAddrs::logits`].
    pub logits: usize,
}

impl ScratchSizes {
    /// Buffers for steps of up to `max_tokens` tokens, `max_rows` pieces and `max_positions`
    /// positions per sequence.
    pub fn new(
        cfg: &LlamaConfig,
        max_tokens: usize,
        max_rows: usize,
        max_positions: usize,
    ) -> Self {
        let (h, inter, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let splits = max_positions.div_ceil(ATTN_SPLIT);
        ScratchSizes {
            tokens: max_tokens,
            rows: max_rows,
            x: max_tokens * h,
            qkv: max_tokens * (nh + 2 * nkv) * hd,
            q: max_tokens * nh * hd,
            part: max_tokens * nh * splits * (hd + 2),
            gu: max_tokens * 2 * inter,
            act: max_tokens * inter,
            last: max_rows * h,
            logits: max_rows * v,
        }
    }

    /// Total bytes (every buffer is 4-byte elements).
    pub fn bytes(&self) -> usize {
        4 * (3 * self.tokens
            + 2 * self.rows
            + 2 * self.x
            + self.qkv
            + 2 * self.q
            + self.part
            + self.gu
            + self.act
            + self.last
            + self.logits)
    }
}

/// The weight matrices of layer `layer` as the engine stores them: (HF tensor names
/// concatenated by rows, rows, cols), in the order qkv, o, gate_up, down.
pub fn layer_matrices(cfg: &LlamaConfig, layer: usize) -> [(Vec<String>, usize, usize); 4] {
    let p = format!("model.layers.{layer}");
    let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let names = |parts: &[&str]| -> Vec<String> {
        parts.iter().map(|n| format!("{p}.{n}.weight")).collect()
    };
    [
        (
            names(&["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            q + 2 * kv,
            h,
        ),
        (names(&["self_attn.o_proj"]), h, q),
        (names(&["mlp.gate_proj", "mlp.up_proj"]), 2 * inter, h),
        (names(&["mlp.down_proj"]), h, inter),
    ]
}

/// Everything a step's launches refer to.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The architecture.
    pub cfg: LlamaConfig,
    /// Positions per sequence slot in the KV cache.
    pub max_positions: usize,
    /// Embedding, bf16 `[vocab, hidden]`.
    pub embed: u64,
    /// Output head, bf16 `[vocab, hidden]` (the embedding when tied).
    pub lm_head: u64,
    /// Final RMSNorm weight.
    pub norm: u64,
    /// Rotary cos table, f32 `[max_positions, hd/2]`.
    pub cos: u64,
    /// Rotary sin table.
    pub sin: u64,
    /// Per layer.
    pub layers: Vec<LayerAddrs>,
    /// Per-step buffers.
    pub scratch: ScratchAddrs,
}

fn blocks(total: u64, threads: u32) -> u32 {
    total.div_ceil(threads as u64).clamp(1, 65_535 * 64) as u32
}

/// `y (t × n) = x (t × k) · wᵀ + bias + res` (bias and res may be 0; res may equal y).
#[allow(clippy::too_many_arguments)]
pub fn linear(
    out: &mut Vec<Launch>,
    x: u64,
    w: u64,
    bias: u64,
    res: u64,
    y: u64,
    t: usize,
    n: usize,
    k: usize,
) {
    use Arg::*;
    let (n32, k32) = (n as u32, k as u32);
    if t <= MATVEC_MAX_BATCH {
        out.push(Launch {
            kernel: if t == 1 {
                Kernel::Matvec1
            } else {
                Kernel::Matvec
            },
            grid: (n.div_ceil(8) as u32, 1, 1),
            block: 256,
            args: vec![
                Ptr(w),
                Ptr(x),
                Ptr(bias),
                Ptr(res),
                Ptr(y),
                U32(n32),
                U32(k32),
                U32(t as u32),
            ],
        });
    } else {
        out.push(Launch {
            kernel: Kernel::Matmul,
            grid: (n.div_ceil(64) as u32, t.div_ceil(64) as u32, 1),
            block: 256,
            args: vec![
                Ptr(x),
                Ptr(w),
                Ptr(bias),
                Ptr(res),
                Ptr(y),
                U32(t as u32),
                U32(n32),
                U32(k32),
            ],
        });
    }
}

/// Attention addresses.
#[derive(Debug, Clone, Copy)]
pub struct AttnAddrs {
    /// Rotated queries `[T, nh, hd]`.
    pub q: u64,
    /// Key cache of the layer.
    pub k: u64,
    /// Value cache of the layer.
    pub v: u64,
    /// Token slots.
    pub slot: u64,
    /// Token positions.
    pub pos: u64,
    /// Partials `[T, nh, splits, hd + 2]`.
    pub part: u64,
    /// Output `[T, nh·hd]`.
    pub out: u64,
}

/// Split attention over `splits` splits of `split_len` keys, then the merge.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    out: &mut Vec<Launch>,
    c: &LlamaConfig,
    a: &AttnAddrs,
    t: usize,
    max_pos: usize,
    split_len: usize,
    splits: usize,
) {
    use Arg::*;
    let (nh, nkv, hd) = (
        c.num_attention_heads as u32,
        c.num_key_value_heads as u32,
        c.head_dim as u32,
    );
    // As the CPU model: 1/sqrt(hd) in f64, applied as an f32 factor.
    let scale = (1.0 / (c.head_dim as f64).sqrt()) as f32;
    out.push(Launch {
        kernel: Kernel::Attention,
        grid: (t as u32, nh, splits as u32),
        block: 128,
        args: vec![
            Ptr(a.q),
            Ptr(a.k),
            Ptr(a.v),
            Ptr(a.slot),
            Ptr(a.pos),
            Ptr(a.part),
            U32(nh),
            U32(nkv),
            U32(hd),
            U32(max_pos as u32),
            U32(split_len as u32),
            F32(scale),
        ],
    });
    out.push(Launch {
        kernel: Kernel::Combine,
        grid: (t as u32 * nh, 1, 1),
        block: 128,
        args: vec![
            Ptr(a.part),
            Ptr(a.out),
            U32(nh),
            U32(hd),
            U32(splits as u32),
        ],
    });
}

/// Every launch of one step over `t` tokens and `r` logit rows already in the step buffers,
/// attention over `splits` splits: embed; per layer norm, qkv, rope+KV, attention, combine,
/// o(+residual), norm, gate/up, swiglu, down(+residual); final norm of the `r` last tokens and
/// the output head.
pub fn step(l: &Layout, t: usize, r: usize, splits: usize) -> Vec<Launch> {
    use Arg::*;
    let c = &l.cfg;
    let (h, inter, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (nh, nkv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let (q, kv) = (nh * hd, nkv * hd);
    let s = &l.scratch;
    let (h32, t32, eps) = (h as u32, t as u32, c.rms_norm_eps as f32);
    let mut out = Vec::with_capacity(3 + 10 * l.layers.len());
    out.push(Launch {
        kernel: Kernel::Embed,
        grid: (t32, 1, 1),
        block: 128,
        args: vec![
            Ptr(l.embed),
            Ptr(s.tokens),
            Ptr(s.x),
            U32(h32),
            U32(v as u32),
        ],
    });
    let norm = |out: &mut Vec<Launch>, src: u64, rows: u64, w: u64, dst: u64, n: u32| {
        out.push(Launch {
            kernel: Kernel::RmsNorm,
            grid: (n, 1, 1),
            block: 256,
            args: vec![Ptr(src), Ptr(rows), Ptr(w), Ptr(dst), U32(h32), F32(eps)],
        })
    };
    for ly in &l.layers {
        norm(&mut out, s.x, 0, ly.in_norm, s.h, t32);
        linear(&mut out, s.h, ly.qkv, ly.qkv_b, 0, s.qkv, t, q + 2 * kv, h);
        out.push(Launch {
            kernel: Kernel::RopeKv,
            grid: (t32, 1, 1),
            block: 256,
            args: vec![
                Ptr(s.qkv),
                Ptr(s.slot),
                Ptr(s.pos),
                Ptr(l.cos),
                Ptr(l.sin),
                Ptr(s.q),
                Ptr(ly.k_cache),
                Ptr(ly.v_cache),
                U32(nh as u32),
                U32(nkv as u32),
                U32(hd as u32),
                U32(l.max_positions as u32),
            ],
        });
        let a = AttnAddrs {
            q: s.q,
            k: ly.k_cache,
            v: ly.v_cache,
            slot: s.slot,
            pos: s.pos,
            part: s.part,
            out: s.att,
        };
        attention(&mut out, c, &a, t, l.max_positions, ATTN_SPLIT, splits);
        linear(&mut out, s.att, ly.o, ly.o_b, s.x, s.x, t, h, q);
        norm(&mut out, s.x, 0, ly.post_norm, s.h, t32);
        linear(
            &mut out,
            s.h,
            ly.gate_up,
            ly.gate_up_b,
            0,
            s.gu,
            t,
            2 * inter,
            h,
        );
        let total = (t * inter) as u64;
        out.push(Launch {
            kernel: Kernel::Swiglu,
            grid: (blocks(total, 256), 1, 1),
            block: 256,
            args: vec![Ptr(s.gu), Ptr(s.act), U32(inter as u32), U64(total)],
        });
        linear(&mut out, s.act, ly.down, ly.down_b, s.x, s.x, t, h, inter);
    }
    norm(&mut out, s.x, s.rows, l.norm, s.last, r as u32);
    linear(&mut out, s.last, l.lm_head, 0, 0, s.logits, r, v, h);
    out
}

/// Host-side inputs of a step built from its pieces `(slot, start, tokens)`: per-token ids,
/// slots and positions, the index of each piece's last token, and the furthest position end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepInputs {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Slot of each token.
    pub slot: Vec<u32>,
    /// Position of each token.
    pub pos: Vec<u32>,
    /// Index (in the step) of each piece's last token.
    pub rows: Vec<u32>,
    /// max(start + len) over the pieces.
    pub longest: usize,
}

impl StepInputs {
    /// Flattens `pieces` in order.
    pub fn new<'a>(pieces: impl IntoIterator<Item = (u32, usize, &'a [u32])>) -> Self {
        let mut s = StepInputs::default();
        for (slot, start, tokens) in pieces {
            for (i, &id) in tokens.iter().enumerate() {
                s.tokens.push(id);
                s.slot.push(slot);
                s.pos.push((start + i) as u32);
            }
            s.rows.push((s.tokens.len() as u32).saturating_sub(1));
            s.longest = s.longest.max(start + tokens.len());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_launches_ten_kernels_per_layer_plus_three() {
        let cfg = polylith_model::builtin_config();
        let l = Layout {
            cfg: cfg.clone(),
            max_positions: 512,
            embed: 1,
            lm_head: 2,
            norm: 3,
            cos: 4,
            sin: 5,
            layers: vec![LayerAddrs::default(); cfg.num_hidden_layers],
            scratch: ScratchAddrs::default(),
        };
        for (t, mv) in [
            (1, Kernel::Matvec1),
            (5, Kernel::Matvec),
            (40, Kernel::Matmul),
        ] {
            let p = step(&l, t, 1, 2);
            assert_eq!(p.len(), 3 + 10 * cfg.num_hidden_layers);
            assert_eq!(p[2].kernel, mv, "t = {t}");
            // The output head always runs over the r = 1 gathered rows.
            assert_eq!(p.last().map(|x| x.kernel), Some(Kernel::Matvec1));
        }
    }

    #[test]
    fn step_inputs_flatten_pieces_with_their_positions() {
        let s = StepInputs::new([(2u32, 5usize, &[7u32, 8][..]), (0, 0, &[9][..])]);
        assert_eq!(s.tokens, [7, 8, 9]);
        assert_eq!(s.slot, [2, 2, 0]);
        assert_eq!(s.pos, [5, 6, 0]);
        assert_eq!(s.rows, [1, 2]);
        assert_eq!(s.longest, 7);
    }
}
