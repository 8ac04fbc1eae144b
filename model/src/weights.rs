//! Weight sets: canonical tensor order, the seeded builtin generator, adversarial variants and the model hash.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::rng;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// A model's identity: blake3 of the canonical config JSON followed by every weight tensor's
/// f32 little-endian bytes in [`tensor_names`] order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub [u8; 32]);

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelId({self})")
    }
}

impl FromStr for ModelId {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| ModelError::InvalidInput(format!("model id {s:?}: {e}")))?;
        Ok(ModelId(out))
    }
}

impl serde::Serialize for ModelId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for ModelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The tensor names (Hugging Face naming) and shapes of a config, in canonical (hash) order.
pub fn tensor_names(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let m = cfg.intermediate_size;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
    )];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        for (name, rows) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv)] {
            out.push((format!("{p}.self_attn.{name}.weight"), vec![rows, h]));
            if cfg.attention_bias {
                out.push((format!("{p}.self_attn.{name}.bias"), vec![rows]));
            }
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        if cfg.attention_bias {
            out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
        }
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        for (name, shape) in [
            ("gate_proj", vec![m, h]),
            ("up_proj", vec![m, h]),
            ("down_proj", vec![h, m]),
        ] {
            let rows = shape[0];
            out.push((format!("{p}.mlp.{name}.weight"), shape));
            if cfg.mlp_bias {
                out.push((format!("{p}.mlp.{name}.bias"), vec![rows]));
            }
        }
    }
    out.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, h]));
    }
    out
}

/// A complete set of f32 weights for a config, keyed by Hugging Face tensor name.
#[derive(Clone)]
pub struct Weights {
    config: LlamaConfig,
    tensors: BTreeMap<String, Tensor>,
}

/// Init scale of each builtin tensor kind: uniform values with this standard deviation
/// (norm weights are instead uniform in [0.6, 1.4]).
pub const BUILTIN_STD_EMBED: f64 = 0.5;
/// Std of the builtin attention projections and MLP gate/up (≈ 1/sqrt(hidden)).
pub const BUILTIN_STD_LINEAR: f64 = 0.07;
/// Std of the builtin MLP down projection (≈ 1/sqrt(intermediate)).
pub const BUILTIN_STD_DOWN: f64 = 0.045;
/// Std of the builtin output projection; large enough that next-token distributions are peaked.
pub const BUILTIN_STD_LM_HEAD: f64 = 0.25;

/// Stream tags separating the uses of the counter-based generator.
const TAG_BUILTIN: u64 = 0x1000;
const TAG_PERTURB: u64 = 0x2000;
const TAG_OUTLIER: u64 = 0x1800;

impl Weights {
    /// Takes tensors by name (any float dtype; converted to f32), checks names and shapes against
    /// the config. Extra tensors (e.g. `rotary_emb.inv_freq`, or a tied `lm_head.weight`) are ignored.
    pub fn from_tensors(config: LlamaConfig, mut raw: HashMap<String, Tensor>) -> Result<Self> {
        config.validate()?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in tensor_names(&config) {
            let t = raw
                .remove(&name)
                .ok_or_else(|| ModelError::Weights(format!("missing tensor {name}")))?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::Weights(format!(
                    "{name}: shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            let t = match t.dtype() {
                DType::F32 => t,
                DType::BF16 | DType::F16 | DType::F64 => t.to_dtype(DType::F32)?,
                other => {
                    return Err(ModelError::Weights(format!(
                        "{name}: dtype {other:?} not supported"
                    )));
                }
            };
            tensors.insert(name, t.contiguous()?);
        }
        Ok(Weights { config, tensors })
    }

    /// The deterministic builtin weights for `config` and `seed` (see docs/model.md):
    /// element `i` of the `t`-th canonical tensor is `rng::uniform(rng::key(seed, 0x1000 + t), i)`
    /// mapped to a symmetric uniform, times 8 when `rng::uniform(rng::key(seed, 0x1800 + t), i)
    /// < 1/64` (heavy tails, as real checkpoints have: they make naive int8 visibly lossy), scaled
    /// to the kind's std; norm weights are instead uniform in [0.6, 1.4].
    pub fn generate(config: LlamaConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut tensors = BTreeMap::new();
        for (t, (name, shape)) in tensor_names(&config).into_iter().enumerate() {
            let key = rng::key(seed, TAG_BUILTIN + t as u64);
            let n: usize = shape.iter().product();
            let is_norm = name.ends_with("layernorm.weight") || name == "model.norm.weight";
            let std = if name.starts_with("model.embed_tokens") {
                BUILTIN_STD_EMBED
            } else if name.starts_with("lm_head") {
                BUILTIN_STD_LM_HEAD
            } else if name.contains("down_proj") {
                BUILTIN_STD_DOWN
            } else {
                BUILTIN_STD_LINEAR
            };
            let outlier_key = rng::key(seed, TAG_OUTLIER + t as u64);
            // Unit-std mixture: symmetric uniform, 1 in 64 values scaled by 8.
            let unit = 3f64.sqrt() / (1.0f64 + 63.0 / 64.0).sqrt();
            let data: Vec<f32> = (0..n as u64)
                .map(|i| {
                    let u = rng::uniform(key, i);
                    if is_norm {
                        (0.6 + 0.8 * u) as f32
                    } else {
                        let big = rng::uniform(outlier_key, i) < 1.0 / 64.0;
                        let scale = if big { 8.0 } else { 1.0 };
                        ((2.0 * u - 1.0) * unit * scale * std) as f32
                    }
                })
                .collect();
            tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        }
        Ok(Weights { config, tensors })
    }

    /// The config these weights belong to.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The f32 tensor with this Hugging Face name.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| ModelError::Weights(format!("missing tensor {name}")))
    }

