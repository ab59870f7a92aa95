"""Compressing MiniLM text models into other models: distillation into TF-IDF + logistic regression
(distill-text) and structured pruning of the network (encoder-prune), on the tiny random BERT of
test_compress_text (its fixtures); the real MiniLM only in the slow test.

Bounds were measured on these seeded fixtures and leave a margin; the held-out rows are the 60 the pipelines
neither trained nor calibrated on.
"""

import numpy as np
import pandas as pd
import pytest
from test_compress_text import (centered_cosine, debates, digest, embeddings, encoder, fitted,  # noqa: F401
                                fitted_finetune, one_thread, tiny_minilm)

import frugalml
from frugalml.compression import TECHNIQUES, compress
from frugalml.compression.distill_text import DistillTextConfig, soft_fit
from frugalml.compression.prune_encoder import PruneEncoderConfig, PrunedMiniLMClassifier, PrunedMiniLMEncoder

H, I = 64, 256  # the tiny BERT's hidden size and feed-forward width (2 layers)
LAYER = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # attention, 2 LayerNorms, feed-forward
POOLER = H * H + H


def reload(pipe, task, folder):
    from frugalml.runtime.model_dir import load_pipeline, save_model_dir, skops_bytes

    save_model_dir(folder, schema=task.schema, name="v", skops_data=skops_bytes(pipe), onnx_data=None)
    return load_pipeline(folder)[0]


def test_registered_for_both_minilm_pipelines_with_settings_cheapest_first(fitted, fitted_finetune, linear_csv):
    from frugalml.candidates import CANDIDATES, build_pipeline
    from frugalml.data import load_task

    task = load_task(pd.read_csv(linear_csv), "label")
    forest = build_pipeline(CANDIDATES.get("random_forest").build("classification", 0), task.schema, False)
    for name in ("distill-text", "encoder-prune"):
        t = TECHNIQUES.get(name)
        assert t.needs_data and t.applies_to(fitted[0]) and t.applies_to(fitted_finetune[0]), name
        assert not t.applies_to(forest), name
        with pytest.raises(frugalml.FrugalError, match="needs calibration data"):
            compress(fitted[0], t.settings(fitted[0])[0])
    assert TECHNIQUES.get("distill-text").interpretable and not TECHNIQUES.get("encoder-prune").interpretable
    assert not TECHNIQUES.get("distill").applies_to(fitted[0])  # the tabular distillation leaves them alone
    # The search keeps the first setting that holds: each technique offers its cheapest first. The student's
    # vocabulary grows, the whole vocabulary (None) last.
    sizes = [c.max_features for c in TECHNIQUES.get("distill-text").settings(fitted[0])]
    assert len(sizes) > 1 and sizes[-1] is None and sizes[:-1] == sorted(sizes[:-1])
    # The pruned encoders: fewest multiply-adds per token first, none of them the whole network.
    hidden, inner = 64, 256  # the tiny BERT's sizes (conftest.save_tiny_bert); 2 layers

    def macs(c):  # per token and layer: q, k, v, output projections scale with the heads kept, the FFN with ffn
        return c.layers * (4 * hidden * hidden * c.heads + 2 * hidden * inner * c.ffn)

    configs = TECHNIQUES.get("encoder-prune").settings(fitted[0])
    assert len(configs) > 1 and [macs(c) for c in configs] == sorted(macs(c) for c in configs)
    assert all(macs(c) < macs(PruneEncoderConfig(2)) and 1 <= c.layers <= 2 for c in configs)


def test_soft_targets_that_are_labels_fit_like_labels():
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    Z = sparse.csr_matrix(rng.random((80, 6)))
    y = rng.integers(0, 3, 80)
    soft = soft_fit(LogisticRegression(C=10.0, max_iter=2000, tol=1e-8), Z, np.eye(3)[y], np.arange(3))
    hard = LogisticRegression(C=10.0, max_iter=2000, tol=1e-8).fit(Z, y)
    np.testing.assert_allclose(soft.coef_, hard.coef_, atol=1e-4)


