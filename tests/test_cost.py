import numpy as np
import pytest

from conftest import linear_data
from frugalml.candidates import CANDIDATES, build_pipeline
from frugalml.data import load_task
from frugalml.evaluation import CostConfig, EnergyMeter, measure_cost, measure_peak_memory

KEYS = {"params", "size_bytes", "latency_ms_p50", "latency_ms_p99", "throughput_rows_per_s", "peak_memory_mb",
        "fit_s", "energy_j_per_1k", "energy_source", "usd_per_1m", "gco2e_per_1m"}


@pytest.fixture(scope="module")
def task():
    return load_task(linear_data(n=400), "label")


def fitted(task, name):
    c = CANDIDATES.get(name)
    return build_pipeline(c.build(task.kind, 0), task.schema, c.scale).fit(task.X, task.y)


def _median_ms(fn, inputs, calls=200) -> float:
    """An independent batch-1 timing: the median of ``calls`` calls, one thread, after a warm-up."""
    import time

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        for x in inputs[:20]:
            fn(x)
        times = []
        for k in range(calls):
            t0 = time.perf_counter()
            fn(inputs[k % len(inputs)])
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def _rows_per_s(fn, batch, n_rows, repeats=5) -> float:
    """An independent throughput: rows over the best of ``repeats`` calls on one batch, one thread."""
    import time

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        fn(batch)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(batch)
            best = min(best, time.perf_counter() - t0)
    return n_rows / best


def test_cost_is_measured_on_the_deployed_artifact(task):
    from frugalml.runtime.sessions import OnnxPredictor

    cfg = CostConfig(latency_calls=80, time_budget_s=0.1, batch_large=300, memory_probe=True,
                     usd_per_hour=3.6, instance_vcpus=1, grid_gco2e_per_kwh=1000.0)
    meter = EnergyMeter.create()
    pipes = {name: fitted(task, name) for name in ("linear", "random_forest")}
    lin, lin_art = measure_cost(pipes["linear"], task.schema, task.X, cfg, fit_s=0.5, meter=meter)
    forest, forest_art = measure_cost(pipes["random_forest"], task.schema, task.X, cfg, fit_s=0.5, meter=meter)
    rows = [task.X.iloc[[i]] for i in np.random.default_rng(1).choice(len(task.X), 64, replace=False)]
    big = task.X.iloc[np.random.default_rng(2).choice(len(task.X), 300)]
    for cost, art, pipe in ((lin, lin_art, pipes["linear"]), (forest, forest_art, pipes["random_forest"])):
        assert KEYS <= set(cost)
        assert cost["format"] == "onnx" and cost["threads"] == 1 and cost["fit_s"] == 0.5
        # the deployed file and the skops file are what is counted, byte for byte
        assert cost["size_bytes"] == len(art["onnx"]) and cost["skops_size_bytes"] == len(art["skops"])
        assert 0 < cost["latency_ms_p50"] <= cost["latency_ms_p99"]
        # Latencies and throughput agree with an independent timing of the same artifact, within a broad factor
        # of 3 (medians and best-of calls: robust to a busy machine; the deployed ONNX graph and the native
        # pipeline differ by 100x here, so a swapped or mis-scaled figure still fails).
        onx = OnnxPredictor(art["onnx"], task.schema, threads=1)
        label = [onx.label_output]
        deployed_ms = _median_ms(lambda f: onx.run(f, label), [onx.feeds(r) for r in rows])
        native_ms = _median_ms(pipe.predict, rows)
        assert deployed_ms / 3 < cost["latency_ms_p50"] < deployed_ms * 3, (cost["latency_ms_p50"], deployed_ms)
        assert native_ms / 3 < cost["native_latency_ms_p50"] < native_ms * 3, (cost["native_latency_ms_p50"], native_ms)
        tput = _rows_per_s(lambda f: onx.run(f, label), onx.feeds(big), len(big))
        assert tput / 3 < cost["throughput_rows_per_s"] < tput * 3, (cost["throughput_rows_per_s"], tput)
        assert cost["energy_source"] == meter.source
        # $3.6/h for one vCPU is $0.001 per core-second: $ per 1M = 1e6 calls x mean seconds per call x 0.001
        assert cost["usd_per_1m"] == pytest.approx(1e6 * cost["latency_ms_mean"] / 1000 * 0.001)
        # 80 calls cap the timing (or, on a very busy machine, the 0.1 s budget after at least 50): too few calls
        # to bound the p99 from above (P99_BOUNDED), so the rule cannot have stopped on precision
        assert (cost["latency_stopped"], cost["latency_calls"]) == ("calls", 80) or (
            cost["latency_stopped"] == "time" and 50 <= cost["latency_calls"] < 80)
        lo, hi = cost["latency_ms_p99_ci"]
        assert lo <= cost["latency_ms_p99"] and hi == np.inf
        # 1000 g/kWh: gCO2e per 1M = J per 1k x 1000 / 3.6e6 x 1000
        assert cost["gco2e_per_1m"] == pytest.approx(cost["energy_j_per_1k"] * 1000 / 3600)
    assert forest["size_bytes"] > 50 * lin["size_bytes"]
    assert forest["params"] > 100 * lin["params"]
    mem = measure_peak_memory({"linear": lin_art, "random_forest": forest_art}, task.schema, task.X, cfg)
    # a session holds at least its graph: the forest's peak exceeds the linear model's by at least its file's MB
    assert mem["random_forest"] - mem["linear"] >= len(forest_art["onnx"]) / 2**20, (mem, len(forest_art["onnx"]))


