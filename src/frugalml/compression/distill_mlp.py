"""Distillation into a narrow torch MLP: a student with one small hidden layer, trained from scratch on the
calibration rows to reproduce the teacher's soft labels (its class probabilities; for a regressor, its
predictions), early-stopped on a share of those rows.

Soft labels carry more than the teacher's answers: how sure it is, and which classes it finds alike. After
Hinton, Vinyals and Dean, "Distilling the knowledge in a neural network" (2015), at temperature 1.

Applies to neural teachers on scaled features: the torch MLP, and scikit-learn's MLPClassifier/MLPRegressor
(the ``mlp`` candidate) when torch is installed. A tree teacher's pipeline does not scale its numbers, which
an MLP student needs; ``distill`` gives such teachers a tree or linear student.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from . import Technique, final_estimator, register_technique, with_final

STUDENT_LEARNING_RATE = 1e-2  # one narrow hidden layer trains stably at this rate


@dataclass(frozen=True)
class MLPDistillConfig:
    hidden: int  # width of the student's one hidden layer


def _applies(pipeline) -> bool:
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    from ..candidates.torch_mlp import TorchMLP

    teacher = final_estimator(pipeline)
    return isinstance(teacher, TorchMLP) or (isinstance(teacher, (MLPClassifier, MLPRegressor))
                                             and importlib.util.find_spec("torch") is not None)


def _teacher_params(teacher) -> int:
    if hasattr(teacher, "frugal_param_count"):
        return teacher.frugal_param_count()
    return sum(W.size for W in teacher.coefs_) + sum(b.size for b in teacher.intercepts_)


def _settings(pipeline) -> list[MLPDistillConfig]:
    """Narrowest first, and only students with fewer weights than the teacher."""
    teacher = final_estimator(pipeline)
    n_in = teacher.n_features_in_
    n_out = len(teacher.classes_) if hasattr(teacher, "classes_") else 1
    return [MLPDistillConfig(h) for h in (16, 32, 64)
            if (n_in + 1) * h + (h + 1) * n_out < _teacher_params(teacher)]


def _apply(pipeline, cfg: MLPDistillConfig, calibration):
    from ..candidates.torch_mlp import TorchMLP, TorchMLPClassifier, TorchMLPRegressor

    X, _ = calibration
    teacher = final_estimator(pipeline)
    Z = np.asarray(pipeline[:-1].transform(X), dtype=np.float32)
    # a few hundred rows make few steps per epoch: a higher rate and more patience than a candidate's fit
    settings = dict(hidden_layer_sizes=(cfg.hidden,), learning_rate=STUDENT_LEARNING_RATE, patience=20,
                    seed=getattr(teacher, "seed", 0))
    if isinstance(teacher, TorchMLP):
        settings["threads"] = teacher.threads
    if hasattr(teacher, "classes_"):
        student = TorchMLPClassifier(**settings).fit_soft(Z, teacher.predict_proba(Z), teacher.classes_)
    else:
        student = TorchMLPRegressor(**settings).fit(Z, teacher.predict(Z))
    return with_final(pipeline, student)


register_technique(Technique("mlp-distill", MLPDistillConfig, _apply, _applies, _settings, needs_data=True,
                             stage=0, description="train a torch MLP with one narrow hidden layer on a neural teacher's "
                                         "soft labels (probabilities) on the calibration rows"))
