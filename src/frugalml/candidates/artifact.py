"""The deployable artifact: a fitted pipeline exported to ONNX (and skops), loaded back without pickle.

A model folder holds ``meta.json`` (schema, format, checks), ``model.onnx`` when the export worked and
agrees with the native model (a tree model as one compact TreeEnsemble node, ``tree_graph``, where that node
reproduces it), and ``model.skops`` (the scikit-learn object, loaded with a type allow-list).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import MISSING, Schema, prepare_frame
from ..errors import DataError, ModelError

META = "meta.json"
ONNX_FILE = "model.onnx"
SKOPS_FILE = "model.skops"
# Module prefixes whose types a frugalml model folder may contain; anything else is refused on load.
# frugalml's own text, torch MLP, ONNX-graph and pruned-encoder estimators hold no code or pickled state:
# parameters, arrays, safetensors and ONNX bytes.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "lightgbm.", "builtins.", "collections.",
                    "frugalml.candidates.text.", "frugalml.candidates.torch_mlp.", "frugalml.candidates.onnx_graph.",
                    "frugalml.candidates.hf_text.", "frugalml.candidates.tree_graph.",
                    "frugalml.compression.prune_encoder.",
                    "frugalml.compression.onnx_trees.")  # CompactTrees* saved before they moved to tree_graph


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


def register_converters(classifier, regressor, alias: str, convert) -> None:
    """Teach skl2onnx a frugalml classifier/regressor pair that writes its own nodes (``convert``): a classifier
    outputs (label, probabilities), a regressor one column, as skl2onnx's linear models do."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (calculate_linear_classifier_output_shapes,
                                                  calculate_linear_regressor_output_shapes)

    update_registered_converter(classifier, f"Frugal{alias}Classifier", calculate_linear_classifier_output_shapes,
                                convert, options={"zipmap": [True, False, "columns"], "nocl": [True, False]})
    update_registered_converter(regressor, f"Frugal{alias}Regressor", calculate_linear_regressor_output_shapes,
                                convert)


def add_label_output(scope, container, classes, index: str, output: str) -> None:
    """The classifier's label output: ``classes[index]`` (int64 or strings), ``index`` an (N,) class position."""
    from onnx import TensorProto
    from onnx.numpy_helper import from_array

    classes = np.asarray(classes)
    names = scope.get_unique_variable_name("classes")
    if classes.dtype.kind in "iub":
        container.add_initializer(names, None, None, from_array(classes.astype(np.int64), names))
    else:
        container.add_initializer(names, TensorProto.STRING, [len(classes)], [str(c).encode() for c in classes])
    container.add_node("Gather", [names, index], output, axis=0, name=scope.get_unique_operator_name("Gather"))


def onnx_inputs(frame: pd.DataFrame, schema: Schema) -> dict[str, np.ndarray]:
    """The ONNX inputs: ``num`` (n, numeric columns) float32, ``cat`` (n, categorical columns) strings and
    ``text`` (n, text columns) strings, each present when the schema has such columns.

    Takes a user's frame as it comes (same conversions as ``data.prepare_frame``, missing categories ->
    data.MISSING) without building a new DataFrame, and reads each column's array by position rather than
    through ``frame[c]`` (a new Series per column): at batch 1 either costs more than the model itself.
    """
    values = _column_arrays(frame, schema)
    if values is None:  # a column missing, or a name the frame repeats: the careful path, by name
        missing = [c for c in schema.columns if c not in frame.columns]
        if missing:
            raise DataError(f"missing column(s) {', '.join(map(repr, missing))}; the model needs {schema.columns}")
        values = [frame[c] for c in schema.columns]
    n_num, n_cat = len(schema.numeric), len(schema.categorical)
    feeds = {}
    n = len(frame)
    if schema.numeric:
        num = np.empty((n_num, n), dtype=np.float32)  # a column per row, transposed below: contiguous writes
        for j, c in enumerate(schema.numeric):
            v = values[j]
            if isinstance(v, np.ndarray) and v.dtype.kind in "fiub":
                num[j] = v  # the cast np.asarray(v, dtype=np.float32) makes, without the copy
                continue
            try:
                num[j] = np.asarray(_to_numpy(v), dtype=np.float32)
            except (TypeError, ValueError):  # pandas NA, numeric strings: the slow, forgiving path
                one = prepare_frame(frame[[c]], Schema(schema.task, [c], [], schema.target))
                num[j] = one[c].to_numpy(dtype=np.float32)
        feeds["num"] = np.ascontiguousarray(num.T)  # (n, numeric columns); at one row, no copy
    if schema.categorical:
        feeds["cat"] = _strings(n, values[n_num:n_num + n_cat], MISSING)
    if schema.text:
        feeds["text"] = _strings(n, values[n_num + n_cat:], "")
    return feeds


