import pytest

import frugalml
from conftest import linear_data


@pytest.mark.slow
def test_dask_executor_gives_the_same_decision(fast_cost):
    import distributed  # the dask extra, which make test installs: a missing package is a broken install, not a skip

    df = linear_data(n=300)
    kwargs = dict(candidates=["linear", "decision_tree"], folds=3, repeats=1, cost=fast_cost, cost_priority="size")
    local = frugalml.select(df, "label", **kwargs).decision
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "")
        remote = frugalml.select(df, "label", executor=f"dask://{address}", **kwargs).decision
    for a, b in zip(local["candidates"], remote["candidates"]):
        assert a["quality"] == b["quality"]  # same splits, same seeds: identical fold scores
    assert local["recommended"] == remote["recommended"]


def test_unreachable_or_unknown_executor_is_a_clean_error():
    with pytest.raises(frugalml.FrugalError, match="not supported"):
        frugalml.select(linear_data(n=100), "label", executor="spark://x", folds=2, repeats=1)
