"""A PyTorch MLP for tabular rows, as a scikit-learn estimator that saves without pickle and exports to ONNX.

Training runs in torch: AdamW on mini-batches, early stopping on a validation split, seeded, on the CPU. It
uses one torch thread by default (``threads``): matrices this small gain little from more, and when the cores
are busy with other work (parallel fits of other candidates) more threads contend for them.
``threads=None`` trains in torch's current count (``torch.set_num_threads``). The fitted network is kept in
``weights_`` as the bytes of a safetensors file, so the model saves with skops and loads with safetensors,
never pickle. Predictions run in numpy float32 from those weights (torch is needed to fit, not to predict),
and ``register_onnx`` teaches skl2onnx to write the same network as Gemm/Relu nodes, so the whole pipeline
(preprocessing + MLP) exports to ONNX.

A weight matrix that is mostly zeros (``compression.prune_magnitude``) is stored as a bitmask of its kept
entries plus their values, in the safetensors file and in the ONNX graph alike: a sparse network is a
smaller file. ONNX Runtime rebuilds the dense matrix once, when its session starts.
"""

from __future__ import annotations

import contextlib

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone

from ..errors import ModelError, need


def _features(X) -> np.ndarray:
    """Preprocessed rows as a dense, contiguous (n, features) float32 array."""
    if hasattr(X, "toarray"):  # a scipy sparse matrix
        X = X.toarray()
    return np.ascontiguousarray(np.asarray(X, dtype=np.float32))


