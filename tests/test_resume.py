"""--resume: finished fits are stored as they complete and reused; nothing is fitted twice."""

import numpy as np
import pytest

import frugalml
from conftest import linear_data
from frugalml.evaluation import quality

KW = dict(candidates=["linear", "decision_tree"], folds=3, repeats=1, n_jobs=1)


@pytest.fixture
def count_fits(monkeypatch):
    calls = []
    real = quality._fit_fold

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(quality, "_fit_fold", counting)
    return calls


def test_interrupted_run_resumes_without_refitting(tmp_path, fast_cost, count_fits, monkeypatch):
    df = linear_data(n=300)
    out = tmp_path / "run"
    # Interrupt the run after the fits, while measuring cost: the fits must survive for --resume.
    from frugalml import workflow

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "measure_cost", crash)
    with pytest.raises(KeyboardInterrupt):
        frugalml.select(df, "label", out=out, cost=fast_cost, **KW)
    assert len(count_fits) == 6 and not out.exists()
    assert len(list((tmp_path / ".run.trials").glob("*.npz"))) == 6
    monkeypatch.undo()
    monkeypatch.setattr(quality, "_fit_fold", lambda *a, **k: pytest.fail("refitted a stored fold"))

    resumed = frugalml.select(df, "label", out=out, cost=fast_cost, resume=True, **KW).decision
    assert (out / "trials").is_dir() and not (tmp_path / ".run.trials").exists()
    assert {c["name"] for c in resumed["candidates"]} == {"linear", "decision_tree"}


def test_finished_run_can_be_re_decided_and_new_candidates_fit_alone(tmp_path, fast_cost, count_fits):
    df = linear_data(n=300)
    out = tmp_path / "run"
    first = frugalml.select(df, "label", out=out, cost=fast_cost, **KW).decision
    assert len(count_fits) == 6
    # Another tolerance and metric reuse every stored fit; an added candidate is the only one fitted.
    again = frugalml.select(df, "label", out=out, cost=fast_cost, resume=True, tolerance=0.2,
                            metric="balanced_accuracy",
                            **{**KW, "candidates": ["linear", "decision_tree", "naive_bayes"]}).decision
    assert len(count_fits) == 6 + 3
    assert again["tolerance"] == 0.2 and again["metric"] == "balanced_accuracy"
    lin_first = next(c for c in first["candidates"] if c["name"] == "linear")["quality"]["mean"]
    assert lin_first != next(c for c in again["candidates"] if c["name"] == "linear")["quality"]["mean"]


def test_changed_data_discards_stored_fits(tmp_path, fast_cost, count_fits):
    out = tmp_path / "run"
    frugalml.select(linear_data(n=300), "label", out=out, cost=fast_cost, **KW)
    frugalml.select(linear_data(n=300, seed=5), "label", out=out, cost=fast_cost, resume=True, **KW)
    assert len(count_fits) == 12
