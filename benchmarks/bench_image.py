"""frugal select on images: the image ladder on builtin:elpv against the obvious choice, EfficientNet-Lite0 fine-tuned
at 224.

One run on builtin:elpv (2,624 grayscale 300x300 electroluminescence images of solar cells; target `defective`
yes/no, 31% yes; group `type`, mono/poly):
  1. frugalml select with the default image ladder (dummy, pixels_linear@32, pixels_linear@64, hog_linear@64,
     hog_linear@128, small_cnn@64, effnet_linear@128, effnet_linear@224) plus the obvious choice a user would
     make (--obvious, default effnet_finetune@224: ImageNet EfficientNet-Lite0 at 224 pixels, its last block
     and head fine-tuned on the task; added to the candidates when --candidates leaves it out),
     --folds x --repeats (5 x 2), seed 0, default cost settings; the whole call is timed (wall seconds).
  2. A table: every (candidate, resolution) with quality mean [95% CI] overall and per group, batch-1 p50/p99
     latency (ms, decoding the PNG file included), throughput (images/s), size, energy (J per 1k predictions),
     fit seconds, and select's verdict; then its recommendation and its reason.
  3. The recommendation against the obvious choice, side by side: the paired quality difference (recommended
     minus obvious) over the same folds, overall and per group, with its 95% interval (Nadeau-Bengio corrected,
     `selection.stats.mean_ci` on the per-fold differences, test/train ratio 1/(folds-1) as select uses) and
     its verdict against the tolerance (0.01: non-inferior when the interval's lower end is above -0.01, harm
     when its upper end is below it, else inconclusive), the one-sided non-inferiority p-value select's test
     gives, and the p99 latency and energy ratios (obvious / recommended). Target: on par with the obvious
     choice overall and in every group (and select's own on_par, which is against the best), and at least 5x
     cheaper in batch-1 p99 latency. (The table's 95% quality intervals come from the same fold scores and
     correction; decision.json's quality interval is select's 90% one, kept in --json as quality_decision_90.)
  4. frugalml compress of the recommended model and of the best one (compress takes a run directory and
     compresses its recommended model, so the best one gets its own run: select again with candidates=[best]
     into a copy of the first run's trial store with resume=True, which reuses the stored fits and costs),
     on the same data select saw (not held-out rows), groups type. Printed: what it kept, with its latency and
     size against the original, or the one-line reason nothing was kept; a FrugalError is printed, not raised.
     Each compress runs in a child process of its own (its memory is its own, and a compress that is killed,
     or outlives --compress-timeout, is reported as such while everything measured before it is kept).

--json is written after select and again after each compress, so a run stopped during compress keeps the rest.

Usage: python benchmarks/bench_image.py [--json out.json] [--rows N] [--candidates a,b,c] [--obvious NAME]
       [--folds 5] [--repeats 2] [--seed 0] [--out DIR] [--no-compress] [--compress-timeout SECONDS]
(--rows N: a subsample of N images, stratified by (type, defective), written to a CSV in the work folder with
the absolute image paths, for a quick run; --out DIR keeps the run directories instead of a temporary folder.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import frugalml
from frugalml.data import read_table
from frugalml.errors import FrugalError
from frugalml.selection.decide import format_cost
from frugalml.candidates import ladder
from frugalml.selection.stats import mean_ci, non_inferiority, verdict

warnings.filterwarnings("ignore")

DATA, TARGET, GROUPS, IMAGE = "builtin:elpv", "defective", ["type"], "image"
OBVIOUS = "effnet_finetune@224"
FINE_TUNED_NOTE = ("effnet_finetune@224: ImageNet EfficientNet-Lite0 at 224 px with its last block and 1x1 head "
                   "fine-tuned (the first 15 blocks frozen, as a CPU allows); effnet_linear@R: the frozen backbone + "
                   "logistic regression")
TARGET_SPEEDUP = 5.0


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def subsample(n: int, seed: int, folder: Path) -> tuple[Path, int]:
    """N rows of builtin:elpv stratified by (type, defective), written to a CSV (image paths absolute, as they
    are) -> (its path, the rows of the full set)."""
    from sklearn.model_selection import train_test_split

    df, _, _ = read_table(DATA)
    if not 0 < n < len(df):
        raise SystemExit(f"--rows must be between 1 and {len(df) - 1}")
    strata = df["type"].astype(str) + "/" + df[TARGET].astype(str)
    part, _ = train_test_split(df, train_size=n, random_state=seed, stratify=strata)
    path = folder / f"elpv_{n}.csv"
    part.sort_index().to_csv(path, index=False)
    return path, len(df)


class Progress:
    """select's progress on stderr: one line when a stage starts and when it ends."""

    def __init__(self, label: str):
        self.label, self.stage, self.t0 = label, None, time.perf_counter()

    def __call__(self, stage, done, total, what=""):
        if stage != self.stage or (total and done == total):
            self.stage = stage
            print(f"  [{self.label} {time.perf_counter() - self.t0:7.1f} s] {stage} {done}/{total} {what}",
                  file=sys.stderr, flush=True)


