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
    from frugalml.verbs import select as workflow

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


def test_changed_data_is_refused_and_never_mixed(tmp_path, fast_cost, count_fits):
    out = tmp_path / "run"
    frugalml.select(linear_data(n=300), "label", out=out, cost=fast_cost, **KW)
    before = (out / "decision.json").read_text()
    with pytest.raises(frugalml.FrugalError, match="resume refused: .* are for other data or splits"):
        frugalml.select(linear_data(n=300, seed=5), "label", out=out, cost=fast_cost, resume=True, **KW)
    with pytest.raises(frugalml.FrugalError, match="other data or splits"):  # other folds: other splits
        frugalml.select(linear_data(n=300), "label", out=out, cost=fast_cost, resume=True, **{**KW, "folds": 4})
    assert (out / "decision.json").read_text() == before  # the finished run is untouched
    # without --resume the run starts over (the store too)
    frugalml.select(linear_data(n=300, seed=5), "label", out=out, cost=fast_cost, overwrite=True, **KW)
    assert len(count_fits) == 12


@pytest.fixture
def count_costs(monkeypatch):
    """Counts measure_cost calls by candidate (the pipeline's model class); fail_on: the call that raises."""
    from frugalml.verbs import select as workflow

    calls, real = [], workflow.measure_cost

    def counting(pipe, *args, **kwargs):
        calls.append(type(pipe.steps[-1][1]).__name__)
        if len(calls) == counting.fail_on:
            raise KeyboardInterrupt  # killed while measuring this candidate's cost
        return real(pipe, *args, **kwargs)

    counting.fail_on = None
    monkeypatch.setattr(workflow, "measure_cost", counting)
    return counting, calls


COST_KW = dict(candidates=["linear", "decision_tree", "naive_bayes"], folds=2, repeats=1, n_jobs=1)


def test_stored_costs_are_not_measured_again(tmp_path, fast_cost, count_costs):
    from frugalml.evaluation.trials import COSTS

    counting, calls = count_costs
    df, out = linear_data(n=300), tmp_path / "run"
    counting.fail_on = 2  # killed while timing the second candidate: the first's cost is stored
    with pytest.raises(KeyboardInterrupt):
        frugalml.select(df, "label", out=out, cost=fast_cost, **COST_KW)
    assert len(list((tmp_path / ".run.trials" / COSTS).glob("*.json"))) == 1
    counting.fail_on = None
    first = frugalml.select(df, "label", out=out, cost=fast_cost, resume=True, **COST_KW).decision
    assert calls == ["LogisticRegression", "GaussianNB", "GaussianNB", "DecisionTreeClassifier"]

    # a finished run, resumed: nothing is refitted or re-timed, and the decision is the same
    calls.clear()
    again = frugalml.select(df, "label", out=out, cost=fast_cost, resume=True, **COST_KW).decision
    assert calls == []
    assert [c["cost"] for c in again["candidates"]] == [c["cost"] for c in first["candidates"]]
    assert (again["best"], again["recommended"], again["reason"]) == (first["best"], first["recommended"],
                                                                     first["reason"])
    # the saved model is the stored artifact, and it loads
    assert frugalml.load(out).predict(df.drop(columns=["label"]).iloc[:5]).shape == (5,)


def test_changed_cost_settings_or_a_damaged_entry_measure_again(tmp_path, fast_cost, count_costs):
    from dataclasses import replace

    from frugalml.evaluation.trials import COSTS

    _, calls = count_costs
    df, out = linear_data(n=300), tmp_path / "run"
    frugalml.select(df, "label", out=out, cost=fast_cost, **COST_KW)
    assert len(calls) == 3
    calls.clear()
    frugalml.select(df, "label", out=out, cost=replace(fast_cost, batch_large=100), resume=True, **COST_KW)
    assert len(calls) == 3  # other settings: every cost measured again
    calls.clear()
    # one entry's JSON torn, another's skops bytes damaged: those two are measured again, the third is not
    entries = [e for e in sorted((out / "trials" / COSTS).glob("*.json")) if '"batch_large": 100' in e.read_text()]
    assert len(entries) == 3  # (beside the three of the first settings)
    entries[0].write_text(entries[0].read_text()[:40])
    skops = entries[1].with_suffix(".skops")
    skops.write_bytes(skops.read_bytes()[:-10] + b"0123456789")
    frugalml.select(df, "label", out=out, cost=replace(fast_cost, batch_large=100), resume=True, **COST_KW)
    assert len(calls) == 2
