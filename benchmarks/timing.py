"""Batch-1 latency as the benchmarks measure it: 20 warm-up calls, then p50/p99 of many timed calls."""

import time

import numpy as np


def latency_ms(fn, rows, calls=500):
    """-> (p50, p99) in milliseconds of ``fn(row)``, cycling through ``rows``."""
    for r in rows[:20]:
        fn(r)
    times = []
    for k in range(calls):
        r = rows[k % len(rows)]
        t0 = time.perf_counter_ns()
        fn(r)
        times.append(time.perf_counter_ns() - t0)
    ms = np.asarray(times) / 1e6
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
