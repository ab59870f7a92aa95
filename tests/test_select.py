"""End-to-end selection on data whose answer is known."""

import json

import numpy as np
import pandas as pd
import pytest

import frugalml
from conftest import group_harm_data, linear_data


def by_name(decision):
    return {c["name"]: c for c in decision["candidates"]}


def test_linear_truth_recommends_a_thin_model(tmp_path, fast_cost, validate_decision):
    df = linear_data(n=800)
    out = tmp_path / "run"
    res = frugalml.select(df, "label", groups=["region"], candidates=["linear", "random_forest", "lightgbm"],
                          out=out, cost=fast_cost, cost_priority="size")  # size: deterministic, unlike latency
    d = res.decision
    validate_decision(d)
    assert d["command"] == "select" and d["task"] == "classification" and d["metric"] == "accuracy"
    assert d["groups"] == ["region"]
    cands = by_name(d)
    assert cands["linear"]["on_par"]
    assert d["recommended"] == "linear"
    assert cands["linear"]["rejected_because"] is None
    for name, c in cands.items():
        if name != "linear":
            assert c["rejected_because"]
        assert set(c["groups"]) == {"region=north", "region=south"}
        assert c["cost"]["format"] == "onnx"
    assert "linear" in d["reason"] and len(d["reason"]) > 40
    # every record on the file equals what select returned
    assert json.loads((out / "decision.json").read_text()) == d
    report = (out / "report.md").read_text()
    assert "Recommended: `linear`" in report and "region=north" in report
    folds = json.loads((out / "folds.json").read_text())
    assert len(folds["candidates"]["linear"]["scores"]) == 10


def test_loaded_model_matches_a_refit_native_pipeline(tmp_path, fast_cost):
    from frugalml.candidates import CANDIDATES, build_pipeline
    from frugalml.data import load_task

    df = linear_data(n=500, seed=3)
    frugalml.select(df, "label", candidates=["linear", "decision_tree"], out=tmp_path / "r", cost=fast_cost)
    model = frugalml.load(tmp_path / "r")
    assert model.format == "onnx"
    new = linear_data(n=50, seed=9).drop(columns=["label"]).assign(extra="ignored")
    pred = model.predict(new)
    assert set(pred) <= {"yes", "no"}  # original label values
    task = load_task(df, "label")
    cand = CANDIDATES.get(model.name)
    native = build_pipeline(cand.build("classification", 0), task.schema, cand.scale).fit(task.X, task.y)
    from frugalml.data import prepare_frame

    expected = np.asarray(task.schema.classes, dtype=object)[native.predict(prepare_frame(new, task.schema))]
    assert (pred == expected).all()
    np.testing.assert_allclose(model.predict_proba(new), native.predict_proba(prepare_frame(new, task.schema)),
                               atol=1e-5)
    # the skops copy loads without pickle and agrees
    native_loaded = frugalml.load(tmp_path / "r", native=True)
    assert (native_loaded.predict(new) == pred).all()
    with pytest.raises(frugalml.FrugalError, match="missing column"):
        model.predict(new.drop(columns=["x1"]))


def test_a_model_that_hurts_one_group_is_not_recommended(fast_cost, validate_decision):
    """Linear is on par overall (within 0.1) but loses ~0.45 accuracy in group B: it must be rejected."""
    df = group_harm_data()
    # cost by size: deterministic, so only the group guard can change the answer
    kwargs = dict(candidates=["linear", "random_forest"], tolerance=0.1, cost=fast_cost, cost_priority="size")
    without_groups = frugalml.select(df, "y", **kwargs).decision
    assert by_name(without_groups)["linear"]["vs_best"]["non_inferior"]
    assert without_groups["recommended"] == "linear"  # blind to groups, the thin model wins

    d = frugalml.select(df, "y", groups=["g"], **kwargs).decision
    validate_decision(d)
    lin = by_name(d)["linear"]
    assert lin["vs_best"]["non_inferior"]  # still on par overall...
    assert lin["groups"]["g=B"]["non_inferior"] is False  # ...but not in group B
    assert lin["groups"]["g=B"]["verdict"] == "harm"  # where the harm is shown, not merely unproven
    assert lin["groups"]["g=B"]["harm_bound"] < -0.1
    assert lin["groups"]["g=A"]["non_inferior"] is True and lin["groups"]["g=A"]["verdict"] == "non_inferior"
    assert not lin["on_par"]
    assert lin["rejected_because"].startswith("group g=B") and "harm shown" in lin["rejected_because"]
    assert d["recommended"] == "random_forest"