class _WallPower(EnergyMeter):
    """A meter whose counter reads a constant power times the wall clock, as RAPL would for a CPU drawing that
    power steadily."""

    def __init__(self, watts: float):
        super().__init__("measured", f"{watts} W x wall time")
        self.watts = watts

    def _read(self):
        import time

        return time.process_time(), self.watts * time.perf_counter()


def test_energy_per_1k_is_the_meters_joules_over_the_timed_calls(task, fast_cost):
    """With a meter of known power, the energy per 1,000 predictions is that power times the time of the timed
    calls: at least their summed latency (the window holds them all) and at most the whole measurement's time."""
    import time

    meter = _WallPower(50.0)
    t0 = time.perf_counter()
    cost, _ = measure_cost(fitted(task, "linear"), task.schema, task.X, fast_cost, fit_s=0.0, meter=meter)
    elapsed_s = time.perf_counter() - t0
    assert cost["energy_source"] == "measured"
    assert cost["energy_j_per_1k"] >= 50.0 * cost["latency_ms_mean"] * (1 - 1e-6)  # W x ms = J per 1,000 calls
    assert cost["energy_j_per_1k"] <= 50.0 * elapsed_s * 1000 / cost["latency_calls"]


def test_timed_calls_divide_the_windows_joules_by_the_calls():
    """A counter that moves by exactly 0.25 J per call: 0.25 J per call, warm-up calls not counted."""
    from frugalml.evaluation.cost import _time_calls

    class PerCall(EnergyMeter):
        joules = 0.0

        def _read(self):
            import time

            return time.process_time(), self.joules

    meter = PerCall("measured", "0.25 J per call")

    def call(x):
        meter.joules += 0.25

    out = _time_calls(call, [0] * 8, CostConfig(latency_calls=200, time_budget_s=10), meter)
    assert out["joules_per_call"] == pytest.approx(0.25, rel=1e-12) and meter.joules == 0.25 * (out["calls"] + 8)


def test_models_without_onnx_are_measured_natively(task, fast_cost):
    cost, art = measure_cost(fitted(task, "dummy"), task.schema, task.X, fast_cost, fit_s=0.0)
    assert cost["format"] == "native" and art["onnx"] is None and "DummyClassifier" in art["onnx_error"]
    assert cost["size_bytes"] == len(art["skops"])
    assert cost["latency_ms_p50"] == cost["native_latency_ms_p50"]


