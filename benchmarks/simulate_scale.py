"""A discrete-event model of frugalml's trials on many nodes, fed with what benchmarks/bench_scale.py measured.

Why a model and not a LocalCluster with 100 small workers: this machine has 2 cores; 200 worker processes on it
would time-share those 2 cores, so every trial would run ~100x slower and the run would measure the kernel's
scheduler, not frugalml's. What does not depend on the core count (each trial's duration on one core, the gap
between a worker's trials, the client's writes per trial, the serial cost stage) is measured on 2 cores; how
those compose on W workers is computed here.

The model (plain Python, heapq):
  - a trial list in the order frugalml makes it (select: candidate by candidate, fold by fold; compress: round
    by round, each round a barrier, since a chain round needs the variants the previous round kept);
  - greedy dispatch, as joblib (loky, Dask) does: each worker, when free, takes the next trial in order; a
    scheduler that spends `sched_s` of serial time per task (Dask's scheduler: ~1 ms CPU per task);
  - `gap_s` per trial on the worker (sending the task, returning its result: measured between a worker's trials);
  - a client that takes the results in order (joblib's generator and the Ray window both yield in order) and
    spends `client_s` serial time on each (deserialising the answers, TrialStore.save: measured);
  - optionally Ray's window (frugalml's _ray_tasks): at most 2 x workers in flight, a new task only when the
    oldest has been taken by the client (head-of-line blocking);
  - then the stages that run on the client by design, one model at a time (select: the cost stage and
    stability; compress: costs and confirmation), as measured, scaled with the number of candidates.

Usage: python benchmarks/simulate_scale.py [--results benchmarks/results_scale.json] [--cores 2]
       [--settings 40] [--usd-per-hour 0.096] [--json out.json]
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path

import numpy as np


def simulate(durations, workers: int, *, gap_s=0.0, sched_s=0.0, client_s=0.0, startup_s=0.0,
             window: int | None = None) -> dict:
    """Makespan of one parallel stage: ``durations`` in dispatch order on ``workers`` workers.

    ``window``: at most this many tasks in flight, the next sent only when the client has taken the oldest (Ray's
    in-order window); None: greedy (a free worker takes the next trial). -> makespan, utilisation, the time the
    client finished, the time the last worker finished, the client's and the scheduler's busy time."""
    n = len(durations)
    if n == 0:
        return {"makespan": startup_s, "utilisation": 0.0, "workers_done": startup_s, "client_done": startup_s}
    free = [(startup_s, w) for w in range(workers)]  # (time the worker is free, worker)
    heapq.heapify(free)
    sched_free = startup_s
    arrive = np.empty(n)
    taken = np.empty(n)  # when the client has taken result k (in order)
    client_t = startup_s
    consumed = 0  # results the client has taken so far (window mode is driven by this)
    ends = []
    for k, d in enumerate(durations):
        t_free, w = heapq.heappop(free)
        submit = startup_s
        if window is not None and k >= window:
            # the client must first have taken result k - window, which needs all results before it
            while consumed <= k - window:
                client_t = max(client_t, arrive[consumed]) + client_s
                taken[consumed] = client_t
                consumed += 1
            submit = taken[k - window]
        start = max(t_free, sched_free, submit)
        sched_free = start + sched_s  # the scheduler handles one task at a time
        start += sched_s
        end = start + gap_s + d
        arrive[k] = end
        ends.append(end)
        heapq.heappush(free, (end, w))
    while consumed < n:
        client_t = max(client_t, arrive[consumed]) + client_s
        taken[consumed] = client_t
        consumed += 1
    makespan = max(client_t, max(ends))
    return {"makespan": makespan, "utilisation": float(np.sum(durations)) / (workers * makespan),
            "workers_done": max(ends), "client_done": client_t, "client_busy": n * client_s, "sched_busy": n * sched_s}


def rounds_of(run: dict, key: str = "s") -> list[list[float]]:
    """A compress run's trials, by round: the search round, then the chain rounds (when the run recorded its round
    starts; else every chain trial as one round)."""
    trials = run["trials"]
    starts = sorted(run.get("round_starts") or [run["stage_first_s"].get("chain", float("inf"))])
    if run.get("round_starts"):
        starts = starts[1:]  # the first is the search round's own start
    out = [[] for _ in range(len(starts) + 1)]
    for t in trials:
        k = sum(t["start_s"] >= s for s in starts)
        out[k].append(t.get(key, t["s"]))
    return [r for r in out if r]


def first_extra(trials: list[dict], base: list[dict]) -> tuple[float, float]:
    """(the extra time of each worker's first trial over the same trial on 1 warm worker: the imports a fresh
    worker makes, averaged over the workers; the ratio of the other trials' durations to the 1-worker ones:
    the slow-down of two trials sharing 2 cores with the client and whatever else runs)."""
    mean: dict[str, list[float]] = {}
    for t in base:
        mean.setdefault(t["what"], []).append(t["s"])
    ref = {k: float(np.mean(v)) for k, v in mean.items()}
    firsts, rest, rest_ref = {}, 0.0, 0.0
    for t in sorted(trials, key=lambda t: t["start_s"]):
        if t["pid"] not in firsts:
            firsts[t["pid"]] = max(0.0, t["s"] - ref.get(t["what"], t["s"]))
        else:
            rest += t["s"]
            rest_ref += ref.get(t["what"], t["s"])
    return (float(np.mean(list(firsts.values()))) if firsts else 0.0), (rest / rest_ref if rest_ref else 1.0)


def _refits(base: dict) -> tuple[list[float], float, bool]:
    """The 1-worker run's refits (one per candidate) and the serial tail after them (costs, stability, writing).
    Without a refit log: each candidate's mean fold time, scaled to the refit stage's measured span."""
    if base.get("refits"):
        return [r["s"] for r in base["refits"]], base["total_s"] - base["refit_timeline"]["last_end_s"], True
    by_cand: dict[str, list[float]] = {}
    for t in base["trials"]:
        by_cand.setdefault(t["what"], []).append(t["s"])
    est = [float(np.mean(v)) for v in by_cand.values()]
    refit_1 = base["stages_s"].get("refit", 0.0)
    scale = refit_1 / max(1e-9, sum(est))
    tail = base["total_s"] - base["fit_stage_s"] - refit_1 - base["timeline"]["first_start_s"]
    return [e * scale for e in est], tail, False


def _run_shape(name: str, run: dict) -> tuple[int, float, int | None]:
    """A measured run's workers, median gap between a worker's trials, and Ray's in-flight window (else None)."""
    w = 1 if name == "local1" else 2
    gap = 0.0 if w == 1 else max(0.0, run["timeline"].get("gap_median_s") or 0.0)
    return w, gap, 2 * w if name == "ray2" else None


