#!/usr/bin/env python3
"""Hugging Face transformers eager decode speed on the shape of `polylith bench llm --model synthetic-1b`.

Builds a LlamaForCausalLM with the same config as polylith_cuda::llm::synthetic_1b_config()
(hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192, vocabulary 32000) and random bf16
weights on the GPU, then times greedy decode with a KV cache in eager mode (attn_implementation
"eager", no torch.compile, no CUDA graphs): the baseline of the issue's "≥ 3× transformers"
goal. Prints prefill tokens/s, time to first token and decode tokens/s, medians of --repeats.

Usage (on the GPU machine; needs torch and transformers):
    python3 scripts/bench_transformers.py --batch 1 --prompt-tokens 128 --tokens 64 --repeats 3
Compare with, on the same machine and GPU:
    polylith bench llm --model synthetic-1b --backend cuda --batch 1 --prompt-tokens 128 --tokens 64 --repeats 3
"""

import argparse
import statistics
import sys
import time


def synthetic_1b_config(transformers):
    return transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_id=2,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda:0")
    args = ap.parse_args()
    if args.batch < 1 or args.prompt_tokens < 1 or args.tokens < 2 or args.repeats < 1:
        sys.exit("--batch, --prompt-tokens, --repeats must be >= 1 and --tokens >= 2")

    try:
        import torch
        import transformers
    except ImportError as e:
        sys.exit(f"needs torch and transformers: {e}")
    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch")

    torch.manual_seed(0)
    cfg = synthetic_1b_config(transformers)
    cfg._attn_implementation = "eager"
    with torch.device(args.device):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator(device="cpu").manual_seed(1)
    prompt = torch.randint(3, cfg.vocab_size, (args.batch, args.prompt_tokens), generator=gen).to(args.device)

    def run():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(input_ids=prompt, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            torch.cuda.synchronize()
            prefill = time.perf_counter() - t0
            t1 = time.perf_counter()
            for _ in range(args.tokens - 1):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            torch.cuda.synchronize()
            decode = time.perf_counter() - t1
        return prefill, decode

    run()  # warm-up
    runs = [run() for _ in range(args.repeats)]
    prefill = statistics.median(r[0] for r in runs)
    decode = statistics.median(r[1] for r in runs)
    steps = args.tokens - 1
    print(
        f"transformers {transformers.__version__} eager, torch {torch.__version__}, "
        f"{torch.cuda.get_device_name(0)}, {params / 1e9:.3f} B params bf16, "
        f"batch {args.batch}, prompt {args.prompt_tokens}, {args.tokens} new tokens, median of {args.repeats}"
    )
    print(f"prefill tok/s {args.batch * args.prompt_tokens / prefill:.1f}")
    print(f"TTFT ms       {prefill * 1e3:.3f}")
    print(f"decode tok/s  {args.batch * steps / decode:.1f}")
    print(f"step ms       {decode / steps * 1e3:.3f}")


if __name__ == "__main__":
    main()
