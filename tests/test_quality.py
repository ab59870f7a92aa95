"""Per-fold, per-group quality against fairlearn's MetricFrame as the reference."""

import numpy as np
import pytest

from conftest import linear_data
from frugalml.candidates import CANDIDATES, build_pipeline
from frugalml.data import load_task, make_splits
from frugalml.evaluation import evaluate_quality, resolve_metric


@pytest.mark.parametrize("metric_name,fn", [("accuracy", "accuracy_score"), ("balanced_accuracy",
                                                                              "balanced_accuracy_score")])
def test_group_scores_match_fairlearn_metricframe(metric_name, fn):
    from fairlearn.metrics import MetricFrame
    import sklearn.metrics

    task = load_task(linear_data(n=400), "label", groups=["region", "colour"])
    splits = make_splits(task, folds=4, repeats=1, seed=0)
    cand = CANDIDATES.get("linear")
    res = evaluate_quality(task, [cand], splits, resolve_metric(metric_name, "classification", 2), n_jobs=1)[0]
    for j, (train, test) in enumerate(splits.indices):
        pipe = build_pipeline(cand.build("classification", 0), task.schema).fit(task.X.iloc[train], task.y[train])
        pred = pipe.predict(task.X.iloc[test])
        for col in ("region", "colour"):
            mf = MetricFrame(metrics=getattr(sklearn.metrics, fn), y_true=task.y[test], y_pred=pred,
                             sensitive_features=task.groups[col][test])
            for value, ref in mf.by_group.items():
                assert res.group_scores[f"{col}={value}"][j] == pytest.approx(ref)
            assert res.scores[j] == pytest.approx(mf.overall)


def test_probability_metrics_use_the_probabilities():
    from sklearn.metrics import roc_auc_score

    task = load_task(linear_data(n=300), "label")
    splits = make_splits(task, folds=3, repeats=1)
    cand = CANDIDATES.get("linear")
    res = evaluate_quality(task, [cand], splits, resolve_metric("roc_auc", "classification", 2), n_jobs=1)[0]
    train, test = splits.indices[0]
    pipe = build_pipeline(cand.build("classification", 0), task.schema).fit(task.X.iloc[train], task.y[train])
    assert res.scores[0] == pytest.approx(roc_auc_score(task.y[test], pipe.predict_proba(task.X.iloc[test])[:, 1]))


def test_identifier_columns_are_left_out():
    df = linear_data(n=300)
    df["customer_id"] = [f"c{i:05d}" for i in range(len(df))]
    task = load_task(df, "label")
    assert "customer_id" not in task.schema.columns
    assert "identifier-like" in task.dropped_columns["customer_id"]


def test_every_candidate_failing_is_a_clean_error():
    import frugalml
    from frugalml.evaluation import FoldScores
    from frugalml.selection import DecisionConfig, decide

    failed = [FoldScores("linear", np.full(4, np.nan), error="ValueError: nope")]
    with pytest.raises(frugalml.FrugalError, match="every candidate failed: linear: ValueError: nope"):
        decide(resolve_metric("accuracy", "classification", 2), failed, {}, [CANDIDATES.get("linear")], {}, 0.25,
               DecisionConfig())


@pytest.mark.parametrize("task_kind,metric_name", [
    ("classification", "accuracy"), ("classification", "balanced_accuracy"), ("classification", "log_loss"),
    ("classification", "f1"), ("classification", "roc_auc"),
    ("regression", "r2"), ("regression", "mse"), ("regression", "rmse"), ("regression", "mae")])
def test_resampled_scores_equal_the_scorer_on_weighted_rows(task_kind, metric_name):
    """Each draw's score is the metric on the rows repeated as often as their weight (the fast paths compute
    means of per-row values for all draws at once; they must agree with scikit-learn's scorer)."""
    from frugalml.evaluation.metrics import Replay, resampled_scores, score

    rng = np.random.default_rng(0)
    n = 120
    if task_kind == "classification":
        y = rng.integers(0, 2, n)
        proba = np.clip(0.5 + (y - 0.5) * rng.random(n), 0.01, 0.99)
        out = {"predict": (proba > 0.5).astype(int), "predict_proba": np.column_stack([1 - proba, proba])}
        n_classes = 2
    else:
        y = rng.normal(size=n)
        out = {"predict": y + rng.normal(scale=0.5, size=n)}
        n_classes = None
    metric = resolve_metric(metric_name, task_kind, n_classes)
    replay = Replay(task_kind, n_classes, out)
    idx = np.arange(n)
    weights = rng.poisson(1.0, size=(5, n))
    got = resampled_scores(metric, replay, idx, y, np.vstack([np.ones(n), weights]))
    assert got[0] == pytest.approx(score(metric, replay, idx, y))  # unit weights: the plain score
    for k, w in enumerate(weights, start=1):
        rows = np.repeat(idx, w)  # a weight of k: the row k times
        assert got[k] == pytest.approx(score(metric, replay, rows, y[rows]), rel=1e-9, abs=1e-12)