def init_layers(sizes, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fresh (weight (out, in), bias (out,)) pairs for widths ``sizes`` = (inputs, hidden..., outputs), uniform
    in +-1/sqrt(in) as torch.nn.Linear draws them."""
    rng = np.random.default_rng(seed)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(n_in)
        layers.append((rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),
                       rng.uniform(-bound, bound, n_out).astype(np.float32)))
    return layers


@contextlib.contextmanager
def _thread_count(torch, threads: int | None):
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(layers, Z: np.ndarray, target: np.ndarray, *, loss: str, epochs: int, learning_rate: float,
          weight_decay: float, batch_size: int, seed: int, threads: int | None = None, masks=None,
          validation_fraction: float = 0.0, patience: int = 10) -> tuple[list, int]:
    """Train ``layers`` (weight (out, in), bias (out,) pairs) on rows ``Z`` (n, in) -> (new layers, epochs run).

    ``loss``: ``"cross_entropy"`` (``target``: class indices (n,) int64, or probabilities (n, classes)
    float32: a teacher's soft labels) or ``"mse"`` (``target`` (n, 1) float32).
    ``masks``: per layer, None or a boolean (out, in) array of the weights allowed to be non-zero; the others
    stay exactly zero throughout.
    ``validation_fraction`` > 0: hold out that share of the rows, stop once their loss has not improved for
    ``patience`` epochs, and return the weights of the best epoch.
    """
    torch = need("torch", "the torch MLP", "torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(Z))
    n_val = int(round(validation_fraction * len(Z))) if len(Z) >= 20 else 0
    val, rows = order[:n_val], order[n_val:]
    loss_fn = F.cross_entropy if loss == "cross_entropy" else F.mse_loss
    with _thread_count(torch, threads):
        params = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)) for W, b in layers]
        keep = [None if m is None else torch.as_tensor(m, dtype=torch.float32) for m in (masks or [None] * len(layers))]
        Zt, Tt = torch.from_numpy(Z), torch.from_numpy(target)

        def forward(x):  # (B, in) -> (B, outputs)
            for k, (W, b) in enumerate(params):
                x = F.linear(x, W, b)  # (B, out_k)
                if k < len(params) - 1:
                    x = torch.relu(x)
            return x

        def apply_masks():
            with torch.no_grad():
                for (W, _), m in zip(params, keep):
                    if m is not None:
                        W.mul_(m)

        apply_masks()
        opt = torch.optim.AdamW([p for pair in params for p in pair], lr=learning_rate, weight_decay=weight_decay)
        best, best_state, wait, epoch = np.inf, None, 0, 0
        for epoch in range(1, epochs + 1):
            shuffled = rng.permutation(rows)
            for i in range(0, len(shuffled), batch_size):
                idx = torch.from_numpy(shuffled[i:i + batch_size])
                batch_loss = loss_fn(forward(Zt[idx]), Tt[idx])
                opt.zero_grad()
                batch_loss.backward()
                opt.step()
                apply_masks()
            if n_val:
                with torch.no_grad():
                    v = float(loss_fn(forward(Zt[val]), Tt[val]))
                if v < best - 1e-4:
                    best, wait = v, 0
                    best_state = [(W.detach().clone(), b.detach().clone()) for W, b in params]
                else:
                    wait += 1
                    if wait >= patience:
                        break
        final = best_state or [(W.detach(), b.detach()) for W, b in params]
        return [(W.numpy().copy(), b.numpy().copy()) for W, b in final], epoch


# -- weights as safetensors, dense or as a bitmask of the kept entries -----------------------------------------

def sparse_pays(W: np.ndarray) -> bool:
    """A bitmask (one bit per entry) plus the non-zero values takes fewer bytes than the dense matrix."""
    return W.size // 8 + 4 * np.count_nonzero(W) + 16 < 4 * W.size


def pack_layers(layers) -> np.ndarray:
    """Layers -> the bytes of a safetensors file (a uint8 array): ``k.weight`` and ``k.bias`` per layer, or for
    a mostly-zero weight ``k.mask`` (packed bits, row-major, first entry in the high bit), ``k.values`` (the
    kept entries in that order) and ``k.shape``."""
    save = need("safetensors.numpy", "the torch MLP's weights", "torch").save
    tensors = {}
    for k, (W, b) in enumerate(layers):
        W, b = np.ascontiguousarray(W, dtype=np.float32), np.ascontiguousarray(b, dtype=np.float32)
        if sparse_pays(W):
            kept = W != 0
            tensors[f"{k}.mask"] = np.packbits(kept.ravel())
            tensors[f"{k}.values"] = W[kept]
            tensors[f"{k}.shape"] = np.asarray(W.shape, dtype=np.int64)
        else:
            tensors[f"{k}.weight"] = W
        tensors[f"{k}.bias"] = b
    return np.frombuffer(save(tensors), dtype=np.uint8).copy()


def unpack_layers(data: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    load = need("safetensors.numpy", "the torch MLP's weights", "torch").load
    try:
        t = load(np.asarray(data, dtype=np.uint8).tobytes())
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise ModelError(f"the torch MLP's weights are damaged ({type(exc).__name__}); refit the model") from None
    layers = []
    for k in range(sum(name.endswith(".bias") for name in t)):
        if f"{k}.weight" in t:
            W = t[f"{k}.weight"]
        else:
            shape = tuple(int(s) for s in t[f"{k}.shape"])
            kept = np.unpackbits(t[f"{k}.mask"], count=int(np.prod(shape))).astype(bool).reshape(shape)
            W = np.zeros(shape, dtype=np.float32)
            W[kept] = t[f"{k}.values"]
        layers.append((W, t[f"{k}.bias"]))
    return layers


class TorchMLP(BaseEstimator):
    """Fully connected ReLU network; ``TorchMLPClassifier`` and ``TorchMLPRegressor`` say what it predicts.

    Fitted: ``weights_`` (safetensors bytes as a uint8 array), ``n_features_in_``, ``n_epochs_``.
    """

    def __init__(self, hidden_layer_sizes=(128, 64), learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 128, max_epochs: int = 200, patience: int = 10,
                 validation_fraction: float = 0.1, seed: int = 0, threads: int | None = 1):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.threads = threads

    _loss = ""  # set by the subclasses

    def _fit(self, Z: np.ndarray, target: np.ndarray):
        """Train a fresh network from ``Z`` (n, features) to ``target`` in its output space, early stopping."""
        sizes = (Z.shape[1], *self.hidden_layer_sizes, target.shape[1] if target.ndim == 2 else len(self.classes_))
        layers, self.n_epochs_ = self.train_layers(init_layers(sizes, self.seed), Z, target, epochs=self.max_epochs,
                                                   early_stopping=True)
        self.n_features_in_ = Z.shape[1]
        self.set_layers(layers)
        return self

    def train_layers(self, layers, Z, target, *, epochs: int, masks=None, early_stopping: bool = False):
        """``train`` with this estimator's settings -> (layers, epochs run)."""
        return train(layers, _features(Z), target, loss=self._loss, epochs=epochs, learning_rate=self.learning_rate,
                     weight_decay=self.weight_decay, batch_size=self.batch_size, seed=self.seed,
                     threads=self.threads, masks=masks, patience=self.patience,
                     validation_fraction=self.validation_fraction if early_stopping else 0.0)

    def set_layers(self, layers) -> None:
        self.weights_ = pack_layers(layers)
        self._cache = None

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of the fitted (weight (out, in), bias (out,)) pairs, first layer first."""
        if getattr(self, "weights_", None) is None:
            raise ModelError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return unpack_layers(self.weights_)

    def with_layers(self, layers, **params):
        """A new fitted estimator like this one (``params`` changed) holding ``layers``; this one is unchanged."""
        new = clone(self).set_params(**params)
        for attr in ("classes_", "y_mean_", "y_scale_", "n_features_in_", "n_epochs_"):
            if hasattr(self, attr):
                setattr(new, attr, getattr(self, attr))
        new.set_layers(layers)
        return new

    def _logits(self, X) -> np.ndarray:
        """(n, features) -> the last layer's output (n, outputs), float32."""
        if getattr(self, "_cache", None) is None:
            self._cache = [(np.ascontiguousarray(W.T), b) for W, b in self.layers()]
        h = _features(X)
        if h.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {h.shape[1]} features; this {type(self).__name__} was fitted on "
                             f"{self.n_features_in_}")
        for k, (Wt, b) in enumerate(self._cache):
            h = h @ Wt + b  # (n, out_k)
            if k < len(self._cache) - 1:
                np.maximum(h, 0, out=h)
        return h

    def weight_sparsity(self) -> dict:
        """Share of exactly-zero weights: overall and per weight matrix (biases are not counted)."""
        weights = [W for W, _ in self.layers()]
        zeros = [float(np.mean(W == 0)) for W in weights]
        total = sum(W.size for W in weights)
        return {"overall": sum(z * W.size for z, W in zip(zeros, weights)) / total, "layers": zeros}

    def frugal_param_count(self) -> int:
        """Numbers stored: the kept entries of a sparse-stored weight matrix, every entry of a dense one."""
        return int(sum((np.count_nonzero(W) if sparse_pays(W) else W.size) + b.size for W, b in self.layers()))

    @staticmethod
    def register_onnx() -> None:
        register_onnx()

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_cache", None)  # rebuilt from weights_
        return state


class TorchMLPClassifier(ClassifierMixin, TorchMLP):
    """Softmax over one output per class, trained with cross-entropy on the labels (or on soft labels:
    ``fit_soft``)."""

    _loss = "cross_entropy"

    def fit(self, X, y):
        self.classes_, idx = np.unique(np.asarray(y), return_inverse=True)
        return self._fit(_features(X), idx.astype(np.int64))

    def fit_soft(self, X, probabilities, classes):
        """Fit to class probabilities (n, classes), e.g. a teacher's, instead of labels."""
        self.classes_ = np.asarray(classes)
        return self._fit(_features(X), np.ascontiguousarray(probabilities, dtype=np.float32))

    def targets(self, X) -> np.ndarray:
        """What the network is trained to match, from its own outputs: probabilities (n, classes) float32."""
        return _softmax(self._logits(X))

    def predict_proba(self, X) -> np.ndarray:
        return _softmax(self._logits(X)).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self._logits(X), axis=1)]