def test_small_groups_are_reported_untested(fast_cost):
    df = linear_data(n=400)
    df["site"] = np.where(np.arange(len(df)) < 20, "tiny", "big")
    d = frugalml.select(df, "label", groups=["site"], candidates=["linear", "decision_tree"], cost=fast_cost).decision
    for c in d["candidates"]:
        assert c["groups"]["site=tiny"]["tested"] is False
        assert c["groups"]["site=tiny"]["non_inferior"] is None
        assert c["groups"]["site=tiny"]["n"] == 20
        assert c["groups"]["site=big"]["tested"] is True
    assert "site=tiny" in d["reason"] and "not tested" in d["reason"]


def test_regression_with_a_lower_is_better_metric(fast_cost, validate_decision):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400), "sex": rng.choice(["f", "m"], 400)})
    df["y"] = 3 * df["a"] - 2 * df["b"] + rng.normal(scale=0.5, size=400)
    d = frugalml.select(df, "y", groups=["sex"], metric="rmse", tolerance=0.05,
                        candidates=["dummy", "linear", "random_forest"], cost=fast_cost, cost_priority="size").decision
    validate_decision(d)
    assert d["task"] == "regression" and d["higher_is_better"] is False
    c = by_name(d)
    assert d["best"] == "linear" and d["recommended"] == "linear"
    assert 0.4 < c["linear"]["quality"]["mean"] < 0.6  # RMSE in the target's units, positive
    assert c["dummy"]["quality"]["mean"] > 3  # the baseline is far worse...
    # ...by the difference of the two mean RMSEs (the same folds), positive: for RMSE, worse is higher
    assert c["dummy"]["vs_best"]["diff_mean"] == pytest.approx(c["dummy"]["quality"]["mean"]
                                                               - c["linear"]["quality"]["mean"])
    assert not c["dummy"]["on_par"] and "not on par overall" in c["dummy"]["rejected_because"]
    assert c["random_forest"]["vs_best"]["ci_low"] <= c["random_forest"]["vs_best"]["diff_mean"] \
        <= c["random_forest"]["vs_best"]["ci_high"]