def validate(res: dict) -> list[dict]:
    """Predicted vs measured, 1 and 2 workers: trial durations from the 1-worker run (in-process), the gap
    between a worker's trials and the time to the first trial (worker start-up) from each run's own worker log."""
    rows = []
    sel, cmp_ = res["select"], res.get("compress", {})
    base = sel["local1"]
    base_trials = [t["s"] for t in base["trials"]]
    # select, the whole run = time before the first trial + fit stage + (delay) + refit stage + the serial tail
    pre = base["timeline"]["first_start_s"]
    refits, tail, has_refits = _refits(base)
    for name, run in sel.items():
        if name.endswith("+store"):
            continue
        w, gap, window = _run_shape(name, run)
        startup = 0.0 if w == 1 else max(0.0, run["timeline"]["first_start_s"] - pre)
        extra, contention = first_extra(run["trials"], base["trials"]) if w > 1 else (0.0, 1.0)
        startup += extra  # each fresh worker's first trial pays its imports: as if it started that much later
        pure = simulate(base_trials, w)["makespan"]
        fit = simulate(base_trials, w, gap_s=gap, startup_s=startup, window=window)["makespan"]
        if has_refits:  # the wait before the first refit (client work, worker start-up) as that run measured it
            delay = run["refit_timeline"]["first_start_s"] - (run["stage_first_s"]["fit"] + run["fit_stage_s"])
            r_extra = first_extra(run["refits"], base["refits"])[0] if w > 1 else 0.0  # the export stack's imports
            refit = delay + simulate(refits, w, gap_s=gap, startup_s=r_extra, window=window)["makespan"]
        else:
            refit = simulate(refits, w, gap_s=gap, window=window)["makespan"]
        whole = pre + fit + refit + tail
        rows.append({"verb": "select", "executor": name, "workers": w, "what": "fit stage",
                     "predicted_pure_s": pure, "predicted_s": fit, "measured_s": run["fit_stage_s"],
                     "error": fit / run["fit_stage_s"] - 1, "gap_s": gap, "startup_s": startup,
                     "first_trial_imports_s": extra,
                     "trial_time_vs_1_worker": contention,
                     "predicted_with_contention_s": simulate([d * contention for d in base_trials], w, gap_s=gap,
                                                             startup_s=startup, window=window)["makespan"]})
        rows.append({"verb": "select", "executor": name, "workers": w, "what": "whole run",
                     "predicted_s": whole, "measured_s": run["total_s"], "error": whole / run["total_s"] - 1})
    if cmp_:
        cbase = cmp_["local1"]
        base_rounds = rounds_of(cbase)
        for name, run in cmp_.items():
            if name.endswith("+store"):
                continue
            w, gap, window = _run_shape(name, run)
            tl = run["timeline"]
            # search_s holds the rounds and, before the first, the original's own answers: as on 1 worker
            before = cbase["timeline"]["first_start_s"] - cbase["stage_first_s"].get("search", 0.0)
            startup = 0.0 if w == 1 else max(0.0, tl["first_start_s"] - run["stage_first_s"].get("search", 0.0)
                                             - before)
            rest = cbase["search_s"] - before - cbase["timeline"]["sum_s"]  # client work between rounds
            extra, contention = first_extra(run["trials"], cbase["trials"]) if w > 1 else (0.0, 1.0)
            startup += extra
            pred = before + sum(simulate(r, w, gap_s=gap, startup_s=startup if k == 0 else 0.0,
                                         window=window)["makespan"] for k, r in enumerate(base_rounds))
            pred += max(0.0, rest)
            slow = before + max(0.0, rest) + sum(
                simulate([d * contention for d in r], w, gap_s=gap, startup_s=startup if k == 0 else 0.0,
                         window=window)["makespan"] for k, r in enumerate(base_rounds))
            rows.append({"verb": "compress", "executor": name, "workers": w, "what": "search",
                         "predicted_s": pred, "measured_s": run["search_s"], "error": pred / run["search_s"] - 1,
                         "gap_s": gap, "startup_s": startup, "first_trial_imports_s": extra,
                         "trial_time_vs_1_worker": contention, "predicted_with_contention_s": slow, "rounds": [len(r) for r in base_rounds]})
    return rows


