"""A tree ensemble as one compact ONNX ``TreeEnsemble`` node: the same trees in about a third of the file.

skl2onnx (and onnxmltools for LightGBM) write an ensemble as ``TreeEnsembleClassifier``/``Regressor``
(ai.onnx.ml opset 3): for every node a tree id, a node id, a mode string ("BRANCH_LEQ", "LEAF"), a threshold, a
hit rate, two child ids and a missing-value flag, and for every leaf four more lists. ``TreeEnsemble`` (ai.onnx.ml
opset 5) stores split nodes only (feature, a float32 threshold tensor, a one-byte mode, two child ids each with a
leaf flag) and one weight per leaf. scikit-learn's HistGradientBoosting, which skl2onnx cannot export, gets an
ONNX graph at all.

Read: scikit-learn forests, extra trees and decision trees (binary or regression), LightGBM (binary with
sigmoid 1, multi-class softmax, or an identity-output regression; no categorical splits, no zero-as-missing) and
HistGradientBoosting (log loss, binary or multi-class, or squared error; no categorical features), NaN routed as
the model routes it. One weight per leaf fits a binary classifier (the second class's probability, or its
log-odds then a Sigmoid node), a single-output regressor and multi-class boosting (each tree adds to one class's
score: the leaf names the class, then a Softmax node); a multi-class forest's leaves hold a probability per
class, which would need its node lists once per class, so it is left to skl2onnx.

Used twice: ``export.export_onnx`` writes every tree model it can read this way (what select deploys), and
the ``onnx-trees`` compression technique (``compression.onnx_trees``) swaps a model for ``CompactTrees``, which
predicts through the compact graph itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

ML_OPSET = 5  # ai.onnx.ml version of TreeEnsemble


def _forest_kinds():
    from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, RandomForestClassifier,
                                  RandomForestRegressor)
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # (and ExtraTree*, their subclasses)

    return (RandomForestClassifier, RandomForestRegressor, ExtraTreesClassifier, ExtraTreesRegressor,
            DecisionTreeClassifier, DecisionTreeRegressor)


@dataclass
class Trees:
    """A fitted ensemble in one shape: per tree, node arrays (``left`` -1 at a leaf, ``right``, ``feature``,
    ``threshold`` (go left when x <= threshold), ``value`` (used at leaves), ``missing_left``) and ``target``
    (the output it adds to: a class's score in multi-class boosting, else 0); output k is ``scale * sum of the
    leaves reached`` by the trees of target k, through ``post``: "Identity", "Sigmoid" (binary boosting's
    log-odds) or "Softmax" (multi-class boosting's scores). ``float32_inputs``: the model casts its inputs to
    float32 before comparing (scikit-learn's trees) rather than comparing float64 ones (``graph_thresholds``)."""

    trees: list[dict]
    scale: float
    post: str = "Identity"
    float32_inputs: bool = False

    @property
    def n_targets(self) -> int:
        return 1 + max(t.get("target", 0) for t in self.trees)


def _sklearn_forest(model) -> Trees | None:
    if not isinstance(model, _forest_kinds()) or getattr(model, "n_outputs_", 1) != 1:
        return None
    if hasattr(model, "classes_") and len(model.classes_) != 2:
        return None
    out = []
    for est in (model.estimators_ if hasattr(model, "estimators_") else [model]):
        t = est.tree_
        values = t.value[:, 0, :]
        value = values[:, 1] / values.sum(axis=1) if hasattr(model, "classes_") else values[:, 0]
        missing = t.missing_go_to_left if hasattr(t, "missing_go_to_left") else np.zeros(t.node_count, bool)
        out.append(dict(left=t.children_left, right=t.children_right, feature=t.feature, threshold=t.threshold,
                        value=value, missing_left=np.asarray(missing, dtype=bool)))
    return Trees(out, 1.0 / len(out), float32_inputs=True)


def _lightgbm(model) -> Trees | None:
    """A binary (sigmoid 1), multi-class (softmax) or identity-output regression LightGBM model without
    categorical splits."""
    if not type(model).__module__.startswith("lightgbm") or not hasattr(model, "booster_"):
        return None
    dump = model.booster_.dump_model()
    objective = dump["objective"].split()
    per_iteration = dump["num_tree_per_iteration"]
    if dump.get("average_output") or (per_iteration != 1 and objective[0] != "multiclass"):
        return None
    if objective[0] == "binary" and "sigmoid:1" in objective[1:]:
        post = "Sigmoid"
    elif objective[0] == "multiclass":
        post = "Softmax"
    elif objective[0] in ("regression", "regression_l1", "huber", "fair", "quantile"):
        post = "Identity"
    else:
        return None
    out = []
    for k, info in enumerate(dump["tree_info"]):  # iteration after iteration, a tree per class in each
        nodes = []

        def walk(node):  # depth first, left first; -> this node's index
            i = len(nodes)
            nodes.append(node)
            if "leaf_value" not in node:
                node["_left"], node["_right"] = walk(node["left_child"]), walk(node["right_child"])
            return i

        walk(info["tree_structure"])
        split = ["leaf_value" not in n for n in nodes]
        if any(n.get("decision_type", "<=") != "<=" or n.get("missing_type", "None") == "Zero" for n in nodes):
            return None  # categorical splits, zero-as-missing: not expressible here
        out.append(dict(
            left=np.array([n["_left"] if s else -1 for n, s in zip(nodes, split)]),
            right=np.array([n["_right"] if s else -1 for n, s in zip(nodes, split)]),
            feature=np.array([n["split_feature"] if s else 0 for n, s in zip(nodes, split)]),
            threshold=np.array([n["threshold"] if s else 0.0 for n, s in zip(nodes, split)], dtype=np.float64),
            value=np.array([0.0 if s else n["leaf_value"] for n, s in zip(nodes, split)]),
            missing_left=np.array([s and _lightgbm_nan_goes_left(n) for n, s in zip(nodes, split)], dtype=bool),
            target=k % per_iteration))
    return Trees(out, 1.0, post)


def _lightgbm_nan_goes_left(node) -> bool:
    """LightGBM's route for NaN at a split: its default side where the split learnt one (missing type NaN);
    elsewhere NaN is read as 0.0 and compared like any number."""
    if node["missing_type"] == "NaN":
        return bool(node["default_left"])
    return 0.0 <= node["threshold"]


def _hist_gradient_boosting(model) -> Trees | None:
    """A log-loss (binary or multi-class) or squared-error HistGradientBoosting model without categorical
    features."""
    if not type(model).__name__.startswith("HistGradientBoosting") or not hasattr(model, "_predictors"):
        return None
    if not hasattr(model, "classes_") and getattr(model, "loss", None) != "squared_error":
        return None
    out = []
    for predictors in model._predictors:  # per iteration, a tree per class (one when binary or regression)
        for k, predictor in enumerate(predictors):
            n = predictor.nodes
            if n["is_categorical"].any():
                return None
            leaf = n["is_leaf"].astype(bool)
            out.append(dict(left=np.where(leaf, -1, n["left"].astype(np.int64)),
                            right=np.where(leaf, -1, n["right"].astype(np.int64)),
                            feature=n["feature_idx"], threshold=n["num_threshold"], value=n["value"],
                            missing_left=n["missing_go_to_left"].astype(bool), target=k))
    for k, base in enumerate(np.ravel(model._baseline_prediction)):  # one-leaf trees carry the baselines
        out.append(dict(left=np.array([-1]), right=np.array([-1]), feature=np.array([0]), threshold=np.array([0.0]),
                        value=np.array([float(base)]), missing_left=np.array([False]), target=k))
    post = "Identity" if not hasattr(model, "classes_") else "Sigmoid" if len(model.classes_) == 2 else "Softmax"
    return Trees(out, 1.0, post)


def trees_of(model) -> Trees | None:
    """The ensemble in one shape, or None when one TreeEnsemble node cannot express it."""
    for read in (_sklearn_forest, _lightgbm, _hist_gradient_boosting):
        found = read(model)
        if found is not None:
            return found
    return None


def graph_thresholds(ens: Trees, threshold: np.ndarray) -> np.ndarray:
    """The float32 thresholds the graph compares its float32 inputs with. A model that casts inputs to float32
    (``ens.float32_inputs``) goes left when float32(x) <= t: the largest float32 at or below t does exactly that
    (the nearest one can round up onto a value the model sends right). A model that compares float64 x <= t
    (boosting) gets the nearest float32: rounding keeps order, so a value equal to its threshold, which
    HistGradientBoosting's thresholds often are, still goes left; only values within float32 precision of t
    can differ, as in any float32 graph."""
    t = np.asarray(threshold, dtype=np.float64)
    f = t.astype(np.float32)
    if ens.float32_inputs:
        f = np.where(f > t, np.nextafter(f, np.float32(-np.inf)), f)
    return f.astype(np.float32)


def tree_ensemble_attributes(ens: Trees) -> dict:
    """The attributes of one ``TreeEnsemble`` node summing ``ens``'s leaves (times its scale) per target: the
    second-class probability (forest), its log-odds or the class scores (boosting), or the prediction
    (regressor). The node's own post_transform stays NONE: a Sigmoid or Softmax node follows when needed, so the
    graph does not depend on a runtime applying it."""
    from onnx.numpy_helper import from_array

    feats, splits, missing, true_ids, true_leaf, false_ids, false_leaf, roots, weights, targets = (
        [] for _ in range(10))
    n_split = n_leaf = 0
    for t in ens.trees:
        left, right = t["left"], t["right"]
        is_leaf = left == -1
        # split nodes and leaves numbered separately, each in the tree's own order, after the earlier trees'
        index = np.where(is_leaf, np.cumsum(is_leaf) - 1 + n_leaf, np.cumsum(~is_leaf) - 1 + n_split)
        if is_leaf[0]:  # a one-leaf tree: a split that sends every row to the same leaf
            feats.append(0)
            splits.append(0.0)
            missing.append(0)
            true_ids.append(n_leaf)
            false_ids.append(n_leaf)
            true_leaf.append(1)
            false_leaf.append(1)
            roots.append(n_split)
            n_split += 1
        else:
            split = np.flatnonzero(~is_leaf)
            roots.append(int(index[0]))
            feats += t["feature"][split].tolist()
            splits += graph_thresholds(ens, t["threshold"][split]).tolist()
            missing += t["missing_left"][split].astype(int).tolist()
            true_ids += index[left[split]].tolist()
            true_leaf += is_leaf[left[split]].astype(int).tolist()
            false_ids += index[right[split]].tolist()
            false_leaf += is_leaf[right[split]].astype(int).tolist()
            n_split += len(split)
        weights += (t["value"][is_leaf] * ens.scale).tolist()
        targets += [t.get("target", 0)] * int(is_leaf.sum())
        n_leaf += int(is_leaf.sum())
    attrs = dict(aggregate_function=1, post_transform=0, n_targets=ens.n_targets, tree_roots=roots,  # SUM
                 nodes_featureids=feats, nodes_splits=from_array(np.asarray(splits, dtype=np.float32)),
                 nodes_modes=from_array(np.zeros(len(feats), dtype=np.uint8)),  # 0: BRANCH_LEQ
                 nodes_truenodeids=true_ids, nodes_trueleafs=true_leaf, nodes_falsenodeids=false_ids,
                 nodes_falseleafs=false_leaf, leaf_targetids=targets,
                 leaf_weights=from_array(np.asarray(weights, dtype=np.float32)))
    if any(missing):  # NaN follows the true (<=) branch where the model sends it left
        attrs["nodes_missing_value_tracks_true"] = missing
    return attrs


def standalone_graph(model, n_features: int) -> bytes:
    """``model`` as an ONNX model of its own: X (N, features) float32 -> (N, targets) float32."""
    from onnx import TensorProto, helper

    ens = trees_of(model)
    nodes = [helper.make_node("TreeEnsemble", ["X"], ["S"], domain="ai.onnx.ml", **tree_ensemble_attributes(ens)),
             helper.make_node(ens.post, ["S"], ["Y"], **({"axis": 1} if ens.post == "Softmax" else {}))]
    graph = helper.make_graph(nodes, "trees", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, ens.n_targets])])
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
    onx.ir_version = 9
    return onx.SerializeToString()