    /// Every tensor by name (f32), e.g. to save as safetensors.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// The model id: blake3(canonical config JSON ‖ f32 LE bytes of each tensor in canonical order).
    pub fn hash(&self) -> Result<ModelId> {
        let mut h = blake3::Hasher::new();
        h.update(self.config.canonical_json().as_bytes());
        let mut buf = Vec::new();
        for (name, _) in tensor_names(&self.config) {
            let v: Vec<f32> = self.get(&name)?.flatten_all()?.to_vec1()?;
            buf.clear();
            buf.reserve(v.len() * 4);
            for x in v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            h.update(&buf);
        }
        Ok(ModelId(*h.finalize().as_bytes()))
    }

    fn map_all(
        &self,
        mut f: impl FnMut(usize, &str, &[usize], Vec<f32>) -> Vec<f32>,
    ) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for (t, (name, shape)) in tensor_names(&self.config).into_iter().enumerate() {
            let v: Vec<f32> = self.get(&name)?.flatten_all()?.to_vec1()?;
            let v = f(t, &name, &shape, v);
            tensors.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
        }
        Ok(Weights {
            config: self.config.clone(),
            tensors,
        })
    }

    /// Adversary `perturbed`: every weight times `1 + rel·n`, n a deterministic symmetric
    /// uniform of unit std drawn from `(seed, tensor index, element index)`.
    pub fn perturbed(&self, rel: f64, seed: u64) -> Result<Self> {
        self.map_all(|t, _, _, v| {
            let key = rng::key(seed, TAG_PERTURB + t as u64);
            v.into_iter()
                .enumerate()
                .map(|(i, x)| {
                    let n = (2.0 * rng::uniform(key, i as u64) - 1.0) * 3f64.sqrt();
                    (f64::from(x) * (1.0 + rel * n)) as f32
                })
                .collect()
        })
    }

    /// Adversary `quantized`: every matrix rounded to int8 with a per-row absmax scale and
    /// dequantized (vectors such as norm weights stay f32).
    pub fn quantized_int8(&self) -> Result<Self> {
        self.map_all(|_, _, shape, mut v| {
            if shape.len() == 2 {
                for row in v.chunks_mut(shape[1]) {
                    let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                    if amax > 0.0 {
                        let scale = amax / 127.0;
                        for x in row.iter_mut() {
                            *x = (*x / scale).round().clamp(-127.0, 127.0) * scale;
                        }
                    }
                }
            }
            v
        })
    }

    /// Every weight rounded to `dtype` (BF16 or F16) and back to f32: what a half-precision
    /// backend holds.
    pub fn rounded(&self, dtype: DType) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for (name, t) in &self.tensors {
            tensors.insert(name.clone(), t.to_dtype(dtype)?.to_dtype(DType::F32)?);
        }
        Ok(Weights {
            config: self.config.clone(),
            tensors,
        })
    }

    /// Adversary `truncated`: the same weights without the last `drop` layers.
    pub fn truncated(&self, drop: usize) -> Result<Self> {
        let n = self.config.num_hidden_layers;
        if drop >= n {
            return Err(ModelError::InvalidInput(format!(
                "cannot drop {drop} of {n} layers"
            )));
        }
        let mut config = self.config.clone();
        config.num_hidden_layers = n - drop;
        let mut tensors = BTreeMap::new();
        for (name, _) in tensor_names(&config) {
            tensors.insert(name.clone(), self.get(&name)?.clone());
        }
        Ok(Weights { config, tensors })
    }
}
