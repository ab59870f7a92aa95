"""Dynamic int8 quantization of the MiniLM encoder graph with ONNX Runtime.

Weights of every MatMul and of the embedding tables (Gather) are stored as int8, a scale per output
channel (``per_channel=True``) or one per matrix; activations are quantized to uint8 at run time, per call,
from their own range, so no calibration data is needed. ONNX Runtime fuses the result into
DynamicQuantizeMatMul / MatMulIntegerToFloat kernels (u8 x s8, VNNI where the CPU has it). The graph is
about 4x smaller than fp32.

Per-channel scales are the more accurate and cost ONNX Runtime 0.4-2.3% more than one scale per matrix (the
library default), and on MiniLM only the FFN output matrices need them (`benchmarks/probe_int8.py`, four runs,
512 film reviews: per-tensor rounding error 0.05-0.40 there, 0.01-0.05 elsewhere). So "mixed" is tried first: one scale
per matrix, per-channel scales where one scale rounds the weights by more than 5%: embeddings at cosine 0.991
mean / 0.983 worst to fp32 (per-channel 0.992 / 0.982, per-tensor 0.957 / 0.905), level with the per-tensor
graph in that probe (0.995x-1.013x over four runs). Then per-channel, then per-tensor.

Built with calibration rows (as the search builds it), the variant's session leaves out ONNX Runtime's
SkipLayerNormalization fusion where the graph measures faster without it (``encoder.tuned_setting``): on
MiniLM here, 1.17-1.20x in the probe, which is what puts the kept variant ahead of a hand-built ``quantize_dynamic``
graph in ONNX Runtime's default session (`benchmarks/RESULTS.md`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import Technique, register_technique
from .encoder import applies_int8, fp32_graph, image_model, quiet_quantizer, with_runtime


@dataclass(frozen=True)
class OnnxInt8DynamicConfig:
    per_channel: bool | str = True  # True, False or "mixed"
    graph_optimization: str = "all"


MIXED_LIMIT = 0.05  # per-tensor rounding error (relative, Frobenius) above which a weight gets per-channel scales


def quantize_graph(graph: bytes, per_channel: bool | str, op_types: tuple[str, ...] | None = None) -> bytes:
    """``graph`` with int8 weights: per-channel scales (True), one per matrix (False), or "mixed": one per
    matrix except where that rounds the weights by more than ``MIXED_LIMIT`` (on MiniLM, the FFN output
    matrices: `benchmarks/probe_int8.py`). ``op_types``: the operators quantized (default: the quantizer's)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if per_channel == "mixed":
        return _mixed(graph, op_types)
    with tempfile.TemporaryDirectory() as tmp, quiet_quantizer():
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        quantize_dynamic(src, out, per_channel=per_channel, weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(op_types) if op_types else None)
        return out.read_bytes()


def _mixed(graph: bytes, op_types: tuple[str, ...] | None = None) -> bytes:
    """The per-tensor graph with the per-channel weights (int8 values, scales, zero points) swapped in for the
    matrices per-tensor scales round badly. Both graphs come from one fp32 graph: same nodes, same names; the
    scale Mul after each integer MatMul broadcasts a vector as it does a scalar."""
    import onnx
    from onnx import numpy_helper

    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(graph).graph.initializer}
    per_tensor = onnx.load_from_string(quantize_graph(graph, False, op_types))
    per_channel = {i.name: i for i in onnx.load_from_string(quantize_graph(graph, True, op_types)).graph.initializer}
    tensors = {i.name: i for i in per_tensor.graph.initializer}
    for name, weight in fp32.items():
        parts = [f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"]
        if not all(p in tensors and p in per_channel for p in parts):
            continue
        q, scale, zero = (numpy_helper.to_array(tensors[p]).astype(np.float64) for p in parts)
        error = np.linalg.norm((q - zero) * scale - weight) / (np.linalg.norm(weight) or 1.0)
        if error > MIXED_LIMIT:
            for p in parts:
                tensors[p].CopyFrom(per_channel[p])
    return per_tensor.SerializeToString()


# An image network's convolutions stay fp32: ONNX Runtime's ConvInteger, with activations quantized per call, ran
# EfficientNet-Lite0 8.7x slower than fp32 on a 2-vCPU machine (85.7 vs 9.8 ms an image at 224 px, batch 1, one
# thread: benchmarks/probe_image.py) and
# lost the small CNN's accuracy; its matrix products (the linear head) are quantized. onnx-int8-static, with
# fixed ranges, quantizes convolutions.
IMAGE_OPS = ("MatMul", "Gemm")


def _apply(pipeline, cfg: OnnxInt8DynamicConfig, calibration=None):
    ops = IMAGE_OPS if image_model(pipeline) is not None else None
    return with_runtime(pipeline, "onnx", quantize_graph(fp32_graph(pipeline), cfg.per_channel, ops),
                        cfg.graph_optimization, calibration)


def _settings(pipeline) -> list[OnnxInt8DynamicConfig]:
    return [OnnxInt8DynamicConfig(per_channel="mixed"), OnnxInt8DynamicConfig(per_channel=True),
            OnnxInt8DynamicConfig(per_channel=False)]


register_technique(Technique("onnx-int8-dynamic", OnnxInt8DynamicConfig, _apply, applies_int8, _settings,
                             stage=3, description="MiniLM graph with int8 weights (per channel) and activations "
                                         "quantized per call (ONNX Runtime)"))
