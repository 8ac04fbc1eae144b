//! The Llama decoder: loading, the forward pass and its KV cache.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::tokenizer::{self, Tokenizer};
use crate::weights::{ModelId, Weights};
use candle_core::{D, DType, Device, Tensor};
use std::path::Path;

/// Seed of the default builtin model.
pub const BUILTIN_SEED: u64 = 0x504F_4C59_4C49_5448; // "POLYLITH"

/// The builtin model's architecture (see docs/model.md).
pub fn builtin_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: tokenizer::BYTE_VOCAB,
        hidden_size: 192,
        intermediate_size: 512,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 48,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 512,
        tie_word_embeddings: false,
        attention_bias: false,
        mlp_bias: false,
        bos_token_id: Some(tokenizer::BYTE_BOS),
        eos_token_ids: vec![tokenizer::BYTE_EOS],
    }
}

struct Linear {
    /// Transposed weight, (in, out), contiguous so the matmul reads it row-major.
    wt: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(w: &Weights, name: &str, bias: bool) -> Result<Self> {
        let wt = w.get(&format!("{name}.weight"))?.t()?.contiguous()?;
        let bias = if bias {
            Some(w.get(&format!("{name}.bias"))?.clone())
        } else {
            None
        };
        Ok(Linear { wt, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.wt)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Per-layer keys and values of the positions already processed.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A loaded model: config, f32 weights, tokenizer and precomputed rotary tables. Cheap to share
/// across threads (`Send + Sync`); every call allocates its own state.
pub struct Model {
    name: String,
    weights: Weights,
    id: ModelId,
    tokenizer: Tokenizer,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    cos: Tensor,
    sin: Tensor,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("config", self.config())
            .finish()
    }
}

impl Model {
    /// The default subnet model: [`builtin_config`] with weights from [`BUILTIN_SEED`].
    pub fn builtin() -> Result<Self> {
        Self::builtin_with_seed(BUILTIN_SEED)
    }

    /// The builtin architecture with weights from another seed (the `wrong-model` adversary).
    pub fn builtin_with_seed(seed: u64) -> Result<Self> {
        let w = Weights::generate(builtin_config(), seed)?;
        Self::from_weights(format!("builtin-{seed:016x}"), w, Tokenizer::Bytes)
    }

    /// Loads `builtin` or a Hugging Face checkpoint directory (`config.json`, `*.safetensors`,
    /// `tokenizer.json`).
    pub fn load(spec: &str) -> Result<Self> {
        if spec == "builtin" {
            Self::builtin()
        } else {
            Self::from_dir(Path::new(spec))
        }
    }

    /// Loads a Hugging Face checkpoint directory; f32/bf16/f16 weights are converted to f32.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ModelError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let config = LlamaConfig::from_hf_json(&read(&dir.join("config.json"))?)?;
        let entries = std::fs::read_dir(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::Weights(format!(
                "no *.safetensors in {}",
                dir.display()
            )));
        }
        let mut raw = std::collections::HashMap::new();
        for f in &files {
            raw.extend(candle_core::safetensors::load(f, &Device::Cpu)?);
        }
        if config.tie_word_embeddings {
            raw.remove("lm_head.weight");
        }
        let weights = Weights::from_tensors(config, raw)?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let m = Self::from_weights(dir.display().to_string(), weights, tokenizer)?;
        tracing::info!(dir = %dir.display(), shards = files.len(), id = %m.hash(), "model loaded");
        Ok(m)
    }

