//! Parity with Hugging Face transformers' LlamaForCausalLM (fixture written by
//! scripts/make_llama_fixture.py) and the f32/bf16/f16 and tied/untied loading paths.

use candle_core::{DType, Tensor};
use polylith_model::{LlamaConfig, Model, Tokenizer, Weights};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

#[derive(serde::Deserialize)]
struct Case {
    tokens: Vec<u32>,
    logits: Vec<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn logits_match_transformers() {
    let m = Model::from_dir(&fixture()).unwrap();
    let cfg = m.config();
    assert!(cfg.num_key_value_heads < cfg.num_attention_heads);
    assert!(!cfg.tie_word_embeddings);
    assert_ne!(cfg.rope_theta, 10_000.0);
    let text = std::fs::read_to_string(fixture().join("expected_logits.json")).unwrap();
    let exp: Expected = serde_json::from_str(&text).unwrap();
    assert_eq!(exp.cases.len(), 3);
    for case in &exp.cases {
        let got = m.logits(&case.tokens).unwrap();
        let d = max_diff(&got, &case.logits);
        assert!(d < 1e-4, "max |diff| {d} for {:?}", case.tokens);
    }
}

#[test]
fn kv_cache_matches_transformers_too() {
    let m = Model::from_dir(&fixture()).unwrap();
    let text = std::fs::read_to_string(fixture().join("expected_logits.json")).unwrap();
    let exp: Expected = serde_json::from_str(&text).unwrap();
    let case = &exp.cases[2];
    let mut cache = polylith_model::KvCache::default();
    let mut rows: Vec<Vec<f32>> = m
        .forward(&case.tokens[..4], &mut cache)
        .unwrap()
        .to_vec2()
        .unwrap();
    for &t in &case.tokens[4..] {
        rows.extend(
            m.forward(&[t], &mut cache)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
        );
    }
    let d = max_diff(&rows, &case.logits);
    assert!(d < 1e-4, "max |diff| {d}");
}

#[test]
fn hf_tokenizer_round_trips() {
    let m = Model::from_dir(&fixture()).unwrap();
    let ids = m.encode_prompt("the one of it").unwrap();
    assert_eq!(ids[0], 1, "BOS first");
    assert_eq!(ids.len(), 5);
    assert_eq!(m.tokenizer().decode(&ids).unwrap(), "the one of it");
    assert!(matches!(m.tokenizer(), Tokenizer::Hf(_)));
}

/// Writes the fixture's tensors in `dtype`, split over two shard files, with its config and tokenizer.
fn write_copy(dir: &Path, dtype: DType) -> Model {
    let src = Model::from_dir(&fixture()).unwrap();
    let mut a: HashMap<String, Tensor> = HashMap::new();
    let mut b: HashMap<String, Tensor> = HashMap::new();
    for (i, (name, t)) in src.weights().tensors().iter().enumerate() {
        let t = t.to_dtype(dtype).unwrap();
        if i % 2 == 0 {
            a.insert(name.clone(), t)
        } else {
            b.insert(name.clone(), t)
        };
    }
    candle_core::safetensors::save(&a, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, dir.join("model-00002-of-00002.safetensors")).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
    }
    src
}

#[test]
fn bf16_and_f16_checkpoints_load_and_compute_in_f32() {
    for dtype in [DType::BF16, DType::F16] {
        let dir = tempfile::tempdir().unwrap();
        let src = write_copy(dir.path(), dtype);
        let half = Model::from_dir(dir.path()).unwrap();
        // Exactly the f32 weights rounded to the half type.
        assert_eq!(half.hash(), src.rounded(dtype).unwrap().hash(), "{dtype:?}");
        assert_ne!(half.hash(), src.hash());
        let toks = [1, 5, 9, 17, 33, 2];
        let d = max_diff(&half.logits(&toks).unwrap(), &src.logits(&toks).unwrap());
        assert!(d > 0.0 && d < 0.1, "{dtype:?}: max |diff| {d}");
    }
}

#[test]
fn f32_sharded_checkpoint_has_the_same_hash() {
    let dir = tempfile::tempdir().unwrap();
    let src = write_copy(dir.path(), DType::F32);
    assert_eq!(Model::from_dir(dir.path()).unwrap().hash(), src.hash());
}

#[test]
fn tied_embeddings_reuse_the_embedding_matrix() {
    let mut cfg = polylith_model::builtin_config();
    cfg.tie_word_embeddings = true;
    cfg.num_hidden_layers = 1;
    let w = Weights::generate(cfg.clone(), 3).unwrap();
    let reference = Model::from_weights("tied".into(), w.clone(), Tokenizer::Bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let map: HashMap<String, Tensor> = w.tensors().clone().into_iter().collect();
    candle_core::safetensors::save(&map, dir.path().join("model.safetensors")).unwrap();
    let hf_config = serde_json::json!({
        "model_type": "llama", "hidden_act": "silu",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "num_hidden_layers": 1,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings, "tie_word_embeddings": true,
        "bos_token_id": 256, "eos_token_id": [257], "rope_scaling": null
    });
    std::fs::write(dir.path().join("config.json"), hf_config.to_string()).unwrap();
    std::fs::copy(
        fixture().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let loaded = Model::from_dir(dir.path()).unwrap();
    assert_eq!(loaded.config(), &cfg);
    assert_eq!(loaded.hash(), reference.hash());
    let toks = [256, 72, 101, 108];
    assert_eq!(
        loaded.logits(&toks).unwrap(),
        reference.logits(&toks).unwrap()
    );
}

#[test]
fn unsupported_or_broken_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Model::from_dir(dir.path()).is_err());
    let cfg = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    assert!(LlamaConfig::from_hf_json(&v.to_string()).is_err());
    v["rope_scaling"] = serde_json::Value::Null;
    v["num_key_value_heads"] = serde_json::json!(3);
    assert!(LlamaConfig::from_hf_json(&v.to_string()).is_err());
    assert!(LlamaConfig::from_hf_json("{not json").is_err());
    // Right config, weights with a wrong shape.
    std::fs::write(dir.path().join("config.json"), &cfg).unwrap();
    let mut t = HashMap::new();
    t.insert(
        "model.embed_tokens.weight".to_string(),
        Tensor::zeros((3, 3), DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    let err = Model::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("embed_tokens"), "{err}");
}