def paired(folds: dict, a: str, b: str, ratio: float, sign: float, tol: float, alpha: float) -> dict:
    """a minus b over the same folds, overall and per group: mean, 95% interval, verdict against ``tol``,
    one-sided non-inferiority p-value (select's test, at level ``alpha``). Fold scores are higher-is-better;
    the figures returned are in the metric's own units."""
    ca, cb = folds["candidates"][a], folds["candidates"][b]

    def one(sa, sb):
        d = np.asarray(sa, dtype=float) - np.asarray(sb, dtype=float)  # null (undefined) folds -> NaN, left out
        m, lo, hi = mean_ci(d, ratio, 0.95)
        ni = non_inferiority(d, tol, ratio, alpha)
        v = verdict(lo, hi, tol) if np.isfinite(lo) and np.isfinite(hi) else "inconclusive"
        lo_m, hi_m = sorted((sign * lo, sign * hi))
        return {"diff_mean": sign * m, "ci_low": lo_m, "ci_high": hi_m, "verdict": v,
                "p_value_non_inferiority": ni.p_value, "folds": int(np.isfinite(d).sum())}

    out = {"overall": one(ca["scores"], cb["scores"]), "groups": {}}
    for g in ca.get("groups") or {}:
        if g in (cb.get("groups") or {}):
            out["groups"][g] = one(ca["groups"][g], cb["groups"][g])
    return out


def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def fmt(x, spec=".3g", none="-"):
    return none if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def compress_run(run_dir: Path, data, out: Path, seed: int) -> dict:
    """frugalml compress of a run's recommended model -> what it kept, against the original; or the error."""
    t0 = time.perf_counter()
    try:
        d = frugalml.compress(run_dir, data, TARGET, groups=GROUPS, out=out, overwrite=True, seed=seed,
                              progress=Progress("compress")).decision
    except FrugalError as exc:
        return {"error": f"compress raised {type(exc).__name__}: {exc}", "compress_s": time.perf_counter() - t0}
    records = {r["name"]: r for r in d["candidates"]}
    orig, kept = d["candidates"][0], records[d["recommended"]]
    keys = ("latency_ms_p50", "latency_ms_p99", "size_bytes", "energy_j_per_1k")
    return {"model": d["data"].get("original_candidate"), "kept": d["recommended"],
            "technique": (kept.get("technique") or {}).get("name", kept.get("family")),
            "variants_tried": len(d["candidates"]) - 1, "reason": d["reason"], "metric": d["metric"],
            "quality_original": orig["quality"]["mean"], "quality_kept": kept["quality"]["mean"],
            "original": {k: orig["cost"].get(k) for k in keys}, "kept_cost": {k: kept["cost"].get(k) for k in keys},
            "variants": [{"name": r["name"], "quality": r["quality"]["mean"], "on_par": r.get("on_par"),
                          "rejected_because": r.get("rejected_because"),
                          **{k: r["cost"].get(k) for k in keys}} for r in d["candidates"]],
            "compress_s": time.perf_counter() - t0}


