#!/usr/bin/env python3
"""Writes model/tests/fixtures/tiny-llama/: a tiny random LlamaForCausalLM (config.json,
model.safetensors), a word-level tokenizer.json and the logits HF transformers computes for three
token sequences (expected_logits.json). The Rust parity test loads the checkpoint and must
reproduce those logits.

The init is deliberately sharp (std 0.1, non-unit RMSNorm weights, GQA, non-default rope_theta,
untied embeddings): with HF's default std 0.02 attention is nearly uniform and rotary or
head-mapping bugs hide below the tolerance.

Usage: python3 -m venv .venv-hf && .venv-hf/bin/pip install torch transformers safetensors tokenizers
       .venv-hf/bin/python scripts/make_llama_fixture.py
"""
import json
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM

OUT = os.path.join(os.path.dirname(__file__), "..", "model", "tests", "fixtures", "tiny-llama")

WORDS = (
    "the a of and to in is it that was for on with as his they at be this from have or by one "
    "had not but what all were when we there can an your which their said if do will each about "
    "how up out them then she many some so these would other into has more her two like him see "
    "time could no make than first"
).split()


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + WORDS[:61])}
    vocab_size = 64
    assert len(vocab) <= vocab_size
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(specials)
    tok.save(os.path.join(OUT, "tokenizer.json"))

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=50000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )
    torch.manual_seed(1234)
    model = LlamaForCausalLM(cfg).eval().to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    model.save_pretrained(OUT, safe_serialization=True)
    # Keep only what the Rust loader reads.
    for extra in ("generation_config.json",):
        path = os.path.join(OUT, extra)
        if os.path.exists(path):
            os.remove(path)

    sequences = [
        [1, 3, 10, 20, 30, 5],
        [1] + [(7 * i + 4) % vocab_size for i in range(11)],
        [1] + [(13 * i + 9) % vocab_size for i in range(19)],
    ]
    out = []
    with torch.no_grad():
        for seq in sequences:
            logits = model(torch.tensor([seq])).logits[0]
            out.append({"tokens": seq, "logits": logits.tolist()})
    with open(os.path.join(OUT, "expected_logits.json"), "w") as f:
        json.dump({"transformers": __import__("transformers").__version__,
                   "torch": torch.__version__, "cases": out}, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
