"""Distillation into a thin classical student: a shallow decision tree or a linear model trained to
reproduce the teacher's predictions on calibration rows (the teacher's labels, not the true ones).

The practice prefers thin models when they are on par: this asks whether the teacher's behaviour can be
carried by an interpretable model, and the search checks the answer overall and per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import Technique, final_estimator, register_technique, with_final


@dataclass(frozen=True)
class DistillConfig:
    student: str  # "tree" | "linear"
    max_depth: int = 0  # for the tree student


def _task(pipeline) -> str:
    from sklearn.base import is_classifier

    return "classification" if is_classifier(final_estimator(pipeline)) else "regression"


def _applies(pipeline) -> bool:
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    thin = (LinearRegression, LogisticRegression, Ridge, DecisionTreeClassifier, DecisionTreeRegressor)
    teacher = final_estimator(pipeline)
    if len(getattr(pipeline, "steps", [])) < 2:  # no fitted preprocessing to give the student its features
        return False
    # a teacher that reads raw text or images (a fine-tuned transformer, a CNN) leaves no features for a classical
    # student
    return not isinstance(teacher, thin) and not getattr(teacher, "reads_raw_input", False)


def _settings(pipeline) -> list[DistillConfig]:
    return [DistillConfig("linear"), DistillConfig("tree", 4), DistillConfig("tree", 8)]


def _apply(pipeline, cfg: DistillConfig, calibration):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    X, _ = calibration
    prep = pipeline[:-1]
    Z = prep.transform(X)
    teacher = final_estimator(pipeline)
    soft = teacher.predict(Z)  # the teacher's answers are the student's targets
    weight = np.ones(len(soft))
    if _task(pipeline) == "classification":
        student = (LogisticRegression(max_iter=2000) if cfg.student == "linear"
                   else DecisionTreeClassifier(max_depth=cfg.max_depth, min_samples_leaf=5, random_state=0))
        if len(np.unique(soft)) < 2:  # the teacher answers one class on these rows: a constant student
            student = DecisionTreeClassifier(max_depth=1)
        # Classes the teacher never answers on these rows still get an output column (probability ~0): one
        # weightless row each, so the student's predict_proba has the teacher's columns, in its order.
        missing = [c for c in getattr(teacher, "classes_", []) if c not in set(soft.tolist())]
        if missing:
            import scipy.sparse as sp

            extra = Z[np.zeros(len(missing), dtype=int)]
            Z = sp.vstack([Z, extra]).tocsr() if sp.issparse(Z) else np.vstack([Z, extra])
            soft = np.concatenate([soft, np.asarray(missing, dtype=soft.dtype)])
            weight = np.concatenate([weight, np.full(len(missing), 1e-9)])
    else:
        student = (Ridge(alpha=1.0) if cfg.student == "linear"
                   else DecisionTreeRegressor(max_depth=cfg.max_depth, min_samples_leaf=5, random_state=0))
    student.fit(Z, soft, sample_weight=weight)
    return with_final(pipeline, student)


register_technique(Technique("distill", DistillConfig, _apply, _applies, _settings, needs_data=True,
                             interpretable=True,
                             stage=0, description="train a shallow tree or linear student on the teacher's predictions"))
