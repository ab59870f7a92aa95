"""Structured pruning of a torch MLP: keep the given share of each hidden layer's neurons, those that carry
the most, and drop the others whole, which leaves a smaller dense network (fewer rows and columns in every
matrix: smaller and faster). Then a few epochs of fine-tuning on the calibration rows, to match the original
network's outputs (its probabilities, or its predictions).

A neuron's weight is the norm of its incoming weights and bias times the norm of its outgoing weights. The
incoming norm alone would not do: a ReLU network computes the same function when a neuron's incoming weights
are scaled by c > 0 and its outgoing ones by 1/c, so only the product says how much the neuron passes on.
Pruning whole units by a norm, then fine-tuning, follows Li, Kadav, Durdanovic, Samet and Graf, "Pruning
filters for efficient ConvNets" (ICLR 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import Technique, final_estimator, register_technique, with_final
from .prune_magnitude import FINE_TUNE_EPOCHS, _applies


@dataclass(frozen=True)
class NeuronPruneConfig:
    keep: float  # share of each hidden layer's neurons kept


def prune_neurons(layers, keep: float) -> list:
    """(weight (out, in), bias (out,)) pairs -> the same network less the weakest neurons of each hidden layer."""
    layers = list(layers)
    for k in range(len(layers) - 1):
        (W, b), (W_next, b_next) = layers[k], layers[k + 1]
        incoming = np.sqrt((W ** 2).sum(axis=1) + b ** 2)  # (out_k,)
        outgoing = np.linalg.norm(W_next, axis=0)  # (out_k,)
        n_keep = max(1, int(round(keep * len(b))))
        kept = np.sort(np.argsort(-(incoming * outgoing), kind="stable")[:n_keep])
        layers[k] = (W[kept], b[kept])  # (n_keep, in), (n_keep,)
        layers[k + 1] = (W_next[:, kept], b_next)  # (out_k+1, n_keep)
    return layers


def _settings(pipeline) -> list[NeuronPruneConfig]:
    return [NeuronPruneConfig(k) for k in (0.25, 0.5, 0.75)]  # fewest neurons first


def _apply(pipeline, cfg: NeuronPruneConfig, calibration):
    X, _ = calibration
    teacher = final_estimator(pipeline)
    Z = pipeline[:-1].transform(X)
    layers = prune_neurons(teacher.layers(), cfg.keep)
    tuned, _ = teacher.train_layers(layers, Z, teacher.targets(Z), epochs=FINE_TUNE_EPOCHS)
    widths = tuple(len(b) for _, b in tuned[:-1])
    return with_final(pipeline, teacher.with_layers(tuned, hidden_layer_sizes=widths))


register_technique(Technique("mlp-prune-neurons", NeuronPruneConfig, _apply, _applies, _settings, needs_data=True,
                             stage=1, description="drop the weakest neurons of a torch MLP's hidden layers (a smaller dense "
                                         "network), then fine-tune on the calibration rows to match the original"))