class TorchMLPRegressor(RegressorMixin, TorchMLP):
    """One output, trained with squared error on the standardised target (``y_mean_``, ``y_scale_``)."""

    _loss = "mse"

    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        return self._fit(_features(X), ((y - self.y_mean_) / self.y_scale_).astype(np.float32).reshape(-1, 1))

    def targets(self, X) -> np.ndarray:
        """What the network is trained to match, from its own outputs: standardised predictions (n, 1)."""
        return self._logits(X)

    def predict(self, X) -> np.ndarray:
        return self._logits(X)[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- ONNX: the network as Gemm/Relu nodes, for skl2onnx ----------------------------------------------------------

def register_onnx() -> None:
    """Teach skl2onnx to convert both estimators (``export.export_onnx`` calls it)."""
    from .converters import register_converters

    register_converters(TorchMLPClassifier, TorchMLPRegressor, "TorchMLP", _convert)


def _convert(scope, operator, container):
    """Cast to float32, then per layer Gemm (+ Relu but for the last); a classifier ends in Softmax
    (probabilities) and ArgMax -> class (label), a regressor in its last Gemm, rescaled to the target's units."""
    from onnx import TensorProto
    from onnx.numpy_helper import from_array

    from .converters import add_label_output

    est = operator.raw_operator
    layers = est.layers()
    is_classifier = hasattr(est, "classes_")
    if not is_classifier:  # fold the target's standardisation into the last layer
        W, b = layers[-1]
        layers[-1] = ((W * est.y_scale_).astype(np.float32), (b * est.y_scale_ + est.y_mean_).astype(np.float32))

    def const(array, hint="const"):
        name = scope.get_unique_variable_name(hint)
        container.add_initializer(name, None, None, from_array(np.asarray(array), name))  # raw bytes
        return name

    def node(op, inputs, hint, **attrs):
        out = scope.get_unique_variable_name(hint)
        container.add_node(op, inputs, out, name=scope.get_unique_operator_name(op), **attrs)
        return out

    def sparse_weight(W):
        """Nodes that rebuild a mostly-zero (out, in) matrix from a bitmask of its kept entries and their values.
        Every input is a constant, so ONNX Runtime folds them into one dense matrix when the session starts."""
        kept = (W != 0).ravel()
        packed = np.packbits(kept).reshape(-1, 1)  # (M, 1) uint8, first entry in the high bit
        values = np.concatenate([[0.0], W.ravel()[kept]]).astype(np.float32)  # (1 + kept,): slot 0 is the zero
        bits = node("BitShift", [const(packed, "mask"), const(np.arange(7, -1, -1, dtype=np.uint8))], "bits",
                    direction="RIGHT")  # (M, 8)
        bits = node("Mod", [node("Cast", [bits], "bits", to=TensorProto.INT64), const(np.int64(2))], "bits")
        flat = node("Reshape", [bits, const(np.array([-1], dtype=np.int64))], "bits")  # (8M,)
        flat = node("Slice", [flat, const(np.array([0], dtype=np.int64)), const(np.array([W.size], dtype=np.int64))],
                    "kept")  # (out * in,)
        # the k-th kept entry takes slot k, a dropped one slot 0
        slot = node("Mul", [node("CumSum", [flat, const(np.int64(0))], "rank"), flat], "slot")
        dense = node("Gather", [const(values, "values"), slot], "dense", axis=0)
        return node("Reshape", [dense, const(np.array(W.shape, dtype=np.int64))], "weight")

    h = node("Cast", [operator.inputs[0].full_name], "x", to=TensorProto.FLOAT)  # (N, in)
    for k, (W, b) in enumerate(layers):
        weight = sparse_weight(W) if sparse_pays(W) else const(W, "weight")
        h = node("Gemm", [h, weight, const(b, "bias")], "h", transB=1)  # (N, out_k)
        if k < len(layers) - 1:
            h = node("Relu", [h], "h")
    if not is_classifier:
        container.add_node("Identity", [h], operator.outputs[0].full_name, name=scope.get_unique_operator_name("Id"))
        return
    container.add_node("Softmax", [h], operator.outputs[1].full_name, axis=1,
                       name=scope.get_unique_operator_name("Softmax"))
    index = node("ArgMax", [h], "index", axis=1, keepdims=0)  # (N,)
    add_label_output(scope, container, est.classes_, index, operator.outputs[0].full_name)
