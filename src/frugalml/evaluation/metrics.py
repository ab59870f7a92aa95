"""Metrics: any scikit-learn scorer name, plus plain names for error metrics (rmse, mae, ...).

Scores are kept internally in "higher is better" form (scikit-learn's convention); ``Metric.natural``
turns them back into the units a person reads (an RMSE of 52.1, not -52.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

DEFAULTS = {"classification": "accuracy", "regression": "r2"}
# Below this share of rows for the rarest class, accuracy barely tells a model from always answering the
# commonest class: the default becomes balanced accuracy (docs/statistics.md).
IMBALANCED_SHARE = 0.10
# Plain names for lower-is-better metrics -> the scikit-learn scorer that negates them.
ALIASES = {"mse": "neg_mean_squared_error", "rmse": "neg_root_mean_squared_error",
           "mae": "neg_mean_absolute_error", "medae": "neg_median_absolute_error",
           "mape": "neg_mean_absolute_percentage_error", "log_loss": "neg_log_loss",
           "brier": "neg_brier_score"}
BINARY_ONLY = {"f1", "precision", "recall", "jaccard", "roc_auc", "average_precision", "neg_brier_score"}


@dataclass(frozen=True)
class Metric:
    name: str  # as the user gave it
    scorer_name: str
    task: str

    @property
    def scorer(self):
        from sklearn.metrics import get_scorer

        return get_scorer(self.scorer_name)

    @property
    def higher_is_better(self) -> bool:
        return self.name not in ALIASES

    @property
    def sign(self) -> float:
        """+1 when the reported value is the scorer's value, -1 when it is the negated error."""
        return -1.0 if self.name in ALIASES else 1.0

    def natural(self, score_hib: float) -> float:
        return self.sign * score_hib


def resolve_metric(name: str | None, task: str, n_classes: int | None = None) -> Metric:
    from sklearn.metrics import get_scorer_names

    name = name or DEFAULTS[task]
    scorer_name = ALIASES.get(name, name)
    if scorer_name not in get_scorer_names():
        raise ConfigError(f"unknown metric {name!r}; use a scikit-learn scorer name (e.g. accuracy, f1_macro, "
                          f"roc_auc, r2, neg_mean_absolute_error) or one of {', '.join(ALIASES)}")
    kind = _metric_kind(scorer_name)
    if kind is None:
        raise ConfigError(f"metric {name!r} scores clusterings, not predictions; pick a classification or "
                          "regression metric")
    if kind != task:
        raise ConfigError(f"metric {name!r} is a {kind} metric but the task is {task}; "
                          f"use e.g. --metric {DEFAULTS[task]}")
    if task == "classification" and n_classes and n_classes > 2 and scorer_name in BINARY_ONLY:
        hint = "roc_auc_ovr" if scorer_name == "roc_auc" else f"{scorer_name}_macro"
        raise ConfigError(f"metric {name!r} needs a binary target but there are {n_classes} classes; "
                          f"use e.g. --metric {hint}")
    return Metric(name, scorer_name, task)


def default_metric(task: str, y: np.ndarray) -> tuple[str, str | None]:
    """The metric used when the user names none, and why, if it is not the plain default.

    For a strongly imbalanced classification target (rarest class under ``IMBALANCED_SHARE`` of the rows),
    balanced accuracy: the mean recall over classes, which scores any constant answer at 1/classes, uses
    the labels ``predict`` returns (unlike ROC AUC, which judges a ranking), and works for any number of
    classes (unlike log loss, it needs no probabilities).
    """
    if task == "classification" and len(y):
        counts = np.bincount(np.asarray(y, dtype=np.int64))
        share = counts[counts > 0].min() / len(y)
        if share < IMBALANCED_SHARE:
            return "balanced_accuracy", (f"the rarest class is {100 * share:.1f}% of the rows, so accuracy could "
                                         "not tell a model from always answering the commonest class; balanced "
                                         "accuracy (mean recall per class) can. Pass --metric accuracy to override")
    return DEFAULTS[task], None


