"""A scikit-learn model the user saved with skops (``frugal compress model.skops --data ... --target ...``).

Read against the data, like a bare ONNX file: the columns it reads are its ``feature_names_in_`` (fitted on a
DataFrame), else every data column but the target and the groups, in the file's order, checked against its
``n_features_in_``; its classes are matched to the target's values by value (1 == 1.0 == "1"). The result is a
frugalml pipeline, so every technique that applies to the model (fewer or shallower trees, truncated boosting,
distillation, the compact tree graph) applies to it:

- a bare estimator gets a pass-through first step over the numeric columns (it can only read numbers), the
  columns selected by position as frugalml's own pipelines do, so the ONNX export reads one ``num`` matrix;
- a pipeline keeps its own steps, behind a first step that hands it a frame with its columns, in its order.

The final estimator is a copy whose ``classes_`` are 0..k-1 in the model's own order (frugalml predicts class
indices; the labels are in the schema), so the file and the objects it held are never modified. Types outside
scikit-learn, numpy, scipy and LightGBM are refused, as for every skops file frugalml reads.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.task import Schema
from ..errors import DataError, ModelError


def load_skops_model(path: str | Path, frame: pd.DataFrame, target: str, groups: list[str]):
    """A user's skops file read against the data -> (pipeline, schema, meta), as ``load_pipeline`` returns."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from ..runtime.model_dir import load_skops
    from .onnx_graph import _key

    obj = load_skops(Path(path).read_bytes(), str(path))
    steps = list(obj.steps) if isinstance(obj, Pipeline) else [("model", obj)]
    model = steps[-1][1]
    if not hasattr(model, "predict"):
        raise ModelError(f"{path} holds a {type(model).__name__}, not a fitted model with predict")
    names = getattr(obj, "feature_names_in_", None)
    if names is not None:
        columns = [str(c) for c in names]
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"the model reads column(s) {missing[:5]} that the data lacks")
    else:
        columns = [c for c in frame.columns if c != target and c not in groups]
        width = getattr(obj, "n_features_in_", None)
        if width is not None and width != len(columns):
            raise DataError(f"the model reads {width} features; the data has {len(columns)} columns besides the "
                            f"target and groups ({columns[:6]}...)")
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(frame[c])]
    if len(steps) == 1 and len(numeric) < len(columns):
        bad = [c for c in columns if c not in numeric]
        raise DataError(f"the model reads a numeric matrix, but column(s) {bad[:3]} are not numeric; give its "
                        "pipeline (with the encoders) or name them with --group")
    categorical = [c for c in columns if c not in numeric]

    est = copy.copy(model)  # shallow: fitted parts are shared, never changed
    classes = None
    if hasattr(model, "classes_"):
        values = {_key(v): v for v in frame[target].dropna().unique().tolist()}
        own = [_key(c) for c in model.classes_]
        unknown = sorted(set(values) - set(own))
        if unknown:
            raise DataError(f"target {target!r} has values the model never saw: {unknown[:5]}; its classes are "
                            f"{list(model.classes_)}")
        classes = [values.get(k, c) for k, c in zip(own, model.classes_)]  # the model's order, the data's values
        _relabel(est, len(own))
    elif not _is_regressor(model):
        raise ModelError(f"{path} holds a {type(model).__name__}: neither a classifier (classes_) nor a regressor")
    schema = Schema("classification" if classes is not None else "regression", numeric, categorical, target, classes)
    if len(steps) == 1:  # numbers by position, as frugalml's own pipelines: one ONNX input matrix
        prep = ColumnTransformer([("num", "passthrough", list(range(len(numeric))))], remainder="drop",
                                 sparse_threshold=0.0)
        if hasattr(est, "feature_names_in_"):
            try:  # it now reads a matrix in its own column order: no name check on every call
                del est.feature_names_in_
            except AttributeError:
                pass
    else:  # its own steps read named columns: a frame in its order
        prep = ColumnTransformer([("cols", "passthrough", columns)], remainder="drop", sparse_threshold=0.0,
                                 verbose_feature_names_out=False).set_output(transform="pandas")
    from ..data.task import prepare_frame

    head = prepare_frame(frame.head(50), schema)
    prep.fit(head)  # selects columns only; the model's own steps are fitted already and stay as they are
    if len(steps) > 1:
        prep = Pipeline([("order", prep)] + steps[:-1])
    pipeline = Pipeline([("prep", prep), (steps[-1][0], est)])
    try:  # a file that loads may still not run on these columns: say so now
        pipeline.predict(head.head(2))
    except Exception as exc:
        raise ModelError(f"the model in {path} does not run on the data's rows: "
                         f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from None
    return pipeline, schema, {"candidate": f"skops:{Path(path).name}"}


def _is_regressor(model) -> bool:
    from sklearn.base import is_regressor

    try:
        return is_regressor(model)
    except Exception:  # an estimator without scikit-learn's tags
        return getattr(model, "_estimator_type", None) == "regressor"


def _relabel(est, n: int) -> None:
    """Make the copy ``est`` predict class indices 0..n-1 (its classes, in its own order)."""
    index = np.arange(n)
    if type(est).__module__.startswith("lightgbm"):
        from sklearn.preprocessing import LabelEncoder

        est._classes, est._le = index, LabelEncoder().fit(index)
    else:
        est.classes_ = index
