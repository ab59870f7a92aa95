"""Structured pruning of the small CNN (``candidates.small_cnn``): keep the given share of each convolution
block's channels, those that carry the most, and drop the others whole, which leaves a thinner network of the
same shape (fewer filters in every convolution, fewer inputs to the next one and to the linear layer: smaller
and faster). Then fine-tuning on the calibration rows' images (``fine_tune``: a few epochs, at least
``FINE_TUNE_MIN_STEPS`` steps), to match the original network's class probabilities, batch norm frozen.

A channel's weight is the L1 norm of its convolution filter times the scale its batch norm applies to it,
|gamma| / sqrt(running_var + eps). The filter norm alone would misrank channels: batch norm divides each
channel by its own standard deviation and multiplies it by its own gamma, so a filter of large norm can feed a
channel that batch norm shrinks to almost nothing, and a small one a channel it amplifies. The filter norm is
the criterion of Li, Kadav, Durdanovic, Samet and Graf, "Pruning filters for efficient ConvNets" (ICLR 2017);
the batch-norm scale as a channel's importance that of Liu, Li, Shen, Huang, Yan and Zhang, "Learning efficient
convolutional networks through network slimming" (ICCV 2017). Their product is the scale of the channel's
output before the ReLU (its shift, beta, is not counted: fine-tuning recovers what a dropped constant carried).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import need
from . import Technique, final_estimator, register_technique, with_final

FINE_TUNE_EPOCHS = 4  # a third of the network's own training (12 epochs): the MLPs' 20 would cost more than it
# Calibration sets are small (30% of the rows the model did not train on): 4 epochs of 160 images are 8 steps at
# batch 64. On 80 elpv images at 32 px (batch 16), keep=0.25 then agreed with the original on 74-83% of held-out
# images after 100 steps, 91-93% after 200 (keep=0.5: 93-95%, 94-100%).
FINE_TUNE_MIN_STEPS = 200
FINE_TUNE_LEARNING_RATE = 1e-3  # constant; the training's one-cycle schedule peaks at 3e-3


@dataclass(frozen=True)
class ChannelPruneConfig:
    keep: float = 0.5  # share of each convolution block's channels kept (a default: conformance builds one)


def channel_importance(conv, bn):
    """(out,) tensor: each output channel's filter L1 norm times its batch norm's |gamma| / sqrt(var + eps)."""
    filters = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    return filters * bn.weight.detach().abs() / (bn.running_var + bn.eps).sqrt()


def prune_channels(net, keep: float):
    """A ``small_cnn.network`` -> (a new one less the weakest channels of each block, its blocks' widths).

    Each block keeps max(1, round(keep * width)) channels, in their original order; ``net`` is not modified.
    """
    torch = need("torch", "cnn-prune-channels", "image")
    nn = torch.nn
    from ..candidates.small_cnn import network

    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    bns = [m for m in net if isinstance(m, nn.BatchNorm2d)]
    linear = net[-1]
    kept = []
    for conv, bn in zip(convs, bns):
        n_keep = max(1, int(round(keep * conv.out_channels)))
        order = torch.argsort(-channel_importance(conv, bn), stable=True)
        kept.append(order[:n_keep].sort().values)
    widths = tuple(len(k) for k in kept)
    new = network(convs[0].in_channels, widths, linear.out_features)
    new_convs = [m for m in new if isinstance(m, nn.Conv2d)]
    new_bns = [m for m in new if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        previous = torch.arange(convs[0].in_channels)  # the input's channels: all kept
        for conv, bn, new_conv, new_bn, k in zip(convs, bns, new_convs, new_bns, kept):
            new_conv.weight.copy_(conv.weight[k][:, previous])  # (kept out, kept in, 3, 3)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new_bn, name).copy_(getattr(bn, name)[k])
            new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
            previous = k
        new[-1].weight.copy_(linear.weight[:, previous])  # (classes, kept in the last block)
        new[-1].bias.copy_(linear.bias)
    return new.train(net.training), widths


def _applies(pipeline) -> bool:
    from ..candidates.image import SmallCNN

    model = final_estimator(pipeline)
    return isinstance(model, SmallCNN) and not model.compressed


def _settings(pipeline) -> list[ChannelPruneConfig]:
    return [ChannelPruneConfig(k) for k in (0.25, 0.5, 0.75)]  # fewest channels first


def fine_tune(net, teacher, x, *, epochs: int, learning_rate: float, batch_size: int, seed: int,
              min_steps: int = 0):
    """Train ``net`` in place to match ``teacher``'s class probabilities on images ``x`` (n, C, R, R) and on
    their flips (the training's augmentation; the teacher reads the same flipped batch), cross-entropy against
    those soft targets, AdamW at a constant ``learning_rate``, seeded; ``epochs``, or more when they would
    take fewer than ``min_steps`` optimizer steps.

    Batch norm stays in eval mode: it keeps its running statistics and normalises as it will at prediction,
    so the network is fitted as it runs. In train mode the small calibration batches' statistics would both
    shift the running ones and make the loss describe another function than the one deployed.
    """
    torch = need("torch", "cnn-prune-channels", "image")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    batches = max(1, len(x) // batch_size)
    epochs = max(epochs, -(-min_steps // batches))
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    net.eval()
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(x)), batches):
            batch = x[idx]
            if rng.random() < 0.5:
                batch = batch.flip(3)
            if rng.random() < 0.5:
                batch = batch.flip(2)
            with torch.no_grad():
                target = torch.softmax(teacher(batch), dim=1)
            loss = torch.nn.functional.cross_entropy(net(batch), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def _apply(pipeline, cfg: ChannelPruneConfig, calibration):
    X, _ = calibration
    model = final_estimator(pipeline)
    x = model.pixel_tensor(model.features_.transform(pipeline[:-1].transform(X)))
    original = model.torch_network()
    net, widths = prune_channels(original, cfg.keep)
    tuned = fine_tune(net, original, x, epochs=FINE_TUNE_EPOCHS, learning_rate=FINE_TUNE_LEARNING_RATE,
                      batch_size=model.batch_size, seed=model.seed, min_steps=FINE_TUNE_MIN_STEPS)
    return with_final(pipeline, model.with_network(tuned, widths))


register_technique(Technique("cnn-prune-channels", ChannelPruneConfig, _apply, _applies, _settings, needs_data=True,
                             stage=1, description="drop the weakest channels of a small CNN's convolution blocks "
                                         "(a thinner network), then fine-tune on the calibration images to match "
                                         "the original"))