def _column_arrays(frame: pd.DataFrame, schema: Schema) -> list | None:
    """The schema's columns as pandas holds them (a numpy or extension array each), found by position; None when
    one is missing or its name is not unique. pandas' ``_get_column_array`` (1.3 to 3.x) is what ``frame[c]``
    wraps in a Series; where a pandas lacks it, None too."""
    get = getattr(frame, "_get_column_array", None)
    if get is None:
        return None
    index = frame.columns
    out = []
    for c in schema.columns:
        try:
            where = index.get_loc(c)
        except KeyError:
            return None
        if not isinstance(where, (int, np.integer)):  # a repeated name: a slice or a mask
            return None
        out.append(get(where))
    return out


def _to_numpy(values, dtype=None) -> np.ndarray:
    """What ``Series.to_numpy(dtype)`` gives for a column's array (or a Series)."""
    if isinstance(values, np.ndarray):
        return values if dtype is None else np.asarray(values, dtype=dtype)
    return values.to_numpy(dtype=dtype)


def _strings(n: int, columns: list, fill: str) -> np.ndarray:
    """(n, columns) str objects from the columns' arrays; missing values -> ``fill``."""
    values = np.empty((n, len(columns)), dtype=object)
    for j, v in enumerate(columns):
        values[:, j] = _to_numpy(v, object)
    if values.size <= 64 and all(type(x) is str for x in values.flat):  # a few rows of text: nothing missing
        return values.astype(str).astype(object)
    return np.where(pd.isna(values), fill, values).astype(str).astype(object)


def export_onnx(pipeline, schema: Schema, *, compact_trees: bool = True) -> bytes:
    """Convert a fitted pipeline to ONNX bytes, or raise OnnxExportError saying why.

    A tree model that ``tree_graph`` reads is written as one compact ``TreeEnsemble`` node when that node
    reproduces the model (``onnx_is_faithful`` on rows at its split thresholds, ``tree_graph.edge_rows``);
    anything else, or ``compact_trees=False``, as skl2onnx (onnxmltools for LightGBM) writes it.
    """
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


GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")


def graph_optimization_parts(value: str) -> tuple[str, list[str]]:
    """An ONNX Runtime optimisation setting as recorded on an estimator -> (level, fusions turned off).

    A level (disable, basic, extended or all), optionally followed by `` -Name`` for each of ONNX Runtime's
    optimizers the session leaves out: ``"all -SkipLayerNormFusion"`` (``compression.encoder.tuned_setting``
    records one where leaving it out was measured faster)."""
    level, *rest = str(value).split()
    if level not in GRAPH_OPTIMIZATIONS or not all(r.startswith("-") and r[1:].isidentifier() for r in rest):
        raise ModelError(f"graph_optimization {value!r} is not a level ({', '.join(GRAPH_OPTIMIZATIONS)}) "
                         f"optionally followed by ' -OptimizerName' entries")
    return level, [r[1:] for r in rest]


