"""Unstructured magnitude pruning of a torch MLP: in each hidden weight matrix, set the given share of the
smallest-magnitude weights to zero, then fine-tune the others for a few epochs on the calibration rows to
match the original network's outputs (its probabilities, or its predictions), the zeros kept fixed.

The output layer stays dense: it holds a few weights (last hidden width x outputs), each carrying a whole
class. A pruned matrix is stored as a bitmask of its kept entries and their values (``candidates.torch_mlp``),
in the skops file and in the ONNX graph, so the saved model shrinks with the sparsity; predictions take as
long as before, since dense kernels multiply the zeros too (``mlp-prune-neurons`` makes the network faster).
After Han, Pool, Tran and Dally, "Learning both weights and connections for efficient neural networks"
(NeurIPS 2015).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import Technique, final_estimator, register_technique, with_final

FINE_TUNE_EPOCHS = 20


@dataclass(frozen=True)
class MagnitudePruneConfig:
    sparsity: float  # share of each hidden weight matrix set to zero


def magnitude_masks(layers, sparsity: float) -> list:
    """Per layer, the weights kept: all but the round(sparsity * size) smallest in magnitude; None (all kept)
    for the output layer."""
    masks = []
    for W, _ in layers[:-1]:  # W (out, in)
        order = np.argsort(np.abs(W), axis=None, kind="stable")  # (out * in,) smallest first
        keep = np.ones(W.size, dtype=bool)
        keep[order[: int(round(sparsity * W.size))]] = False
        masks.append(keep.reshape(W.shape))
    return masks + [None]


def _applies(pipeline) -> bool:
    from ..candidates.torch_mlp import TorchMLP

    model = final_estimator(pipeline)
    return isinstance(model, TorchMLP) and len(model.hidden_layer_sizes) > 0


def _settings(pipeline) -> list[MagnitudePruneConfig]:
    return [MagnitudePruneConfig(s) for s in (0.9, 0.7, 0.5)]  # most zeros = smallest file first


def _apply(pipeline, cfg: MagnitudePruneConfig, calibration):
    X, _ = calibration
    teacher = final_estimator(pipeline)
    Z = pipeline[:-1].transform(X)
    layers = teacher.layers()  # copies: the teacher is not touched
    masks = magnitude_masks(layers, cfg.sparsity)
    tuned, _ = teacher.train_layers(layers, Z, teacher.targets(Z), epochs=FINE_TUNE_EPOCHS, masks=masks)
    return with_final(pipeline, teacher.with_layers(tuned))


register_technique(Technique("mlp-prune-magnitude", MagnitudePruneConfig, _apply, _applies, _settings,
                             needs_data=True,
                             stage=2, description="zero the smallest weights of a torch MLP's hidden layers, then fine-tune "
                                         "the rest on the calibration rows to match the original"))
