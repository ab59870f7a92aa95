"""What the MiniLM techniques share: find a pipeline's MiniLM networks, and build the variant in which every
one of them runs on another runtime. The graph techniques apply to two other kinds of model the same way: a
bare ONNX file (``candidates.onnx_graph``) and an image network (``candidates.image``), each exported whole.

Two kinds of pipeline hold one. minilm_linear: ``Pipeline([("prep", ColumnTransformer([... ("text0",
MiniLMEncoder, k) ...])), ("model", head)])``, the frozen encoder as featurizer of each text column;
minilm_finetune: ``Pipeline([("prep", ...TextColumn...), ("model", MiniLMClassifier)])``, the fine-tuned
network as the model. A variant is a copy of the pipeline whose MiniLM estimators are copies with other
runtime settings (and, for the ONNX techniques, the graph as bytes); everything else is shared and the
input pipeline is never modified. The fp32 ONNX graph every ONNX technique starts from is
``export_encoder_onnx`` (frozen encoder) or ``MiniLMClassifier.export_onnx`` (fine-tuned network).
"""

from __future__ import annotations

import contextlib
import copy
import logging

import numpy as np

def encoders(pipeline) -> list[tuple[int, object, object]]:
    """(position in the ColumnTransformer, MiniLMEncoder, its column) for every MiniLM text featurizer."""
    from ..candidates.text import MiniLMEncoder

    prep = pipeline.steps[0][1] if hasattr(pipeline, "steps") and len(pipeline.steps) > 1 else None
    return [(k, part, cols) for k, (_, part, cols) in enumerate(getattr(prep, "transformers_", []))
            if isinstance(part, MiniLMEncoder)]


def classifier(pipeline):
    """The fine-tuned MiniLMClassifier that is the pipeline's model, or None."""
    from ..candidates.text import MiniLMClassifier
    from . import final_estimator

    model = final_estimator(pipeline)
    return model if isinstance(model, MiniLMClassifier) else None


def image_model(pipeline):
    """The image model (``candidates.image.ImageModel``) that is the pipeline's model, or None."""
    from ..candidates.image import ImageModel
    from . import final_estimator

    model = final_estimator(pipeline)
    return model if isinstance(model, ImageModel) else None


def _models(pipeline) -> list:
    return [enc for _, enc, _ in encoders(pipeline)] + [m for m in [classifier(pipeline)] if m is not None]


def graph_model(pipeline):
    """The OnnxGraphModel (a bare ONNX file given as MODEL) that is the pipeline's model, or None."""
    from ..candidates.onnx_graph import OnnxGraphModel
    from . import final_estimator

    model = final_estimator(pipeline)
    return model if isinstance(model, OnnxGraphModel) else None


def applies_minilm(pipeline) -> bool:
    """The pipeline runs MiniLM in fp32 torch (a variant is not compressed again)."""
    models = _models(pipeline)
    return bool(models) and all(m.runtime == "torch" for m in models)


def applies(pipeline) -> bool:
    """A graph technique applies: MiniLM in fp32 torch, or a bare ONNX graph not yet compressed."""
    graph = graph_model(pipeline) or image_model(pipeline)
    return applies_minilm(pipeline) or (graph is not None and not graph.compressed)


QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "Gather")  # where ONNX Runtime's quantizer puts int8 weights


def applies_int8(pipeline) -> bool:
    """An int8 graph technique applies: MiniLM in fp32 torch, or a bare ONNX graph not yet compressed that has
    something for ONNX Runtime's quantizer to quantize (a graph of ``ai.onnx.ml`` nodes, such as skl2onnx writes
    for linear and tree models, has not: its quantizer fails on such graphs rather than leaving them alone)."""
    if applies_minilm(pipeline) or (image_model(pipeline) is not None and applies(pipeline)):
        return True  # an image network: convolutions, or at least its linear head
    graph = graph_model(pipeline)
    if graph is None or graph.compressed:
        return False
    import onnx

    nodes = onnx.load_from_string(graph.onnx_graph_.tobytes()).graph.node
    return any(n.op_type in QUANTIZABLE_OPS and n.domain in ("", "ai.onnx") for n in nodes)


def calibration_feeds(pipeline, X, limit: int) -> list[dict]:
    """Input batches of the fp32 graph for up to ``limit`` of the rows ``X``, for calibrating activation ranges."""
    graph = graph_model(pipeline)
    if graph is not None:
        return [graph.feeds(X.iloc[i:i + 64]) for i in range(0, min(len(X), limit), 64)]
    image = image_model(pipeline)
    if image is not None:
        from ..candidates.image import image_values

        values = image_values(pipeline[:-1].transform(X.iloc[:limit]))
        return [{"image": image.features_.pixels(values[i:i + 32])} for i in range(0, len(values), 32)]
    from ..candidates.text import minilm_tokenizer, token_batches

    clf = classifier(pipeline)
    sample, tokenizer = texts(pipeline, X, limit), clf.tokenizer() if clf is not None else minilm_tokenizer()
    # similar lengths per batch: little padding in the ranges
    return [{"input_ids": ids, "attention_mask": mask}
            for _, ids, mask in token_batches(tokenizer, sample, 16, max_length(pipeline))]