def ort_session(onnx_bytes: bytes, threads: int | None = None, graph_optimization: str = "all",
                optimized_path: str | None = None):
    """An ONNX Runtime CPU session: the graph optimisation setting (``graph_optimization_parts``) and, when
    given, that many intra-op threads (one inter-op); ``optimized_path``: where to write the graph as the
    session optimised it."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    level, off = graph_optimization_parts(graph_optimization)
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[level]
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if optimized_path:
        so.optimized_model_filepath = optimized_path
        so.log_severity_level = 3  # not the warning that an optimised graph is specific to this machine
    try:
        return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=off or None)
    except Exception as exc:  # onnxruntime raises its own error classes for bad graphs
        raise ModelError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:200]}") from None


def cached_session(est, cache: str = "_session"):
    """The ONNX Runtime session of an estimator holding ``onnx_graph_`` (uint8 array), ``threads`` and
    ``graph_optimization``: built on first use, kept on the estimator (never saved), rebuilt when the thread
    count or the setting changes. ``threads=None`` follows torch's thread count when torch is loaded (so one
    threadpoolctl limit holds for both runtimes), else the CPU count."""
    threads = est.threads
    if not threads:
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else (os.cpu_count() or 1)
    key = (threads, est.graph_optimization)
    cached = getattr(est, cache, None)
    if cached is None or cached[0] != key:
        cached = (key, ort_session(est.onnx_graph_.tobytes(), threads, est.graph_optimization))
        setattr(est, cache, cached)
    return cached[1]


class OnnxPredictor:
    """Predicts from prepared frames through an ONNX Runtime session. Outputs are class indices."""

    def __init__(self, onnx_bytes: bytes, schema: Schema, threads: int | None = None):
        self.schema = schema
        self.session = ort_session(onnx_bytes, threads)
        names = [o.name for o in self.session.get_outputs()]
        self.label_output = names[0]
        self.proba_output = names[1] if len(names) > 1 else None
        inputs = {i.name: i.shape[-1] for i in self.session.get_inputs()}
        expected = {k: n for k, n in (("num", len(schema.numeric)), ("cat", len(schema.categorical)),
                                      ("text", len(schema.text))) if n}
        if inputs != expected:
            raise ModelError(f"the ONNX model's inputs {inputs} do not match its schema {expected}")

    def feeds(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return onnx_inputs(frame, self.schema)

    def run(self, feeds: dict[str, np.ndarray], outputs=None):
        return self.session.run(outputs, feeds)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        out = self.session.run([self.label_output], self.feeds(frame))[0]
        return np.asarray(out).reshape(-1) if self.schema.task == "classification" else np.asarray(out, dtype=np.float64).reshape(-1)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.proba_output is None:
            raise ModelError("this model has no probability output")
        return np.asarray(self.session.run([self.proba_output], self.feeds(frame))[0], dtype=np.float64)


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


def skops_bytes(pipeline) -> bytes:
    import skops.io as sio

    return sio.dumps(pipeline)


def load_skops(data: bytes, where: str):
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises zipfile/json errors for damaged files
        raise ModelError(f"{where} is not a valid skops file ({type(exc).__name__}); re-create it") from None
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise ModelError(f"{where} contains types frugalml does not trust: {', '.join(refused[:5])}; "
                         "load it yourself with skops.io.load(..., trusted=[...]) if you created it")
    return sio.loads(data, trusted=untrusted)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model_dir(folder: Path, *, schema: Schema, name: str, skops_data: bytes | None,
                   onnx_data: bytes | None, info: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if onnx_data is not None:
        _write_atomic(folder / ONNX_FILE, onnx_data)
    if skops_data is not None:
        _write_atomic(folder / SKOPS_FILE, skops_data)
    meta = {"frugalml_model": 1, "candidate": name, "schema": schema.to_json(),
            "format": "onnx" if onnx_data is not None else "skops", **(info or {})}
    _write_atomic(folder / META, json.dumps(meta, indent=2, default=str).encode())


class DeployedModel:
    """What ``frugalml.load`` returns: predictions in the original label values from a DataFrame."""

    def __init__(self, schema: Schema, predictor, meta: dict):
        self.schema = schema
        self._predictor = predictor  # OnnxPredictor or a fitted sklearn pipeline
        self.meta = meta
        self.name = meta.get("candidate", "")
        self.format = meta.get("format", "")
        self._classes = None if schema.classes is None else np.asarray(schema.classes, dtype=object)

    @property
    def classes_(self):
        return None if self._classes is None else self._classes.copy()

    def _frame(self, X) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise ModelError(f"X must be a pandas DataFrame with columns {self.schema.columns}, not {type(X).__name__}")
        if isinstance(self._predictor, OnnxPredictor):
            return X  # OnnxPredictor converts the columns itself, more cheaply
        return prepare_frame(X, self.schema)

    def predict(self, X) -> np.ndarray:
        out = self._predictor.predict(self._frame(X))
        if self._classes is not None:
            return self._classes[np.asarray(out, dtype=np.int64)]
        return np.asarray(out, dtype=np.float64)

    def predict_proba(self, X) -> np.ndarray:
        if self.schema.task != "classification":
            raise ModelError("predict_proba is only for classifiers")
        if not hasattr(self._predictor, "predict_proba"):
            raise ModelError(f"candidate {self.name} gives no probabilities")
        return np.asarray(self._predictor.predict_proba(self._frame(X)), dtype=np.float64)

    def __repr__(self) -> str:
        return f"DeployedModel({self.name!r}, format={self.format!r}, task={self.schema.task!r})"


def load(path: str | os.PathLike, *, native: bool = False, threads: int | None = None) -> DeployedModel:
    """Load a ``model/`` folder or a run directory holding one. ONNX first; ``native=True`` for skops."""
    p = Path(path)
    if (p / "model" / META).exists():
        p = p / "model"
    meta_path = p / META
    if not meta_path.exists():
        raise ModelError(f"{path} is not a frugalml model folder or run directory (no {META})")
    try:
        meta = json.loads(meta_path.read_text())
        schema = Schema.from_json(meta["schema"])
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{meta_path} is damaged ({type(exc).__name__}); re-run frugal select") from None
    if not native and (p / ONNX_FILE).exists():
        return DeployedModel(schema, OnnxPredictor((p / ONNX_FILE).read_bytes(), schema, threads), meta)
    if not (p / SKOPS_FILE).exists():
        raise ModelError(f"{p} holds neither {ONNX_FILE} nor {SKOPS_FILE}")
    return DeployedModel(schema, load_skops((p / SKOPS_FILE).read_bytes(), str(p / SKOPS_FILE)), meta)


def load_pipeline(path: str | os.PathLike):
    """The fitted scikit-learn pipeline behind a run directory, a model folder or its ``model.skops``.

    -> (pipeline, schema, meta). Pickles are refused, whatever their name.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model {path} not found; give a run directory from frugal select or its model/ folder")
    if p.is_file():
        head = p.read_bytes()[:2]
        if p.suffix.lower() in (".pkl", ".pickle", ".joblib", ".sav") or head[:1] == b"\x80":
            raise ModelError(f"{path} is a pickle, which can run arbitrary code when loaded; frugalml never "
                             "loads pickles: save the model with skops or ONNX")
        if p.suffix.lower() == ".onnx":
            raise ModelError(f"{path} is a bare ONNX graph: it is read against the data (frugal compress MODEL.onnx "
                             "--data ... --target ...), not loaded alone")
        if not (p.parent / META).exists():
            raise ModelError(f"{path} has no {META} beside it (the schema frugal select writes); "
                             "give the run directory or model/ folder")
        p = p.parent
    if (p / "model" / META).exists():
        p = p / "model"
    if not (p / META).exists() or not (p / SKOPS_FILE).exists():
        raise ModelError(f"{path} is not a frugalml run directory or model folder (needs {META} and {SKOPS_FILE})")
    try:
        meta = json.loads((p / META).read_text())
        schema = Schema.from_json(meta["schema"])
    except (ValueError, KeyError) as exc:
        raise ModelError(f"{p / META} is damaged ({type(exc).__name__}); re-run frugal select") from None
    pipeline = load_skops((p / SKOPS_FILE).read_bytes(), str(p / SKOPS_FILE))
    if not hasattr(pipeline, "steps"):
        raise ModelError(f"{p / SKOPS_FILE} does not hold a scikit-learn pipeline")
    return pipeline, schema, meta
