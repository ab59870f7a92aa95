"""Distillation of a MiniLM text model into TF-IDF + a linear model: the neural teacher's behaviour carried by
the thinnest text candidate, trained on what the teacher answers for the calibration rows.

The teacher is a minilm_linear pipeline (frozen MiniLM featurizing each text column, a linear head) or a
minilm_finetune one (the fine-tuned network as the model). The student is tfidf_linear's recipe (words and
word pairs, then logistic regression or ridge) on the same input frame: every text part of the teacher's
ColumnTransformer (a ``MiniLMEncoder`` or a ``TextColumn``) becomes a TF-IDF vectorizer, the other parts
(imputation and scaling, one-hot) are kept as they are specified, and everything is fitted on the calibration
rows. The result is an ordinary tfidf_linear-shaped pipeline: it saves with skops and exports to ONNX.

Targets are soft for a classifier: each calibration row is given once per class, weighted by the teacher's
probability of that class, so logistic regression minimises the cross-entropy to the teacher's probabilities
(the distillation loss) instead of to its argmax. With a few hundred rows that carries more of the teacher
than its labels do, keeps the student's probabilities calibrated like the teacher's, and gives the student
every class even when the teacher never picks one on these rows. A regressor's student fits the teacher's
predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import Technique, final_estimator, register_technique


@dataclass(frozen=True)
class DistillTextConfig:
    max_features: int | None = 5000  # the student's vocabulary: most frequent words and pairs (None: all seen twice)


def _applies(pipeline) -> bool:
    from .encoder import classifier, encoders

    return bool(encoders(pipeline)) or classifier(pipeline) is not None


def _settings(pipeline) -> list[DistillTextConfig]:
    return [DistillTextConfig(5000), DistillTextConfig(20000), DistillTextConfig(None)]


def _student_prep(pipeline, vectorizer):
    """The teacher's preprocessing, unfitted, with ``vectorizer`` in place of each part that reads text."""
    from sklearn.base import clone

    from ..candidates.text import MiniLMEncoder, TextColumn

    prep = pipeline.steps[0][1]
    parts = [(name, clone(vectorizer) if isinstance(part, (MiniLMEncoder, TextColumn)) else clone(part), cols)
             for name, part, cols in prep.transformers]
    # TF-IDF features stay sparse, as build_pipeline keeps them for tfidf_linear
    return clone(prep).set_params(transformers=parts, sparse_threshold=1.0)


def soft_fit(head, Z, proba: np.ndarray, classes: np.ndarray):
    """Fit a classifier ``head`` to probability targets (n, classes): every row once per class, weighted by its
    probability (the weighted log loss is the cross-entropy to ``proba``)."""
    n, k = proba.shape
    rows = np.tile(np.arange(n), k)  # block c holds every row, labelled c
    head.fit(Z[rows], np.repeat(classes, n), sample_weight=proba.T.reshape(-1))
    if not np.array_equal(head.classes_, classes):
        raise AssertionError(f"student classes {head.classes_} differ from the teacher's {classes}")
    return head


def _apply(pipeline, cfg: DistillTextConfig, calibration):
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    from ..candidates import CANDIDATES

    X, _ = calibration
    teacher = final_estimator(pipeline)
    task = "classification" if is_classifier(teacher) else "regression"
    recipe = CANDIDATES.get("tfidf_linear").build(task, 0)  # tfidf_linear's vectorizer and head
    vectorizer = recipe.features.set_params(max_features=cfg.max_features)
    prep = _student_prep(pipeline, vectorizer)
    Z = prep.fit_transform(X)  # (n, features), sparse rows (CSR)
    if task == "classification":
        head = soft_fit(recipe.head, Z, pipeline.predict_proba(X), teacher.classes_)
    else:
        head = recipe.head.fit(Z, pipeline.predict(X))
    return Pipeline([(pipeline.steps[0][0], prep), (pipeline.steps[-1][0], head)])


register_technique(Technique("distill-text", DistillTextConfig, _apply, _applies, _settings, needs_data=True,
                             interpretable=True,
                             stage=0, description="distil a MiniLM text model into TF-IDF + logistic regression (or ridge) "
                                         "trained on its probabilities for the calibration rows"))