TIMING_ROWS = 128  # rows the graph is timed on when its session setting is tuned (``runtime.sessions.tune_fusions``)


def tuned_setting(pipeline, graph: bytes, level: str, X) -> str:
    """The session setting ``graph`` (a variant of ``pipeline``'s fp32 graph, whose inputs fit it) runs fastest with
    on this machine: ``runtime.sessions.tune_fusions`` on up to ``TIMING_ROWS`` of the rows ``X``. The search
    judges the variant with the setting it ships with."""
    from ..runtime.sessions import tune_fusions

    if level != "all" or X is None or not len(X):
        return level
    return tune_fusions(graph, calibration_feeds(pipeline, X, TIMING_ROWS), level)


def with_runtime(pipeline, runtime: str, graph: bytes | None = None, graph_optimization: str = "all",
                 calibration=None):
    """A copy of ``pipeline`` whose MiniLM runs on ``runtime`` (``graph``: the ONNX bytes for "onnx").
    With ``calibration`` rows (X, y), the session setting of the "all" level is tuned on them
    (``tuned_setting``)."""
    from sklearn.pipeline import Pipeline

    from ..candidates.text import on_runtime
    from . import with_final

    if graph is not None and calibration is not None:
        graph_optimization = tuned_setting(pipeline, graph, graph_optimization, calibration[0])
    array = None if graph is None else np.frombuffer(graph, dtype=np.uint8).copy()
    foreign = graph_model(pipeline) or image_model(pipeline)
    if foreign is not None:  # a bare ONNX graph or an image network: the same estimator on the new graph
        return with_final(pipeline, foreign.on_graph(array, graph_optimization))
    clf = classifier(pipeline)
    if clf is not None:
        return with_final(pipeline, on_runtime(clf, runtime, array, graph_optimization))
    prep = copy.copy(pipeline.steps[0][1])  # shallow: the other columns' fitted preprocessing is shared
    parts = list(prep.transformers_)
    for k, enc, cols in encoders(pipeline):
        # one array shared by the encoders of several text columns: one frozen model
        parts[k] = (parts[k][0], on_runtime(enc, runtime, array, graph_optimization), cols)
    prep.transformers_ = parts
    return Pipeline([(pipeline.steps[0][0], prep)] + list(pipeline.steps[1:]))


def session_setting(pipeline) -> str | None:
    """The ONNX Runtime setting (level, fusions left out) the pipeline's ONNX graph runs with; None when it runs
    none (a torch network, a scikit-learn model)."""
    from . import final_estimator

    models = [enc for _, enc, _ in encoders(pipeline)] + [final_estimator(pipeline)]
    return next((m.graph_optimization for m in models if getattr(m, "onnx_graph_", None) is not None
                 and getattr(m, "runtime", "onnx") == "onnx"), None)


def fp32_graph(pipeline) -> bytes:
    """The fp32 ONNX graph of the pipeline's MiniLM network."""
    from ..candidates.text import export_encoder_onnx

    graph = graph_model(pipeline)
    if graph is not None:
        return graph.onnx_graph_.tobytes()
    if image_model(pipeline) is not None:
        return image_model(pipeline).export_onnx()
    clf = classifier(pipeline)
    if clf is not None:
        return clf.export_onnx()
    encoder = encoders(pipeline)[0][1]  # a pruned encoder exports its own network
    return encoder.export_onnx() if hasattr(encoder, "export_onnx") else export_encoder_onnx(encoder.max_length)


def max_length(pipeline) -> int:
    return _models(pipeline)[0].max_length


def texts(pipeline, X, limit: int) -> list[str]:
    """Up to ``limit`` of the texts the MiniLM network reads for the rows ``X`` (as the pipeline receives them)."""
    from ..candidates.text import text_values

    clf = classifier(pipeline)
    if clf is not None:
        return clf.join_texts(pipeline[:-1].transform(X[:limit]))
    out: list[str] = []
    for _, _, col in encoders(pipeline):
        column = X.iloc[:, col] if hasattr(X, "iloc") else np.asarray(X, dtype=object)[:, col]
        out += text_values(column)
    return out[:limit]


@contextlib.contextmanager
def quiet_quantizer():
    """onnxruntime.quantization logs a 'consider pre-processing' warning on the root logger for every call."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
