"""Export a fitted pipeline to ONNX, and check the graph against the native model.

A tree model is written as one compact ``TreeEnsemble`` node (``tree_graph``) where that node reproduces it;
frugalml's own estimators bring their converters (``converters``); everything else goes through skl2onnx
(onnxmltools for LightGBM).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..data import Schema
from ..errors import ModelError
from ..runtime.sessions import OnnxPredictor, ort_session


class OnnxExportError(Exception):
    pass

def _register_lightgbm() -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (calculate_linear_classifier_output_shapes,
                                                  calculate_linear_regressor_output_shapes)
    import lightgbm as lgb
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    update_registered_converter(lgb.LGBMClassifier, "LightGbmLGBMClassifier",
                                calculate_linear_classifier_output_shapes, convert_lightgbm,
                                options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
    update_registered_converter(lgb.LGBMRegressor, "LightGbmLGBMRegressor",
                                calculate_linear_regressor_output_shapes, convert_lightgbm,
                                options={"split": None})

def export_onnx(pipeline, schema: Schema, *, compact_trees: bool = True) -> bytes:
    """Convert a fitted pipeline to ONNX bytes, or raise OnnxExportError saying why.

    A tree model that ``tree_graph`` reads is written as one compact ``TreeEnsemble`` node when that node
    reproduces the model (``onnx_is_faithful`` on rows at its split thresholds, ``tree_graph.edge_rows``);
    anything else, or ``compact_trees=False``, as skl2onnx (onnxmltools for LightGBM) writes it.
    """
    model = pipeline.steps[-1][1]
    if schema.image and hasattr(model, "export_onnx"):  # an image model writes its own graph, from pixels
        try:
            return model.export_onnx()
        except Exception as exc:  # the torch exporter raises many types; all mean "cannot export"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise OnnxExportError(f"{type(model).__name__}: {first[:200]}") from None
    if compact_trees:
        try:
            compact = _compact_tree_pipeline(pipeline)
        except Exception:  # a tree model shaped as tree_graph does not expect: never worse than skl2onnx's export
            compact = None
        if compact is not None:
            try:
                return _skl2onnx(compact, schema)
            except OnnxExportError:
                pass  # skl2onnx's own converter may still export the model
    return _skl2onnx(pipeline, schema)

def _compact_tree_pipeline(pipeline):
    """The pipeline with its tree model as ``tree_graph.CompactTrees``, or None when the compact node cannot
    express the model or does not reproduce it."""
    from sklearn.pipeline import Pipeline

    from .tree_graph import compact_trees, edge_rows, reproduction

    name, model = pipeline.steps[-1]
    compact = compact_trees(model)
    if compact is None:
        return None
    task = "classification" if hasattr(model, "classes_") else "regression"
    if not onnx_is_faithful(reproduction(model, compact, edge_rows(model)), task):
        return None
    return Pipeline(pipeline.steps[:-1] + [(name, compact)])

def _skl2onnx(pipeline, schema: Schema) -> bytes:
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        raise OnnxExportError(f"skl2onnx is not installed ({exc})") from None
    model = pipeline.steps[-1][1]
    if type(model).__module__.startswith("lightgbm"):
        _register_lightgbm()
    if hasattr(model, "register_onnx"):  # an estimator that brings its own skl2onnx converter (torch_mlp)
        model.register_onnx()
    types = [("num", FloatTensorType([None, len(schema.numeric)]))] if schema.numeric else []
    types += [("cat", StringTensorType([None, len(schema.categorical)]))] if schema.categorical else []
    types += [("text", StringTensorType([None, len(schema.text)]))] if schema.text else []
    types += [("image", StringTensorType([None, 1]))] if schema.image else []  # read by none: a baseline
    options = {id(model): {"zipmap": False}} if schema.task == "classification" else {}
    options.update(_vectorizer_options(pipeline))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onx = to_onnx(pipeline, initial_types=types, options=options or None,
                          target_opset={"": 17, "ai.onnx.ml": 3})
    except Exception as exc:  # skl2onnx raises many types for unsupported models; all mean "cannot export"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OnnxExportError(f"{type(model).__name__}: {first[:200]}") from None
    ml_opset = getattr(model, "onnx_ml_opset", None)  # an op newer than skl2onnx knows (tree_graph.CompactTrees)
    for entry in onx.opset_import if ml_opset else []:
        if entry.domain == "ai.onnx.ml":
            entry.version = max(entry.version, ml_opset)
    data = onx.SerializeToString()
    if schema.text:  # text operators depend on the machine (locales, regular expressions): check they load
        try:
            ort_session(data)
        except ModelError as exc:
            raise OnnxExportError(str(exc)) from None
    return data

def _vectorizer_options(pipeline) -> dict:
    """skl2onnx options that make a word TF-IDF/count vectorizer's ONNX graph tokenize like scikit-learn.

    scikit-learn's default tokens are maximal runs of two or more word characters (``(?u)\\b\\w\\w+\\b``),
    which ONNX Runtime's re2 spells ``[\\pL\\pN_]{2,}``; lowercasing needs a UTF-8 locale (C.UTF-8 is built
    into glibc). Other settings keep skl2onnx's defaults, and the agreement check decides.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    prep = pipeline.steps[0][1] if len(pipeline.steps) > 1 else None
    out = {}
    for _, part, _ in getattr(prep, "transformers_", []):
        if (isinstance(part, CountVectorizer) and part.analyzer == "word" and part.tokenizer is None
                and part.token_pattern == r"(?u)\b\w\w+\b"):
            out[id(part)] = {"tokenexp": r"[\pL\pN_]{2,}", "locale": "C.UTF-8"}
    return out

def onnx_agreement(pipeline, onnx_bytes: bytes, frame: pd.DataFrame, schema: Schema) -> dict:
    """How closely the ONNX graph reproduces the native pipeline on ``frame``."""
    onx = OnnxPredictor(onnx_bytes, schema)
    native = pipeline.predict(frame)
    exported = onx.predict(frame)
    if schema.task == "classification":
        out = {"onnx_label_agreement": float(np.mean(native == exported))}
        if hasattr(pipeline, "predict_proba"):
            out["onnx_max_abs_diff"] = float(np.max(np.abs(pipeline.predict_proba(frame) - onx.predict_proba(frame))))
        return out
    scale = float(np.std(native)) or 1.0
    return {"onnx_max_abs_diff": float(np.max(np.abs(native - exported))),
            "onnx_max_rel_diff": float(np.max(np.abs(native - exported)) / scale)}

def onnx_is_faithful(agreement: dict, task: str) -> bool:
    if task == "classification":
        return agreement.get("onnx_label_agreement", 0.0) >= 0.995 and agreement.get("onnx_max_abs_diff", 0.0) < 0.01
    return agreement.get("onnx_max_rel_diff", 1.0) < 1e-3
