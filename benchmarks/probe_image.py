"""Probe the numbers docs/images.md and the image code cite: one CPU thread, batch 1, median of timed calls.

- decoding: reading and resizing a 300x300 elpv PNG to 64 px (PIL, ``data.images.decode``);
- EfficientNet-Lite0 features at 224 px: eager torch vs ONNX Runtime fp32, and ONNX Runtime with every
  convolution int8-quantized dynamically (what onnx-int8-dynamic would do without its image rule);
- the fine-tuned head's training step per image at 224 px (``EffNetFineTuned``'s part that trains);
- the bytes of the feature tables select keeps for the default image ladder on builtin:elpv (from their sizes).

Usage: .venv/bin/python benchmarks/probe_image.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from frugalml.candidates import ladder
from frugalml.candidates.efficientnet_lite import FineTunedHead, PixelFeatures, PixelTrunk
from frugalml.candidates.image import ImageFeatures
from frugalml.candidates.torch_onnx import module_onnx
from frugalml.data.builtin import DATASETS
from frugalml.data.images import decode
from frugalml.runtime.sessions import ort_session


def median_ms(fn, calls: int = 30) -> float:
    fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)
    paths = list(DATASETS.get("elpv").load()["image"][:30])
    k = iter(range(10**9))
    print(f"decode a 300x300 PNG to 64 px: {median_ms(lambda: decode([paths[next(k) % 30]], 64, 1)):.2f} ms")

    x = torch.rand(1, 1, 224, 224) * 255
    net = PixelFeatures(1).eval()
    with torch.inference_mode():
        eager = median_ms(lambda: net(x))
    graph = module_onnx(net, x, ["features"])
    fp32 = ort_session(graph, 1)
    feed = {"image": x.numpy()}
    ort = median_ms(lambda: fp32.run(None, feed))
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(graph)
        quantize_dynamic(src, out, weight_type=QuantType.QInt8)
        int8 = ort_session(out.read_bytes(), 1)
    conv_int8 = median_ms(lambda: int8.run(None, feed), calls=10)
    print(f"EfficientNet-Lite0 features at 224 px: eager torch {eager:.1f} ms, ONNX Runtime {ort:.1f} ms "
          f"({eager / ort:.1f}x), ONNX Runtime with int8 convolutions {conv_int8:.1f} ms ({conv_int8 / ort:.1f}x fp32)")

    head = FineTunedHead(15, 224, 2)
    maps = PixelTrunk(1, 15)(torch.rand(32, 1, 224, 224) * 255).detach()
    y = torch.randint(0, 2, (32,))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4)

    def step():
        loss = torch.nn.functional.cross_entropy(head.train()(maps), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"fine-tuning step at 224 px (last block and head, batch 32): {median_ms(step, 5) / 32:.1f} ms an image")

    total = 0
    for c in ladder("classification", image=True):
        est = c.build("classification", 0)
        feats = est.get_params().get("features")
        if isinstance(feats, ImageFeatures):
            total += 2624 * feats.set_params(channels=1).fit(paths[:1])._dim() * 4
    print(f"feature tables of the default image ladder on builtin:elpv (one per featurizer, shared ones counted "
          f"twice): {total / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
