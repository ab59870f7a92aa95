"""A small convolutional network trained from scratch on the CPU: the image ladder's rung between hand-made
features (HOG) and a pretrained backbone (``image.SmallCNN`` is the estimator).

Three blocks of 3x3 convolution, batch norm, ReLU and 2x2 max pooling (``width``, 2x and 4x channels), a global
average pool and a linear layer: about 24,000 weights at ``width=16``, whatever the resolution. Trained with
AdamW and a one-cycle learning-rate schedule, on random horizontal and vertical flips of the training images.
Pixels 0..255 are scaled inside the network, so it reads what the decoder gives.
"""

from __future__ import annotations

import numpy as np

from ..errors import need

MIN_STEPS = 100  # optimizer steps a fit takes at least, whatever the number of images


def widths_of(width: int) -> tuple[int, int, int]:
    """The three blocks' channel counts for a base ``width``."""
    return (width, 2 * width, 4 * width)


def network(channels: int, widths: tuple[int, ...], n_classes: int):
    """(B, channels, R, R) pixels 0..255 -> (B, n_classes) logits, at any R >= 8; ``widths``: each block's
    channels (a pruned network has fewer than ``widths_of`` gives)."""
    torch = need("torch", "small_cnn", "image")
    nn = torch.nn

    class Scale(nn.Module):
        def forward(self, x):
            return (x - 127.5) / 64.0

    layers, c_in = [Scale()], channels
    for w in widths:
        layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_classes))


def train(net, x, y, *, epochs: int, learning_rate: float, batch_size: int, seed: int):
    """Fit ``net`` to images ``x`` (n, C, R, R) float32 tensor and class indices ``y`` (n,) int64 tensor (or class
    probabilities (n, classes) float32, a teacher's), in place."""
    torch = need("torch", "small_cnn", "image")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    batches = max(1, len(x) // batch_size)
    epochs = max(epochs, -(-MIN_STEPS // batches))  # a few hundred images: more passes, as many steps
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, learning_rate, total_steps=epochs * batches)
    net.train()
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(x)), batches):
            batch = x[idx]
            if rng.random() < 0.5:  # flips keep the label of a photo of a cell, a leaf, a part
                batch = batch.flip(3)
            if rng.random() < 0.5:
                batch = batch.flip(2)
            loss = torch.nn.functional.cross_entropy(net(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()
