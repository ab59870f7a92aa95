"""The deployable model folder, and ``frugalml.load``: a fitted pipeline saved as ONNX (and skops), loaded back
without pickle.

A model folder holds ``meta.json`` (schema, format, checks), ``model.onnx`` when the export worked and
agrees with the native model (``candidates.export``), and ``model.skops`` (the scikit-learn object, loaded with
a type allow-list).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Schema, prepare_frame
from ..errors import ModelError
from .sessions import OnnxPredictor

META = "meta.json"

ONNX_FILE = "model.onnx"

SKOPS_FILE = "model.skops"
# Module prefixes whose types a frugalml model folder may contain; anything else is refused on load.
# frugalml's own text, torch MLP, ONNX-graph and pruned-encoder estimators hold no code or pickled state:
# parameters, arrays, safetensors and ONNX bytes.

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "lightgbm.", "builtins.", "collections.",
                    "frugalml.candidates.text.", "frugalml.candidates.torch_mlp.", "frugalml.candidates.onnx_graph.",
                    "frugalml.candidates.hf_text.", "frugalml.candidates.tree_graph.",
                    "frugalml.candidates.image.",
                    "frugalml.compression.prune_encoder.",
                    "frugalml.compression.onnx_trees.")  # CompactTrees* saved before they moved to tree_graph

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
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as exc:  # trusted types whose saved state does not construct: damaged, or made wrongly
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise ModelError(f"{where} does not load ({type(exc).__name__}: {first}); re-create it") from None

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
        if self.schema.image and not isinstance(X, pd.DataFrame):
            X = self._images(X)
        if not isinstance(X, pd.DataFrame):
            raise ModelError(f"X must be a pandas DataFrame with columns {self.schema.columns}, not {type(X).__name__}")
        if isinstance(self._predictor, OnnxPredictor):
            return X  # OnnxPredictor converts the columns itself, more cheaply
        return prepare_frame(X, self.schema)

    def _images(self, X) -> pd.DataFrame:
        """Images as a model of an image task takes them: a list (or a uint8 array of n images) of file paths,
        encoded bytes or uint8 arrays (H x W, or H x W x 3) -> a frame of its image column."""
        if isinstance(X, np.ndarray) and X.dtype == np.uint8 and X.ndim in (3, 4):
            X = list(X)
        if not isinstance(X, (list, tuple)):
            raise ModelError(f"X must be a list of images (file paths, encoded bytes or uint8 arrays) or a DataFrame "
                             f"with column {self.schema.image[0]!r}, not {type(X).__name__}")
        column = np.empty(len(X), dtype=object)
        column[:] = list(X)
        return pd.DataFrame({self.schema.image[0]: column})

    def predict(self, X) -> np.ndarray:
        out = self._predictor.predict(self._frame(X))
        if self._classes is not None:
            return self._classes[np.asarray(out, dtype=np.int64)]
        return np.asarray(out, dtype=np.float64)

    def predict_with_proba(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        """``predict`` and, for a classifier that gives them, ``predict_proba`` (else None), from one runtime
        call where the runtime allows it (a server answers both per request)."""
        frame = self._frame(X)
        if isinstance(self._predictor, OnnxPredictor):
            labels, proba = self._predictor.predict_with_proba(frame)
        else:
            model = self._predictor
            if hasattr(model, "steps") and len(model.steps) > 1:  # a pipeline: transform once, not per answer
                frame, model = model[:-1].transform(frame), model[-1]
            labels = model.predict(frame)
            proba = (model.predict_proba(frame) if self.schema.task == "classification"
                     and hasattr(model, "predict_proba") else None)
        if self._classes is not None:
            return self._classes[np.asarray(labels, dtype=np.int64)], proba
        return np.asarray(labels, dtype=np.float64), proba

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