    /// Builds a model from weights and a tokenizer (also how adversarial variants are made).
    pub fn from_weights(name: String, weights: Weights, tokenizer: Tokenizer) -> Result<Self> {
        let cfg = weights.config().clone();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let (ab, mb) = (cfg.attention_bias, cfg.mlp_bias);
                Ok(Layer {
                    input_norm: weights.get(&format!("{p}.input_layernorm.weight"))?.clone(),
                    q: Linear::new(&weights, &format!("{p}.self_attn.q_proj"), ab)?,
                    k: Linear::new(&weights, &format!("{p}.self_attn.k_proj"), ab)?,
                    v: Linear::new(&weights, &format!("{p}.self_attn.v_proj"), ab)?,
                    o: Linear::new(&weights, &format!("{p}.self_attn.o_proj"), ab)?,
                    post_norm: weights
                        .get(&format!("{p}.post_attention_layernorm.weight"))?
                        .clone(),
                    gate: Linear::new(&weights, &format!("{p}.mlp.gate_proj"), mb)?,
                    up: Linear::new(&weights, &format!("{p}.mlp.up_proj"), mb)?,
                    down: Linear::new(&weights, &format!("{p}.mlp.down_proj"), mb)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = weights.get("model.embed_tokens.weight")?.clone();
        let lm_name = if cfg.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let lm_head = weights.get(lm_name)?.t()?.contiguous()?;
        let norm = weights.get("model.norm.weight")?.clone();
        let (cos, sin) = rope_tables(&cfg)?;
        let id = weights.hash()?;
        Ok(Model {
            name,
            weights,
            id,
            tokenizer,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
        })
    }

    /// A human-readable name (`builtin-…` or the checkpoint path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        self.weights.config()
    }

    /// The weights (f32), e.g. to derive an adversarial variant.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model id (blake3 of canonical config and weights).
    pub fn hash(&self) -> ModelId {
        self.id
    }

    /// Ids that end generation.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.config().eos_token_ids
    }

    /// Prompt text → ids: BOS (if the model has one) followed by the text's tokens.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.config().bos_token_id.into_iter().collect();
        ids.extend(self.tokenizer.encode(text)?);
        Ok(ids)
    }

    /// Same weights and tokenizer, a different config/weights (used by the variant helpers).
    fn variant(&self, suffix: &str, w: Weights) -> Result<Self> {
        Self::from_weights(format!("{}+{suffix}", self.name), w, self.tokenizer.clone())
    }

    /// Adversary `perturbed`: weights × (1 + rel·noise), deterministic from `seed`.
    pub fn perturbed(&self, rel: f64, seed: u64) -> Result<Self> {
        self.variant("perturbed", self.weights.perturbed(rel, seed)?)
    }

    /// Adversary `truncated`: skips the last layer.
    pub fn truncated(&self) -> Result<Self> {
        self.variant("truncated", self.weights.truncated(1)?)
    }

    /// Adversary `quantized`: int8 per-row absmax weights.
    pub fn quantized_int8(&self) -> Result<Self> {
        self.variant("int8", self.weights.quantized_int8()?)
    }

    /// The weights rounded to bf16 or f16 (an honest half-precision backend's weights).
    pub fn rounded(&self, dtype: DType) -> Result<Self> {
        self.variant(&format!("{dtype:?}"), self.weights.rounded(dtype)?)
    }

    /// Runs `tokens` after the cached positions and returns their logits, shape (len, vocab).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let cfg = self.config();
        let start = cache.len;
        let n = tokens.len();
        if n == 0 {
            return Err(ModelError::InvalidInput("no tokens to run".into()));
        }
        if start + n > cfg.max_position_embeddings {
            return Err(ModelError::InvalidInput(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                start + n,
                cfg.max_position_embeddings
            )));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} outside the vocabulary of {}",
                cfg.vocab_size
            )));
        }
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let cos = self.cos.narrow(0, start, n)?;
        let sin = self.sin.narrow(0, start, n)?;
        let total = start + n;
        let mask = causal_mask(n, start)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let fresh = cache.layers.is_empty();
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.input_norm, cfg.rms_norm_eps)?;
            let q = heads(&layer.q.forward(&h)?, n, nh, hd)?;
            let k = heads(&layer.k.forward(&h)?, n, nkv, hd)?;
            let v = heads(&layer.v.forward(&h)?, n, nkv, hd)?;
            let q = rope(&q, &cos, &sin)?;
            let k = rope(&k, &cos, &sin)?;
            let (k, v) = if fresh {
                cache.layers.push((k.clone(), v.clone()));
                (k, v)
            } else {
                let (pk, pv) = &cache.layers[li];
                let k = Tensor::cat(&[pk, &k], 1)?;
                let v = Tensor::cat(&[pv, &v], 1)?;
                cache.layers[li] = (k.clone(), v.clone());
                (k, v)
            };
            let rep = nh / nkv;
            let k = repeat_kv(&k, rep, total)?;
            let v = repeat_kv(&v, rep, total)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
            let scores = match &mask {
                Some(m) => scores.broadcast_add(m)?,
                None => scores,
            };
            let probs = softmax_last(&scores)?;
            let att = probs.matmul(&v)?; // (nh, n, hd)
            let att = att.transpose(0, 1)?.contiguous()?.reshape((n, nh * hd))?;
            x = (x + layer.o.forward(&att)?)?;
            let h = rms_norm(&x, &layer.post_norm, cfg.rms_norm_eps)?;
            let g = layer.gate.forward(&h)?.silu()?;
            let u = layer.up.forward(&h)?;
            x = (x + layer.down.forward(&(g * u)?)?)?;
        }
        cache.len = total;
        let x = rms_norm(&x, &self.norm, cfg.rms_norm_eps)?;
        Ok(x.matmul(&self.lm_head)?)
    }

    /// Logits of every position of `tokens` from an empty cache, one row per token.
    pub fn logits(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = KvCache::default();
        Ok(self.forward(tokens, &mut cache)?.to_vec2()?)
    }
}