def test_distill_text_student_follows_a_minilm_linear_teacher_and_exports(fitted, tmp_path, debates):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from frugalml.candidates.export import export_onnx, onnx_agreement

    pipe, task, X_cal, y_cal, X = fitted
    before = digest(pipe)
    student = compress(pipe, DistillTextConfig(), calibration=(X_cal, y_cal))
    assert digest(pipe) == before  # the teacher is untouched
    prep = student.named_steps["prep"]
    assert dict((n, type(p).__name__) for n, p, _ in prep.transformers_ if n != "remainder") == {
        "cat": "OneHotEncoder", "text0": "TfidfVectorizer"}  # the debate column is still read
    vec = prep.named_transformers_["text0"]
    assert isinstance(vec, TfidfVectorizer) and vec.ngram_range == (1, 2) and vec.max_features == 5000
    assert isinstance(student.named_steps["model"], LogisticRegression)
    np.testing.assert_array_equal(student.classes_, pipe.classes_)
    teacher = pipe.predict(X)
    chance = np.bincount(teacher).max() / len(teacher)  # always answering the teacher's most frequent label
    agree = (student.predict(X) == teacher).mean()
    assert agree >= 0.55 and agree >= chance + 0.15, (agree, chance)  # measured 0.67 vs 0.40
    # skops round trip, then the ONNX export tfidf_linear uses
    again = reload(student, task, tmp_path / "m")
    np.testing.assert_array_equal(again.predict_proba(X), student.predict_proba(X))
    onnx = export_onnx(student, task.schema)
    agreement = onnx_agreement(student, onnx, X, task.schema)
    assert agreement["onnx_label_agreement"] == 1.0 and agreement["onnx_max_abs_diff"] < 1e-4, agreement


def test_distill_text_reads_only_the_text_of_a_finetuned_teacher(fitted_finetune, tmp_path):
    pipe, task, X_cal, y_cal, X = fitted_finetune
    before = digest(pipe)
    student = compress(pipe, DistillTextConfig(max_features=None), calibration=(X_cal, y_cal))
    assert digest(pipe) == before
    assert [n for n, _, _ in student.named_steps["prep"].transformers] == ["text0"]  # as the teacher's prep
    assert student.named_steps["prep"].named_transformers_["text0"].max_features is None
    np.testing.assert_array_equal(student.classes_, pipe.classes_)  # every class, picked or not by the teacher
    np.testing.assert_array_equal(reload(student, task, tmp_path / "m").predict(X), student.predict(X))