def compress_isolated(run_dir: Path, data, out: Path, seed: int, timeout: float | None) -> dict:
    """``compress_run`` in a child process (this script with --compress-child): -> its result, or why there is
    none (killed by a signal, out of time, or a crash whose traceback the child printed on stderr)."""
    result = out.parent / f"{out.name}.result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compress-child", str(run_dir), "--compress-data",
           str(data), "--compress-out", str(out), "--compress-result", str(result), "--seed", str(seed)]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, start_new_session=True)  # its own process group: stopped whole on a timeout
    try:
        rc = child.wait(timeout=timeout or None)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the child and what it started (its memory probe, its workers)
        child.wait()
        return {"error": f"stopped: compress did not finish within --compress-timeout {timeout:g} s",
                "compress_s": time.perf_counter() - t0}
    if rc == 0 and result.exists():
        return json.loads(result.read_text())
    how = f"signal {-rc} ({signal.Signals(-rc).name})" if rc < 0 else f"exit status {rc} (traceback on stderr)"
    return {"error": f"the compress process ended with {how} and no result", "compress_s": time.perf_counter() - t0}


def run_of(name: str, run_dir: Path, out: Path, data, args) -> tuple[Path, dict]:
    """A run directory whose recommended model is ``name``, a candidate of the run in ``run_dir`` (compress
    compresses a run's recommended model, and a run deploys that one only): select with candidates=[name],
    resumed from a copy of ``run_dir``'s trial store, so its fits and measured cost are reused, nothing is
    refitted or timed again. -> (the new run directory, its decision)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copytree(run_dir / "trials", out / "trials")
    res = frugalml.select(data, TARGET, groups=GROUPS, image=IMAGE, candidates=[name], folds=args.folds,
                          repeats=args.repeats, seed=args.seed, out=out, resume=True, stability_draws=0)
    return out, res.decision


def print_compress(label: str, c: dict) -> None:
    if "error" in c:
        print(f"- {label}: {c['error']}")
        return
    if c["kept"] == "original":
        print(f"- {label} ({c['model']}): nothing kept ({c['variants_tried']} variant(s) tried): {c['reason']}")
        return
    o, k = c["original"], c["kept_cost"]
    print(f"- {label} ({c['model']}): kept {c['kept']} ({c['technique']}); {c['metric']} {c['quality_kept']:.4f} vs "
          f"{c['quality_original']:.4f}; p50/p99 {fmt(k['latency_ms_p50'])} / {fmt(k['latency_ms_p99'])} ms vs "
          f"{fmt(o['latency_ms_p50'])} / {fmt(o['latency_ms_p99'])} ms "
          f"({fmt(ratio(o['latency_ms_p99'], k['latency_ms_p99']), '.2f')}x p99); size "
          f"{format_cost(k['size_bytes'], 'bytes')} vs {format_cost(o['size_bytes'], 'bytes')} "
          f"({fmt(ratio(o['size_bytes'], k['size_bytes']), '.2f')}x). {c['reason']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=None, help="write every number to this file")
    ap.add_argument("--rows", type=int, default=None, help="a stratified subsample of N images (quick run)")
    ap.add_argument("--candidates", default=None, help="comma-separated candidates instead of the default ladder")
    ap.add_argument("--obvious", default=OBVIOUS, help=f"the obvious choice to compare with (default {OBVIOUS})")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep the run directories here (default: a temp folder)")
    ap.add_argument("--no-compress", action="store_true", help="leave step 4 (compress) out")
    ap.add_argument("--compress-timeout", type=float, default=0,
                    help="stop a compress that runs longer than this many seconds (default 0: no limit)")
    for hidden in ("--compress-child", "--compress-data", "--compress-out", "--compress-result"):
        ap.add_argument(hidden, default=None, help=argparse.SUPPRESS)  # the child process of compress_isolated
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, even into a file
    if args.compress_child:
        res = compress_run(Path(args.compress_child), args.compress_data, Path(args.compress_out), args.seed)
        Path(args.compress_result).write_text(json.dumps(res))
        return

    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform()}
    print(f"machine: {machine['cpu']}, {machine['cores']} CPUs, Python {machine['python']}, {machine['platform']}")
    print(f"command: {command}")
    print(f"note: {FINE_TUNED_NOTE}")
    print(f"obvious choice: {args.obvious}"
          + (" (EfficientNet-Lite0 at 224, fine-tuned)" if args.obvious == OBVIOUS else ""))
    result = {"machine": machine, "command": command, "note": FINE_TUNED_NOTE}

    def save():
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        tmp_ctx, work = None, args.out
    else:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="bench_image-")
        work = Path(tmp_ctx.name)
    t0 = time.perf_counter()
    try:
        run(args, work, result, save)
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    result["total_s"] = time.perf_counter() - t0
    save()
    print(f"\ntotal: {result['total_s']:.1f} s wall" + (f"; wrote {args.json}" if args.json else ""))


def run(args, work: Path, result: dict, save) -> None:
    data, full_rows = DATA, None
    if args.rows:
        data, full_rows = subsample(args.rows, args.seed, work)
    if args.candidates:
        candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    else:  # the default image ladder, named (the obvious choice may be off it)
        candidates = [c.name for c in ladder("classification", image=True)]
    added_obvious = False
    if args.obvious not in candidates:
        candidates.append(args.obvious)
        added_obvious = True
    print(f"data: {DATA}" + (f", a subsample of {args.rows} of {full_rows} images stratified by (type, defective), "
                             f"{data}" if args.rows else "") + f"; target {TARGET}, groups {', '.join(GROUPS)}")
    print(f"candidates: {', '.join(candidates)}"
          + (f" ({args.obvious} added: the obvious choice)" if added_obvious else "")
          + f"; {args.folds} folds x {args.repeats} repeats, seed {args.seed}, default cost settings")

    run_dir = work / "select"
    t0 = time.perf_counter()
    res = frugalml.select(data, TARGET, groups=GROUPS, image=IMAGE, candidates=candidates, folds=args.folds,
                          repeats=args.repeats, seed=args.seed, out=run_dir, overwrite=True,
                          progress=Progress("select"))
    select_s = time.perf_counter() - t0
    d = res.decision
    folds = json.loads((run_dir / "folds.json").read_text())
    sign = 1.0 if d["higher_is_better"] else -1.0
    tol, alpha = d["tolerance"], d["settings"]["alpha"]
    ratio_tt = 1.0 / (d["settings"]["folds"] - 1)  # splits.test_train_ratio: test rows / train rows
    cands = {c["name"]: c for c in d["candidates"]}
    best, rec, obv = d["best"], d["recommended"], args.obvious
    groups = sorted({g for c in d["candidates"] for g in c["groups"]})

    # --- 2. the table -----------------------------------------------------------------------------------
    print(f"\nselect: {select_s:.1f} s wall, {d['data']['rows']} images, metric {d['metric']} "
          f"({d['settings']['metric_choice']}), tolerance {tol:g}")
    hdr = ("candidate", "R", f"{d['metric']} [95% CI]", *groups, "p50 ms", "p99 ms", "images/s", "size", "J/1k",
           "fit s", "verdict")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    rows = []
    for c in d["candidates"]:
        cost = c["cost"]
        # the decision's quality interval is select's (1 - 2 alpha) = 90% one; the table shows the 95% one, as the
        # paired comparison below does, from the same fold scores and the same correction
        m, lo, hi = mean_ci(np.asarray(folds["candidates"][c["name"]]["scores"], dtype=float), ratio_tt, 0.95)
        lo, hi = sorted((sign * lo, sign * hi))
        q = {"mean": sign * m, "ci_low": lo, "ci_high": hi}
        tags = [t for t, n in (("best", best), ("recommended", rec), ("obvious", obv)) if c["name"] == n]
        row = {"candidate": c["name"], "family": c["family"], "resolution": c.get("resolution"),
               "quality": q, "quality_decision_90": c["quality"],
               "groups": {g: (c["groups"].get(g) or {}).get("mean") for g in groups},
               "latency_ms_p50": cost.get("latency_ms_p50"), "latency_ms_p99": cost.get("latency_ms_p99"),
               "throughput_images_per_s": cost.get("throughput_rows_per_s"), "size_bytes": cost.get("size_bytes"),
               "energy_j_per_1k": cost.get("energy_j_per_1k"), "params": cost.get("params"),
               "fit_s": cost.get("fit_s"), "format": cost.get("format"), "on_par": c["on_par"],
               "vs_best": c["vs_best"], "verdict": c["rejected_because"] or "recommended", "tags": tags,
               "cost": cost}
        rows.append(row)
        print("| " + " | ".join([
            c["name"] + (f" ({', '.join(tags)})" if tags else ""), fmt(c.get("resolution"), "d"),
            f"{q['mean']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]",
            *[fmt(row["groups"][g], ".4f") for g in groups],
            fmt(row["latency_ms_p50"]), fmt(row["latency_ms_p99"]), fmt(row["throughput_images_per_s"], ".4g"),
            format_cost(row["size_bytes"], "bytes") if row["size_bytes"] is not None else "-",
            fmt(row["energy_j_per_1k"]), fmt(row["fit_s"], ".3g"), row["verdict"]]) + " |")
    for f in d["failed"]:
        print(f"failed: {f['name']}: {f['error']}")
    print(f"\nbest: {best}; recommended: {rec}")
    print(f"reason: {d['reason']}")

    # --- 3. the recommendation against the obvious choice -----------------------------------------------
    comparison = None
    print(f"\n## recommended ({rec}) vs obvious ({obv})")
    if obv not in cands or obv not in folds["candidates"] or folds["candidates"][obv].get("error"):
        print(f"the obvious choice {obv} has no result in this run (failed or not run); no comparison")
    else:
        cr, co = cands[rec], cands[obv]
        pair = paired(folds, rec, obv, ratio_tt, sign, tol, alpha)
        lat = ratio(co["cost"].get("latency_ms_p99"), cr["cost"].get("latency_ms_p99"))
        lat50 = ratio(co["cost"].get("latency_ms_p50"), cr["cost"].get("latency_ms_p50"))
        energy = ratio(co["cost"].get("energy_j_per_1k"), cr["cost"].get("energy_j_per_1k"))
        size = ratio(co["cost"].get("size_bytes"), cr["cost"].get("size_bytes"))
        parts = {"overall": pair["overall"], **pair["groups"]}
        on_par_obv = all(p["verdict"] == "non_inferior" for p in parts.values())
        cheaper = lat is not None and lat >= TARGET_SPEEDUP
        hdr2 = ("", rec, obv, f"{rec} - {obv} [95% CI]", f"vs {tol:g} tolerance", "p (non-inferiority)")
        print("| " + " | ".join(hdr2) + " |")
        print("|" + "---|" * len(hdr2))
        for name, p in parts.items():
            a = cr["quality"]["mean"] if name == "overall" else (cr["groups"].get(name) or {}).get("mean")
            b = co["quality"]["mean"] if name == "overall" else (co["groups"].get(name) or {}).get("mean")
            print(f"| {d['metric']} {name} | {fmt(a, '.4f')} | {fmt(b, '.4f')} | {p['diff_mean']:+.4f} "
                  f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] | {p['verdict']} | "
                  f"{fmt(p['p_value_non_inferiority'], '.3g')} |")
        for label, key in (("p50 ms", "latency_ms_p50"), ("p99 ms", "latency_ms_p99"), ("J/1k", "energy_j_per_1k")):
            print(f"| {label} | {fmt(cr['cost'].get(key))} | {fmt(co['cost'].get(key))} | | | |")
        print(f"| size | {format_cost(cr['cost']['size_bytes'], 'bytes')} | "
              f"{format_cost(co['cost']['size_bytes'], 'bytes')} | | | |")
        print(f"\np99 latency ratio (obvious / recommended): {fmt(lat, '.2f')}x (p50 {fmt(lat50, '.2f')}x); "
              f"energy ratio: {fmt(energy, '.2f')}x; size ratio: {fmt(size, '.2f')}x")
        rec_groups = {g: e.get("verdict", "untested") for g, e in cr["groups"].items()}
        print(f"select's decision for {rec} (against the best, {best}): on_par {cr['on_par']}, overall "
              f"{cr['vs_best']['verdict']}, groups " + ", ".join(f"{g} {v}" for g, v in rec_groups.items()))
        print(f"on par with the obvious choice (95% interval above -{tol:g}) overall and in every group: "
              f"{'yes' if on_par_obv else 'no'} ("
              + ", ".join(f"{n} {p['verdict']}" for n, p in parts.items()) + ")")
        print(f">= {TARGET_SPEEDUP:g}x cheaper in batch-1 p99 latency: {'yes' if cheaper else 'no'} "
              f"({fmt(lat, '.2f')}x)")
        met = on_par_obv and cheaper and cr["on_par"]
        print(f"TARGET {'MET' if met else 'NOT MET'}: on par per group (vs best: {cr['on_par']}, vs obvious: "
              f"{on_par_obv}) and >= {TARGET_SPEEDUP:g}x cheaper in p99 latency ({cheaper})")
        comparison = {"recommended": rec, "obvious": obv, "paired": pair, "p99_latency_ratio": lat,
                      "p50_latency_ratio": lat50, "energy_ratio": energy, "size_ratio": size,
                      "recommended_on_par_vs_best": cr["on_par"], "on_par_vs_obvious": on_par_obv,
                      "cheaper_5x_p99": cheaper, "target_met": met, "test_train_ratio": ratio_tt}

    result.update({
        "data": str(data), "rows": d["data"]["rows"], "subsample_of": full_rows, "target": TARGET, "groups": GROUPS,
        "candidates_asked": candidates or "default image ladder", "folds": args.folds, "repeats": args.repeats,
        "seed": args.seed, "metric": d["metric"], "tolerance": tol, "select_s": select_s, "best": best,
        "recommended": rec, "obvious": obv, "reason": d["reason"], "stability": d.get("stability"),
        "failed": d["failed"], "table": rows, "comparison": comparison, "folds_scores": folds["candidates"],
        "decision_machine": d.get("machine")})
    save()

    # --- 4. compress the recommended model and the best one ---------------------------------------------
    if args.no_compress:
        print("\n## compress: left out (--no-compress)")
        return
    timeout = args.compress_timeout or None
    print(f"\n## compress (on the {d['data']['rows']} images select saw; groups {', '.join(GROUPS)}; each in a child "
          f"process{f', at most {timeout:g} s' if timeout else ''})")
    comp = result["compress"] = {}
    comp["recommended"] = compress_isolated(run_dir, data, work / "compress_recommended", args.seed, timeout)
    save()
    print_compress(f"recommended {rec}", comp["recommended"])
    print(f"  (compress of the recommended: {comp['recommended']['compress_s']:.1f} s)")
    if best == rec:
        comp["best"] = comp["recommended"]
        print(f"- best {best}: the recommended one (above)")
        return
    t0 = time.perf_counter()
    try:
        best_dir, rb = run_of(best, run_dir, work / "select_best", data, args)
    except FrugalError as exc:
        comp["best"] = {"error": f"{type(exc).__name__} in select(candidates=[{best}]): {exc}"}
    else:
        result["best_select_s"] = time.perf_counter() - t0
        print(f"  (select with candidates=[{best}], resumed from the first run's trials: "
              f"{result['best_select_s']:.1f} s"
              + (f"; note: it recommends {rb['recommended']}" if rb["recommended"] != best else "") + ")")
        comp["best"] = compress_isolated(best_dir, data, work / "compress_best", args.seed, timeout)
    save()
    print_compress(f"best {best}", comp["best"])
    if "compress_s" in comp["best"]:
        print(f"  (compress of the best: {comp['best']['compress_s']:.1f} s)")


if __name__ == "__main__":
    main()
