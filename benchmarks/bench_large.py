"""select on a large table: a folder of Parquet files read lazily, against the same rows as one Parquet file read
whole by pandas (what select did with any table before, and what a user holding a DataFrame does).

The table (made here, seeded, cached under --data): --rows rows (default 1,000,000) x 50 features: 40 float
columns, 3 integer columns, 6 string categories (3 to 40 levels) and a group column `region` (5 levels), and a
binary target `y` from a logistic rule with an interaction and category effects. Written as 10 files with
row groups of 65,536 rows (`lazy/part-*.parquet`) and as one file (`whole.parquet`).

Each mode runs `frugal select` in a child process (--jobs 2, the candidates in --candidates) while this process
samples the memory of its whole process tree every 0.25 s: the sum of PSS (proportional set size: a page
shared by several processes, a joblib memory map or a forked library, is counted once, in shares), the
largest single process's RSS and the RSS of the command's own process (the client, which holds the table when
it is read whole). Reported per mode: wall time, the peak of that sum, the peak single process, and
the decision (best, recommended, each candidate's quality); the two modes' decisions are compared.

--probe-read: only read every row into the canonical frame, once per mode, each in a fresh child process, and
print that process's peak RSS (what one refit's read costs).

Usage: python benchmarks/bench_large.py [--rows N] [--data DIR] [--modes lazy,whole] [--candidates a,b,...]
       [--folds 5] [--repeats 1] [--sample N] [--json benchmarks/results_large.json] [--probe-read]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FILES, ROW_GROUP = 10, 65_536


def make_table(folder: Path, rows: int, seed: int = 0) -> None:
    """The dataset, one file at a time (never the whole table in memory), and the same rows as one file."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "lazy").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=10)
    levels = [3, 5, 8, 12, 20, 40]
    effects = [rng.normal(scale=0.5, size=k) for k in levels]
    writer = None
    for i, n in enumerate(np.diff(np.linspace(0, rows, FILES + 1).astype(int))):
        num = rng.normal(size=(n, 40))
        ints = rng.integers(0, [5, 50, 1000], size=(n, 3))
        cats = [rng.integers(0, k, n) for k in levels]
        region = rng.integers(0, 5, n)
        logit = num[:, :10] @ weights + 0.8 * num[:, 0] * num[:, 1] + sum(e[c] for e, c in zip(effects, cats)) \
            + 0.1 * ints[:, 0] + 0.3 * (region == 4)
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        frame = pd.DataFrame({**{f"n{j}": num[:, j] for j in range(40)}, **{f"i{j}": ints[:, j] for j in range(3)},
                              **{f"c{j}": np.char.add(f"c{j}_", cats[j].astype(str)) for j in range(6)},
                              "region": np.array(["north", "south", "east", "west", "centre"])[region], "y": y})
        table = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(table, folder / "lazy" / f"part-{i:02d}.parquet", row_group_size=ROW_GROUP)
        writer = writer or pq.ParquetWriter(folder / "whole.parquet", table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    writer.close()


def tree_memory(root) -> tuple[float, float, float]:
    """(sum of PSS over the process and its descendants, largest single RSS, the root's own RSS), in MB."""
    import psutil

    total = single = own = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += info.pss
        single = max(single, info.rss)
        own = info.rss if p is root else own
    return total / 2**20, single / 2**20, own / 2**20


def run(mode: str, data: Path, args, out: Path) -> dict:
    import psutil

    source = str(data / "lazy") if mode == "lazy" else str(data / "whole.parquet")
    cmd = [sys.executable, "-m", "frugalml.cli", "select", source, "-t", "y", "-g", "region", "--jobs", "2",
           "--folds", str(args.folds), "--repeats", str(args.repeats), "--stability-draws", "50",
           "--out", str(out / mode), "--json", "-q", *sum((["-c", c] for c in args.candidates.split(",")), [])]
    if args.sample:
        cmd += ["--sample", str(args.sample)]
    peak = {"pss_mb": 0.0, "rss_mb": 0.0, "client_mb": 0.0}
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def watch():
        while not done.is_set():
            for key, mb in zip(("pss_mb", "rss_mb", "client_mb"), tree_memory(proc)):
                peak[key] = max(peak[key], mb)
            done.wait(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    done.set()
    watcher.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode}: exit {proc.returncode}: {stderr.strip()[-2000:]}")
    d = json.loads(stdout)
    return {"mode": mode, "source": source, "wall_s": round(wall, 1), "peak_tree_pss_mb": round(peak["pss_mb"]),
            "peak_process_rss_mb": round(peak["rss_mb"]), "peak_client_rss_mb": round(peak["client_mb"]), "rows": d["data"]["rows"], "read": d["data"]["read"],
            "features": d["data"]["features"], "best": d["best"], "recommended": d["recommended"],
            "quality": {c["name"]: round(c["quality"]["mean"], 5) for c in d["candidates"]},
            "fit_s": {c["name"]: round(c["cost"]["fit_s"], 2) for c in d["candidates"]}}


PROBE = """
import resource, sys, time
import numpy as np, pandas as pd
from frugalml.data import load_task, prepare_frame, take_rows
task = load_task(sys.argv[1] + "/lazy", "y", groups=["region"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
t0 = time.perf_counter()
if sys.argv[2] == "lazy":
    X = take_rows(task.X, np.arange(len(task.X)))
else:
    X = prepare_frame(pd.read_parquet(sys.argv[1] + "/whole.parquet"), task.schema)
print(f"{sys.argv[2]:>5}: read {len(X):,} rows in {time.perf_counter() - t0:.1f} s; peak RSS "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10:,} MB ({before:,} MB before the read)")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "frugal-large")
    ap.add_argument("--modes", default="lazy,whole")
    ap.add_argument("--candidates", default="dummy,linear,naive_bayes,decision_tree,lightgbm")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sample", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--probe-read", action="store_true")
    args = ap.parse_args()
    data = args.data / str(args.rows)
    if not (data / "whole.parquet").exists():
        t0 = time.perf_counter()
        make_table(data, args.rows)
        print(f"made {args.rows:,} rows x 50 features in {time.perf_counter() - t0:.0f} s under {data}")
    sizes = {"lazy_files_mb": round(sum(f.stat().st_size for f in (data / "lazy").glob("*.parquet")) / 2**20),
             "whole_file_mb": round((data / "whole.parquet").stat().st_size / 2**20)}
    if args.probe_read:
        for mode in args.modes.split(","):
            subprocess.run([sys.executable, "-c", PROBE, str(data), mode], check=True)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="frugal-large-") as tmp:
        for mode in args.modes.split(","):
            r = run(mode, data, args, Path(tmp))
            results.append(r)
            print(f"{mode:>5}: {r['wall_s']:7.1f} s   peak tree PSS {r['peak_tree_pss_mb']:6,} MB   largest process "
                  f"{r['peak_process_rss_mb']:6,} MB   the command's process {r['peak_client_rss_mb']:6,} MB   "
                  f"recommended {r['recommended']} (best {r['best']})")
    if len(results) == 2:
        a, b = results
        same = a["quality"] == b["quality"] and (a["best"], a["recommended"]) == (b["best"], b["recommended"])
        print(f"same decision and quality numbers: {same}; memory whole/lazy "
              f"{b['peak_tree_pss_mb'] / a['peak_tree_pss_mb']:.2f}x, time whole/lazy {b['wall_s'] / a['wall_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "candidates": args.candidates, "folds": args.folds,
                                         "repeats": args.repeats, "sample": args.sample, **sizes,
                                         "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