def test_user_estimator_and_failing_candidate(fast_cost, validate_decision):
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.linear_model import SGDClassifier

    class Broken(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            raise RuntimeError("cannot learn")

        def predict(self, X):
            return np.zeros(len(X))

    df = linear_data(n=300)
    d = frugalml.select(df, "label", candidates=["linear", SGDClassifier(loss="log_loss", random_state=0),
                                                 frugalml.candidates_from_estimator(Broken(), "broken")],
                        cost=fast_cost).decision
    validate_decision(d)
    assert "sgdclassifier" in by_name(d)
    assert d["failed"] == [{"name": "broken", "error": "RuntimeError: cannot learn"}]


def test_pareto_flags_are_consistent(fast_cost):
    d = frugalml.select(linear_data(n=300), "label", candidates=["dummy", "linear", "knn", "random_forest"],
                        cost=fast_cost).decision
    sign = 1 if d["higher_is_better"] else -1
    for a in d["candidates"]:
        dominated = any(sign * b["quality"]["mean"] >= sign * a["quality"]["mean"]
                        and b["cost"]["latency_ms_p99"] <= a["cost"]["latency_ms_p99"]
                        and b["cost"]["size_bytes"] <= a["cost"]["size_bytes"] and b is not a
                        and (b["quality"]["mean"], b["cost"]["latency_ms_p99"], b["cost"]["size_bytes"])
                        != (a["quality"]["mean"], a["cost"]["latency_ms_p99"], a["cost"]["size_bytes"])
                        for b in d["candidates"])
        assert a["pareto"] == (not dominated)
    assert any(c["pareto"] for c in d["candidates"])


def test_a_costlier_reason_names_the_cost_that_decided():
    from frugalml.selection.decide import recommend

    def rec(name, latency, size):
        return {"name": name, "on_par": True, "cost": {"latency_ms_p99": latency, "size_bytes": size}}

    records = [rec("a", 0.0305, 4_000_000), rec("b", 0.0143, 565_000), rec("c", 0.0142, 1_712_805),
               rec("d", 0.0141, 564_000)]
    chosen = recommend(records, "latency", {r["name"]: k for k, r in enumerate(records)})
    assert chosen["name"] == "b"  # b, c, d level on latency to two figures; b and d level on size; b first
    why = {r["name"]: r.get("rejected_because") for r in records}
    assert why["a"] == "on par, but costlier: p99 latency 0.0305 ms vs 0.0143 ms for b"
    assert why["c"].startswith("on par, but costlier: size 1.71 MB vs 565 kB for b (level on p99 latency")
    assert why["d"].startswith("on par and as cheap (p99 latency 0.0141 ms vs 0.0143 ms, size 564 kB vs 565 kB)")

    # Latencies that differ beyond two figures but whose measured intervals overlap are level too: size decides.
    records = [rec("lin", 0.0176, 1_410), rec("mlp", 0.0142, 15_000)]
    records[0]["cost"]["latency_ms_p99_ci"] = [0.0150, 0.0190]
    records[1]["cost"]["latency_ms_p99_ci"] = [0.0130, 0.0160]
    assert recommend(records, "latency", {"lin": 0, "mlp": 1})["name"] == "lin"
    assert records[1]["rejected_because"].startswith("on par, but costlier: size 15 kB vs 1.41 kB for lin (level on p99")
    records[0]["cost"]["latency_ms_p99_ci"] = [0.0170, 0.0190]  # apart: the latency decides
    assert recommend(records, "latency", {"lin": 0, "mlp": 1})["name"] == "mlp"


def test_every_run_reports_how_stable_its_decision_is(fast_cost):
    df = linear_data(n=600)
    kwargs = dict(groups=["region"], candidates=["linear", "decision_tree", "random_forest"], cost=fast_cost,
                  cost_priority="size")
    d = frugalml.select(df, "label", **kwargs).decision
    st = d["stability"]
    assert st["draws"] == 200 and sum(st["recommended_in_draws"].values()) == pytest.approx(1.0)
    assert st["same_recommendation"] == st["recommended_in_draws"][d["recommended"]]
    assert st["same_recommendation"] >= 0.9  # a linear truth: linear, whatever rows were drawn
    assert ("not stable" in d["reason"]) == (st["same_recommendation"] < 0.8)
    assert frugalml.select(df, "label", stability_draws=0, **kwargs).decision["stability"] is None


def test_a_near_tie_is_reported_unstable():
    """Two candidates whose fold scores differ by noise and a tolerance too small to show on par: the top, and so
    the recommendation, depends on the rows; the stability figure says so."""
    from frugalml.candidates import Candidate
    from frugalml.data import Splits
    from frugalml.evaluation.metrics import resolve_metric
    from frugalml.evaluation.quality import FoldScores
    from frugalml.selection import DecisionConfig, decide
    from frugalml.selection.stability import stability

    rng = np.random.default_rng(0)
    n, metric = 2000, resolve_metric("accuracy", "classification", 2)
    y = rng.integers(0, 2, n)
    perm = rng.permutation(n)
    splits = Splits(5, 1, 0, [(np.setdiff1d(perm, p), np.sort(p)) for p in np.array_split(perm, 5)])
    cands = [Candidate("a", None, "linear", rank=1), Candidate("b", None, "boosting", rank=2)]
    fs = []
    for c in cands:
        pred = np.where(rng.random(n) < 0.75, y, 1 - y)  # independent 75%-accurate answers
        outs = [{"predict": pred[test]} for _, test in splits.indices]
        scores = np.array([np.mean(pred[test] == y[test]) for _, test in splits.indices])
        fs.append(FoldScores(c.name, scores, {}, outputs=outs))
    costs = {"a": {"latency_ms_p99": 1.0, "size_bytes": 1.0}, "b": {"latency_ms_p99": 2.0, "size_bytes": 2.0}}
    cfg = DecisionConfig(tolerance=0.0)

    def again(f):
        return decide(metric, f, costs, cands, {}, 0.25, cfg)["recommended"]

    st = stability(fs, splits, y, {}, metric, "classification", 2, again, again(fs), draws=200)
    assert 0.2 <= st["same_recommendation"] <= 0.8
    assert set(st["recommended_in_draws"]) == {"a", "b"}


def test_imbalanced_target_defaults_to_balanced_accuracy_and_the_constant_is_never_recommended(fast_cost):
    rng = np.random.default_rng(1)
    n = 3000
    x1, x2 = rng.normal(size=(2, n))
    y = np.where(0.6 * x1 + rng.normal(size=n) > 2.6, "yes", "no")  # about 3% positives, a weak signal
    df = pd.DataFrame({"x1": x1, "x2": x2, "g": rng.choice(list("abcd"), n), "y": y})
    kwargs = dict(groups=["g"], candidates=["dummy", "linear", "decision_tree"], cost=fast_cost,
                  cost_priority="size", stability_draws=0)
    d = frugalml.select(df, "y", **kwargs).decision
    assert d["metric"] == "balanced_accuracy" and "rarest class" in d["settings"]["metric_choice"]
    assert by_name(d)["dummy"]["quality"]["mean"] == pytest.approx(0.5)  # a constant answer, whatever the rows

    d = frugalml.select(df, "y", metric="accuracy", **kwargs).decision
    assert d["settings"]["metric_choice"] == "as asked"
    dummy = by_name(d)["dummy"]
    assert dummy["on_par"] and dummy["eligible"] is False  # accuracy cannot tell it from the models...
    assert d["recommended"] != "dummy"  # ...but it is never the recommendation
    assert "never recommended unless --allow-baseline" in dummy["rejected_because"]
    assert "cannot tell these models from always giving the same answer" in d["reason"]
