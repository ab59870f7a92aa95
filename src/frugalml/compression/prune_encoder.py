"""Structured pruning of MiniLM: a genuinely smaller network (fewer layers, fewer attention heads, fewer
feed-forward neurons) on the same torch code path, fine-tuned briefly on the calibration texts to reproduce the
original's outputs.

What is cut. ``layers`` transformer layers are kept: the first ``layers - 1`` and the last, whose output space
is the one the head reads (on MiniLM, debate statements, keeping 3 of 6 that way leaves the embeddings at
cosine 0.48 to the original before the fine-tune, against 0.30 for the first three; 0.71 after it). In each
kept layer the fraction ``ffn`` of the feed-forward neurons that contribute most on the calibration texts (mean
|activation| times the norm of the neuron's output weights) stays, and the fraction ``heads`` of the attention
heads that contribute most (mean norm of the head's context vector times the norm of its slice of the
attention output weights): their rows of the query, key and value projections and their columns of the output
projection. The pooler goes too: a dense layer on the first token that mean pooling never reads.
MiniLM-L6's 22.7M parameters are half embeddings (30522 x 384): keeping 3 of 6 layers halves the computation
per token but removes 24% of the parameters; half the heads remove a third of each layer's weights.

A BERT config ties the head size to hidden size / heads, so it cannot say "6 heads of 32": the config keeps
the original head count and the saved weights carry the shapes. Loading builds the network from the config,
then resizes every linear layer to its saved weight (transformers' BERT reshapes attention by head size,
leaving the head count to the tensors).

How it is repaired. ``epochs`` passes of AdamW over the calibration texts with the original network as
teacher: the relative squared error between the pruned and the original pooled vector (what the head reads:
the unit embedding of minilm_linear, the mean-pooled hidden state of minilm_finetune), plus, for
minilm_finetune, the KL divergence from the original's class probabilities (soft labels; the head trains
too). For minilm_linear the fitted head is kept: it learned from the training rows, and refitting it on the
calibration rows agreed less with the original (debates, 150 calibration rows, 3 layers: 72% of held-out
labels kept with the original head, 65% with a head refitted to the original's probabilities).

The pruned network is stored on the estimator as safetensors bytes (``weights_``) with its BERT config as
JSON (``config_``), so the variant saves with skops and loads without the package's weights.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import numpy as np

from ..candidates import text as minilm  # its functions looked up when called (tests swap in a tiny model)
from ..candidates.text import MiniLMClassifier, MiniLMEncoder
from ..errors import ModelError, need
from ..runtime.torch_int8 import dynamic_int8
from . import Technique, register_technique, with_final
from .encoder import applies_minilm, classifier, encoders, max_length, texts

LEARNING_RATE = 3e-4
BATCH_SIZE = 16


@dataclass(frozen=True)
class PruneEncoderConfig:
    layers: int  # transformer layers kept: the first layers - 1 and the last
    ffn: float = 1.0  # fraction of each kept layer's feed-forward neurons kept
    heads: float = 1.0  # fraction of each kept layer's attention heads kept
    epochs: int = 1  # passes over the calibration texts of the fine-tune towards the original


# ---- the estimators that carry a pruned network -----------------------------------------------------------


def _bert(config_json: str, attn_implementation: str | None = None):
    """An untrained BERT without pooler, shaped by ``config_json``."""
    tf = minilm.load_transformers()
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return tf.AutoModel.from_config(tf.BertConfig.from_dict(json.loads(config_json)), add_pooling_layer=False,
                                    **extra)


def _load(net, weights: np.ndarray):
    from safetensors.torch import load

    return _load_state(net, load(weights.tobytes()))


def _load_state(net, state: dict):
    """``net`` with ``state`` loaded, each linear layer first resized to its weight in ``state`` (pruned heads
    leave the query, key, value and attention output projections narrower than the config says)."""
    torch = need("torch", "MiniLM", "text")

    for name, module in list(net.named_modules()):
        weight = state.get(f"{name}.weight")
        if isinstance(module, torch.nn.Linear) and weight is not None and weight.shape != module.weight.shape:
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child,
                    torch.nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"the pruned MiniLM weights do not fit their config: {str(exc)[:200]}") from None
    return net.eval()


_weights = minilm.state_bytes


class PrunedMiniLMEncoder(MiniLMEncoder):
    """A frozen MiniLM featurizer whose (pruned) network travels with it: ``weights_`` (safetensors bytes as
    a uint8 array) and ``config_`` (its BERT config, JSON), made by the ``encoder-prune`` technique.

    Runs on ``"torch"`` and ``"torch-int8"`` / ``"torch-int8-per-channel"``; ``export_onnx`` gives its graph.
    """

    def fit(self, X, y=None):
        if getattr(self, "weights_", None) is None:
            raise ModelError("a PrunedMiniLMEncoder comes from compressing a fitted minilm_linear pipeline "
                             "(technique encoder-prune); it cannot be fitted from scratch")
        return self

    def _network(self):
        if getattr(self, "_net", None) is None:
            self._net = _load(_bert(self.config_), self.weights_)
        return self._net

    def _torch_embed(self):
        """(input_ids, attention_mask) (B, T) int64 arrays -> (B, H) unit vectors, on the pruned network."""
        model = self._network()
        if self.runtime != "torch":
            if getattr(self, "_net_int8", None) is None:
                self._net_int8 = dynamic_int8(model, self.runtime.endswith("per-channel"))
            model = self._net_int8
        return minilm.embedder(model)

    def export_onnx(self) -> bytes:
        """The pruned network with its pooling as ONNX bytes, as ``text.export_encoder_onnx`` gives the full one."""
        return minilm.pooled_onnx(_load(_bert(self.config_, "eager"), self.weights_))

    def frugal_param_count(self) -> int:
        return minilm.safetensors_params(self.weights_.tobytes())

    def frugal_external_files(self) -> list:
        return []  # its weights are in the estimator (the model file), not read from the package

    def __getstate__(self):
        state = super().__getstate__()
        for cached in ("_net", "_net_int8"):  # rebuilt from weights_
            state.pop(cached, None)
        return state


class PrunedMiniLMClassifier(MiniLMClassifier):
    """A fine-tuned MiniLM classifier whose pruned network's shape is in ``config_`` (BERT config, JSON) next to
    its weights (``weights_``), made by the ``encoder-prune`` technique; everything else as MiniLMClassifier."""

    def fit(self, X, y):
        raise ModelError("a PrunedMiniLMClassifier comes from compressing a fitted minilm_finetune pipeline "
                         "(technique encoder-prune); fit a MiniLMClassifier instead")

    def _build_network(self, attn_implementation: str | None = None):
        torch = need("torch", "MiniLM", "text")
        from safetensors.torch import load

        n_classes = load(self.weights_.tobytes())["head.weight"].shape[0]
        encoder = _bert(self.config_, attn_implementation)
        net = torch.nn.ModuleDict({"encoder": encoder, "head": torch.nn.Linear(encoder.config.hidden_size,
                                                                               n_classes)})
        return _load(net, self.weights_)


# ---- pruning and repair -----------------------------------------------------------------------------------


def _teacher_pass(encoder, head, texts: list[str], length: int, unit: bool):
    """One pass of the original network over ``texts``: the pooled vectors the head reads (n, H), the class
    probabilities when there is a head (n, classes), each layer's feed-forward neuron scores [(I,)...] and
    attention head scores [(heads,)...]."""
    torch = need("torch", "MiniLM", "text")

    tokenizer = minilm.minilm_tokenizer()
    layers = encoder.encoder.layer
    n_heads = encoder.config.num_attention_heads
    sums = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    head_sums = [torch.zeros(n_heads) for _ in layers]
    mask = None

    def record(i):
        def hook(module, inputs, out):  # out: (B, T, I) activations
            sums[i].add_((out.abs() * mask.unsqueeze(-1)).sum((0, 1)))
        return hook

    def record_heads(i):
        def hook(module, inputs):  # inputs[0]: (B, T, heads * d) context vectors, head after head
            context = inputs[0].unflatten(-1, (n_heads, -1))  # (B, T, heads, d)
            head_sums[i].add_((context.norm(dim=-1) * mask.unsqueeze(-1)).sum((0, 1)))
        return hook

    hooks = [layer.intermediate.register_forward_hook(record(i)) for i, layer in enumerate(layers)]
    hooks += [layer.attention.output.dense.register_forward_pre_hook(record_heads(i))
              for i, layer in enumerate(layers)]
    pooled = torch.zeros(len(texts), encoder.config.hidden_size)
    proba = None
    try:
        with torch.no_grad():
            for idx, ids, mask in minilm.token_batches(tokenizer, texts, 32, length):
                ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
                hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                out = minilm.mean_pool(hidden, mask)  # (B, H)
                if head is not None:
                    p = torch.softmax(head(out), dim=1)
                    proba = torch.zeros(len(texts), p.shape[1]) if proba is None else proba
                    proba[idx] = p
                pooled[idx] = torch.nn.functional.normalize(out, dim=1) if unit else out
    finally:
        for h in hooks:
            h.remove()
    scores = [s * layer.output.dense.weight.norm(dim=0) for s, layer in zip(sums, layers)]  # (I,) each
    head_scores = [s * layer.attention.output.dense.weight.unflatten(1, (n_heads, -1)).norm(dim=(0, 2))
                   for s, layer in zip(head_sums, layers)]  # (heads,) each
    return pooled, proba, scores, head_scores


def _prune(encoder, layers: int, ffn: float, heads: float, scores, head_scores):
    """A copy of BERT ``encoder`` with ``layers`` of its layers (the first ``layers - 1`` and the last), in each
    the ``ffn`` fraction of feed-forward neurons with the highest ``scores`` and the ``heads`` fraction of
    attention heads with the highest ``head_scores``, and no pooler. -> (network, its config as JSON)."""
    torch = need("torch", "MiniLM", "text")

    config = copy.deepcopy(encoder.config)
    n, n_heads = config.num_hidden_layers, config.num_attention_heads
    size = config.hidden_size // n_heads
    kept = list(range(layers - 1)) + [n - 1]  # old layer index, in the order of the new layers
    n_keep = max(1, int(round(ffn * config.intermediate_size)))
    neurons = {old: scores[old].topk(n_keep).indices.sort().values for old in kept}
    n_heads_keep = max(1, int(round(heads * n_heads)))
    # the rows of the query/key/value projections (columns of the output projection) of each kept head
    channels = {old: (head_scores[old].topk(n_heads_keep).indices.sort().values[:, None] * size
                      + torch.arange(size)).flatten() for old in kept} if n_heads_keep < n_heads else {}
    config.num_hidden_layers, config.intermediate_size = layers, n_keep
    state = {}
    for name, value in encoder.state_dict().items():
        parts = name.split(".")
        if parts[0] == "pooler":
            continue
        if parts[:2] == ["encoder", "layer"]:
            old, rest = int(parts[2]), ".".join(parts[3:])
            if old not in kept:
                continue
            if rest.startswith("intermediate.dense."):  # (I, H) weight, (I,) bias: one row per neuron
                value = value[neurons[old]]
            elif rest == "output.dense.weight":  # (H, I): one column per neuron
                value = value[:, neurons[old]]
            elif old in channels and rest.split(".")[:2] == ["attention", "self"]:  # (A, H), (A,): rows
                value = value[channels[old]]
            elif old in channels and rest == "attention.output.dense.weight":  # (H, A): columns
                value = value[:, channels[old]]
            name = f"encoder.layer.{kept.index(old)}.{rest}"
        state[name] = value.detach().clone().contiguous()
    config_json = config.to_json_string(use_diff=False)
    return _load_state(_bert(config_json), state), config_json


def _finetune(encoder, head, texts: list[str], pooled, proba, length: int, unit: bool, epochs: int) -> None:
    """AdamW over ``texts`` towards the teacher's pooled vectors (n, H) and, with a head, its probabilities."""
    torch = need("torch", "MiniLM", "text")
    import torch.nn.functional as F

    tokenizer = minilm.minilm_tokenizer()
    modules = torch.nn.ModuleList([encoder] + ([head] if head is not None else []))
    opt = torch.optim.AdamW(modules.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)  # dropout
    modules.train()
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for i in range(0, len(order), BATCH_SIZE):
            idx = order[i:i + BATCH_SIZE]
            batch = tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=length,
                              return_tensors="pt")
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            out = minilm.mean_pool(hidden, batch["attention_mask"])  # (B, H)
            if unit:
                out = F.normalize(out, dim=1)
            target = pooled[idx]  # (B, H)
            loss = ((out - target) ** 2).sum(1).mean() / (target ** 2).sum(1).mean()
            if head is not None:
                loss = loss + F.kl_div(F.log_softmax(head(out), dim=1), proba[idx], reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
    modules.eval()


def _apply(pipeline, cfg: PruneEncoderConfig, calibration):
    X, _ = calibration
    clf = classifier(pipeline)
    length = max_length(pipeline)
    found = encoders(pipeline)
    rows = texts(pipeline, X, len(X) * max(1, len(found)))
    if clf is not None:  # minilm_finetune: the fine-tuned network and its head
        net = clf._network()
        teacher, head, unit = net["encoder"], copy.deepcopy(net["head"]), False
    else:  # minilm_linear: the package's frozen encoder, compared on the unit embeddings the head reads
        teacher, head, unit = minilm.frozen_encoder(), None, True
    if not 1 <= cfg.layers <= teacher.config.num_hidden_layers or not 0 < cfg.ffn <= 1 or not 0 < cfg.heads <= 1:
        raise ModelError(f"encoder-prune keeps 1..{teacher.config.num_hidden_layers} layers and fractions "
                         f"0 < ffn <= 1 of the feed-forward neurons and 0 < heads <= 1 of the attention heads; "
                         f"got layers={cfg.layers}, ffn={cfg.ffn}, heads={cfg.heads}")
    pooled, proba, scores, head_scores = _teacher_pass(teacher, head, rows, length, unit)
    student, config_json = _prune(teacher, cfg.layers, cfg.ffn, cfg.heads, scores, head_scores)
    _finetune(student, head, rows, pooled, proba, length, unit, cfg.epochs)
    if clf is not None:
        torch = need("torch", "MiniLM", "text")

        new = PrunedMiniLMClassifier(**clf.get_params())
        net = torch.nn.ModuleDict({"encoder": student, "head": head}).eval()
        new.classes_, new.weights_, new.config_, new._net = clf.classes_, _weights(net), config_json, net
        return with_final(pipeline, new)
    from sklearn.pipeline import Pipeline

    weights = _weights(student)  # one network shared by the featurizers of every text column
    prep = copy.copy(pipeline.steps[0][1])  # shallow: the other columns' fitted preprocessing is shared
    parts = list(prep.transformers_)
    for k, enc, cols in found:
        new = PrunedMiniLMEncoder(**enc.get_params())
        new.dim_, new.weights_, new.config_, new._net = enc.dim_, weights, config_json, student
        parts[k] = (parts[k][0], new, cols)
    prep.transformers_ = parts
    return Pipeline([(pipeline.steps[0][0], prep)] + list(pipeline.steps[1:]))  # the head is shared


def _applies(pipeline) -> bool:
    """MiniLM itself in fp32 torch: not a variant (already pruned or on another runtime), nor another
    architecture arriving as a Hugging Face folder (a MiniLMClassifier subclass)."""
    models = [enc for _, enc, _ in encoders(pipeline)] + [m for m in [classifier(pipeline)] if m is not None]
    return applies_minilm(pipeline) and all(type(m) in (MiniLMEncoder, MiniLMClassifier) for m in models)


def _settings(pipeline) -> list[PruneEncoderConfig]:
    """Half, two thirds and five sixths of the layers, with all or half of their feed-forward neurons, and all
    layers with half of their neurons or half of their heads; ordered by multiply-adds per token
    (4 H^2 heads + 2 H I ffn per layer), cheapest first."""
    config = json.loads((minilm.model_path() / "config.json").read_text())
    n, h, i = config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]
    keep = sorted({max(1, round(n * f)) for f in (1 / 2, 2 / 3, 5 / 6)} - {n})
    grid = [PruneEncoderConfig(k, f) for k in keep for f in (0.5, 1.0)]
    grid += [PruneEncoderConfig(n, 0.5), PruneEncoderConfig(n, 1.0, heads=0.5)]
    return sorted(grid, key=lambda c: (c.layers * (4 * h * h * c.heads + 2 * h * i * c.ffn), c.layers))


register_technique(Technique("encoder-prune", PruneEncoderConfig, _apply, _applies, _settings, needs_data=True,
                             stage=1, description="drop MiniLM layers (keeping the last), its weakest attention heads and "
                                         "feed-forward neurons, "
                                         "then fine-tune the smaller network on the calibration texts towards the "
                                         "original"))