class CompactTrees(BaseEstimator):
    """A tree ensemble held as one compact ONNX graph; predicts through ONNX Runtime. Fitted by ``from_trees``."""

    onnx_ml_opset = ML_OPSET  # the ai.onnx.ml version export.export_onnx gives the pipeline's graph

    def __init__(self, threads: int | None = 1, graph_optimization: str = "all"):
        self.threads = threads
        self.graph_optimization = graph_optimization

    def from_trees(self, model, n_features: int):
        self.onnx_graph_ = np.frombuffer(standalone_graph(model, n_features), dtype=np.uint8).copy()
        self.n_features_in_ = n_features
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_
        return self

    def fit(self, X, y=None):  # the trees are already trained (``from_trees``); sklearn's API wants fit
        return self

    def _scores(self, X) -> np.ndarray:
        from ..runtime.sessions import cached_session

        X = np.ascontiguousarray(X, dtype=np.float32)
        return cached_session(self).run(None, {"X": X})[0]  # (N, targets)

    def nodes(self) -> tuple[dict, str]:
        """(the TreeEnsemble node's attributes, the node after it: Sigmoid, Softmax or Identity), read from the
        stored graph."""
        import onnx

        trees, post = onnx.load_from_string(self.onnx_graph_.tobytes()).graph.node
        return {a.name: onnx.helper.get_attribute_value(a) for a in trees.attribute}, post

    @staticmethod
    def register_onnx() -> None:
        register_onnx()

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_session", None)
        return state


