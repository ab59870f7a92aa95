"""A model that arrives as a bare ONNX file (``frugal compress model.onnx --data ... --target ...``).

The graph is wrapped as a scikit-learn compatible estimator, so the compression search judges its variants
(the same graph quantized, in fp16, at another optimisation level) exactly as it judges any pipeline: the
same rows, the same paired bootstrap, the same groups. The graph says what it reads and returns; the data
says what the columns and classes are:

- inputs: either one input per data column, named as the column (what skl2onnx writes for a
  ``ColumnTransformer`` over named columns), or a single numeric matrix (N, F) fed with the data's columns
  other than the target and the ``--group`` columns, in the file's order (what ``torch.onnx.export`` writes);
- outputs: a label output (rank 1, integers or strings) with or without probabilities (an (N, C) tensor or
  skl2onnx's ZipMap list of dicts) is a classifier; a single float output of width C > 1 holds class scores
  (probabilities, or logits turned into probabilities by softmax); a single float output of width 1 or of
  unknown width is a regressor. Classes are the target's values, sorted, as scikit-learn orders them.

The graph is stored on the estimator as bytes (a uint8 array: skops-safe, never pickled); the ONNX Runtime
session is built on first use and never saved.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from ..data.task import Schema
from ..errors import DataError, ModelError

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(string)": object}


class OnnxGraphModel(BaseEstimator):
    """A foreign ONNX graph as the final step of a pipeline; fitted by ``from_graph``, not by ``fit``.

    ``graph_optimization``: the ONNX Runtime level its session uses; ``compressed``: set on the variants the
    compression techniques make (they do not compress a variant again)."""

    def __init__(self, graph_optimization: str = "all", threads: int | None = None, compressed: bool = False):
        self.graph_optimization = graph_optimization
        self.threads = threads
        self.compressed = compressed

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def from_graph(cls, graph: bytes, frame: pd.DataFrame, target: str, groups: list[str]) -> tuple[
            "OnnxGraphModel", Schema]:
        """Read the graph's inputs and outputs against the data -> (estimator, schema); clear errors else."""
        est = cls()
        est.onnx_graph_ = np.frombuffer(graph, dtype=np.uint8).copy()
        session = est._ort()
        inputs = session.get_inputs()
        named = [i for i in inputs if i.name in frame.columns and i.name != target]
        if inputs and len(named) == len(inputs):
            unknown = [i.type for i in inputs if i.type not in _DTYPES]
            if unknown:
                raise ModelError(f"the ONNX model reads inputs of type {unknown[0]}, which frugalml cannot feed")
            est.feed_mode_ = "columns"
            est.inputs_ = [[i.name, i.type] for i in inputs]
            numeric = [i.name for i in inputs if i.type != "tensor(string)"]
            categorical = [i.name for i in inputs if i.type == "tensor(string)"]
        elif len(inputs) == 1 and inputs[0].type in _DTYPES and inputs[0].type != "tensor(string)" \
                and len(inputs[0].shape) == 2:
            features = [c for c in frame.columns if c != target and c not in groups]
            width = inputs[0].shape[1]
            if isinstance(width, int) and width != len(features):
                raise DataError(f"the ONNX model reads {width} features from its input {inputs[0].name!r}; the data "
                                f"has {len(features)} columns besides the target and groups ({features[:6]}...)")
            bad = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
            if bad:
                raise DataError(f"the ONNX model reads one numeric matrix, but column(s) {bad[:3]} are not "
                                "numeric; drop them or name them with --group")
            est.feed_mode_ = "matrix"
            est.inputs_ = [[inputs[0].name, inputs[0].type]]
            numeric, categorical = features, []
        else:
            names = ", ".join(f"{i.name} {i.type}" for i in inputs)
            raise DataError(f"the ONNX model's inputs ({names}) are neither columns of the data nor one numeric "
                            "matrix; give data whose columns are named as the graph's inputs")
        est.columns_ = numeric + categorical
        est.task_, est.label_output_, est.proba_output_, est.width_ = _outputs(session)
        classes = None
        if est.task_ == "classification":
            classes = sorted(frame[target].dropna().unique().tolist())
            if est.label_output_ is None and est.width_ != len(classes):
                raise DataError(f"the ONNX model scores {est.width_} classes; target {target!r} has {len(classes)} "
                                f"values ({classes[:6]})")
            est.classes_ = np.arange(len(classes))
            est.labels_ = [_key(c) for c in classes]
        schema = Schema(est.task_, numeric, categorical, target, classes)
        from ..data.task import prepare_frame

        try:  # a graph that loads may still not run on these columns (shapes, types): say so now
            est.predict(prepare_frame(frame.head(2), schema))
        except (DataError, ModelError):
            raise
        except Exception as exc:  # onnxruntime raises its own error classes
            raise ModelError(f"the ONNX model does not run on the data's rows: {str(exc).splitlines()[0][:200]}") from None
        return est, schema

    # -- prediction --------------------------------------------------------------------------------------
    def fit(self, X, y=None):  # the graph is already trained; sklearn's API wants fit
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier" if getattr(self, "task_", None) == "classification" else "regressor"
        return tags

    def _ort(self):
        from ..runtime.sessions import cached_session

        return cached_session(self)

    def feeds(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        if self.feed_mode_ == "matrix":
            name, kind = self.inputs_[0]
            return {name: X[self.columns_].to_numpy().astype(_DTYPES[kind])}
        return {name: X[[name]].to_numpy().astype(_DTYPES[kind]) for name, kind in self.inputs_}

    def _run(self, X):
        names = [n for n in (self.label_output_, self.proba_output_) if n is not None]
        return dict(zip(names, self._ort().run(names, self.feeds(X))))

    def predict_proba(self, X) -> np.ndarray:
        if self.task_ != "classification":
            raise ModelError("predict_proba is only for classifiers")
        out = self._run(X)
        if self.proba_output_ is None:  # labels only: one-hot
            return np.eye(len(self.labels_))[self._label_index(out[self.label_output_])]
        p = out[self.proba_output_]
        if isinstance(p, list):  # skl2onnx ZipMap: one {label: probability} per row, keys int64 or strings
            return np.array([[{_key(k): v for k, v in row.items()}.get(k, 0.0) for k in self.labels_] for row in p])
        p = np.asarray(p, dtype=np.float64).reshape(len(X), -1)
        if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):  # logits
            p = np.exp(p - p.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
        return p

    def _label_index(self, labels) -> np.ndarray:
        index = {k: i for i, k in enumerate(self.labels_)}
        keys = [_key(v) for v in np.asarray(labels).reshape(-1)]
        unknown = sorted({k for k in keys if k not in index})
        if unknown:
            raise ModelError(f"the ONNX model answers label(s) {unknown[:5]} that the target does not have "
                             f"({self.labels_[:6]})")
        return np.array([index[k] for k in keys])

    def predict(self, X) -> np.ndarray:
        if self.task_ == "regression":
            return np.asarray(self._run(X)[self.proba_output_], dtype=np.float64).reshape(-1)
        if self.label_output_ is not None:  # the graph's own decision (its thresholds, its tie-breaking)
            return self._label_index(self._run(X)[self.label_output_])
        return self.predict_proba(X).argmax(1)

    def on_graph(self, graph: np.ndarray, graph_optimization: str = "all") -> "OnnxGraphModel":
        """A copy (this one unmodified) that runs ``graph`` (ONNX bytes as a uint8 array, a compressed variant of
        this one's graph, same inputs and outputs) with that session setting; marked ``compressed``."""
        new = copy.copy(self)
        new.__dict__.pop("_session", None)  # the live session is rebuilt from the new graph
        new.set_params(graph_optimization=graph_optimization, compressed=True)
        new.onnx_graph_ = graph
        return new

    def frugal_param_count(self) -> int:
        import onnx

        model = onnx.load_from_string(self.onnx_graph_.tobytes())
        return int(sum(np.prod(t.dims) for t in model.graph.initializer))

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_session", None)
        return state


def _key(label) -> str:
    """A label as text, numbers by value: 1, 1.0, np.int64(1) and "1" are one class; b"yes" is "yes"."""
    if isinstance(label, bytes):
        label = label.decode()
    try:
        return repr(float(label))
    except (TypeError, ValueError):
        return str(label)


def _outputs(session) -> tuple[str, str | None, str | None, int | None]:
    """-> (task, label output, probability/score output, score width)."""
    outs = session.get_outputs()
    labels = [o for o in outs if o.type in ("tensor(int64)", "tensor(string)", "tensor(int32)") and len(o.shape) <= 1]
    floats = [o for o in outs if o.type in ("tensor(float)", "tensor(double)")]
    zipmap = [o for o in outs if o.type.startswith("seq(map(")]
    if labels:
        proba = (zipmap or [o for o in floats if len(o.shape) == 2])[:1]
        return "classification", labels[0].name, proba[0].name if proba else None, None
    if len(floats) == 1:
        width = floats[0].shape[-1] if len(floats[0].shape) == 2 else 1
        if isinstance(width, int) and width > 1:
            return "classification", None, floats[0].name, width
        return "regression", None, floats[0].name, 1
    names = ", ".join(f"{o.name} {o.type}" for o in outs)
    raise ModelError(f"cannot tell what the ONNX model predicts from its outputs ({names}); frugalml reads a label "
                     "output, class scores (N, C) or one regression output")


def load_onnx_model(path: str | Path, frame: pd.DataFrame, target: str, groups: list[str]):
    """A bare ONNX file read against the data -> (pipeline, schema, meta), as ``load_pipeline`` returns."""
    from sklearn.pipeline import Pipeline

    import onnx

    data = Path(path).read_bytes()
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as exc:  # protobuf decode errors and checker errors alike mean a file we cannot use
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path} is not a valid ONNX model ({first[:160]})") from None
    est, schema = OnnxGraphModel.from_graph(data, frame, target, groups)
    return Pipeline([("model", est)]), schema, {"candidate": f"onnx:{Path(path).name}"}
