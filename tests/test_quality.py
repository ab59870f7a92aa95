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