def test_encoder_prune_shrinks_minilm_linear_exactly_and_reloads(fitted, tmp_path):
    from frugalml.evaluation.cost import count_params

    pipe, task, X_cal, y_cal, X = fitted
    before = digest(pipe)
    variant = compress(pipe, PruneEncoderConfig(layers=1, ffn=0.5), calibration=(X_cal, y_cal))
    assert digest(pipe) == before and encoder(pipe).runtime == "torch"
    enc = encoder(variant)
    assert isinstance(enc, PrunedMiniLMEncoder) and enc.runtime == "torch"
    net = enc._network()
    assert (net.config.num_hidden_layers, net.config.intermediate_size, net.pooler) == (1, I // 2, None)
    # one layer, half of the other's feed-forward neurons and the pooler are gone
    removed = LAYER + (H * I // 2 + I // 2) + (I // 2 * H) + POOLER
    assert enc.frugal_param_count() == encoder(pipe).frugal_param_count() - removed
    assert count_params(variant) == count_params(pipe) - removed
    assert variant.named_steps["model"] is pipe.named_steps["model"]  # the head is kept
    assert not TECHNIQUES.get("encoder-prune").applies_to(variant)  # its teacher would be the package's MiniLM
    expected = variant.predict_proba(X)
    again = reload(variant, task, tmp_path / "m")
    assert getattr(encoder(again), "_net", None) is None  # rebuilt from weights_, not pickled
    np.testing.assert_array_equal(again.predict_proba(X), expected)
    rows = frugalml.load(tmp_path / "m")  # the user's entry point, on the raw frame
    assert len(rows.predict(X.iloc[:3])) == 3


def test_encoder_prune_drops_attention_heads_exactly_and_reloads(fitted, tmp_path):
    """Without the fine-tune, the network with half its heads is the original with those heads silenced (their
    value rows zeroed: a head whose values are zero adds nothing to the attention output); the heads dropped
    are those the calibration texts score lowest."""
    import copy

    import torch

    from frugalml.candidates import text as minilm
    from frugalml.candidates.text import minilm_tokenizer, encoder_session

    pipe, task, X_cal, y_cal, X = fitted
    variant = compress(pipe, PruneEncoderConfig(2, 1.0, epochs=0, heads=0.5), calibration=(X_cal, y_cal))
    enc = encoder(variant)
    net, original = enc._network(), minilm.frozen_encoder()
    size = H // 4  # 4 heads of 16
    silenced, kept_heads = copy.deepcopy(original), []
    for layer, old in zip(net.encoder.layer, silenced.encoder.layer):
        attention = layer.attention.self
        assert attention.query.weight.shape == attention.key.weight.shape == (H // 2, H)
        assert layer.attention.output.dense.weight.shape == (H, H // 2) and layer.intermediate.dense.out_features == I
        rows, pruned = (w.unflatten(0, (-1, size)) for w in (old.attention.self.query.weight, attention.query.weight))
        kept = [h for h in range(4) if any(torch.equal(rows[h], r) for r in pruned)]  # rows: (heads, d, H)
        assert len(kept) == 2
        kept_heads.append(kept)
        with torch.no_grad():
            for h in set(range(4)) - set(kept):
                old.attention.self.value.weight[h * size:(h + 1) * size] = 0
                old.attention.self.value.bias[h * size:(h + 1) * size] = 0
    batch = minilm_tokenizer()(X["statement"].tolist()[:16], padding=True, truncation=True, max_length=enc.max_length,
                         return_tensors="np")
    ids, mask = (batch[k].astype(np.int64) for k in ("input_ids", "attention_mask"))
    np.testing.assert_allclose(enc._torch_embed()(ids, mask), minilm.embedder(silenced)(ids, mask), atol=1e-5)
    assert not np.allclose(enc._torch_embed()(ids, mask), minilm.embedder(original)(ids, mask), atol=1e-3)
    # what the query, key, value and output projections of two heads per layer weighed, and the pooler
    removed = 2 * (3 * (H * H // 2 + H // 2) + H // 2 * H) + POOLER
    assert enc.frugal_param_count() == encoder(pipe).frugal_param_count() - removed
    # the heads dropped are each layer's lowest-scoring on the calibration texts
    from frugalml.compression.prune_encoder import _teacher_pass

    *_, head_scores = _teacher_pass(original, None, minilm.text_values(X_cal["statement"]), enc.max_length, True)
    for kept, scores in zip(kept_heads, head_scores):
        assert min(scores[kept]) > max(scores[[h for h in range(4) if h not in kept]])
    tuned = compress(pipe, PruneEncoderConfig(2, 1.0, heads=0.5), calibration=(X_cal, y_cal))
    np.testing.assert_array_equal(reload(tuned, task, tmp_path / "m").predict_proba(X), tuned.predict_proba(X))
    session = encoder_session(encoder(tuned).export_onnx(), "all", 1)
    np.testing.assert_allclose(session.run(None, {"input_ids": ids, "attention_mask": mask})[0],
                               encoder(tuned)._torch_embed()(ids, mask), atol=1e-5)


def test_encoder_prune_fine_tune_brings_the_embeddings_back(fitted):
    pipe, _, X_cal, y_cal, X = fitted
    ref = embeddings(pipe, X)

    def cosine(cfg):
        return centered_cosine(embeddings(compress(pipe, cfg, calibration=(X_cal, y_cal)), X), ref)

    # all layers, half of their neurons: close after the fine-tune (measured mean 0.90, min 0.78; before 0.79, 0.47)
    pruned, tuned = cosine(PruneEncoderConfig(2, 0.5, epochs=0)), cosine(PruneEncoderConfig(2, 0.5, epochs=3))
    assert tuned.mean() > 0.85 and tuned.min() > 0.65, (tuned.mean(), tuned.min())
    assert tuned.mean() > pruned.mean() + 0.05 and tuned.min() > pruned.min() + 0.15
    # one layer of a random BERT's two: far, but the fine-tune still helps (measured 0.16 -> 0.46)
    far, back = cosine(PruneEncoderConfig(1, 1.0, epochs=0)), cosine(PruneEncoderConfig(1, 1.0, epochs=3))
    assert back.mean() > far.mean() + 0.2
    variant = compress(pipe, PruneEncoderConfig(2, 0.5, epochs=3), calibration=(X_cal, y_cal))
    assert (variant.predict(X) == pipe.predict(X)).mean() > 0.75  # measured 0.87


def test_pruned_encoder_exports_its_own_onnx_graph(fitted):
    from frugalml.candidates.text import minilm_tokenizer, encoder_session

    pipe, _, X_cal, y_cal, X = fitted
    enc = encoder(compress(pipe, PruneEncoderConfig(1, 0.5), calibration=(X_cal, y_cal)))
    session = encoder_session(enc.export_onnx(), "all", 1)
    batch = minilm_tokenizer()(X["statement"].tolist()[:8], padding=True, truncation=True, max_length=enc.max_length,
                         return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    np.testing.assert_allclose(session.run(None, feeds)[0], enc._torch_embed()(*feeds.values()), atol=1e-5)


def test_encoder_prune_of_a_finetuned_minilm_distils_its_probabilities(fitted_finetune, tmp_path):
    from frugalml.compression.onnx_fp32 import OnnxFp32Config

    pipe, task, X_cal, y_cal, X = fitted_finetune
    before = digest(pipe)
    original = pipe.predict_proba(X)
    variant = compress(pipe, PruneEncoderConfig(1, 0.5), calibration=(X_cal, y_cal))
    assert digest(pipe) == before
    model = variant.named_steps["model"]
    assert isinstance(model, PrunedMiniLMClassifier) and model.max_length == 64
    removed = LAYER + (H * I // 2 + I // 2) + (I // 2 * H) + POOLER  # the head (64 x 3 + 3) stays
    assert model.frugal_param_count() == pipe.named_steps["model"].frugal_param_count() - removed
    # the KL fine-tune moves the pruned network's probabilities towards the original's (measured 0.034 -> 0.020)
    untuned = compress(pipe, PruneEncoderConfig(1, 0.5, epochs=0), calibration=(X_cal, y_cal)).predict_proba(X)
    diff, diff0 = np.abs(variant.predict_proba(X) - original).mean(), np.abs(untuned - original).mean()
    assert diff < 0.75 * diff0, (diff, diff0)
    # half the neurons of both layers: probabilities within a quarter of their spread (measured 0.027 vs 0.195)
    close = compress(pipe, PruneEncoderConfig(2, 0.5), calibration=(X_cal, y_cal))
    spread = np.abs(original - original.mean(0)).max()
    assert np.abs(close.predict_proba(X) - original).max() < 0.25 * spread
    expected = variant.predict_proba(X)
    np.testing.assert_array_equal(reload(variant, task, tmp_path / "m").predict_proba(X), expected)
    # the pruned network, not the package's, is what an ONNX technique exports
    on_onnx = compress(variant, OnnxFp32Config())
    np.testing.assert_allclose(on_onnx.predict_proba(X), expected, atol=1e-5)
    with pytest.raises(frugalml.FrugalError, match="encoder-prune"):
        model.fit(X, y_cal)


def test_a_hugging_face_classifier_is_distilled_but_not_pruned(tmp_path):
    """A sequence classifier from a Hugging Face folder is any architecture: distill-text reads only its answers,
    encoder-prune (which knows MiniLM's layout) leaves it alone, as it leaves its own pruned variants."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from frugalml.candidates.hf_text import load_hf_model
    from frugalml.candidates.text import model_path
    from frugalml.data import prepare_frame, read_table

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, initializer_range=0.1, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "clf", safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(model_path() / name, tmp_path / "clf" / name)
    df = read_table("builtin:debates")[0].sample(90, random_state=0).reset_index(drop=True)
    df["party"] = df["party"].map({"Democratic": 0, "Moderator": 1, "Republican": 2})
    pipe, schema, _ = load_hf_model(tmp_path / "clf", df, "party", ["statement"])
    assert not TECHNIQUES.get("encoder-prune").applies_to(pipe)
    X = prepare_frame(df, schema)
    student = compress(pipe, DistillTextConfig(), calibration=(X.iloc[:60], df.party[:60].to_numpy()))
    np.testing.assert_array_equal(student.classes_, [0, 1, 2])
    assert student.predict(X.iloc[60:]).shape == (30,)


def test_compress_run_with_distill_text_and_encoder_prune(tiny_minilm, tmp_path, validate_decision):
    """select (minilm_linear) then compress with the two techniques, in this process (tiny encoder patched in)."""
    from frugalml.data import read_table
    from frugalml.evaluation import CostConfig
    from frugalml.verbs.compress import compress as compress_run

    cost = CostConfig(latency_calls=50, time_budget_s=0.05, batch_large=16, memory_probe=False)
    df = read_table("builtin:debates")[0].sample(240, random_state=1).reset_index(drop=True)
    frugalml.select(df.iloc[:120], "party", text=["statement"], candidates=["minilm_linear"], folds=2, repeats=1,
                    n_jobs=1, out=tmp_path / "sel", cost=cost)
    d = compress_run(tmp_path / "sel", df.iloc[120:], groups=["debate"], techniques=["distill-text", "encoder-prune"],
                     tolerance=0.05, min_group_size=10, out=tmp_path / "c", cost=cost, n_boot=100,
                     n_jobs=1).decision  # the tiny MiniLM is patched in this process only
    validate_decision(d)
    cands = {c["name"]: c for c in d["candidates"]}
    assert list(cands)[0] == "original"
    assert {c["technique"]["name"] for c in d["candidates"]} == {"original", "distill-text", "encoder-prune"}
    first = cands["encoder-prune:layers=1,ffn=0.5,heads=1.0,epochs=1"]  # cheapest first
    assert first["technique"]["config"] == {"layers": 1, "ffn": 0.5, "heads": 1.0, "epochs": 1}
    assert first["cost"]["params"] == cands["original"]["cost"]["params"] - (LAYER + H * I // 2 + I // 2 + I // 2 * H
                                                                             + POOLER)
    # the pruned network is inside the model file: its size is that file, not the package's weights beside it
    assert first["cost"]["external_bytes"] == 0 < cands["original"]["cost"]["external_bytes"]
    assert first["cost"]["size_bytes"] == first["cost"]["skops_size_bytes"]
    student = cands["distill-text:max_features=5000"]
    assert student["interpretable"] and student["cost"]["params"] < first["cost"]["params"] / 100
    model = frugalml.load(tmp_path / "c")
    assert model.name == d["recommended"] and len(model.predict(df.iloc[:5])) == 5


@pytest.mark.parametrize("which", ["linear", "finetune"])
def test_a_pruned_network_chains_into_every_runtime_technique(which, fitted, fitted_finetune):
    """What the search's chains do after encoder-prune (stage 1): each stage-3 technique applies to the pruned
    network and answers like it (the same ONNX graph in fp32; int8 and fp16 close)."""
    pipe, _, X_cal, y_cal, X = fitted if which == "linear" else fitted_finetune
    pruned = compress(pipe, PruneEncoderConfig(1, 0.5), calibration=(X_cal, y_cal))
    ref = pruned.predict_proba(X)
    later = [n for n, t in TECHNIQUES.items() if t.stage > TECHNIQUES.get("encoder-prune").stage and t.applies_to(pruned)]
    assert {"onnx-fp32", "onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16", "torch-int8-dynamic"} <= set(later)
    for name in later:
        t = TECHNIQUES.get(name)
        variant = compress(pruned, t.settings(pruned)[0], calibration=(X_cal, y_cal))
        bound = 1e-4 if name == "onnx-fp32" else 0.1
        np.testing.assert_allclose(variant.predict_proba(X), ref, atol=bound, err_msg=name)