/// (n, heads·hd) → (heads, n, hd).
fn heads(x: &Tensor, n: usize, h: usize, hd: usize) -> Result<Tensor> {
    Ok(x.reshape((n, h, hd))?.transpose(0, 1)?.contiguous()?)
}

/// (nkv, T, hd) → (nkv·rep, T, hd), query head i reading kv head i / rep (as HF's repeat_kv).
fn repeat_kv(x: &Tensor, rep: usize, t: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (nkv, _, hd) = x.dims3()?;
    Ok(x.unsqueeze(1)?
        .expand((nkv, rep, t, hd))?
        .contiguous()?
        .reshape((nkv * rep, t, hd))?)
}

/// x · rsqrt(mean(x²) + eps) · weight, over the last dimension.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
}

fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    Ok(e.broadcast_div(&s)?)
}

/// Additive mask (n, start+n): query i (absolute position start+i) sees keys 0..=start+i.
fn causal_mask(n: usize, start: usize) -> Result<Option<Tensor>> {
    if n == 1 {
        return Ok(None);
    }
    let t = start + n;
    let data: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..t).map(move |j| {
                if j <= start + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(data, (n, t), &Device::Cpu)?))
}

/// cos/sin tables (max_pos, head_dim) in HF's layout: the half-size frequency table repeated twice.
fn rope_tables(cfg: &LlamaConfig) -> Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim;
    // As transformers: inv_freq = 1 / theta^(arange(0, d, 2) / d) in f32, angle = pos · inv_freq in f32.
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / hd as f32))
        .collect();
    let mut cos = Vec::with_capacity(cfg.max_position_embeddings * hd);
    let mut sin = Vec::with_capacity(cfg.max_position_embeddings * hd);
    for p in 0..cfg.max_position_embeddings {
        for _ in 0..2 {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    let shape = (cfg.max_position_embeddings, hd);
    Ok((
        Tensor::from_vec(cos, shape, &Device::Cpu)?,
        Tensor::from_vec(sin, shape, &Device::Cpu)?,
    ))
}

/// x·cos + rotate_half(x)·sin with rotate_half(x) = cat(-x[d/2..], x[..d/2]); x is (heads, n, hd).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?)?)
}
