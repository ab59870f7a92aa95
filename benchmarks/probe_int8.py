"""Where the int8 MiniLM time goes: ONNX Runtime dynamic int8 settings on the same exported encoder graph.

On the first --texts reviews of builtin:reviews, batches of 32 similar-length texts, 1 thread, medians of
--rounds interleaved rounds: seconds per pass and the cosine of each variant's embeddings to the fp32 graph's
(mean and worst). Variants: the fp32 graph; `quantize_dynamic` defaults (per-tensor weights, what an engineer
writes); per-channel weights (what frugalml's onnx-int8-dynamic tries first); per-channel after ORT's
`quant_pre_process`; per-channel with the attention products quantized too (MatMulConstBOnly=False);
per-channel with the embedding tables left fp32; per-channel after `onnxruntime.transformers` fusion; "mixed"
(frugalml's first setting) and the defaults with ONNX Runtime's SkipLayerNormalization fusion left out of the
session, and where the "mixed" graph's time goes by operator in both sessions. Then the relative int8
rounding error of each weight matrix with per-tensor and per-channel scales.

Usage: python benchmarks/probe_int8.py [--texts 512] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def main():
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.optimizer import optimize_model

    from frugalml.runtime.sessions import ort_session
    from frugalml.candidates.text import minilm_tokenizer, export_encoder_onnx, token_batches
    from frugalml.compression.onnx_int8_dynamic import quantize_graph
    from frugalml.data import read_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    texts = read_table("builtin:reviews")[0]["review"].tolist()[: args.texts]
    tmp = Path(tempfile.mkdtemp())
    (tmp / "fp32.onnx").write_bytes(export_encoder_onnx(256))
    quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
    with contextlib.chdir(tmp):  # its shape inference writes files in the working directory
        optimize_model(str(tmp / "fp32.onnx"), model_type="bert", num_heads=12, hidden_size=384,
                       opt_level=0).save_model_to_file(str(tmp / "fused.onnx"))

    def quantized(src: str, per_channel: bool, **kw) -> bytes:
        out = tmp / f"q{len(list(tmp.iterdir()))}.onnx"
        quantize_dynamic(tmp / src, out, per_channel=per_channel, weight_type=QuantType.QInt8, **kw)
        return out.read_bytes()

    mixed = quantize_graph((tmp / "fp32.onnx").read_bytes(), "mixed")
    graphs = {
        "fp32": (tmp / "fp32.onnx").read_bytes(),
        "quantize_dynamic defaults (per-tensor)": quantized("fp32.onnx", False),
        "per-channel (frugalml)": quantized("fp32.onnx", True),
        "mixed: per-channel where per-tensor rounds badly": mixed,
        "per-channel after quant_pre_process": quantized("pre.onnx", True),
        "per-channel, attention products int8": quantized("fp32.onnx", True, extra_options={"MatMulConstBOnly": False}),
        "per-channel, embeddings fp32": quantized("fp32.onnx", True, op_types_to_quantize=["MatMul"]),
        "per-channel after transformer fusion": quantized(
            "fused.onnx", True, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}),
    }
    sessions = {k: ort_session(v, 1) for k, v in graphs.items()}
    no_skip_ln = "all -SkipLayerNormFusion"  # what frugalml's session tuning keeps where it measures faster
    for k, g in [("quantize_dynamic defaults, no SkipLayerNorm fusion", graphs["quantize_dynamic defaults (per-tensor)"]),
                 ("mixed, no SkipLayerNorm fusion (frugalml)", mixed)]:
        graphs[k], sessions[k] = g, ort_session(g, 1, no_skip_ln)
    batches = [{"input_ids": ids, "attention_mask": mask} for _, ids, mask in token_batches(minilm_tokenizer(), texts, 32, 256)]

    def embed(s):
        return np.concatenate([s.run(None, b)[0] for b in batches])

    ref = embed(sessions["fp32"])
    cos = {k: (embed(s) * ref).sum(axis=1) for k, s in sessions.items()}
    times = {k: [] for k in sessions}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for k in rng.permutation(list(sessions)):
            t0 = time.perf_counter()
            for b in batches:
                sessions[k].run(None, b)
            times[k].append(time.perf_counter() - t0)
    base = np.median(times["quantize_dynamic defaults (per-tensor)"])
    print(f"\n{len(texts)} reviews, batches of 32, 1 thread, medians of {args.rounds} rounds")
    print("| graph | MB | nodes | s per pass | vs quantize_dynamic defaults | cosine to fp32 mean / worst |")
    print("|---|---|---|---|---|---|")
    for k, g in graphs.items():
        t = np.median(times[k])
        print(f"| {k} | {len(g) / 1e6:.1f} | {len(onnx.load_from_string(g).graph.node)} | {t:.3f} | "
              f"{base / t:.3f}x | {cos[k].mean():.4f} / {cos[k].min():.4f} |")
    op_times(mixed, batches)


def op_times(graph: bytes, batches: list[dict]) -> None:
    """Where the "mixed" int8 graph's time goes by operator type, in ONNX Runtime's default session and with
    the SkipLayerNormalization fusion left out: one profiled pass over ``batches``, 1 thread."""
    import json
    import tempfile

    import onnxruntime as ort

    from frugalml.runtime.sessions import graph_optimization_parts

    rows = {}
    for setting in ("all", "all -SkipLayerNormFusion"):
        level, off = graph_optimization_parts(setting)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tempfile.mkdtemp()) / "profile")
        session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"], disabled_optimizers=off)
        for b in batches:
            session.run(None, b)
        for e in json.loads(Path(session.end_profiling()).read_text()):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                row = rows.setdefault(e["args"]["op_name"], {})
                ms, nodes = row.get(setting, (0.0, set()))
                row[setting] = (ms + e["dur"] / 1e3, nodes | {e["name"]})
    totals = {s: sum(r[s][0] for r in rows.values() if s in r) for s in ("all", "all -SkipLayerNormFusion")}
    print(f"\n\"mixed\" graph by operator, one pass, 1 thread: ms (share, nodes); total {totals['all']:.0f} ms "
          f"in the default session, {totals['all -SkipLayerNormFusion']:.0f} ms without SkipLayerNorm fusion")
    print("| operator | default session | no SkipLayerNorm fusion |")
    print("|---|---|---|")
    for op, row in sorted(rows.items(), key=lambda kv: -max(v[0] for v in kv[1].values()))[:8]:
        cells = [f"{row[s][0]:.0f} ({100 * row[s][0] / totals[s]:.0f}%, {len(row[s][1])})" if s in row else "-"
                 for s in ("all", "all -SkipLayerNormFusion")]
        print(f"| {op} | {cells[0]} | {cells[1]} |")


def weight_errors() -> None:
    """Relative error (Frobenius) of each MiniLM weight matrix rounded to int8 with one scale (per tensor) or one
    per output channel, by kind of matrix and layer: where per-channel scales earn their cost."""
    from frugalml.candidates.text import frozen_encoder

    def error(W, per_channel):
        scale = np.abs(W).max(axis=1 if per_channel else None, keepdims=per_channel) / 127
        return np.linalg.norm(np.round(W / scale) * scale - W) / np.linalg.norm(W)

    kinds = {"query": lambda L: L.attention.self.query, "key": lambda L: L.attention.self.key,
             "value": lambda L: L.attention.self.value, "attention output": lambda L: L.attention.output.dense,
             "FFN in": lambda L: L.intermediate.dense, "FFN out": lambda L: L.output.dense}
    layers = frozen_encoder().encoder.layer
    print("\n| weight (out x in) | per-tensor error, layers 1-6 | per-channel error, layers 1-6 |")
    print("|---|---|---|")
    for kind, get in kinds.items():
        Ws = [get(L).weight.detach().numpy() for L in layers]
        row = [" ".join(f"{error(W, pc):.3f}" for W in Ws) for pc in (False, True)]
        print(f"| {kind} ({Ws[0].shape[0]} x {Ws[0].shape[1]}) | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
    weight_errors()
