#!/usr/bin/env python3
"""Converts a Llama-architecture GGUF file (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) into a
Hugging Face checkpoint directory that `--model DIR` loads: config.json, model.safetensors
(every tensor dequantized to f32) and a byte-level BPE tokenizer.json built from the GGUF
vocabulary and merges. Used to calibrate the verification tolerances on a real model
(docs/protocol.md section 8); the weights are never committed.

The dequantized weights are the reference: a Q4_1 file is a real model with real weight
statistics, only already rounded to a 4-bit grid.

Usage: python3 -m venv .venv-gguf && .venv-gguf/bin/pip install gguf numpy safetensors
       .venv-gguf/bin/python scripts/gguf_to_hf.py MODEL.gguf OUT_DIR
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file


def field(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


def unpermute(w, n_head):
    # llama.cpp's converter interleaves the rotary halves of q/k rows; undo it.
    rows = w.shape[0]
    return (
        w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    r = GGUFReader(src)
    if field(r, "general.architecture") != "llama":
        sys.exit("only llama GGUF files are supported")
    n_layer = int(field(r, "llama.block_count"))
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv"))
    hidden = int(field(r, "llama.embedding_length"))
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    per_layer = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    tensors = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape.tolist())]
        w = w.reshape(shape)
        if t.name in names:
            name = names[t.name]
        else:
            _, i, kind, _ = t.name.split(".")
            name = f"model.layers.{i}.{per_layer[kind]}.weight"
            if kind == "attn_q":
                w = unpermute(w, n_head)
            elif kind == "attn_k":
                w = unpermute(w, n_kv)
        tensors[name] = np.ascontiguousarray(w)
    tied = "lm_head.weight" not in tensors
    save_file(tensors, os.path.join(out, "model.safetensors"))
    vocab = int(field(r, "llama.vocab_size", len(field(r, "tokenizer.ggml.tokens"))))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": int(field(r, "llama.feed_forward_length")),
        "num_hidden_layers": n_layer,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": min(int(field(r, "llama.context_length")), 2048),
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    if field(r, "tokenizer.ggml.model") != "gpt2":
        sys.exit("only byte-level BPE (gpt2) tokenizers are supported")
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    special = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (tok, ty) in enumerate(zip(tokens, types))
        if ty in (3, 4)  # control, user-defined
    ]
    pre = [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": True}]
    if field(r, "tokenizer.ggml.pre") == "smollm":
        pre.insert(0, {"type": "Digits", "individual_digits": True})
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": special,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pre},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    print(f"{out}: {len(tensors)} tensors, vocab {vocab}, tied {tied}")


if __name__ == "__main__":
    main()
