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


# --- scores under row weights (bootstrap draws), without predicting again ---------------------------------

def _r2(means: np.ndarray) -> np.ndarray:
    sse, sst = means[..., 0], means[..., 2] - means[..., 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant target: scikit-learn's 1.0 or 0.0
        return np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0))


# Label metrics that are functions of the confusion matrix: (per class from (tp, true, predicted), average).
_CONFUSION = {"balanced_accuracy": ("recall", "balanced"),
              "f1": ("f1", "binary"), "precision": ("precision", "binary"), "recall": ("recall", "binary"),
              "f1_macro": ("f1", "macro"), "precision_macro": ("precision", "macro"),
              "recall_macro": ("recall", "macro")}


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, 0 where b is 0 (scikit-learn's zero_division default)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def _from_confusion(kind: str, average: str, k: int):
    def f(mean: np.ndarray) -> np.ndarray:
        c = mean.reshape(mean.shape[:-1] + (k, k))  # (..., true, predicted), proportions of the rows
        tp, true, pred = np.diagonal(c, axis1=-2, axis2=-1), c.sum(-1), c.sum(-2)
        per_class = {"recall": _ratio(tp, true), "precision": _ratio(tp, pred), "f1": _ratio(2 * tp, true + pred)}[kind]
        if average == "binary":
            return per_class[..., 1]
        present = true > 0 if average == "balanced" else (true + pred) > 0  # the labels scikit-learn averages over
        return (per_class * present).sum(-1) / np.maximum(present.sum(-1), 1)
    return f


def per_row(scorer_name: str, y: np.ndarray, out: dict):
    """(columns (m, k), score from the columns' means) when the metric is a function of per-row means, else
    None. Scores in the scorer's (higher-is-better) form."""
    pred = out["predict"]
    if scorer_name == "accuracy":
        return (pred == y).astype(float)[:, None], lambda mean: mean[..., 0]
    if scorer_name in _CONFUSION:  # one column per (true, predicted) pair: the means are the confusion matrix
        k = max(2, int(max(np.max(y, initial=0), np.max(pred, initial=0))) + 1)
        if k > 20 or (_CONFUSION[scorer_name][1] == "binary" and k > 2):
            return None
        cols = np.zeros((len(y), k * k))
        cols[np.arange(len(y)), np.asarray(y, dtype=int) * k + np.asarray(pred, dtype=int)] = 1.0
        return cols, _from_confusion(*_CONFUSION[scorer_name], k)
    if scorer_name == "neg_log_loss" and "predict_proba" in out:
        p = np.asarray(out["predict_proba"], dtype=float)
        if np.max(y, initial=0) >= p.shape[1]:
            return None
        p = p / p.sum(axis=1, keepdims=True)
        eps = np.finfo(p.dtype).eps  # scikit-learn's clipping
        loss = -np.log(np.clip(p[np.arange(len(y)), np.asarray(y, dtype=int)], eps, 1 - eps))
        return loss[:, None], lambda mean: -mean[..., 0]
    if scorer_name not in ("neg_mean_squared_error", "neg_root_mean_squared_error", "neg_mean_absolute_error", "r2"):
        return None
    e = np.asarray(pred, dtype=float) - np.asarray(y, dtype=float)
    if scorer_name == "neg_mean_absolute_error":
        return np.abs(e)[:, None], lambda mean: -mean[..., 0]
    if scorer_name == "neg_mean_squared_error":
        return (e ** 2)[:, None], lambda mean: -mean[..., 0]
    if scorer_name == "neg_root_mean_squared_error":
        return (e ** 2)[:, None], lambda mean: -np.sqrt(mean[..., 0])
    yc = np.asarray(y, dtype=float) - np.mean(y)  # centred: the variance from means loses no digits
    return np.column_stack([e ** 2, yc, yc ** 2]), _r2


def _weighted_auc(y: np.ndarray, s: np.ndarray):
    """Binary ROC AUC with row weights (a draw's counts): the share of (positive, negative) pairs ranked right,
    ties counting a half (what scikit-learn's trapezoid gives). -> counts (c, m) -> (c,), NaN without both
    classes."""
    order = np.argsort(s, kind="stable")
    s_sorted, pos = s[order], (y[order] == 1)
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # first position of each tied run
    run = np.cumsum(np.r_[True, s_sorted[1:] != s_sorted[:-1]]) - 1
    first, last = starts[run], np.r_[starts[1:], len(s)][run] - 1  # each position's run

    def auc(counts: np.ndarray) -> np.ndarray:
        w = counts[:, order]
        neg_cum = np.cumsum(w * ~pos, axis=1)  # (c, m) negative weight up to each position
        below = np.where(first > 0, neg_cum[:, np.maximum(first - 1, 0)], 0.0)
        tied = neg_cum[:, last] - below
        w_pos, w_neg = (w * pos).sum(1), neg_cum[:, -1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((w_pos > 0) & (w_neg > 0),
                            ((w * pos) * (below + 0.5 * tied)).sum(1) / (w_pos * w_neg), np.nan)
    return auc


def counted_score(scorer_name: str, y: np.ndarray, out: dict):
    """The metric as a function of row weights (a bootstrap draw's counts per row), (c, m) -> (c,), when it is a
    function of per-row means (or binary ROC AUC, a weighted rank sum); else None (call the scorer instead)."""
    if scorer_name == "roc_auc":
        s = out["predict_proba"][:, 1] if "predict_proba" in out else out.get("decision_function")
        if s is None or np.ndim(s) != 1 or not set(np.unique(y)) <= {0, 1}:
            return None
        return _weighted_auc(np.asarray(y), np.asarray(s, dtype=float))
    found = per_row(scorer_name, y, out)
    if found is None:
        return None
    cols, f = found
    return lambda counts: f((counts @ cols) / counts.sum(axis=1, keepdims=True))


def resampled_scores(metric: Metric, replay: Replay, idx: np.ndarray, y_true: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
    """The metric on rows ``idx`` once per row of ``weights`` (draws x rows, e.g. bootstrap counts): what the
    model would have scored on resampled rows, without predicting again.

    Metrics that are functions of per-row means (``counted_score``) are computed for all draws at once; any other
    scorer is called once per draw with ``sample_weight``. NaN where a draw leaves it undefined.
    """
    W = np.asarray(weights, dtype=float)
    fast = counted_score(metric.scorer_name, y_true, {k: v[idx] for k, v in replay._out.items()})
    if fast is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            return fast(W)
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