def test_energy_meter_labels_its_source():
    """The window's CPU time lies between an inner and an outer reading of the process's clock; estimated joules
    are that CPU time at the power per thread the label states; measured ones (RAPL) a package's plausible power."""
    import time

    from frugalml.evaluation.energy import watts_per_thread

    meter = EnergyMeter.create()
    assert meter.source in ("measured", "estimated") and meter.method
    outer, wall = time.process_time(), time.perf_counter()
    with meter.measure() as w:
        inner = time.process_time()
        np.linalg.svd(np.random.default_rng(0).normal(size=(300, 300)))
        inner = time.process_time() - inner
    outer, wall = time.process_time() - outer, time.perf_counter() - wall
    assert inner > 0 and inner <= w.cpu_s <= outer
    if meter.source == "estimated":
        watts = watts_per_thread()[0]
        assert f"{watts:.2f} W per thread" in meter.method
        assert w.joules == pytest.approx(w.cpu_s * watts, rel=1e-12)
    else:
        assert 0 < w.joules < 1000 * wall  # a CPU package draws power, and under a kilowatt


def test_quantile_interval_covers_the_p99_and_is_open_above_with_too_few_values():
    from frugalml.evaluation.cost import P99_BOUNDED, quantile_interval

    rng = np.random.default_rng(0)
    assert quantile_interval(rng.random(P99_BOUNDED - 1))[1] == np.inf
    assert np.isfinite(quantile_interval(rng.random(P99_BOUNDED))[1])
    # uniform values: the true p99 is 0.99; a 95% interval holds it in about 95% of samples
    covered = [lo <= 0.99 <= hi for lo, hi in (quantile_interval(rng.random(600)) for _ in range(400))]
    assert 0.92 <= np.mean(covered) <= 0.995


class _FakeClock:
    """``perf_counter_ns`` for ``_time_calls``: each call of ``call`` moves the clock by the next duration (ns)."""

    def __init__(self, durations):
        self.now_ns, self.durations, self.calls = 10**12, durations, 0

    def perf_counter_ns(self) -> int:
        return self.now_ns

    def call(self, x) -> None:
        self.now_ns += int(self.durations[self.calls])
        self.calls += 1


def _timed(durations, cfg, monkeypatch):
    import frugalml.evaluation.cost as cost

    clock = _FakeClock(durations)
    with monkeypatch.context() as m:
        m.setattr(cost, "time", clock)
        return cost._time_calls(clock.call, [0] * 8, cfg, EnergyMeter.create())


