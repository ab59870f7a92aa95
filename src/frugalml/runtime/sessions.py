"""ONNX Runtime on the CPU: sessions (a graph optimisation setting, a thread count) and ``OnnxPredictor``,
which feeds a user's DataFrame to a frugalml graph (inputs ``num``, ``cat``, ``text``) without building a new
frame."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import MISSING, Schema, prepare_frame
from ..errors import DataError, ModelError


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
        feeds["text"] = _strings(n, values[n_num + n_cat:n_num + n_cat + len(schema.text)], "")
    if schema.image:  # a graph that reads no image (a baseline) takes the column as strings
        feeds["image"] = _strings(n, values[-1:], "")
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

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")

def graph_optimization_parts(value: str) -> tuple[str, list[str]]:
    """An ONNX Runtime optimisation setting as recorded on an estimator -> (level, fusions turned off).

    A level (disable, basic, extended or all), optionally followed by `` -Name`` for each of ONNX Runtime's
    optimizers the session leaves out: ``"all -SkipLayerNormFusion"`` (``tune_fusions`` gives one where leaving
    it out was measured faster)."""
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

# Fusions of ONNX Runtime's "all" level that can cost more than they save, so a graph is timed with and without
# each. SkipLayerNormalization (residual add, bias and layer norm in one kernel), which ORT 1.32 makes of 6 of the
# int8 MiniLM's 13 layer norms (none in the fp32 export): on a 2-vCPU AVX-512 machine, 1 thread, those 6 took 18%
# of the graph's time, ten times as long per node as the other 7 LayerNormalization nodes, and the graph ran
# 1.17-1.20x as fast without the fusion (`benchmarks/probe_int8.py`).
OPTIONAL_FUSIONS = {"SkipLayerNormFusion": "SkipLayerNormalization"}  # optimizer -> the operator it makes
FUSION_GAIN = 0.05  # a fusion is left out only when that makes the graph at least this much faster


def tune_fusions(graph: bytes, feeds: list[dict], level: str = "all", *, session=None, clock=time.perf_counter) -> str:
    """``level`` followed by `` -Name`` for each of ``OPTIONAL_FUSIONS`` that slows ``graph`` down on this
    machine: where the session's optimised graph has the fused operator, the graph is run on ``feeds`` (its input
    batches), 1 thread, the median of 3 interleaved passes after a warm-up, and the fusion is left out when that
    is ``FUSION_GAIN`` faster. Outputs differ only by float rounding.

    ``session(graph, threads, setting)`` builds the sessions timed (``ort_session``; a test gives its own, with
    ``clock``)."""
    import onnx

    if level != "all" or not feeds:
        return level
    session = session or ort_session
    with tempfile.TemporaryDirectory() as tmp:
        optimized = str(Path(tmp) / "optimized.onnx")
        ort_session(graph, 1, level, optimized_path=optimized)
        made = {n.op_type for n in onnx.load(optimized, load_external_data=False).graph.node}
    setting, current = level, None
    for fusion, op in OPTIONAL_FUSIONS.items():
        if op not in made:  # nothing to leave out
            continue
        candidate = f"{setting} -{fusion}"
        sessions = {setting: current or session(graph, 1, setting), candidate: session(graph, 1, candidate)}
        times = {s: [] for s in sessions}
        for s in sessions.values():
            s.run(None, feeds[0])
        for _ in range(3):
            for name, s in sessions.items():
                t0 = clock()
                for feed in feeds:
                    s.run(None, feed)
                times[name].append(clock() - t0)
        base, without = (float(np.median(t)) for t in times.values())
        if without < (1 - FUSION_GAIN) * base:
            setting, current = candidate, sessions[candidate]
        else:
            current = sessions[setting]
    return setting


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
                                      ("text", len(schema.text)), ("image", len(schema.image))) if n}
        # an image network reads pixels, (B, C, R, R): the images are decoded to that size before each run
        self.pixels = next((i.shape[1:] for i in self.session.get_inputs() if i.name == "image"
                            and i.type == "tensor(float)" and len(i.shape) == 4), None)
        if self.pixels is not None:
            inputs["image"] = 1
        if inputs != expected:
            raise ModelError(f"the ONNX model's inputs {inputs} do not match its schema {expected}")

    def feeds(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The graph's inputs; for an image network, the images decoded (part of every timed call)."""
        if self.pixels is not None:
            from ..data.images import decode

            column = self.schema.image[0]
            if column not in frame.columns:
                raise DataError(f"missing column {column!r}; the model reads its images from it")
            channels, size = int(self.pixels[0]), int(self.pixels[1])
            return {"image": decode(frame[column].to_numpy(dtype=object), size, channels)}
        return onnx_inputs(frame, self.schema)

    def run(self, feeds: dict[str, np.ndarray], outputs=None):
        return self.session.run(outputs, feeds)

    def _run(self, outputs: list[str], frame: pd.DataFrame) -> list[np.ndarray]:
        """The session on ``frame``; an image network's a few images at a time (``data.images.batch_size``)."""
        from ..data.images import batch_size

        step = batch_size(int(self.pixels[1])) if self.pixels is not None else len(frame)
        if len(frame) <= step:
            return self.session.run(outputs, self.feeds(frame))
        parts = [self.session.run(outputs, self.feeds(frame.iloc[i:i + step])) for i in range(0, len(frame), step)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        out = self._run([self.label_output], frame)[0]
        return np.asarray(out).reshape(-1) if self.schema.task == "classification" else np.asarray(out, dtype=np.float64).reshape(-1)

    def predict_with_proba(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels and probabilities (None without a probability output) from one session run."""
        if self.proba_output is None:
            return self.predict(frame), None
        labels, proba = self._run([self.label_output, self.proba_output], frame)
        return np.asarray(labels).reshape(-1), np.asarray(proba, dtype=np.float64)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.proba_output is None:
            raise ModelError("this model has no probability output")
        return np.asarray(self._run([self.proba_output], frame)[0], dtype=np.float64)
