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


def test_cost_is_measured_on_the_deployed_artifact(task):
    cfg = CostConfig(latency_calls=80, time_budget_s=0.1, batch_large=300, memory_probe=True,
                     usd_per_hour=3.6, instance_vcpus=1, grid_gco2e_per_kwh=1000.0)
    lin, lin_art = measure_cost(fitted(task, "linear"), task.schema, task.X, cfg, fit_s=0.5)
    forest, forest_art = measure_cost(fitted(task, "random_forest"), task.schema, task.X, cfg, fit_s=0.5)
    for cost in (lin, forest):
        assert KEYS <= set(cost)
        assert cost["format"] == "onnx" and cost["threads"] == 1 and cost["fit_s"] == 0.5
        assert 0 < cost["latency_ms_p50"] <= cost["latency_ms_p99"]
        assert cost["native_latency_ms_p50"] > 0 and cost["throughput_rows_per_s"] > 0
        assert cost["energy_source"] in ("measured", "estimated")
        # $3.6/h for one vCPU is $0.001 per core-second: $ per 1M = 1e6 calls x mean seconds per call x 0.001
        assert cost["usd_per_1m"] == pytest.approx(1e6 * cost["latency_ms_p50"] / 1000 * 0.001, rel=1.0)
        # 1000 g/kWh: gCO2e per 1M = J per 1k x 1000 / 3.6e6 x 1000
        assert cost["gco2e_per_1m"] == pytest.approx(cost["energy_j_per_1k"] * 1000 / 3600)
    assert lin["size_bytes"] == len(lin_art["onnx"])
    assert forest["size_bytes"] > 50 * lin["size_bytes"]
    assert forest["params"] > 100 * lin["params"]
    mem = measure_peak_memory({"linear": lin_art, "random_forest": forest_art}, task.schema, task.X, cfg)
    assert mem["linear"] > 0 and mem["random_forest"] > mem["linear"]


def test_models_without_onnx_are_measured_natively(task, fast_cost):
    cost, art = measure_cost(fitted(task, "dummy"), task.schema, task.X, fast_cost, fit_s=0.0)
    assert cost["format"] == "native" and art["onnx"] is None and "DummyClassifier" in art["onnx_error"]
    assert cost["size_bytes"] == len(art["skops"])
    assert cost["latency_ms_p50"] == cost["native_latency_ms_p50"]


def test_energy_meter_labels_its_source():
    meter = EnergyMeter.create()
    assert meter.source in ("measured", "estimated") and meter.method
    with meter.measure() as w:
        np.linalg.svd(np.random.default_rng(0).normal(size=(300, 300)))
    assert w.cpu_s > 0 and w.joules > 0