def test_latency_stops_once_the_p99_is_precise_and_its_interval_holds_a_long_runs_p99(monkeypatch):
    """The stopping rule on a deterministic clock: calls whose durations are drawn from a known distribution.

    This test used to time a real matrix-vector product and compare the interval with the p99 of a long real run.
    It failed once under load in a full-suite run (passed alone): on a busy machine the two runs see different
    preemptions, so their p99s differ by more than the interval's width, and retrying only makes that rarer. The
    rule itself does not depend on the clock, so it is checked here on a fake one: for 300 seeded lognormal
    series it must stop at the first check (368 calls, then every quarter more) where the p99's interval is within
    5% of it, well before the cap, and the interval must hold the distribution's true p99 about as often as a 95%
    interval should. A series whose p99 falls in a gap never gets precise and runs to the cap.
    """
    from scipy.stats import norm

    from frugalml.evaluation.cost import MIN_CALLS, P99_BOUNDED, quantile_interval

    base, sigma, cap = 20_000, 0.1, 30_000
    true_p99_ms = base * np.exp(sigma * norm.ppf(0.99)) / 1e6
    rule = CostConfig(latency_calls=cap, time_budget_s=10)
    schedule = [P99_BOUNDED]
    while schedule[-1] < cap:
        schedule.append(schedule[-1] + max(MIN_CALLS, schedule[-1] // 4))
    covered = []
    for seed in range(300):
        durations = np.rint(base * np.exp(sigma * np.random.default_rng(seed).normal(size=cap + 8))).astype(np.int64)
        got = _timed(durations, rule, monkeypatch)
        n = got["calls"]
        assert got["stopped"] == "precise" and n in schedule and n < cap / 10, (seed, got["stopped"], n)
        lo, hi = got["p99_ci"]
        assert max(got["p99"] - lo, hi - got["p99"]) <= 0.05 * got["p99"]
        timed = durations[8:8 + n] / 1e6  # the warm-up calls are not timed
        assert got["p99"] == pytest.approx(np.percentile(timed, 99))
        if n > P99_BOUNDED:  # the check before did not stop it: its interval was not yet within 5%
            before = timed[:schedule[schedule.index(n) - 1]]
            b_lo, b_hi = quantile_interval(before)
            p99 = np.percentile(before, 99)
            assert max(p99 - b_lo, b_hi - p99) > 0.05 * p99
        covered.append(lo <= true_p99_ms <= hi)
    assert 0.90 <= np.mean(covered) <= 0.995, np.mean(covered)  # 0.94: a 95% interval, stopped optionally

    # 1% of calls 10x slower: the p99 lies at the gap, its interval spans it, and only the cap stops the timing
    gap = np.where(np.random.default_rng(0).random(5_008) < 0.01, 10 * base, base)
    got = _timed(gap, CostConfig(latency_calls=5_000, time_budget_s=10), monkeypatch)
    assert got["stopped"] == "calls" and got["calls"] == 5_000


def test_latency_respects_its_caps():
    from frugalml.evaluation.cost import _time_calls

    meter = EnergyMeter.create()
    few = _time_calls(lambda x: None, [0], CostConfig(latency_calls=60), meter)
    assert few["calls"] == 60 and few["p99_ci"][1] == np.inf  # too few calls to bound the p99 from above
    import time

    slow = _time_calls(lambda x: time.sleep(0.002), [0], CostConfig(latency_calls=10_000, time_budget_s=0.05), meter)
    assert slow["stopped"] == "time" and slow["calls"] == 50  # at least 50 calls, whatever the budget


def test_peak_memory_is_measured_apart_for_each_candidate(task):
    """One probe process for all: a large forest and a small model rank as a fresh process per candidate
    ranks them, and what the forest used does not change the small model's figure."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from frugalml.runtime.model_dir import save_model_dir

    cfg = CostConfig(latency_calls=60, time_budget_s=0.02, batch_large=300)
    _, lin_art = measure_cost(fitted(task, "linear"), task.schema, task.X, cfg, fit_s=0.0)
    _, forest_art = measure_cost(fitted(task, "random_forest"), task.schema, task.X, cfg, fit_s=0.0)
    mem = measure_peak_memory({"linear": lin_art, "random_forest": forest_art, "linear_again": lin_art},
                              task.schema, task.X, cfg)
    assert 0 < mem["linear"] < mem["random_forest"]
    assert mem["linear_again"] == pytest.approx(mem["linear"], abs=1.0)
    # the reference: a fresh interpreter that loads the forest alone, as each candidate had before
    with tempfile.TemporaryDirectory() as tmp:
        save_model_dir(Path(tmp) / "m", schema=task.schema, name="f", skops_data=forest_art["skops"],
                       onnx_data=forest_art["onnx"])
        task.X.iloc[np.random.default_rng(0).choice(len(task.X), 300)].to_parquet(Path(tmp) / "b.parquet")
        code = ("import sys, onnxruntime, sklearn, skops.io; from frugalml.evaluation._memprobe import peak_mb; "
                "print(peak_mb(sys.argv[1], sys.argv[2]))")
        out = subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "m"), str(Path(tmp) / "b.parquet")],
                             capture_output=True, text=True, check=True)
    fresh = float(out.stdout.split()[-1])
    assert mem["random_forest"] == pytest.approx(fresh, rel=0.25, abs=2.0)
