"""--resume: finished fits are stored as they complete and reused; nothing is fitted twice."""

import pytest

import frugalml
from conftest import linear_data, same_decision
from frugalml.evaluation import CostConfig, quality

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


def test_a_torn_fit_is_listed_and_fitted_again(tmp_path, fast_cost, count_fits):
    df, out = linear_data(n=300), tmp_path / "run"
    frugalml.select(df, "label", out=out, cost=fast_cost, **KW)
    torn = sorted((out / "trials").glob("*-fold*.npz"))[2]
    torn.write_bytes(torn.read_bytes()[:100])  # killed mid-write by something that did not rename it first
    again = frugalml.select(df, "label", out=out, cost=fast_cost, resume=True, **KW).decision
    assert again["settings"]["resume"]["damaged"] == [torn.name]
    assert again["settings"]["resume"]["reused"]["fit"] == 5 and again["settings"]["resume"]["made"]["fit"] == 1
    assert len(count_fits) == 6 + 1


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


# --- killed with SIGKILL, in a subprocess, then resumed ------------------------------------------------------

def kill_once_stored(args: list[str], folder, pattern: str, count: int) -> int:
    """Run ``frugal ARGS``; SIGKILL it once ``count`` entries match ``pattern`` in ``folder`` -> how many
    entries are stored whole after the kill (a file being written has another name until it is renamed)."""
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "frugalml.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(list(folder.glob(pattern))) < count:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "nothing was stored in time"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    return len(list(folder.glob(pattern)))


@pytest.mark.slow
def test_select_killed_mid_run_resumes_with_only_the_missing_fits(tmp_path, fast_cost):
    df = linear_data(n=1500)
    df.to_csv(tmp_path / "data.csv", index=False)
    names = ["linear", "decision_tree", "random_forest", "naive_bayes"]
    kw = dict(folds=3, repeats=2, cost_priority="size", stability_draws=0, n_jobs=1)
    out = tmp_path / "run"
    stored = kill_once_stored(["select", str(tmp_path / "data.csv"), "--target", "label", "--out", str(out), "--jobs",
                               "1", "--folds", "3", "--repeats", "2", "-q", "--no-memory-probe",
                               *[a for n in names for a in ("-c", n)]],
                              tmp_path / ".run.trials", "*-fold*.npz", 4)
    assert not out.exists() and 4 <= stored < 24
    resumed = frugalml.select(df, "label", candidates=names, out=out, resume=True, cost=fast_cost, **kw).decision
    assert resumed["settings"]["resume"]["reused"]["fit"] == stored
    assert resumed["settings"]["resume"]["made"]["fit"] == 24 - stored  # only the missing fits
    whole = frugalml.select(df, "label", candidates=names, cost=fast_cost, **kw).decision
    same_decision(whole, resumed)


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    """A forest select saved, and rows it did not train on (a CSV too)."""
    base = tmp_path_factory.mktemp("forest")
    frugalml.select(linear_data(n=400), "label", candidates=["random_forest"], folds=2, repeats=1, out=base / "rf",
                    stability_draws=0, cost=CostConfig(latency_calls=30, time_budget_s=0.02, batch_large=50,
                                                       memory_probe=False))
    held = linear_data(n=1500, seed=3)
    held.to_csv(base / "held.csv", index=False)
    return base, held


COMPRESS = dict(techniques=["tree-subset", "tree-depth", "tree-prune", "onnx-trees"], cost_priority="size",
                tolerance=0.05, n_boot=400, n_jobs=1)


@pytest.mark.slow
def test_compress_killed_mid_search_resumes_with_only_the_missing_variants(forest, fast_cost):
    base, held = forest
    out = base / "compressed"
    stored = kill_once_stored(["compress", str(base / "rf"), "--data", str(base / "held.csv"), "--out", str(out),
                               "--jobs", "1", "--techniques", ",".join(COMPRESS["techniques"]), "--tolerance",
                               "0.05", "--cost-priority", "size", "--no-memory-probe", "-q"],
                              base / ".compressed.trials" / "variants", "*.json", 2)
    assert not out.exists()
    resumed = frugalml.compress(base / "rf", held, out=out, resume=True, cost=fast_cost, **COMPRESS).decision
    made = len(resumed["candidates"]) - 1  # every variant but the original
    assert 2 <= stored < made
    assert resumed["settings"]["resume"]["reused"]["variant"] == stored
    assert resumed["settings"]["resume"]["made"]["variant"] == made - stored  # only the missing variants
    whole = frugalml.compress(base / "rf", held, cost=fast_cost, **COMPRESS).decision
    same_decision(whole, resumed)
    assert resumed["recommended"] != "original" and frugalml.load(out).predict(held.iloc[:3]).shape == (3,)

    # a torn record (its JSON cut short): detected, listed, that variant made again; the rest reused
    record = sorted((out / "trials" / "variants").glob("*.json"))[0]
    record.write_text(record.read_text()[:-20])
    again = frugalml.compress(base / "rf", held, out=out, resume=True, cost=fast_cost, **COMPRESS).decision
    assert again["settings"]["resume"]["damaged"] == [record.name]
    assert again["settings"]["resume"]["made"] == {"variant": 1, "cost": 0}
    same_decision(whole, again)

    # a store made for another model, or for other rows, is refused, and the finished run is left whole
    other = base / "other"
    frugalml.select(linear_data(n=400, seed=9), "label", candidates=["random_forest"], folds=2, repeats=1, out=other,
                    stability_draws=0, cost=fast_cost)
    before = (out / "decision.json").read_text()
    with pytest.raises(frugalml.FrugalError, match="resume refused: .* are for another model"):
        frugalml.compress(other, held, out=out, resume=True, cost=fast_cost, **COMPRESS)
    with pytest.raises(frugalml.FrugalError, match="resume refused: .* are for other data"):
        frugalml.compress(base / "rf", held.iloc[:1400], out=out, resume=True, cost=fast_cost, **COMPRESS)
    assert (out / "decision.json").read_text() == before