class CompactTreesClassifier(ClassifierMixin, CompactTrees):
    def predict_proba(self, X) -> np.ndarray:
        s = self._scores(X)
        if s.shape[1] > 1:  # multi-class: the Softmax's probabilities
            return s.astype(np.float64)
        return np.column_stack([np.float32(1) - s[:, 0], s[:, 0]]).astype(np.float64)  # as the graph computes it

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class CompactTreesRegressor(RegressorMixin, CompactTrees):
    def predict(self, X) -> np.ndarray:
        return self._scores(X)[:, 0].astype(np.float64)


def compact_trees(model) -> CompactTrees | None:
    """``model`` (fitted) as a CompactTreesClassifier/Regressor, or None when one TreeEnsemble node cannot
    express it."""
    if trees_of(model) is None:
        return None
    kind = CompactTreesClassifier if hasattr(model, "classes_") else CompactTreesRegressor
    return kind().from_trees(model, model.n_features_in_)


def edge_rows(model, n_rows: int = 512, seed: int = 0) -> np.ndarray:
    """(n_rows, features) float32 rows in the model's input space that sit on its split thresholds: each value is
    the graph's float32 threshold T of some split on its feature, or the float32 just below it (when the model
    compares float64 inputs, as T itself may then lie on either side of the model's threshold), or just above
    it; about one in ten is NaN when the model takes missing values. Rows that check a conversion's thresholds and
    NaN routes without any data."""
    rng = np.random.default_rng(seed)
    ens = trees_of(model)
    n_features = model.n_features_in_
    feature = np.concatenate([t["feature"][t["left"] != -1] for t in ens.trees] + [np.zeros(0, int)])
    threshold = np.concatenate([t["threshold"][t["left"] != -1] for t in ens.trees] + [np.zeros(0)])
    X = np.zeros((n_rows, n_features), dtype=np.float32)
    for f in range(n_features):
        at = graph_thresholds(ens, threshold[feature == f])
        if at.size:
            below = at if ens.float32_inputs else np.nextafter(at, np.float32(-np.inf))
            values = np.concatenate([below, np.nextafter(at, np.float32(np.inf))])
            values = values[np.isfinite(values)]  # an infinite threshold parts numbers from NaN: the NaN rows test it
            values[np.abs(values) <= 1e-35] = 0.0  # LightGBM reads those as zero (its kZeroThreshold)
            if values.size:
                X[:, f] = values[rng.integers(0, values.size, n_rows)]
    with_nan = np.where(rng.random(X.shape) < 0.1, np.float32(np.nan), X)
    try:
        model.predict(with_nan[:8].astype(np.float64))
    except ValueError:  # a model fitted where NaN is refused (older scikit-learn forests): numbers only
        return X
    return with_nan


