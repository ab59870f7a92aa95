"""The ``onnx-trees`` technique: a tree ensemble swapped for ``CompactTrees``, which holds it as one compact ONNX
``TreeEnsemble`` node (ai.onnx.ml opset 5) and predicts through that graph (ONNX Runtime), so the search judges
what ships.

The reading and graph writing live in ``candidates.tree_graph``, since select deploys tree models the same way
(``export.export_onnx``). Measured (`benchmarks/bench_compress.py --no-minilm`, RESULTS.md): randhie's 100-tree
random forest 10,736 -> 3,695 kB, its LightGBM model 454 -> 141 kB against skl2onnx's / onnxmltools' graphs,
predictions unchanged, batch-1 latency the same (p50 0.0176 vs 0.0174 ms for the forest). On what select
already ships compactly it changes no file; it still turns a native skops forest (a user's model) into the graph.

What it reads: scikit-learn forests and trees (binary or regression), LightGBM and HistGradientBoosting (binary,
multi-class or regression); a multi-class forest is left alone (``tree_graph`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass

# CompactTrees* lived here until they moved to candidates.tree_graph: model folders saved before name them by
# this module's path, so they stay importable from it (runtime.model_dir.TRUSTED_PREFIXES trusts both paths).
from ..candidates.tree_graph import (ML_OPSET, CompactTrees, CompactTreesClassifier,  # noqa: F401
                                     CompactTreesRegressor, Trees, compact_trees, register_onnx, standalone_graph,
                                     tree_ensemble_attributes, trees_of)
from . import Technique, final_estimator, register_technique, with_final


@dataclass(frozen=True)
class OnnxTreesConfig:
    pass  # one setting: the same trees, another operator


def _applies(pipeline) -> bool:
    return trees_of(final_estimator(pipeline)) is not None


def _apply(pipeline, cfg: OnnxTreesConfig, calibration=None):
    return with_final(pipeline, compact_trees(final_estimator(pipeline)))


register_technique(Technique("onnx-trees", OnnxTreesConfig, _apply, _applies, lambda p: [OnnxTreesConfig()],
                             stage=3, description="a forest (binary or regression) or boosted model as one compact "
                                                  "ONNX TreeEnsemble node (opset 5): the same trees, a third of the file"))
