"""Forest pruning by ordered aggregation: choose the k trees whose average best reproduces the whole
forest on calibration rows (greedy forward selection), instead of the first k.

Targeting the forest's own predictions, not the labels, asks for exactly what the search then checks:
a smaller model that answers like the original. Each step adds the tree that brings the running
average closest (squared error) to the full forest's output. After Martinez-Munoz, Hernandez-Lobato and
Suarez, "An analysis of ensemble pruning techniques based on ordered aggregation" (IEEE TPAMI, 2009).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from . import Technique, final_estimator, register_technique, with_final
from .tree_subset import _applies, _settings


@dataclass(frozen=True)
class TreePruneConfig:
    n_trees: int


def order_trees(forest, Z: np.ndarray) -> list[int]:
    """Greedy order of the forest's trees: each prefix's average is closest to the full forest's output."""
    is_cls = hasattr(forest, "classes_")
    # per-tree outputs on the calibration rows: (n_trees, n_rows, n_outputs)
    outs = np.stack([(t.predict_proba(Z) if is_cls else t.predict(Z).reshape(-1, 1)) for t in forest.estimators_])
    target = outs.mean(axis=0)
    chosen: list[int] = []
    total = np.zeros_like(target)
    remaining = list(range(len(outs)))
    for k in range(1, len(outs) + 1):
        # squared distance to the full forest if each remaining tree were added
        cand = (total[None] + outs[remaining]) / k
        errors = ((cand - target[None]) ** 2).sum(axis=(1, 2))
        pick = remaining.pop(int(np.argmin(errors)))
        chosen.append(pick)
        total += outs[pick]
    return chosen


def _apply(pipeline, cfg: TreePruneConfig, calibration):
    X, _ = calibration
    forest = copy.copy(final_estimator(pipeline))  # shallow: the kept trees are shared, not copied
    order = order_trees(forest, pipeline[:-1].transform(X))
    forest.estimators_ = [forest.estimators_[i] for i in order[: cfg.n_trees]]
    forest.n_estimators = cfg.n_trees
    return with_final(pipeline, forest)


def _prune_settings(pipeline) -> list[TreePruneConfig]:
    return [TreePruneConfig(c.n_trees) for c in _settings(pipeline)]


register_technique(Technique("tree-prune", TreePruneConfig, _apply, _applies, _prune_settings, needs_data=True,
                             stage=1, description="keep the k trees whose average best matches the whole forest "
                                         "(ordered aggregation on calibration rows)"))
