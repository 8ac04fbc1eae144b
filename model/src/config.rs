//! The Llama configuration: parsed from a Hugging Face `config.json`, serialised canonically for hashing.

use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};

/// The architecture parameters the forward pass uses. Its compact JSON (field order as declared
/// here) is the "canonical config JSON" hashed into the [`crate::ModelId`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon, added to mean(x²) before the square root.
    pub rms_norm_eps: f64,
    /// Rotary base.
    pub rope_theta: f64,
    /// Longest sequence (prompt + completion) the model accepts.
    pub max_position_embeddings: usize,
    /// Whether the output projection reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v/o projections carry biases.
    pub attention_bias: bool,
    /// Whether the MLP projections carry biases.
    pub mlp_bias: bool,
    /// Beginning-of-sequence id, if the model has one.
    pub bos_token_id: Option<u32>,
    /// Ids that end generation.
    pub eos_token_ids: Vec<u32>,
}

/// The subset of a Hugging Face `LlamaConfig` JSON we read.
#[derive(Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    /// transformers ≥ 5 moves rope_theta and the scaling type here.
    rope_parameters: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    bos_token_id: Option<u32>,
    eos_token_id: Option<serde_json::Value>,
    hidden_act: Option<String>,
    rope_scaling: Option<serde_json::Value>,
    model_type: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    2048
}

impl LlamaConfig {
    /// Parses a Hugging Face `config.json` (LlamaForCausalLM) and checks it is supported.
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let hf: HfConfig =
            serde_json::from_str(json).map_err(|e| ModelError::Config(e.to_string()))?;
        if let Some(t) = &hf.model_type
            && t != "llama"
        {
            return Err(ModelError::Unsupported(format!(
                "model_type {t:?} (only \"llama\")"
            )));
        }
        if let Some(act) = &hf.hidden_act
            && act != "silu"
        {
            return Err(ModelError::Unsupported(format!(
                "hidden_act {act:?} (only \"silu\")"
            )));
        }
        if let Some(rs) = &hf.rope_scaling
            && !rs.is_null()
            && rs
                .get("rope_type")
                .or_else(|| rs.get("type"))
                .and_then(|v| v.as_str())
                != Some("default")
        {
            return Err(ModelError::Unsupported(format!("rope_scaling {rs}")));
        }
        let mut rope_theta = hf.rope_theta;
        if let Some(rp) = hf.rope_parameters.as_ref().filter(|v| !v.is_null()) {
            let kind = rp
                .get("rope_type")
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            if kind != "default" {
                return Err(ModelError::Unsupported(format!("rope_parameters {rp}")));
            }
            if let Some(t) = rp.get("rope_theta") {
                rope_theta = Some(t.as_f64().ok_or_else(|| {
                    ModelError::Config(format!("rope_parameters.rope_theta {t}"))
                })?);
            }
        }
        let eos_token_ids = match hf.eos_token_id {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Number(n)) => vec![as_id(&n)?],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    serde_json::Value::Number(n) => as_id(n),
                    other => Err(ModelError::Config(format!("eos_token_id entry {other}"))),
                })
                .collect::<Result<_>>()?,
            Some(other) => return Err(ModelError::Config(format!("eos_token_id {other}"))),
        };
        let heads = hf.num_attention_heads;
        let cfg = LlamaConfig {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size.checked_div(heads).unwrap_or(0)),
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: rope_theta.unwrap_or(10_000.0),
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
            attention_bias: hf.attention_bias,
            mlp_bias: hf.mlp_bias,
            bos_token_id: hf.bos_token_id,
            eos_token_ids,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the sizes are consistent (non-zero, heads divide, head_dim even).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ModelError::Config(m.to_string()));
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.intermediate_size == 0
            || self.num_hidden_layers == 0
            || self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || self.max_position_embeddings == 0
        {
            return bad("every size must be non-zero");
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad("num_key_value_heads must divide num_attention_heads");
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad("head_dim must be even and non-zero");
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return bad("rms_norm_eps must be finite and >= 0");
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad("rope_theta must be finite and > 1");
        }
        let v = self.vocab_size as u64;
        if self.bos_token_id.is_some_and(|b| u64::from(b) >= v)
            || self.eos_token_ids.iter().any(|&e| u64::from(e) >= v)
        {
            return bad("bos/eos token id outside the vocabulary");
        }
        Ok(())
    }

    /// The canonical compact JSON hashed into the model id.
    pub fn canonical_json(&self) -> String {
        // Serialising a plain struct of numbers/bools cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn as_id(n: &serde_json::Number) -> Result<u32> {
    n.as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| ModelError::Config(format!("token id {n}")))
}
