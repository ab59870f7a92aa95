"""Scaling frugalml's trials: the same select and compress runs on 1 and 2 local workers, a 2-worker Dask
LocalCluster and a 2-CPU local Ray; the trial store's cost per trial; every trial's duration, for
benchmarks/simulate_scale.py.

One table (default builtin:randhie, 20,190 rows, regression of doctor visits, group health):
  1. select: --candidates (default linear, decision_tree, lightgbm, hist_gradient_boosting, random_forest) on
     --folds x --repeats (5 x 2: 50 trials of 0.05 to 2.5 s) on all rows; cost_priority "size" (deterministic:
     latency noise cannot flip the recommendation between executors) and a cheap CostConfig (memory_probe off,
     tens of ms per latency measurement) so the serial cost stage does not hide the fitting stage;
     stability_draws 50.
  2. compress: a random forest that select fitted on one half of the rows (2 folds, once, not timed), compressed
     against the other half with --techniques (tree-subset, tree-depth, tree-prune, distill, onnx-trees; chains
     on), same cheap CostConfig, cost_priority "size".
Each runs under local1 (n_jobs=1, in this process), local2 (n_jobs=2, loky processes), dask2 (LocalCluster,
2 worker processes x 1 thread, 127.0.0.1, started before and closed after its runs: an "existing" cluster, its
workers cold) and ray2 (ray.init(num_cpus=2) on 127.0.0.1, executor ray:auto, shut down after its runs), store
off; then local1 again with out= (store on). Before anything is timed, a tiny select warms this process's imports.

Timed: select's fitting stage (evaluate_quality, the part that runs in parallel) and the whole run, each stage
from the progress callback; compress's settings.search_s and the whole run. Every trial (select: _fit_fold;
compress: _try_settings) is wrapped so that, wherever it runs (this process, a loky, Dask or Ray worker), it
appends its start, end and process id to a file: its duration, each worker's busy time and the gaps between a
worker's trials (dispatch and result return) come from there. The store's writes (TrialStore.save,
save_variant, save_cost) are timed in this process, where they run. Decisions are compared with local1's
(candidate names, quality, vs_best, groups, on_par, best, recommended).

Usage: python benchmarks/bench_scale.py [--json benchmarks/results_scale.json] [--quick] [--rows N]
       [--executors local1,local2,dask2,ray2] [--candidates a,b,...] [--techniques a,b,...] [--no-store]
(default: all 20,190 rows, ~5-8 minutes on 2 busy cores; --quick: 4,000 rows, 3 folds x 1 repeat, 3 candidates,
~2-3 minutes, for checking the script.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
warnings.filterwarnings("ignore")

import frugalml  # noqa: E402
import frugalml.compression.search as search_mod  # noqa: E402
import frugalml.evaluation.cost as cost_mod  # noqa: E402
import frugalml.evaluation.quality as quality  # noqa: E402
import frugalml.verbs.select as select_mod  # noqa: E402
from frugalml.data import read_table  # noqa: E402
from frugalml.data.builtin import DATASETS  # noqa: E402
from frugalml.evaluation import CostConfig  # noqa: E402
from frugalml.evaluation.trials import TrialStore  # noqa: E402

CHEAP = CostConfig(latency_calls=200, time_budget_s=0.05, native_time_budget_s=0.02, throughput_budget_s=0.2,
                   batch_large=200, memory_probe=False)
EXECUTORS = ("local1", "local2", "dask2", "ray2")

# -- per-trial timing, in whichever process runs the trial -----------------------------------------------------
_ORIG_FIT_FOLD = quality._fit_fold
_ORIG_TRY = search_mod._try_settings
_ORIG_REFIT = cost_mod.refit_deployable
TRIAL_LOG = os.environ.get("FRUGAL_BENCH_TRIAL_LOG", "")  # set in main(); pickled by value with the wrappers


def _log(rec: dict) -> None:
    with open(TRIAL_LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")


def timed_fit_fold(estimator, schema, scale, X, y, train, test, embeddings=()):
    t0, c0 = time.time(), time.process_time()
    res = _ORIG_FIT_FOLD(estimator, schema, scale, X, y, train, test, embeddings=embeddings)
    t1, c1 = time.time(), time.process_time()
    outs = res.get("outputs") or {}
    _log({"kind": "fit", "what": type(estimator).__name__, "start": t0, "end": t1, "cpu": c1 - c0, "pid": os.getpid(),
          "fit_s": res.get("fit_s"), "out_bytes": int(sum(np.asarray(v).nbytes for v in outs.values())),
          "test_rows": int(len(test))})
    return res


def timed_refit(estimator, schema, scale, X, y, seed=0, embeddings=()):
    t0, c0 = time.time(), time.process_time()
    res = _ORIG_REFIT(estimator, schema, scale, X, y, seed, embeddings)
    t1, c1 = time.time(), time.process_time()
    _log({"kind": "refit", "what": type(estimator).__name__, "start": t0, "end": t1, "cpu": c1 - c0,
          "pid": os.getpid()})
    return res


def timed_try_settings(t, source, configs, *args):
    t0, c0 = time.time(), time.process_time()
    tried = _ORIG_TRY(t, source, configs, *args)
    t1, c1 = time.time(), time.process_time()
    _log({"kind": "variant", "what": t.name, "start": t0, "end": t1, "cpu": c1 - c0, "pid": os.getpid(),
          "settings": len(configs), "tried": len(tried)})
    return tried


def cpu_pressure() -> str | None:
    """The kernel's CPU pressure line (share of time some task waited for a CPU), where there is one."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the store's writes, timed where they run (the client) -----------------------------------------------------
