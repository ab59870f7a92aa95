"""Forest shrinking: keep a subset of a bagged forest's trees.

The trees of a random forest (or extra-trees) are exchangeable: any k of them form a smaller forest of
the same kind. Keeping the first k is an unbiased choice that needs no data; the search measures what
each k costs in quality.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from . import Technique, final_estimator, register_technique, with_final


@dataclass(frozen=True)
class TreeSubsetConfig:
    n_trees: int


def _applies(pipeline) -> bool:
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor

    return isinstance(final_estimator(pipeline), (RandomForestClassifier, RandomForestRegressor,
                                                  ExtraTreesClassifier, ExtraTreesRegressor))


def _settings(pipeline) -> list[TreeSubsetConfig]:
    n = len(final_estimator(pipeline).estimators_)
    return [TreeSubsetConfig(k) for k in (5, 10, 20, 40, 60) if k < n]


def _apply(pipeline, cfg: TreeSubsetConfig, calibration=None):
    forest = copy.copy(final_estimator(pipeline))  # shallow: the kept trees are shared, not copied
    forest.estimators_ = list(forest.estimators_[: cfg.n_trees])
    forest.n_estimators = len(forest.estimators_)
    return with_final(pipeline, forest)


register_technique(Technique("tree-subset", TreeSubsetConfig, _apply, _applies, _settings,
                             stage=1, description="keep the first k trees of a random forest / extra-trees"))
