"""A text classifier that arrives as a local Hugging Face folder (``frugal compress FOLDER --data ...``).

Any ``AutoModelForSequenceClassification`` folder saved with safetensors weights (BERT, DistilBERT, RoBERTa,
MiniLM, ...) becomes a ``MiniLMClassifier`` with its own architecture, tokenizer and weights, so every MiniLM
compression technique applies to it unchanged (ONNX Runtime fp32 / int8 dynamic / int8 static / fp16, torch
int8) and the search judges its variants on the same rows. Its classes are the data's labels: the names in
the model's ``id2label`` when the target holds them, else class indices 0..n-1.

Everything the model needs is stored on the estimator: the config and tokenizer files as text (a
sentencepiece model as bytes) and the weights as the bytes of a safetensors file, so a compressed run saves
with skops and loads without the folder, and without pickle. ``pytorch_model.bin`` (a pickle) is refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError, ModelError, need
from .text import MiniLMClassifier, load_transformers, state_bytes

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model")


def is_hf_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "config.json").exists() and not (p / "meta.json").exists()


class HFTextClassifier(MiniLMClassifier):
    """A fitted sequence classifier read from a Hugging Face folder (``from_folder``); ``fit`` keeps it as is."""

    def __init__(self, max_length: int = 512, batch_size: int = 32, runtime: str = "torch",
                 graph_optimization: str = "all", threads: int | None = None):
        self.max_length = max_length
        self.batch_size = batch_size
        self.runtime = runtime
        self.graph_optimization = graph_optimization
        self.threads = threads

    @classmethod
    def from_folder(cls, folder, labels) -> "HFTextClassifier":
        """Read ``folder`` and map its outputs to the data's ``labels`` (the target's values)."""
        torch = need("torch", "a Hugging Face model", "text")

        folder = Path(folder)
        if not (folder / "model.safetensors").exists():
            pickled = (folder / "pytorch_model.bin").exists()
            raise ModelError(f"{folder} has no model.safetensors" + (
                " (pytorch_model.bin is a pickle, which frugalml never loads: save the model with "
                "save_pretrained(..., safe_serialization=True))" if pickled else ""))
        tf = load_transformers("a Hugging Face model")
        try:
            net = tf.AutoModelForSequenceClassification.from_pretrained(
                str(folder), local_files_only=True, use_safetensors=True, dtype=torch.float32).eval()  # fp32 reference
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelError(f"{folder} is not a sequence classifier transformers can load: "
                             f"{str(exc).splitlines()[0][:200]}") from None
        est = cls()
        est.config_ = (folder / "config.json").read_text()
        est.tokenizer_files_ = {}
        for name in TOKENIZER_FILES:
            if (folder / name).exists():
                data = (folder / name).read_bytes()
                est.tokenizer_files_[name] = (np.frombuffer(data, dtype=np.uint8).copy() if name.endswith(".model")
                                              else data.decode())
        if not est.tokenizer_files_:
            raise ModelError(f"{folder} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)")
        est.weights_ = state_bytes(net)
        est._net = net
        est.labels_ = _labels(net.config, labels)
        est.classes_ = np.arange(len(est.labels_))  # the pipeline predicts class indices, as frugalml's own
        est.max_length = min(est.max_length, int(getattr(net.config, "max_position_embeddings", 512) or 512))
        with torch.inference_mode():
            est.tokenizer()  # a folder whose tokenizer does not load fails here, not mid-search
        return est

    def fit(self, X, y=None):  # already trained: the search compresses it, it is not refitted
        return self

    def _files(self) -> Path:
        """The config and tokenizer files written to a temporary folder (transformers reads folders)."""
        tmp = Path(tempfile.mkdtemp(prefix="frugalml-hf-"))
        (tmp / "config.json").write_text(self.config_)
        for name, data in self.tokenizer_files_.items():
            if isinstance(data, str):
                (tmp / name).write_text(data)
            else:
                (tmp / name).write_bytes(np.asarray(data, dtype=np.uint8).tobytes())
        return tmp

    def tokenizer(self):
        if getattr(self, "_tok", None) is None:
            import shutil

            tmp = self._files()
            try:
                self._tok = load_transformers("a Hugging Face model").AutoTokenizer.from_pretrained(str(tmp), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelError(f"the model's tokenizer does not load: {str(exc).splitlines()[0][:200]}") from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return self._tok

    def _build_network(self, attn_implementation: str | None = None):
        torch = need("torch", "a Hugging Face model", "text")
        from safetensors.torch import load

        tf = load_transformers("a Hugging Face model")
        config = tf.AutoConfig.for_model(**json.loads(self.config_))
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        net = tf.AutoModelForSequenceClassification.from_config(config, dtype=torch.float32, **extra)
        try:
            net.load_state_dict(load(bytes(self.weights_)), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"the stored weights do not fit the stored config: {str(exc)[:200]}") from None
        return net.eval()

    def _probabilities(self, net, input_ids, attention_mask):
        torch = need("torch", "a Hugging Face model", "text")

        return torch.softmax(net(input_ids=input_ids, attention_mask=attention_mask).logits, dim=1)


def _labels(config, labels) -> list:
    """The data's labels in the order of the model's outputs."""
    n = int(config.num_labels)
    names = [str(config.id2label.get(i, i)) for i in range(n)] if getattr(config, "id2label", None) else []
    values = sorted(set(labels), key=str)
    if names and {str(v) for v in values} <= set(names):
        by_name = {str(v): v for v in values}
        return [by_name.get(name, name) for name in names]
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.isdigit()) for v in values) \
            and {int(v) for v in values} <= set(range(n)):
        return list(range(n))
    raise DataError(f"the model's {n} outputs are {names or list(range(n))}; the target's values {values[:6]} are "
                    "neither those names nor class indices")


def load_hf_model(folder, frame, target: str, text: list[str] | None):
    """A Hugging Face folder read against the data -> (pipeline, schema, meta), as ``load_pipeline`` returns."""
    from ..data.task import Schema, looks_like_text
    from .preprocess import build_pipeline
    from .text import TextColumn, TextRecipe

    columns = list(text or [c for c in frame.columns if c != target and looks_like_text(frame[c])])
    if not columns:
        raise DataError("no text column for the Hugging Face model: name it with --text")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"text column(s) {missing} not found; columns are {list(frame.columns)}")
    clf = HFTextClassifier.from_folder(folder, frame[target].dropna().tolist())
    schema = Schema("classification", [], [], target, clf.labels_, columns)
    from ..data.task import prepare_frame

    X = prepare_frame(frame, schema)
    pipeline = build_pipeline(TextRecipe(TextColumn(), clf, tabular=False), schema).fit(X, np.zeros(len(X)))
    return pipeline, schema, {"candidate": f"hf:{Path(folder).name}"}