def _metric_kind(scorer_name: str) -> str | None:
    from sklearn.metrics import get_scorer

    module = getattr(getattr(get_scorer(scorer_name), "_score_func", None), "__module__", "") or ""
    if module.endswith("_regression"):
        return "regression"
    if module.endswith(("_classification", "_ranking")):
        return "classification"
    return None


class Replay:
    """Stands in for a fitted estimator inside a scorer: "predicting" row indices returns stored outputs.

    Lets one set of out-of-fold predictions be scored overall and in every group without predicting again.
    """

    def __init__(self, task: str, n_classes: int | None, outputs: dict[str, np.ndarray]):
        self._task = task
        self.classes_ = np.arange(n_classes) if n_classes else None
        self._out = outputs
        for method in ("predict_proba", "decision_function"):
            if method not in outputs:
                setattr(self, method, None)

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags

        if self._task == "classification":
            return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                        classifier_tags=ClassifierTags())
        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    regressor_tags=RegressorTags())

    def predict(self, idx):
        return self._out["predict"][idx]

    def predict_proba(self, idx):  # noqa: F811 (replaced by None when absent)
        return self._out["predict_proba"][idx]

    def decision_function(self, idx):  # noqa: F811
        return self._out["decision_function"][idx]


def score(metric: Metric, replay: Replay, idx: np.ndarray, y_true: np.ndarray) -> float:
    """The metric (higher-is-better form) on rows ``idx``; NaN where it is undefined (e.g. one class)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(metric.scorer(replay, idx, y_true))
        except ValueError:
            return float("nan")
    return value if np.isfinite(value) else float("nan")


def resampled_scores(metric: Metric, replay: Replay, idx: np.ndarray, y_true: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
    """The metric on rows ``idx`` once per row of ``weights`` (draws x rows, e.g. bootstrap counts): what the
    model would have scored on resampled rows, without predicting again.

    Metrics that are means (or ratios of means) of per-row values are computed for all draws at once;
    any other scorer is called once per draw with ``sample_weight``. NaN where a draw leaves it undefined.
    """
    W = np.asarray(weights, dtype=float)
    out = replay._out
    pred = out["predict"][idx]
    name = metric.scorer_name
    total = W.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "accuracy":
            return W @ (pred == y_true) / total
        if name == "balanced_accuracy":
            recalls = [W[:, y_true == c] @ (pred[y_true == c] == c) / W[:, y_true == c].sum(axis=1)
                       for c in np.unique(y_true)]
            return np.nanmean(np.vstack(recalls), axis=0) if recalls else np.full(len(W), np.nan)
        if name == "neg_log_loss" and "predict_proba" in out:
            p = out["predict_proba"][idx]
            p = p / p.sum(axis=1, keepdims=True)
            eps = np.finfo(p.dtype).eps
            return -(W @ -np.log(np.clip(p[np.arange(len(idx)), y_true.astype(int)], eps, 1 - eps))) / total
        if metric.task == "regression" and name in ("r2", "neg_mean_squared_error", "neg_root_mean_squared_error",
                                                    "neg_mean_absolute_error"):
            err = np.asarray(y_true, dtype=float) - np.asarray(pred, dtype=float)
            if name == "neg_mean_absolute_error":
                return -(W @ np.abs(err)) / total
            mse = W @ err ** 2 / total
            if name == "neg_mean_squared_error":
                return -mse
            if name == "neg_root_mean_squared_error":
                return -np.sqrt(mse)
            yt = np.asarray(y_true, dtype=float)
            var = W @ yt ** 2 / total - (W @ yt / total) ** 2
            return np.where(var > 0, 1 - mse / var, np.nan)
    import warnings

    scores = np.full(len(W), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b, w in enumerate(W):
            keep = w > 0
            try:
                scores[b] = float(metric.scorer(replay, idx[keep], y_true[keep], sample_weight=w[keep]))
            except (ValueError, TypeError):
                pass
    return np.where(np.isfinite(scores), scores, np.nan)
