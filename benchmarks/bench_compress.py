"""frugal compress on classical models (a random forest, a LightGBM model) and on a MiniLM text classifier.

Classical, per (dataset, model), in one run: split 50/50 (seed 0); `frugal select` fits only that model on
the first half; `frugal compress` (all techniques that apply, --tolerance, default 0.02, the dataset's
groups) searches on the second half (30% of it to calibrate distillation, 70% to evaluate). Printed: the
kept variant, its size and batch-1 latency against the original's ONNX artifact and the original
scikit-learn `.predict` (what an engineer ships by hand), and quality and worst-group quality next to each.

MiniLM (--text-data, default builtin:reviews: 12,808 film reviews, target verdict, group length; or debates):
`select` fits minilm_linear (frozen MiniLM + logistic regression) on half the texts; `compress` (tolerance
0.02, the dataset's group) searches on the other half, chains included (a pruned encoder, then int8).
Then every variant frugalml tried (kept or rejected), the fp32 torch original and the path an engineer
would build by hand (`onnxruntime.quantization.quantize_dynamic(model.onnx, out.onnx)`, default arguments,
on the same exported encoder graph, behind the same tokenizer and head, in ONNX Runtime's default session;
frugalml's ONNX variants in the session setting each records) are timed end to end (tokenize,
encode, classify) at batch 1 and batch 32 on held-out statements, torch and ONNX Runtime on the same
--threads, interleaved over --rounds rounds (medians), with accuracy, worst-group accuracy and the share of
flipped predictions on compress's evaluation rows next to each.

Usage: python benchmarks/bench_compress.py [--runs randhie:random_forest,fair:lightgbm,...] [--json out.json]
       [--no-minilm] [--text-data reviews|debates] [--threads 1] [--rounds 5]   (--runs "" skips the classical half)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

from threadpoolctl import threadpool_limits

import frugalml
from frugalml.runtime.model_dir import load_pipeline
from frugalml.data import prepare_frame, read_table
from frugalml.data.builtin import DATASETS
from frugalml.verbs.compress import compress

from timing import latency_ms  # noqa: E402  (benchmarks/timing.py, beside this script)

warnings.filterwarnings("ignore")


def run(entry: str, tolerance: float, seed: int = 0) -> dict:
    name, candidate = entry.split(":")
    spec = DATASETS.get(name)
    df, _, _ = read_table(f"builtin:{name}")
    df = df[df[spec.target].notna()].sample(frac=1.0, random_state=seed).reset_index(drop=True)
    train, held = df.iloc[: len(df) // 2], df.iloc[len(df) // 2:]
    with tempfile.TemporaryDirectory() as tmp:
        sel = Path(tmp) / "select"
        frugalml.select(train, spec.target, candidates=[candidate], folds=2, repeats=1, out=sel, seed=seed)
        t0 = time.perf_counter()
        d = compress(sel, held, spec.target, groups=list(spec.groups), out=Path(tmp) / "compress", seed=seed,
                     tolerance=tolerance).decision
        compress_s = time.perf_counter() - t0
        original, _, _ = load_pipeline(sel)
        kept = frugalml.load(Path(tmp) / "compress")
        schema = kept.schema
        rows = [prepare_frame(held.iloc[[i]], schema) for i in range(64)]
        with threadpool_limits(1):
            naive_ms = latency_ms(original.predict, rows)[0]
    cands = {c["name"]: c for c in d["candidates"]}
    orig, rec = cands["original"], cands[d["recommended"]]

    def worst_group(c):
        diffs = [e["diff_vs_best"] for e in c["groups"].values() if e.get("tested")]
        return min(diffs) if diffs else None

    return {
        "run": entry, "tolerance": tolerance, "metric": d["metric"], "kept": d["recommended"], "variants_tried": len(d["candidates"]) - 1,
        "original_quality": orig["quality"]["mean"], "kept_quality": rec["quality"]["mean"],
        "diff": rec["vs_best"]["diff_mean"], "bound": rec["vs_best"]["ci_low"], "worst_group_diff": worst_group(rec),
        "original_size_bytes": orig["cost"]["size_bytes"], "kept_size_bytes": rec["cost"]["size_bytes"],
        "size_ratio": orig["cost"]["size_bytes"] / rec["cost"]["size_bytes"],
        "original_onnx_ms_p50": orig["cost"]["latency_ms_p50"], "kept_ms_p50": rec["cost"]["latency_ms_p50"],
        "naive_sklearn_ms_p50": naive_ms, "compress_s": compress_s,
        "rejected": {n: c["rejected_because"] for n, c in cands.items() if c["rejected_because"]},
        "holds_size_bytes": {n: c["cost"]["size_bytes"] for n, c in cands.items() if c["on_par"]},
    }


def rebuild(original, chain: list[dict], calibration):
    """The variant a compress run recorded: its chain of techniques applied again to the original."""
    from frugalml.compression import TECHNIQUES, compress as compress_pipeline

    pipe = original
    for step in chain:
        pipe = compress_pipeline(pipe, TECHNIQUES.get(step["name"]).config(**step["config"]), calibration=calibration)
    return pipe


def run_minilm(dataset: str, tolerance: float, threads: int, rounds: int, seed: int = 0) -> dict:
    import numpy as np
    import torch
    from sklearn.model_selection import train_test_split

    from frugalml.compression.encoder import encoders, fp32_graph, quiet_quantizer, session_setting, with_runtime
    from frugalml.evaluation import CostConfig

    spec = DATASETS.get(dataset)
    target, group, text = spec.target, spec.groups[0], spec.text[0]
    df, _, _ = read_table(f"builtin:{dataset}")
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    train, held = df.iloc[: len(df) // 2], df.iloc[len(df) // 2:].reset_index(drop=True)
    # MiniLM costs ~10 ms a statement on a CPU: throughput on 64 rows, not the default 1,000
    cost = CostConfig(batch_large=64)
    with tempfile.TemporaryDirectory() as tmp:
        sel = Path(tmp) / "select"
        t0 = time.perf_counter()
        frugalml.select(train, target, text=[text], groups=[group], candidates=["minilm_linear"], folds=2,
                        repeats=1, seed=seed, out=sel, cost=CostConfig(batch_large=64, memory_probe=False))
        select_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        d = compress(sel, held, target, groups=[group], out=Path(tmp) / "compress", seed=seed,
                     tolerance=tolerance, cost=cost).decision
        compress_s = time.perf_counter() - t0
        original, schema, _ = load_pipeline(sel)
    # the rows compress calibrated on and evaluated on (the same split as frugalml.verbs.compress)
    X = prepare_frame(held, schema)
    y = np.asarray([schema.classes.index(v) for v in held[target]])
    cal, ev = train_test_split(np.arange(len(y)), test_size=0.7, random_state=seed, stratify=y)
    records = {c["name"]: c for c in d["candidates"]}

    models = {"fp32 torch (original)": original}
    for name, rec in records.items():
        if name == "original":
            continue
        models[name] = rebuild(original, rec["technique"]["chain"], (X.iloc[cal], y[cal]))
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, quiet_quantizer():
        (Path(tmp) / "model.onnx").write_bytes(fp32_graph(original))
        quantize_dynamic(Path(tmp) / "model.onnx", Path(tmp) / "out.onnx")  # what an engineer writes
        hand = (Path(tmp) / "out.onnx").read_bytes()
    models["hand-built: ORT quantize_dynamic defaults"] = with_runtime(original, "onnx", hand)

    groups = held[group].to_numpy()[ev]
    X_ev = X.iloc[ev]
    # the hand-built path judged by the same guard as frugalml's variants
    from frugalml.compression.search import SearchConfig, compare
    from frugalml.evaluation import resolve_metric
    from frugalml.evaluation.quality import masks_of, model_outputs

    n_classes = len(schema.classes)
    metric = resolve_metric(d["metric"], schema.task, n_classes)
    masks = {g: m[ev] for g, m in masks_of({group: held[group].to_numpy()}).items()}
    records["hand-built: ORT quantize_dynamic defaults"] = compare(
        metric, y[ev], model_outputs(original, X_ev, n_classes),
        model_outputs(models["hand-built: ORT quantize_dynamic defaults"], X_ev, n_classes), masks, schema.task,
        n_classes, SearchConfig(tolerance))
    rng = np.random.default_rng(seed)
    singles = [X_ev.iloc[[i]] for i in rng.choice(len(ev), 32, replace=False)]
    order = rng.permutation(len(ev))
    batches = [X_ev.iloc[order[k * 32:(k + 1) * 32]] for k in range(4)]
    stats = {}
    torch.set_num_threads(threads)
    with threadpool_limits(threads):  # torch, BLAS and the encoders' ONNX Runtime sessions (they follow torch)
        ref = original.predict(X_ev)
        for name, pipe in models.items():
            pred = pipe.predict(X_ev)  # also warms up: sessions built, int8 torch model quantized
            acc_g = {g: float(np.mean(pred[groups == g] == y[ev][groups == g])) for g in np.unique(groups)}
            found = encoders(pipe)  # none in a distilled TF-IDF student
            enc = found[0][1] if found else None
            size = (None if enc is None else enc.onnx_graph_.size if enc.runtime == "onnx" else
                    (enc.frugal_param_count() * 4 if enc.runtime == "torch" else None))
            stats[name] = {"session": session_setting(pipe),  # the ONNX Runtime setting it was timed with
                           "accuracy": float(np.mean(pred == y[ev])), "worst_group_accuracy": min(acc_g.values()),
                           "worst_group": min(acc_g, key=acc_g.get), "flip_rate": float(np.mean(pred != ref)),
                           "encoder_bytes": size, "b1_ms": [], "b32_ms": []}
        for r in range(rounds):  # interleaved: a slow moment on the shared machine hits every model alike
            names = list(models)
            rng.shuffle(names)
            for name in names:
                pipe = models[name]
                stats[name]["b1_ms"].append(latency_ms(pipe.predict, singles, calls=len(singles))[0])
                times = []
                for b in batches:
                    t0 = time.perf_counter()
                    pipe.predict(b)
                    times.append(time.perf_counter() - t0)
                stats[name]["b32_ms"].append(1e3 * float(np.median(times)))
    rows = []
    base = np.median(stats["fp32 torch (original)"]["b32_ms"])
    for name, s in stats.items():
        rec = records.get(name)
        status = ("reference" if rec is None else "kept" if name == d["recommended"] else
                  "holds" if rec["on_par"] else "rejected")
        if name.startswith("hand-built"):
            status = "not tried; would be " + ("kept" if rec["on_par"] else "rejected")
        b32 = float(np.median(s["b32_ms"]))
        rows.append({"variant": name, "status": status, "session": s["session"], "encoder_bytes": s["encoder_bytes"],
                     "b1_ms_p50": float(np.median(s["b1_ms"])), "b32_ms": b32, "b32_rows_per_s": 32e3 / b32,
                     "b32_speedup_vs_torch": base / b32, "accuracy": s["accuracy"],
                     "worst_group_accuracy": s["worst_group_accuracy"], "worst_group": s["worst_group"],
                     "flip_rate_vs_fp32": s["flip_rate"],
                     "rejected_because": rec["rejected_because"] if rec else None,
                     "b1_ms_rounds": s["b1_ms"], "b32_ms_rounds": s["b32_ms"]})
    by = {r["variant"]: r for r in rows}
    kept = by.get(d["recommended"])
    hand_row = by["hand-built: ORT quantize_dynamic defaults"]
    targets = None
    if kept is not None and d["recommended"] != "original":
        targets = {
            "kept_b32_speedup_vs_fp32_torch": float(kept["b32_speedup_vs_torch"]),
            "2x_fp32_torch_at_b32": bool(kept["b32_speedup_vs_torch"] >= 2.0),
            "quality_holds_overall_and_per_group": bool(records[d["recommended"]]["on_par"]),
            "kept_vs_hand_b32": float(hand_row["b32_ms"] / kept["b32_ms"]),
            "kept_vs_hand_b1": float(hand_row["b1_ms_p50"] / kept["b1_ms_p50"]),
            "as_fast_as_hand_built": bool(kept["b32_ms"] <= hand_row["b32_ms"] and kept["b1_ms_p50"] <= hand_row["b1_ms_p50"]),
            "hand_built_holds": bool(records["hand-built: ORT quantize_dynamic defaults"]["on_par"]),
            "equal_or_better_accuracy_than_hand_built": bool(kept["accuracy"] >= hand_row["accuracy"] and
                                                             kept["worst_group_accuracy"] >= hand_row["worst_group_accuracy"]),
        }
    return {"run": f"{dataset}:minilm_linear", "tolerance": tolerance, "threads": threads, "rounds": rounds,
            "evaluation_rows": len(ev), "kept": d["recommended"], "reason": d["reason"], "select_s": select_s,
            "compress_s": compress_s, "rows": rows, "targets": targets,
            "decision_costs": {n: {k: c["cost"].get(k) for k in ("latency_ms_p50", "throughput_rows_per_s", "size_bytes",
                                                                 "peak_memory_mb")} for n, c in records.items() if "cost" in c}}


def print_minilm(r: dict) -> None:
    print(f"\nMiniLM text classifier ({r['run']}), {r['threads']} thread(s), medians of "
          f"{r['rounds']} interleaved rounds; quality on compress's {r['evaluation_rows']} evaluation rows")
    hdr = ("variant", "status", "encoder MB", "b1 ms p50", "b32 ms", "b32 rows/s", "b32 vs torch", "accuracy",
           "worst-group acc", "flips vs fp32")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in r["rows"]:
        mb = f"{row['encoder_bytes'] / 1e6:.1f}" if row["encoder_bytes"] else "-"
        print("| " + " | ".join([
            row["variant"], row["status"], mb, f"{row['b1_ms_p50']:.1f}", f"{row['b32_ms']:.0f}",
            f"{row['b32_rows_per_s']:.0f}", f"{row['b32_speedup_vs_torch']:.2f}x", f"{row['accuracy']:.3f}",
            f"{row['worst_group_accuracy']:.3f} ({row['worst_group']})", f"{100 * row['flip_rate_vs_fp32']:.1f}%"]) + " |")
    sessions = {row["variant"]: row.get("session") for row in r["rows"]}
    print(f"\nkept: {r['kept']}, ONNX Runtime session {sessions.get(r['kept'])!r} (hand-built: "
          f"{sessions.get('hand-built: ORT quantize_dynamic defaults')!r}) ({r['reason']})")
    for row in r["rows"]:
        if row["rejected_because"]:
            print(f"  {row['variant']}: {row['rejected_because']}")
    print(f"select {r['select_s']:.0f} s, compress {r['compress_s']:.0f} s; targets: {json.dumps(r['targets'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="randhie:random_forest,randhie:lightgbm,fair:random_forest,fair:lightgbm")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--minilm", action=argparse.BooleanOptionalAction, default=True, help="the MiniLM half")
    ap.add_argument("--text-data", default="reviews", help="builtin text dataset of the MiniLM half")
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads in the MiniLM timings")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (MiniLM)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    for entry in [e for e in args.runs.split(",") if e]:
        r = run(entry, args.tolerance)
        results.append(r)
        print(json.dumps(r), flush=True)
    if results:
        print_classical(results)
    minilm = None
    if args.minilm:
        minilm = run_minilm(args.text_data, args.tolerance, args.threads, args.rounds)
        print_minilm(minilm)
    if args.json:
        args.json.write_text(json.dumps({"classical": results, "minilm": minilm} if minilm else results, indent=2))


def print_classical(results: list[dict]) -> None:
    print()
    hdr = ("run", "metric", "kept variant", "quality orig -> kept (bound)", "worst group diff", "size orig -> kept",
           "smaller", "p50 ms: sklearn / orig ONNX / kept", "vs sklearn", "vs orig ONNX", "compress s")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in results:
        wg = f"{r['worst_group_diff']:+.4f}" if r["worst_group_diff"] is not None else "-"
        print("| " + " | ".join([
            r["run"], r["metric"], r["kept"],
            f"{r['original_quality']:.4f} -> {r['kept_quality']:.4f} ({r['bound']:+.4f})", wg,
            f"{r['original_size_bytes'] / 1e3:,.0f} kB -> {r['kept_size_bytes'] / 1e3:,.0f} kB",
            f"{r['size_ratio']:.1f}x",
            f"{r['naive_sklearn_ms_p50']:.3f} / {r['original_onnx_ms_p50']:.4f} / {r['kept_ms_p50']:.4f}",
            f"{r['naive_sklearn_ms_p50'] / r['kept_ms_p50']:.0f}x", f"{r['original_onnx_ms_p50'] / r['kept_ms_p50']:.1f}x",
            f"{r['compress_s']:.0f}"]) + " |")


if __name__ == "__main__":
    main()
