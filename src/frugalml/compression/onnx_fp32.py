"""The MiniLM encoder exported to ONNX and run by ONNX Runtime, still in fp32: the baseline graph every
quantized variant starts from.

Nothing is approximated (outputs agree with torch to ~1e-6); what changes is the runtime: ONNX Runtime
applies its graph optimisations (constant folding, fused MatMul+Add, bias+Gelu, LayerNormalization at
``all``) when the session is built. The stored graph is the unoptimised one, so it stays portable across
machines; the level is recorded on the encoder and in the variant's config, with any fusion the session
leaves out because it measured slower on the calibration rows (``encoder.tuned_setting``; every ONNX technique
does this). Measured on MiniLM (1 thread,
batch 32): for the fp32 graph the levels are within noise of each other; for the int8 graphs ``basic`` is
~15% slower than ``extended`` / ``all`` (no fused integer MatMul). Outputs are the same at every level, so
the search does not spend variants on the lower ones (``MiniLMEncoder(graph_optimization=...)`` takes them).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Technique, register_technique
from .encoder import applies_minilm, fp32_graph, with_runtime


@dataclass(frozen=True)
class OnnxFp32Config:
    graph_optimization: str = "all"


def _apply(pipeline, cfg: OnnxFp32Config, calibration=None):
    return with_runtime(pipeline, "onnx", fp32_graph(pipeline), cfg.graph_optimization, calibration)


register_technique(Technique("onnx-fp32", OnnxFp32Config, _apply, applies_minilm, lambda p: [OnnxFp32Config()],
                             stage=3, description="run MiniLM (frozen encoder or fine-tuned classifier) as an fp32 ONNX graph on "
                                         "ONNX Runtime"))