def scale_up(res: dict, nodes_list, cores: int, settings: int, usd_per_hour: float, sched_s: float,
             seed: int = 0) -> dict:
    """The measured select, widened to ``settings`` settings per candidate (each setting's folds drawn around the
    candidate's measured fold durations, lognormal sigma 0.3), and the measured compress search, on
    nodes x cores workers."""
    rng = np.random.default_rng(seed)
    sel = res["select"]["local1"]
    # a trial's CPU time on its one thread is its duration on a core of its own (the 2 cores here are shared)
    dur = "cpu_s" if all("cpu_s" in t for t in sel["trials"]) else "s"
    by_cand: dict[str, list[float]] = {}
    for t in sel["trials"]:
        by_cand.setdefault(t["what"], []).append(t[dur])
    folds = max(len(v) for v in by_cand.values())
    trials = []
    for cand, ds in by_cand.items():  # select's order: candidate by candidate (each setting a candidate), fold by fold
        for _ in range(settings):
            f = rng.lognormal(0.0, 0.3)
            trials += [d * f for d in ds]
    n_cands = len(by_cand) * settings
    # what the client does per trial, measured: the store's write (select: .npz of the answers) and taking the
    # result in (deserialising the answers: their bytes at ~1 GB/s, a generous figure for pickle of numpy arrays)
    store = res.get("store", {}).get("select", {})
    store_s = (store.get("ms_per_trial") or 0.0) / 1000
    out_bytes = float(np.mean([t["out_bytes"] for t in sel["trials"]]))
    deser_s = out_bytes / 1e9
    gaps = [r["timeline"].get("gap_median_s") for k, r in res["select"].items() if k in ("local2", "ray2")]
    gap_s = float(np.median([g for g in gaps if g is not None])) if any(g is not None for g in gaps) else 0.02
    # the serial stages on the client, per candidate, as measured (cost: refit export timed one model at a time;
    # stability: bootstrap draws of the decision, which grows with the candidates)
    n0 = len(by_cand)
    # every executor's run measures these on the client alike: the least disturbed (the smallest) is taken
    runs = list(res["select"].values())
    cost_per_cand = min(r["stages_s"].get("cost", 0.0) for r in runs) / n0
    stab_per_cand = min(r["stages_s"].get("stability", 0.0) for r in runs) / n0
    refit_per_cand = sel["stages_s"].get("refit", 0.0) / n0
    pre = sel["timeline"]["first_start_s"]
    # a fresh worker's start-up (process, imports) before its first trial, and its first refit's extra imports
    # (the export stack), as the local2 and ray2 runs measured them (Dask's workers were started beforehand)
    fresh = [k for k in ("local2", "ray2") if k in res["select"]]
    startup = float(np.median([res["select"][k]["timeline"]["first_start_s"] - pre
                               + first_extra(res["select"][k]["trials"], sel["trials"])[0] for k in fresh])) if fresh else 0.0
    refit_imports = float(np.median([first_extra(res["select"][k].get("refits", []), sel.get("refits", []))[0]
                                     for k in fresh])) if fresh and sel.get("refits") else 0.0
    out = {"assumptions": {"trial_durations_from": "CPU time per trial" if dur == "cpu_s" else "wall time per trial",
                           "settings_per_candidate": settings, "candidates": n_cands, "folds": folds,
                           "trials": len(trials), "cores_per_node": cores, "sched_s_per_task": sched_s,
                           "gap_s_per_trial": gap_s, "client_store_s_per_trial": store_s,
                           "client_deserialise_s_per_trial": deser_s, "cost_stage_s_per_candidate": cost_per_cand,
                           "stability_s_per_candidate": stab_per_cand, "refit_s_per_candidate": refit_per_cand,
                           "usd_per_node_hour": usd_per_hour, "worker_startup_s": startup,
                           "first_refit_imports_s": refit_imports, "trial_work_s": float(np.sum(trials)),
                           "longest_trial_s": float(np.max(trials))},
           "select": [], "compress": []}
    base_refits = [r.get("cpu_s", r["s"]) for r in sel.get("refits", [])] or [refit_per_cand] * n0
    refits = [base_refits[k % len(base_refits)] * rng.lognormal(0.0, 0.3) for k in range(n_cands)]
    for nodes in nodes_list:
        w = nodes * cores
        for store_on in (True,):  # the store on: the client's heavier case (off: deserialising only)
            client_s = deser_s + (store_s if store_on else 0.0)
            fit = simulate(trials, w, gap_s=gap_s, sched_s=sched_s, client_s=client_s, startup_s=startup)
            ray = simulate(trials, w, gap_s=gap_s, sched_s=sched_s, client_s=client_s, window=2 * w,
                           startup_s=startup)
            refit = simulate(refits, w, gap_s=gap_s, sched_s=sched_s, startup_s=refit_imports)
            serial = n_cands * (cost_per_cand + stab_per_cand)
            whole = pre + fit["makespan"] + refit["makespan"] + serial
            parts = {"compute (work / workers)": float(np.sum(trials)) / w, "longest trial": float(np.max(trials)),
                     "worker start-up": startup,
                     "client serial (results + store)": len(trials) * client_s,
                     "scheduler serial": len(trials) * sched_s, "trial gaps": len(trials) * gap_s / w}
            bottleneck = max(parts, key=parts.get)
            busy_node_s = w * fit["makespan"] + w * refit["makespan"]  # the workers are held through the stages
            node_hours = nodes * whole / 3600
            out["select"].append({"nodes": nodes, "workers": w, "store": store_on, "fit_makespan_s": fit["makespan"],
                                  "fit_makespan_ray_window_s": ray["makespan"], "fit_utilisation": fit["utilisation"],
                                  "refit_makespan_s": refit["makespan"], "serial_client_stages_s": serial,
                                  "whole_run_s": whole, "fit_share_of_run": fit["makespan"] / whole,
                                  "fit_stage_bottleneck": bottleneck, "fit_stage_bounds_s": parts,
                                  "node_hours": node_hours, "usd": node_hours * usd_per_hour,
                                  "usd_if_workers_released_after_fitting":
                                      (busy_node_s / cores + serial + pre) / 3600 * usd_per_hour,
                                  "run_utilisation": float(np.sum(trials) + sum(refits)) / (w * whole)})
    cmp_ = res.get("compress", {}).get("local1")
    if cmp_:
        rounds = rounds_of(cmp_, "cpu_s")
        search_work = sum(map(sum, rounds))
        tail = min(r["total_s"] - r["search_s"] for r in res["compress"].values())  # the least disturbed
        for nodes in nodes_list:
            w = nodes * cores
            search = sum(simulate(r, w, gap_s=gap_s, sched_s=sched_s)["makespan"] for r in rounds)
            out["compress"].append({"nodes": nodes, "workers": w, "search_s": search, "round_widths": [len(r) for r in rounds],
                                    "longest_trial_per_round_s": [max(r) for r in rounds],
                                    "search_utilisation": search_work / (w * search), "serial_tail_s": tail,
                                    "whole_run_s": search + tail + (cmp_["search_s"] - search_work
                                                                    if cmp_["search_s"] > search_work else 0.0),
                                    "usd": nodes * (search + tail) / 3600 * usd_per_hour})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).with_name("results_scale.json"))
    ap.add_argument("--cores", type=int, default=2, help="cores (workers) per node")
    ap.add_argument("--nodes", default="1,2,8,32,100")
    ap.add_argument("--settings", type=int, default=40, help="settings per candidate in the widened select")
    ap.add_argument("--sched-ms", type=float, default=1.0, help="scheduler CPU per task (Dask: ~1 ms)")
    ap.add_argument("--usd-per-hour", type=float, default=0.096, help="one node (frugalml's default instance)")
    ap.add_argument("--json", type=Path, default=None, help="also write the simulation here")
    args = ap.parse_args()
    res = json.loads(args.results.read_text())

    print(f"measured on {res['data']}, {res['rows']} rows, {res['cpus']} CPUs, load average "
          f"{res['load_before'][0]:.2f} before / {res['load_after'][0]:.2f} after")
    print("\nvalidation: the model fed with the 1-worker trial durations vs the measured wall time")
    hdr = ("verb", "executor", "workers", "stage", "start-up s (to 1st trial + its imports)", "gap ms",
           "predicted s", "measured s", "error", "trial time vs 1 worker", "predicted with that slow-down s", "error")
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    val = validate(res)
    for r in val:
        pc = r.get("predicted_with_contention_s")
        su = (f"{r['startup_s'] - r['first_trial_imports_s']:.1f} + {r['first_trial_imports_s']:.1f}"
              if "startup_s" in r else "-")
        print("| " + " | ".join([r["verb"], r["executor"], str(r["workers"]), r["what"], su,
                                 f"{1000 * r['gap_s']:.0f}" if "gap_s" in r else "-", f"{r['predicted_s']:.1f}",
                                 f"{r['measured_s']:.1f}", f"{100 * r['error']:+.0f}%",
                                 f"{r['trial_time_vs_1_worker']:.2f}x" if "trial_time_vs_1_worker" in r else "-",
                                 f"{pc:.1f}" if pc is not None else "-",
                                 f"{100 * (pc / r['measured_s'] - 1):+.0f}%" if pc is not None else "-"]) + " |")

    # the same composition with CPU times as durations: what 2 cores of one's own would give (the start-up,
    # first-trial imports and gaps as each run measured them; Dask's trials overlap, see the report: left out)
    base = res["select"]["local1"]
    if all("cpu_s" in t for t in base["trials"]):
        cpu = [t["cpu_s"] for t in base["trials"]]
        one = simulate(cpu, 1)["makespan"]
        print(f"\nselect fit stage on 2 dedicated cores, projected: 1 worker {one:.1f} s (the trials' CPU time)")
        for r in val:
            if r["verb"] == "select" and r["what"] == "fit stage" and r["workers"] == 2:
                two = simulate(cpu, 2, gap_s=r["gap_s"], startup_s=r["startup_s"],
                               window=4 if r["executor"] == "ray2" else None)["makespan"]
                r["dedicated_2_cores_s"], r["dedicated_1_core_s"] = two, one
                print(f"  {r['executor']}: {two:.1f} s, {one / two:.2f}x; without its start-up "
                      f"{one / simulate(cpu, 2, gap_s=r['gap_s'])['makespan']:.2f}x")

    nodes = [int(n) for n in args.nodes.split(",")]
    sim = scale_up(res, nodes, args.cores, args.settings, args.usd_per_hour, args.sched_ms / 1000)
    a = sim["assumptions"]
    print(f"\ntrial durations: {a['trial_durations_from']} in the 1-worker run (the cores here were shared)")
    print(f"select widened: {a['candidates']} candidates ({a['settings_per_candidate']} settings of each measured "
          f"one) x {a['folds']} folds = {a['trials']} trials, {a['trial_work_s']:.0f} s of work, longest "
          f"{a['longest_trial_s']:.1f} s; {args.cores} cores a node; per trial: gap {1000 * a['gap_s_per_trial']:.0f} "
          f"ms, scheduler {1000 * a['sched_s_per_task']:.1f} ms, client store {1000 * a['client_store_s_per_trial']:.2f}"
          f" ms; serial per candidate: cost {a['cost_stage_s_per_candidate']:.2f} s, stability "
          f"{a['stability_s_per_candidate']:.2f} s; a fresh worker: {a['worker_startup_s']:.1f} s to its first trial, "
          f"+{a['first_refit_imports_s']:.1f} s at its first refit")
    hdr = ("nodes", "workers", "fit stage s", "(Ray window) s", "fit utilisation", "work/W s", "longest trial s",
           "start-up s", "client serial s", "scheduler serial s", "fit-stage bottleneck",
           "refit s", "serial client stages s", "whole run s", "fit share", "node-hours", "$", "$ if released")
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for r in sim["select"]:
        b = r["fit_stage_bounds_s"]
        print("| " + " | ".join([str(r["nodes"]), str(r["workers"]),
                                 f"{r['fit_makespan_s']:.1f}", f"{r['fit_makespan_ray_window_s']:.1f}",
                                 f"{100 * r['fit_utilisation']:.0f}%", f"{b['compute (work / workers)']:.1f}",
                                 f"{b['longest trial']:.1f}", f"{b['worker start-up']:.1f}",
                                 f"{b['client serial (results + store)']:.1f}",
                                 f"{b['scheduler serial']:.1f}", r["fit_stage_bottleneck"],
                                 f"{r['refit_makespan_s']:.1f}", f"{r['serial_client_stages_s']:.0f}",
                                 f"{r['whole_run_s']:.0f}", f"{100 * r['fit_share_of_run']:.0f}%",
                                 f"{r['node_hours']:.3f}", f"{r['usd']:.4f}",
                                 f"{r['usd_if_workers_released_after_fitting']:.4f}"]) + " |")
    if sim["compress"]:
        print("\ncompress (the measured search; each round a barrier)")
        hdr = ("nodes", "workers", "round widths", "longest trial per round s", "search s", "search utilisation",
               "serial tail s", "$")
        print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
        for r in sim["compress"]:
            print("| " + " | ".join([str(r["nodes"]), str(r["workers"]), str(r["round_widths"]),
                                     ", ".join(f"{x:.1f}" for x in r["longest_trial_per_round_s"]),
                                     f"{r['search_s']:.1f}", f"{100 * r['search_utilisation']:.1f}%",
                                     f"{r['serial_tail_s']:.1f}", f"{r['usd']:.4f}"]) + " |")
    if args.json:
        args.json.write_text(json.dumps({"validation": val, **sim}, indent=1, default=float))


if __name__ == "__main__":
    main()