def reproduction(model, compact: CompactTrees, rows: np.ndarray) -> dict:
    """How closely ``compact`` reproduces ``model`` on ``rows``: the keys of ``export.onnx_agreement``."""
    native_in = rows.astype(np.float64)  # the same float32 values the graph reads
    if hasattr(model, "classes_"):
        out = {"onnx_label_agreement": float(np.mean(model.predict(native_in) == compact.predict(rows)))}
        if hasattr(model, "predict_proba"):
            diff = model.predict_proba(native_in) - compact.predict_proba(rows)
            out["onnx_max_abs_diff"] = float(np.max(np.abs(diff)))
        return out
    native, got = model.predict(native_in), compact.predict(rows)
    scale = float(np.std(native)) or 1.0
    return {"onnx_max_abs_diff": float(np.max(np.abs(native - got))),
            "onnx_max_rel_diff": float(np.max(np.abs(native - got)) / scale)}


# -- skl2onnx: the stored node inside the pipeline's graph --------------------------------------------------------

def register_onnx() -> None:
    """Teach skl2onnx to convert both estimators (``export.export_onnx`` calls it)."""
    from .converters import register_converters

    register_converters(CompactTreesClassifier, CompactTreesRegressor, "CompactTrees", _convert)


def _convert(scope, operator, container):
    import onnx
    from onnx import TensorProto
    from onnx.numpy_helper import from_array

    from .converters import add_label_output

    est = operator.raw_operator

    def node(op, inputs, hint, out=None, **attrs):
        out = out or scope.get_unique_variable_name(hint)
        container.add_node(op, inputs, out, name=scope.get_unique_operator_name(op), **attrs)
        return out

    x = node("Cast", [operator.inputs[0].full_name], "x", to=TensorProto.FLOAT)
    attributes, after = est.nodes()
    post, post_attrs = after.op_type, {a.name: onnx.helper.get_attribute_value(a) for a in after.attribute}
    raw = scope.get_unique_variable_name("raw")
    # skl2onnx knows ai.onnx.ml up to opset 3: the node is declared at 3 and export_onnx raises the model's
    # ai.onnx.ml import to ML_OPSET (``onnx_ml_opset``) once skl2onnx is done
    container.add_node("TreeEnsemble", [x], raw, op_domain="ai.onnx.ml", op_version=3,
                       name=scope.get_unique_operator_name("TreeEnsemble"), **attributes)
    if not hasattr(est, "classes_"):
        node(post, [raw], "y", out=operator.outputs[0].full_name, **post_attrs)
        return
    if len(est.classes_) > 2:  # the Softmax's probabilities
        proba = node(post, [raw], "proba", out=operator.outputs[1].full_name, **post_attrs)
    else:
        scores = node(post, [raw], "scores", **post_attrs)
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, None, None, from_array(np.ones((1, 1), dtype=np.float32), one))
        proba = node("Concat", [node("Sub", [one, scores], "p0"), scores], "proba",
                     out=operator.outputs[1].full_name, axis=1)
    index = node("ArgMax", [proba], "index", axis=1, keepdims=0)  # the first of equal maxima, as numpy's argmax
    add_label_output(scope, container, est.classes_, index, operator.outputs[0].full_name)