STORE_TIMES: dict[str, list[float]] = {"save": [], "save_variant": [], "save_cost": []}


def _timed_method(name):
    orig = getattr(TrialStore, name)

    def wrapper(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig(self, *a, **k)
        finally:
            STORE_TIMES[name].append(time.perf_counter() - t0)

    return wrapper


for _name in STORE_TIMES:
    setattr(TrialStore, _name, _timed_method(_name))

# -- the fitting stage of select, timed -------------------------------------------------------------------------
_ORIG_EVAL = select_mod.evaluate_quality
FIT_STAGE: list[float] = []


def timed_evaluate_quality(*a, **k):
    t0 = time.perf_counter()
    try:
        return _ORIG_EVAL(*a, **k)
    finally:
        FIT_STAGE.append(time.perf_counter() - t0)


select_mod.evaluate_quality = timed_evaluate_quality


class Stages:
    """A progress callback: the first and last time each stage reported."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.first, self.last, self.rounds = {}, {}, []

    def __call__(self, stage, done, total, what=""):
        now = time.perf_counter() - self.t0
        self.first.setdefault(stage, now)
        self.last[stage] = now
        if stage in ("search", "chain") and what in ("", "stored"):
            self.rounds.append(now)  # compress: a round of the search starts

    def spans(self) -> dict:
        return {s: self.last[s] - self.first[s] for s in self.first}


# -- executors --------------------------------------------------------------------------------------------------
class Executor:
    """name -> (executor string, n_jobs) while open; starts and stops what it needs."""

    def __init__(self, name: str):
        self.name, self.cluster, self.ray = name, None, None

    def __enter__(self):
        if self.name == "local1":
            return None, 1
        if self.name == "local2":
            return None, 2
        if self.name == "dask2":
            import distributed

            self.cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                                    dashboard_address=None, processes=True)
            return "dask://" + self.cluster.scheduler_address.replace("tcp://", ""), -1
        if self.name == "ray2":
            import ray

            os.environ.pop("RAY_ADDRESS", None)
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
            self.ray = ray
            return "ray:auto", -1
        raise SystemExit(f"unknown executor {self.name}")

    def __exit__(self, *exc):
        if self.cluster is not None:
            self.cluster.close()
        if self.ray is not None:
            self.ray.shutdown()


def same_decision(a: dict, b: dict) -> tuple[bool, str]:
    if [c["name"] for c in a["candidates"]] != [c["name"] for c in b["candidates"]]:
        return False, "candidate names differ"
    for x, y in zip(a["candidates"], b["candidates"]):
        for k in ("quality", "vs_best", "groups", "on_par"):
            if x.get(k) != y.get(k):
                return False, f"{x['name']}: {k} differs"
    if (a["best"], a["recommended"]) != (b["best"], b["recommended"]):
        return False, f"recommended {a['recommended']} vs {b['recommended']}"
    return True, "same"


def trial_summary(records: list[dict], t_start: float) -> dict:
    """Worker-side timeline of one run's trials: durations, busy time per worker, gaps between a worker's trials."""
    if not records:
        return {"trials": 0}
    records = sorted(records, key=lambda r: r["start"])
    by_pid: dict[int, list[dict]] = {}
    for r in records:
        by_pid.setdefault(r["pid"], []).append(r)
    gaps = [b["start"] - a["end"] for rs in by_pid.values() for a, b in zip(rs, rs[1:])]
    durations = [r["end"] - r["start"] for r in records]
    return {"trials": len(records), "workers_seen": len(by_pid), "sum_s": float(np.sum(durations)),
            "cpu_sum_s": float(sum(r["cpu"] for r in records)),
            "max_s": float(np.max(durations)),
            "first_start_s": records[0]["start"] - t_start, "last_end_s": max(r["end"] for r in records) - t_start,
            "busy_s_per_worker": [float(sum(r["end"] - r["start"] for r in rs)) for rs in by_pid.values()],
            "gap_median_s": float(np.median(gaps)) if gaps else None,
            "gap_mean_s": float(np.mean(gaps)) if gaps else None,
            "gap_p90_s": float(np.percentile(gaps, 90)) if gaps else None}


def run_select(df, target, groups, args, executor, n_jobs, out, log: Path) -> dict:
    log.unlink(missing_ok=True)
    FIT_STAGE.clear()
    for v in STORE_TIMES.values():
        v.clear()
    st = Stages()
    t_wall = time.time()
    t0 = time.perf_counter()
    res = frugalml.select(df, target, groups=groups, candidates=args.candidates, folds=args.folds,
                          repeats=args.repeats, n_jobs=n_jobs, executor=executor, out=out, cost=CHEAP,
                          cost_priority="size", stability_draws=args.stability_draws, seed=0, progress=st)
    total = time.perf_counter() - t0
    logged = read_log(log)
    trials = [r for r in logged if r["kind"] == "fit"]
    refits = [r for r in logged if r["kind"] == "refit"]
    return {"decision": res.decision, "total_s": total, "fit_stage_s": FIT_STAGE[-1], "stages_s": st.spans(),
            "stage_first_s": st.first, "timeline": trial_summary(trials, t_wall),
            "refit_timeline": trial_summary(refits, t_wall),
            "refits": [{"what": r["what"], "s": r["end"] - r["start"], "cpu_s": r["cpu"], "pid": r["pid"],
                        "start_s": r["start"] - t_wall} for r in sorted(refits, key=lambda r: r["start"])],
            "trials": [{"what": r["what"], "s": r["end"] - r["start"], "cpu_s": r["cpu"], "fit_s": r["fit_s"],
                        "pid": r["pid"],
                        "start_s": r["start"] - t_wall, "out_bytes": r["out_bytes"], "test_rows": r["test_rows"]}
                       for r in sorted(trials, key=lambda r: r["start"])],
            "store_s": {k: list(v) for k, v in STORE_TIMES.items()}}


def run_compress(model_dir, held, target, groups, args, executor, n_jobs, out, log: Path) -> dict:
    log.unlink(missing_ok=True)
    for v in STORE_TIMES.values():
        v.clear()
    st = Stages()
    t_wall = time.time()
    t0 = time.perf_counter()
    res = frugalml.compress(model_dir, held, target, groups=groups, techniques=args.techniques, n_jobs=n_jobs,
                            executor=executor, out=out, cost=CHEAP, cost_priority="size", seed=0, tolerance=0.02,
                            progress=st)
    total = time.perf_counter() - t0
    trials = read_log(log)
    d = res.decision
    return {"decision": d, "total_s": total, "search_s": d["settings"]["search_s"],
            "confirm_s": d["settings"]["confirm_s"], "stages_s": st.spans(), "stage_first_s": st.first,
            "round_starts": list(st.rounds),  # the same clock as the trials start_s (st.t0 ~ t_wall)
            "timeline": trial_summary(trials, t_wall),
            "trials": [{"what": r["what"], "s": r["end"] - r["start"], "cpu_s": r["cpu"], "pid": r["pid"],
                        "start_s": r["start"] - t_wall,
                        "settings": r["settings"], "tried": r["tried"]}
                       for r in sorted(trials, key=lambda r: r["start"])],
            "store_s": {k: list(v) for k, v in STORE_TIMES.items()}}


def load_rows(args):
    spec = DATASETS.get(args.data)
    df, _, _ = read_table(f"builtin:{args.data}")
    df = df[df[spec.target].notna()].sample(frac=1.0, random_state=0).reset_index(drop=True)
    if args.rows and args.rows < len(df):
        df = df.iloc[: args.rows].reset_index(drop=True)
    return df, spec.target, list(spec.groups)


def slim(r: dict) -> dict:
    """A run's record for the JSON: the decision reduced to what is compared."""
    d = r["decision"]
    keep = {"recommended": d["recommended"], "best": d["best"],
            "candidates": [{"name": c["name"], "quality_mean": c["quality"]["mean"],
                            "fit_s": (c.get("cost") or {}).get("fit_s"),
                            "rejected_because": c.get("rejected_because")} for c in d["candidates"]]}
    return {**{k: v for k, v in r.items() if k != "decision"}, "decision": keep}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="randhie", help="a builtin dataset")
    ap.add_argument("--rows", type=int, default=0, help="use the first N rows (after a seeded shuffle); 0: all")
    ap.add_argument("--candidates", default="linear,decision_tree,lightgbm,hist_gradient_boosting,random_forest")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--stability-draws", type=int, default=50)
    ap.add_argument("--techniques", default="tree-subset,tree-depth,tree-prune,distill,onnx-trees")
    ap.add_argument("--executors", default=",".join(EXECUTORS))
    ap.add_argument("--no-store", action="store_true", help="skip the store-on runs")
    ap.add_argument("--no-compress", action="store_true")
    ap.add_argument("--quick", action="store_true", help="4,000 rows, 3 folds x 1 repeat, 3 candidates")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.rows = min(args.rows or 4000, 4000)
        args.folds, args.repeats = 3, 1
        args.candidates = "linear,lightgbm,random_forest"
        args.stability_draws = 20
    args.candidates = args.candidates.split(",")
    args.techniques = args.techniques.split(",")
    executors = args.executors.split(",")

    global TRIAL_LOG
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale-"))
    log = tmp / f"trials-{uuid.uuid4().hex[:8]}.jsonl"
    TRIAL_LOG = str(log)
    quality._fit_fold = timed_fit_fold
    search_mod._try_settings = timed_try_settings
    cost_mod.refit_deployable = timed_refit

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one worker is one core here too (loky, Dask and Ray workers run one thread each)
    load_before, psi_before = os.getloadavg(), cpu_pressure()
    df, target, groups = load_rows(args)
    train, held = df.iloc[: len(df) // 2], df.iloc[len(df) // 2:]
    print(f"data builtin:{args.data}: {len(df)} rows; select on all, compress model on {len(train)}, "
          f"compress on {len(held)}; load average before: {load_before[0]:.2f}", flush=True)

    # warm this process's imports (candidates, ONNX export) on a tiny run: not timed
    frugalml.select(df.iloc[:300], target, candidates=args.candidates, folds=2, repeats=1, n_jobs=1, cost=CHEAP,
                    stability_draws=0, cost_priority="size")
    model_dir = tmp / "forest"
    if not args.no_compress:
        frugalml.select(train, target, groups=groups, candidates=["random_forest"], folds=2, repeats=1, n_jobs=1,
                        cost=CHEAP, stability_draws=0, out=model_dir)

    runs = {"select": {}, "compress": {}}
    for name in executors:
        with Executor(name) as (executor, n_jobs):
            print(f"-- {name}: select", flush=True)
            runs["select"][name] = run_select(df, target, groups, args, executor, n_jobs, None, log)
            if not args.no_compress:
                print(f"-- {name}: compress", flush=True)
                runs["compress"][name] = run_compress(model_dir, held, target, groups, args, executor, n_jobs, None,
                                                      log)
    if not args.no_store:
        print("-- local1 with the store on: select, compress", flush=True)
        runs["select"]["local1+store"] = run_select(df, target, groups, args, None, 1, tmp / "sel-store", log)
        if not args.no_compress:
            runs["compress"]["local1+store"] = run_compress(model_dir, held, target, groups, args, None, 1,
                                                            tmp / "cmp-store", log)
    load_after, psi_after = os.getloadavg(), cpu_pressure()

    # -- tables ----------------------------------------------------------------------------------------------------
    print(f"\nload average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs; "
          f"CPU pressure before: {psi_before}; after: {psi_after}")
    results = {"data": f"builtin:{args.data}", "rows": len(df), "candidates": args.candidates, "folds": args.folds,
               "repeats": args.repeats, "techniques": args.techniques, "cost": CHEAP.to_json(),
               "cost_priority": "size", "stability_draws": args.stability_draws, "cpus": os.cpu_count(),
               "load_before": load_before, "load_after": load_after, "cpu_pressure_before": psi_before,
               "cpu_pressure_after": psi_after, "select": {}, "compress": {}}
    base = runs["select"].get("local1")
    print("\nselect: 1 worker vs 2 (fitting stage = evaluate_quality; ratio = local1 / this)")
    hdr = ("executor", "trials", "fit stage s", "fit ratio", "whole run s", "whole ratio", "refit s", "cost s",
           "stability s", "worker busy s", "trial CPU/wall", "gap med ms", "same decision", "recommended", "quality (means)")
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for name, r in runs["select"].items():
        same, why = same_decision(base["decision"], r["decision"]) if base else (None, "-")
        tl, s = r["timeline"], r["stages_s"]
        q = ", ".join(f"{c['name']} {c['quality']['mean']:.4f}" for c in r["decision"]["candidates"])
        fr = base["fit_stage_s"] / r["fit_stage_s"] if base else float("nan")
        wr = base["total_s"] / r["total_s"] if base else float("nan")
        gap = tl.get("gap_median_s")
        print("| " + " | ".join([name, str(tl["trials"]), f"{r['fit_stage_s']:.1f}", f"{fr:.2f}x", f"{r['total_s']:.1f}",
                                 f"{wr:.2f}x", f"{s.get('refit', 0):.1f}", f"{s.get('cost', 0):.1f}",
                                 f"{s.get('stability', 0):.1f}",
                                 "/".join(f"{b:.0f}" for b in tl.get("busy_s_per_worker", [])),
                                 f"{tl['cpu_sum_s'] / tl['sum_s']:.2f}",
                                 f"{1000 * gap:.0f}" if gap is not None else "-", why if not same else "yes",
                                 r["decision"]["recommended"], q]) + " |")
        results["select"][name] = {**slim(r), "same_decision": same, "why": why, "fit_ratio_vs_local1": fr,
                                   "whole_ratio_vs_local1": wr}
    if runs["compress"]:
        base = runs["compress"].get("local1")
        print("\ncompress: search_s (the trials) and the whole run (ratio = local1 / this)")
        hdr = ("executor", "trials", "variants", "search s", "search ratio", "whole run s", "whole ratio", "cost s",
               "confirm s", "worker busy s", "trial CPU/wall", "same decision", "recommended", "quality of recommended")
        print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
        for name, r in runs["compress"].items():
            same, why = same_decision(base["decision"], r["decision"]) if base else (None, "-")
            d, tl = r["decision"], r["timeline"]
            rec = next(c for c in d["candidates"] if c["name"] == d["recommended"])
            sr = base["search_s"] / r["search_s"] if base else float("nan")
            wr = base["total_s"] / r["total_s"] if base else float("nan")
            print("| " + " | ".join([name, str(tl["trials"]), str(len(d["candidates"]) - 1), f"{r['search_s']:.1f}",
                                     f"{sr:.2f}x", f"{r['total_s']:.1f}", f"{wr:.2f}x",
                                     f"{r['stages_s'].get('cost', 0):.1f}", f"{r['confirm_s']:.1f}",
                                     "/".join(f"{b:.0f}" for b in tl.get("busy_s_per_worker", [])),
                                     f"{tl['cpu_sum_s'] / tl['sum_s']:.2f}", why if not same else "yes", d["recommended"],
                                     f"{rec['quality']['mean']:.4f}"]) + " |")
            results["compress"][name] = {**slim(r), "same_decision": same, "why": why,
                                         "search_ratio_vs_local1": sr, "whole_ratio_vs_local1": wr}

    # -- the store's cost per trial --------------------------------------------------------------------------------
    store = {}
    for verb, per_trial, off_key in (("select", "save", "fit_stage_s"), ("compress", "save_variant", "search_s")):
        on, off = runs[verb].get("local1+store"), runs[verb].get("local1")
        if not on or not off:
            continue
        writes = on["store_s"][per_trial]
        n = max(1, on["timeline"]["trials"])
        per_ms = 1000 * float(np.sum(writes)) / n
        store[verb] = {"writes": len(writes), "trials": n, "ms_per_trial": per_ms,
                       "ms_per_write_median": 1000 * float(np.median(writes)) if writes else None,
                       "share_of_stage": float(np.sum(writes)) / on[off_key],
                       "share_of_run": float(np.sum(writes)) / on["total_s"],
                       "cost_writes_s": float(np.sum(on["store_s"]["save_cost"])),
                       "stage_on_s": on[off_key], "stage_off_s": off[off_key],
                       "store_bytes": sum(f.stat().st_size for f in (tmp / ("sel-store" if verb == "select" else
                                                                           "cmp-store") / "trials").rglob("*")
                                          if f.is_file()),
                       "run_on_s": on["total_s"], "run_off_s": off["total_s"]}
    if store:
        print("\ntrial store (local1, out= vs none; writes timed in the client, where they run)")
        hdr = ("verb", "trial writes", "store MB", "ms per trial", "% of trial stage", "% of whole run",
               "cost-entry writes s",
               "trial stage off / on s", "whole run off / on s")
        print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
        for verb, s in store.items():
            print("| " + " | ".join([verb, f"{s['writes']} ({s['trials']} trials)", f"{s['store_bytes'] / 1e6:.1f}",
                                     f"{s['ms_per_trial']:.2f}",
                                     f"{100 * s['share_of_stage']:.2f}%", f"{100 * s['share_of_run']:.2f}%",
                                     f"{s['cost_writes_s']:.2f}", f"{s['stage_off_s']:.1f} / {s['stage_on_s']:.1f}",
                                     f"{s['run_off_s']:.1f} / {s['run_on_s']:.1f}"]) + " |")
    results["store"] = store
    for verb in ("select", "compress"):
        r = results[verb].get("local2")
        if r:
            key = "fit_ratio_vs_local1" if verb == "select" else "search_ratio_vs_local1"
            print(f"{verb}: 2 local workers vs 1: {r[key]:.2f}x on the trials (target 1.7x: "
                  f"{'met' if r[key] >= 1.7 else 'not met'}), {r['whole_ratio_vs_local1']:.2f}x on the whole run")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
        print(f"\nwritten {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
