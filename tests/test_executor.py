"""One way to run trials: joblib, locally or on an existing Dask or Ray cluster started here on 127.0.0.1. With
the same seed, every executor gives the same folds, the same quality numbers, the same variants and the same
recommendation (costs are measured on this machine, one model at a time, whatever the executor)."""

import pytest

import frugalml
from conftest import linear_data, same_decision

SELECT = dict(candidates=["linear", "decision_tree"], folds=3, repeats=1, cost_priority="size", stability_draws=0)
COMPRESS = dict(techniques=["tree-subset", "tree-depth", "onnx-trees"], cost_priority="size", n_boot=400,
                tolerance=0.05)


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """The local runs every executor is compared with: select, and compress of a forest select saved."""
    from frugalml.evaluation import CostConfig

    cost = CostConfig(latency_calls=30, time_budget_s=0.02, batch_large=100, memory_probe=False)
    base = tmp_path_factory.mktemp("executors")
    df, held = linear_data(n=300), linear_data(n=600, seed=3)
    (base / "parquet").mkdir()
    for i, rows in enumerate(((0, 120), (120, 300))):  # the same rows as a Parquet dataset, read lazily
        df.iloc[slice(*rows)].to_parquet(base / "parquet" / f"part-{i}.parquet", row_group_size=50, index=False)
    frugalml.select(df, "label", candidates=["random_forest"], folds=2, repeats=1, stability_draws=0, cost=cost,
                    out=base / "forest")
    select = frugalml.select(df, "label", cost=cost, n_jobs=2, **SELECT).decision
    compress = frugalml.compress(base / "forest", held, cost=cost, n_jobs=2, **COMPRESS).decision
    return dict(df=df, held=held, forest=base / "forest", cost=cost, select=select, compress=compress,
                parquet=base / "parquet")


def through(executor: str, runs: dict) -> tuple[dict, dict]:
    select = frugalml.select(runs["df"], "label", cost=runs["cost"], executor=executor, **SELECT).decision
    compress = frugalml.compress(runs["forest"], runs["held"], cost=runs["cost"], executor=executor,
                                 **COMPRESS).decision
    assert select["settings"]["executor"] == compress["settings"]["executor"] == executor
    # the workers read their folds' rows from the files themselves: the decision is the same
    lazy = frugalml.select(str(runs["parquet"]), "label", cost=runs["cost"], executor=executor, **SELECT).decision
    assert lazy["data"]["read"] == "lazily"
    same_decision(select, lazy)
    return select, compress


@pytest.mark.slow
def test_dask_executor_gives_the_local_decisions(local_runs):
    import distributed  # the dask extra, which make test installs: a missing package is a broken install, not a skip

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        select, compress = through(f"dask://{cluster.scheduler_address.replace('tcp://', '')}", local_runs)
    same_decision(local_runs["select"], select)
    same_decision(local_runs["compress"], compress)
    assert len(compress["candidates"]) > 4 and compress["recommended"] != "original"


@pytest.mark.slow
def test_ray_executor_gives_the_local_decisions(local_runs, monkeypatch):
    import ray  # the ray extra, which make test installs

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        select, compress = through("ray:auto", local_runs)  # ray:auto: the Ray this process runs
    finally:
        ray.shutdown()
    same_decision(local_runs["select"], select)
    same_decision(local_runs["compress"], compress)


def test_unreachable_or_unknown_executor_is_a_clean_error():
    with pytest.raises(frugalml.FrugalError, match="not supported"):
        frugalml.select(linear_data(n=100), "label", executor="spark://x", folds=2, repeats=1)


def test_a_bad_ray_address_is_one_line_and_exit_2(tmp_path, capsys):
    from conftest import free_port
    from frugalml.cli import main

    linear_data(n=60).to_csv(tmp_path / "d.csv", index=False)
    for executor, says in [("ray://nohost", "expected ray://HOST:PORT"),
                           (f"ray://127.0.0.1:{free_port()}", "cannot reach Ray at")]:
        code = main(["select", str(tmp_path / "d.csv"), "-t", "label", "-c", "linear", "-q", "--executor", executor,
                     "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert not (tmp_path / "run").exists()


def _skops_of_a_scaler_holding(a):
    """A trial whose result keeps its input's array, made into an artifact in the worker (as compress does)."""
    from sklearn.preprocessing import StandardScaler

    from frugalml.runtime.model_dir import skops_bytes

    scaler = StandardScaler().fit([[0.0], [1.0]])
    scaler.mean_ = a  # a compressed model shares the original's weights
    return skops_bytes(scaler)


def test_compress_trials_get_arrays_not_memory_maps_so_their_skops_loads():
    import numpy as np

    from frugalml.evaluation.quality import parallel
    from frugalml.runtime.model_dir import load_skops

    big = np.arange(300_000, dtype=np.float64)  # 2.4 MB: above joblib's 1 MB memory-mapping threshold
    calls = [(_skops_of_a_scaler_holding, (big,), {})] * 2
    mapped, copied = (list(parallel(None, 2, memmap=m)(calls)) for m in (True, False))
    with pytest.raises(frugalml.FrugalError):  # what compress's trials made before: a numpy.memmap skops refuses
        load_skops(mapped[0], "a variant")
    assert np.array_equal(load_skops(copied[0], "a variant").mean_, big)
