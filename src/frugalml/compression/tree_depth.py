"""Shallower trees: cut every tree of a forest (or a single decision tree) at a maximum depth.

A node at the cut becomes a leaf that predicts what the node itself holds: scikit-learn keeps, for every
node, the training distribution (classification) or mean (regression) of the samples that reached it, so
the cut tree keeps every split above the cut and answers, below it, from the samples that reached the cut
node. Forests grown to small leaves spend most of their nodes in the last levels, so the model file and the
ONNX graph shrink with the node count; what it costs in quality is measured by the search (fair, random
forest, depth 8: accuracy -0.005, rejected in a small group; benchmarks/RESULTS.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from . import Technique, final_estimator, register_technique, with_final

DEPTHS = (4, 6, 8, 10, 12)  # cheapest (shallowest) first


@dataclass(frozen=True)
class TreeDepthConfig:
    max_depth: int


def _trees(model) -> list:
    return list(model.estimators_) if hasattr(model, "estimators_") else [model]


def _applies(pipeline) -> bool:
    from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier,
                                  RandomForestRegressor)
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    kinds = (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor,
             DecisionTreeClassifier, DecisionTreeRegressor)
    # and has a depth to cut at: a tree already as shallow as the shallowest cut leaves nothing to try
    return isinstance(final_estimator(pipeline), kinds) and bool(_settings(pipeline))


def _settings(pipeline) -> list[TreeDepthConfig]:
    deepest = max(t.tree_.max_depth for t in _trees(final_estimator(pipeline)))
    return [TreeDepthConfig(d) for d in DEPTHS if d < deepest]


def cut_tree(tree, max_depth: int):
    """A new scikit-learn ``Tree`` holding ``tree``'s nodes down to ``max_depth``, nodes at that depth as leaves."""
    from sklearn.tree._tree import TREE_LEAF, TREE_UNDEFINED, Tree

    state = tree.__getstate__()
    nodes, values = state["nodes"], state["values"]
    keep, depth, stack = [], {}, [(0, 0)]
    while stack:  # depth-first, left before right: the order scikit-learn builds nodes in
        node, d = stack.pop()
        depth[node] = d
        keep.append(node)
        left, right = nodes["left_child"][node], nodes["right_child"][node]
        if left != TREE_LEAF and d < max_depth:
            stack.append((right, d + 1))
            stack.append((left, d + 1))
    index = {old: new for new, old in enumerate(keep)}
    new_nodes = nodes[keep].copy()
    for i, old in enumerate(keep):
        left = nodes["left_child"][old]
        if left == TREE_LEAF or depth[old] >= max_depth:  # a leaf, or cut here
            new_nodes["left_child"][i] = new_nodes["right_child"][i] = TREE_LEAF
            new_nodes["feature"][i] = TREE_UNDEFINED
            new_nodes["threshold"][i] = TREE_UNDEFINED
        else:
            new_nodes["left_child"][i] = index[left]
            new_nodes["right_child"][i] = index[nodes["right_child"][old]]
    out = Tree(tree.n_features, np.asarray(tree.n_classes, dtype=np.intp), tree.n_outputs)
    out.__setstate__({**state, "max_depth": min(max_depth, state["max_depth"]), "node_count": len(keep),
                      "nodes": new_nodes, "values": np.ascontiguousarray(values[keep])})
    return out


def _apply(pipeline, cfg: TreeDepthConfig, calibration=None):
    model = copy.copy(final_estimator(pipeline))  # shallow; every tree estimator is copied below
    cut = []
    for est in _trees(model):
        est = copy.copy(est)
        est.tree_ = cut_tree(est.tree_, cfg.max_depth)
        est.max_depth = cfg.max_depth
        cut.append(est)
    if hasattr(model, "estimators_"):
        model.estimators_ = cut
        model.max_depth = cfg.max_depth
    else:
        model = cut[0]
    return with_final(pipeline, model)


register_technique(Technique("tree-depth", TreeDepthConfig, _apply, _applies, _settings,
                             stage=2, description="cut every tree of a forest (or a decision tree) at a maximum depth: "
                                         "the nodes there become leaves"))
