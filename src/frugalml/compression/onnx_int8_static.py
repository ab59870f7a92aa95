"""Static int8 quantization of the MiniLM encoder graph (or of a bare ONNX model given as MODEL) with ONNX
Runtime (QDQ format), calibrated on data.

Unlike dynamic quantization, the activation ranges are fixed ahead of time: the graph runs on the
calibration rows' texts, the min/max of every input to a quantized node is recorded, and QuantizeLinear /
DequantizeLinear pairs with those fixed scales are inserted (uint8 activations, int8 weights per channel),
which ONNX Runtime fuses into integer kernels. Only the weight MatMuls and the embedding tables are
quantized; the attention products (activation x activation) stay fp32.

Fixed ranges suit transformers poorly: the inputs of the feed-forward output projections (after GELU)
have rare large values, so a min/max range leaves few levels for the common ones (MiniLM, debate
statements: cosine to fp32 mean 0.91, min 0.77). The second setting keeps those six projections in fp32
(mean 0.986, min 0.96) at some speed. Calibration (a few seconds) happens once per setting.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import Technique, register_technique
from .encoder import (applies_int8, calibration_feeds, fp32_graph, graph_model, image_model, quiet_quantizer,
                      with_runtime)

CALIBRATION_ROWS = 128


@dataclass(frozen=True)
class OnnxInt8StaticConfig:
    skip_ffn_output: bool = False  # keep the feed-forward output projections in fp32
    graph_optimization: str = "all"


def _nodes(model, skip_ffn_output: bool, op_types: tuple[str, ...]) -> list[str]:
    """Nodes of ``op_types`` that read a weight (an initializer), minus the FFN output projections if asked."""
    weights = {t.name for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in op_types and any(i in weights for i in n.input)]
    # torch names nodes after module paths: .../layer.N/output/dense/MatMul is the FFN output, while
    # .../layer.N/attention/output/dense/MatMul is the attention output projection
    ffn = [n.name for n in nodes if "/output/dense/" in n.name and "/attention/" not in n.name]
    return [n.name for n in nodes if not (skip_ffn_output and n.name in ffn)]


def quantize_graph(graph: bytes, feeds: list[dict], skip_ffn_output: bool = False,
                   op_types: tuple[str, ...] = ("MatMul", "Gather")) -> bytes:
    """QDQ int8 of ``graph``'s weight products, activation ranges from running it on ``feeds`` (input batches).
    MiniLM: MatMul and Gather (its classifier head, a Gemm, stays fp32); a bare graph: Gemm too."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    model = onnx.load_from_string(graph)
    with tempfile.TemporaryDirectory() as tmp, quiet_quantizer():
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(op_types), nodes_to_quantize=_nodes(model, skip_ffn_output, op_types),
                        calibrate_method=CalibrationMethod.MinMax)
        return out.read_bytes()


def _apply(pipeline, cfg: OnnxInt8StaticConfig, calibration):
    X, _ = calibration
    ops = (("Conv", "MatMul", "Gemm") if image_model(pipeline) is not None else
           ("MatMul", "Gemm", "Gather") if graph_model(pipeline) is not None else ("MatMul", "Gather"))
    graph = quantize_graph(fp32_graph(pipeline), calibration_feeds(pipeline, X, CALIBRATION_ROWS),
                           cfg.skip_ffn_output, ops)
    return with_runtime(pipeline, "onnx", graph, cfg.graph_optimization, calibration)


def _settings(pipeline) -> list[OnnxInt8StaticConfig]:
    if graph_model(pipeline) is not None or image_model(pipeline) is not None:  # FFN outputs: MiniLM's only
        return [OnnxInt8StaticConfig()]
    return [OnnxInt8StaticConfig(skip_ffn_output=False), OnnxInt8StaticConfig(skip_ffn_output=True)]


register_technique(Technique("onnx-int8-static", OnnxInt8StaticConfig, _apply, applies_int8, _settings, needs_data=True,
                             stage=3, description="MiniLM graph with int8 weights and activations, ranges calibrated "
                                         "on the calibration rows' texts (ONNX Runtime QDQ)"))
