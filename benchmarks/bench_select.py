"""frugal select against what an engineer would otherwise ship, on real datasets that install offline.

For each dataset, one run:
  1. split 75/25 (stratified for classification, fixed seed); everything below sees only the 75% part
     until the held-out scoring;
  2. frugalml select (default ladder, 5x2 folds, tolerance 0.01) -> best and recommended candidates;
  3. the naive path: the best candidate as a plain scikit-learn pipeline, `.predict` on a one-row DataFrame;
  4. the peer: FLAML AutoML with a time budget equal to the time select took, `.predict` on one row;
  5. batch-1 latency (1 thread, p50/p99 of 500 calls after warm-up) of the recommended artifact (its ONNX
     Runtime session on prepared inputs, and frugalml.load(...).predict on a DataFrame row), the naive
     best and FLAML; quality of all of them on the same held-out 25%.

Usage: python benchmarks/bench_select.py [--datasets fair,fair@0.02,randhie,...] [--json out.json] [--no-flaml]
(NAME@TOL runs with --tolerance TOL; the default is 0.01. NAME is a builtin dataset or one of the tables with
small groups in TABLES: the same public data with another group column or target.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import frugalml
from frugalml.candidates import CANDIDATES, build_pipeline
from frugalml.data import load_task, prepare_frame, read_table
from frugalml.data.builtin import DATASETS

from timing import latency_ms  # noqa: E402  (benchmarks/timing.py, beside this script)

warnings.filterwarnings("ignore")


def _poor_health(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["poor_health"] = np.where(df.pop("health") == "poor", "yes", "no")  # 1.5% of the people
    return df


# Public tables whose groups are small (5+ levels, tens to hundreds of rows), so that the underpowered case is
# measured: name -> (builtin dataset, target or None for its default, groups, transform or None).
TABLES = {
    "fair-occupation": ("fair", None, ("occupation",), None),  # 6 occupations, 41 to 2,783 rows
    "anes96-pid": ("anes96", None, ("PID",), None),  # 7 levels of party identification, 37 to 200 rows
    "randhie-poorhealth": ("randhie", "poor_health", ("lncoins",), _poor_health),  # 1.5% positives, 5 plans
}


def load_entry(name: str):
    """-> (frame, target, groups) for a builtin dataset name or a TABLES entry."""
    dataset, target, groups, transform = TABLES.get(name, (name, None, None, None))
    spec = DATASETS.get(dataset)
    df, _, _ = read_table(f"builtin:{dataset}")
    df = transform(df) if transform else df
    target = target or spec.target
    return df[df[target].notna()].reset_index(drop=True), target, list(groups or spec.groups)


def holdout(df: pd.DataFrame, target: str, kind: str, seed: int = 0):
    from sklearn.model_selection import train_test_split

    strat = df[target] if kind == "classification" else None
    return train_test_split(df, test_size=0.25, random_state=seed, stratify=strat)


def score(kind, y_true, y_pred, metric="accuracy"):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score

    if kind == "regression":
        return r2_score(y_true, y_pred)
    return (balanced_accuracy_score if metric == "balanced_accuracy" else accuracy_score)(y_true, y_pred)


def run(entry: str, seed: int = 0, flaml: bool = True) -> dict:
    name, _, tol = entry.partition("@")
    tolerance = float(tol) if tol else 0.01
    df, target, groups = load_entry(name)
    kind = load_task(df, target).kind
    train, test = holdout(df, target, kind, seed)
    X_test, y_test = test.drop(columns=[target]), test[target].to_numpy()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = frugalml.select(train, target, groups=groups, out=Path(tmp) / "run", seed=seed, tolerance=tolerance)
        select_s = time.perf_counter() - t0
        d = res.decision
        model = res.load()
        cands = {c["name"]: c for c in d["candidates"]}
        schema = model.schema

        # The naive path: the most accurate candidate as a plain scikit-learn pipeline.
        task = load_task(train, target)
        best_c = CANDIDATES.get(d["best"])
        naive = build_pipeline(best_c.build(kind, seed), task.schema, best_c.scale).fit(task.X, task.y)
        prepared_test = prepare_frame(X_test, schema)
        rows_prepared = [prepared_test.iloc[[i]] for i in range(min(64, len(test)))]
        rows_raw = [X_test.iloc[[i]] for i in range(min(64, len(test)))]

        def decode(p):
            return np.asarray(schema.classes, dtype=object)[p] if kind == "classification" else p

        with threadpool_limits(1):
            naive_lat = latency_ms(naive.predict, rows_prepared)
            api_lat = latency_ms(model.predict, rows_raw)
            if model.format == "onnx":
                session = model._predictor.session
                label = session.get_outputs()[0].name
                feeds = [model._predictor.feeds(r) for r in rows_prepared]
                art_lat = latency_ms(lambda f: session.run([label], f), feeds)
            else:
                art_lat = api_lat
        rec_q = score(kind, y_test, model.predict(X_test), d["metric"])
        best_q = score(kind, y_test, decode(naive.predict(prepared_test)), d["metric"])

    peer = (run_flaml(train, target, kind, X_test, y_test, budget=max(10, round(select_s)), seed=seed, metric=d["metric"])
            if flaml else {})
    return {
        "dataset": entry, "tolerance": tolerance, "rows": len(df), "task": kind, "metric": d["metric"], "groups": d["groups"],
        "best": d["best"], "recommended": d["recommended"], "recommended_format": model.format,
        "linear_verdict": cands["linear"]["rejected_because"] or "recommended",
        "cv_best": cands[d["best"]]["quality"]["mean"], "cv_recommended": cands[d["recommended"]]["quality"]["mean"],
        "holdout_best": best_q, "holdout_recommended": rec_q,
        "artifact_ms_p50": art_lat[0], "artifact_ms_p99": art_lat[1],
        "best_artifact_ms_p50": cands[d["best"]]["cost"]["latency_ms_p50"],
        "best_format": cands[d["best"]]["cost"]["format"],
        "api_ms_p50": api_lat[0], "api_ms_p99": api_lat[1],
        "naive_best_ms_p50": naive_lat[0], "naive_best_ms_p99": naive_lat[1],
        "speedup_p50_vs_naive_best": naive_lat[0] / art_lat[0], "speedup_p99_vs_naive_best": naive_lat[1] / art_lat[1],
        "speedup_api_p50_vs_naive_best": naive_lat[0] / api_lat[0],
        "select_s": select_s, "reason": d["reason"], "stability": (d.get("stability") or {}).get("same_recommendation"),
        "verdicts": {c["name"]: c["rejected_because"] or "recommended" for c in d["candidates"]}, **peer,
    }


def run_flaml(train, target, kind, X_test, y_test, budget, seed, metric="accuracy"):
    try:
        from flaml import AutoML
    except ImportError:
        return {"flaml": "not installed (pip install 'frugalml[bench]')"}
    X = train.drop(columns=[target])
    X_test = X_test.copy()
    for c in X.columns:  # FLAML wants pandas categories for text columns
        if not pd.api.types.is_numeric_dtype(X[c]):
            X[c] = X[c].astype(str).astype("category")
            X_test[c] = pd.Categorical(X_test[c].astype(str), categories=X[c].cat.categories)
    automl = AutoML()
    t0 = time.perf_counter()
    automl.fit(X, train[target].to_numpy(), task="classification" if kind == "classification" else "regression",
               metric="accuracy" if kind == "classification" else "r2", time_budget=budget, seed=seed, verbose=0,
               n_jobs=-1)
    fit_s = time.perf_counter() - t0
    est = getattr(automl.model, "estimator", None)
    if est is not None and "n_jobs" in getattr(est, "get_params", dict)():
        est.set_params(n_jobs=1)
    rows = [X_test.iloc[[i]] for i in range(min(64, len(X_test)))]
    with threadpool_limits(1):
        lat = latency_ms(automl.predict, rows)
    return {"flaml_model": automl.best_estimator, "flaml_s": fit_s, "flaml_budget_s": budget,
            "holdout_flaml": score(kind, y_test, automl.predict(X_test), metric),
            "flaml_ms_p50": lat[0], "flaml_ms_p99": lat[1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="fair,fair@0.02,penguins,diabetes,anes96,breast_cancer,randhie,"
                    "fair-occupation,anes96-pid,randhie-poorhealth")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-flaml", action="store_true", help="leave the peer out (decisions and latency only)")
    args = ap.parse_args()
    results = []
    for name in args.datasets.split(","):
        r = run(name, flaml=not args.no_flaml)
        results.append(r)
        print(json.dumps(r), flush=True)
    print()
    hdr = ("dataset", "metric", "best", "recommended", "stability", "held-out best", "held-out rec", "rec artifact p50/p99 ms",
           "best as ONNX p50 ms", "naive best p50/p99 ms", "speed-up p50 (p99)", "load().predict p50 ms (speed-up)", "FLAML model", "held-out FLAML", "FLAML p50/p99 ms",
           "rec vs FLAML p50", "select s", "FLAML s")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in results:
        fl = "flaml_ms_p50" in r
        print("| " + " | ".join([
            r["dataset"], r["metric"], r["best"], r["recommended"],
            f"{100 * r['stability']:.0f}%" if r.get("stability") is not None else "-", f"{r['holdout_best']:.4f}",
            f"{r['holdout_recommended']:.4f}", f"{r['artifact_ms_p50']:.4f} / {r['artifact_ms_p99']:.4f}",
            f"{r['best_artifact_ms_p50']:.4f} ({r['best_format']})",
            f"{r['naive_best_ms_p50']:.3f} / {r['naive_best_ms_p99']:.3f}",
            f"{r['speedup_p50_vs_naive_best']:.0f}x ({r['speedup_p99_vs_naive_best']:.0f}x)",
            f"{r['api_ms_p50']:.3f} ({r['speedup_api_p50_vs_naive_best']:.0f}x)",
            r.get("flaml_model", "-"), f"{r['holdout_flaml']:.4f}" if fl else "-",
            f"{r['flaml_ms_p50']:.3f} / {r['flaml_ms_p99']:.3f}" if fl else "-",
            f"{r['flaml_ms_p50'] / r['artifact_ms_p50']:.0f}x" if fl else "-",
            f"{r['select_s']:.0f}", f"{r['flaml_s']:.0f}" if fl else "-"]) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
