"""frugal compress on classical models: a random forest and a LightGBM model before and after shrinking.

Per (dataset, model), in one run: split 50/50 (seed 0); `frugal select` fits only that model on the first
half; `frugal compress` (all techniques that apply, --tolerance, default 0.02, the dataset's groups) searches on the
second half (30% of it to calibrate distillation, 70% to evaluate). Printed: the kept variant, its
size and batch-1 latency against the original's ONNX artifact and the original scikit-learn `.predict`
(what an engineer ships by hand), and quality and worst-group quality next to each.
(The MiniLM part of the compress benchmark needs the text candidates, not built yet.)

Usage: python benchmarks/bench_compress.py [--runs randhie:random_forest,fair:lightgbm,...] [--json out.json]
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
from frugalml.candidates.artifact import load_pipeline
from frugalml.data import prepare_frame, read_table
from frugalml.data.builtin import DATASETS
from frugalml.workflow import compress

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
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="randhie:random_forest,randhie:lightgbm,fair:random_forest,fair:lightgbm")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    for entry in args.runs.split(","):
        r = run(entry, args.tolerance)
        results.append(r)
        print(json.dumps(r), flush=True)
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
