"""Repeated (stratified) k-fold with a fixed seed: every candidate sees exactly these splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

from .task import Task


@dataclass
class Splits:
    folds: int
    repeats: int
    seed: int
    indices: list[tuple[np.ndarray, np.ndarray]]  # (train, test) row indices, J = folds * repeats

    @property
    def test_train_ratio(self) -> float:
        """n_test / n_train for the Nadeau-Bengio correction (1 / (k - 1) for k-fold)."""
        return 1.0 / (self.folds - 1)


def make_splits(task: Task, folds: int = 5, repeats: int = 2, seed: int = 0) -> Splits:
    if task.kind == "classification":
        cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    else:
        cv = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    idx = [(tr, te) for tr, te in cv.split(np.zeros(task.n_rows), task.y)]
    return Splits(folds, repeats, seed, idx)
