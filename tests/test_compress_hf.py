"""frugal compress on a local Hugging Face sequence-classifier folder: read against the data (labels by the
model's id2label), its ONNX Runtime variants judged by the same guard, the folder never modified. The model is
a tiny BERT classifier (random weights, MiniLM's real tokenizer) built in-process."""

import hashlib
import json
import shutil

import numpy as np
import pytest

import torch
import transformers

from frugalml.candidates.hf_text import HFTextClassifier  # noqa: E402
from frugalml.cli import main  # noqa: E402

LABELS = ["Democratic", "Moderator", "Republican"]


@pytest.fixture(autouse=True)
def one_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def hf_case(tmp_path_factory):
    from frugalml.candidates.text import model_path
    from frugalml.data import read_table

    folder = tmp_path_factory.mktemp("hf") / "clf"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=256, initializer_range=0.1, num_labels=3,
                                     id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    transformers.BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(model_path() / name, folder / name)
    df = read_table("builtin:debates")[0].groupby("party", group_keys=False).sample(70, random_state=0)
    data = folder.parent / "debates.csv"
    df.sample(frac=1.0, random_state=0).to_csv(data, index=False)
    return folder, data, df


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_folder_model_reproduces_transformers(hf_case):
    folder, _, df = hf_case
    est = HFTextClassifier.from_folder(folder, df.party.tolist())
    assert est.labels_ == LABELS and list(est.classes_) == [0, 1, 2]
    texts = df.statement.tolist()[:12]
    ref_model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        ref = torch.softmax(ref_model(**batch).logits, dim=1).numpy()
    np.testing.assert_allclose(est.predict_proba(np.asarray(texts, dtype=object).reshape(-1, 1)), ref, atol=1e-5)
    # stored whole: a skops round trip needs neither the folder nor pickle
    from frugalml.runtime.model_dir import load_skops, skops_bytes

    again = load_skops(skops_bytes(est), "hf")
    np.testing.assert_allclose(again.predict_proba(np.asarray(texts, dtype=object).reshape(-1, 1)), ref, atol=1e-5)


def test_compress_a_hugging_face_folder_end_to_end(hf_case, tmp_path, validate_decision):
    folder, data, _ = hf_case
    before = _digest(folder)
    code = main(["compress", str(folder), "--data", str(data), "--target", "party", "--text", "statement",
                 "--group", "debate", "--tolerance", "0.05", "--techniques", "onnx-fp32,onnx-int8-dynamic",
                 "--no-memory-probe", "--throughput-batch", "32", "--quiet", "--out", str(tmp_path / "c"),
                 "--jobs", "2"])  # two worker processes: the variants, made there, must save and load as skops
    assert code == 0 and _digest(folder) == before
    d = json.loads((tmp_path / "c" / "decision.json").read_text())
    validate_decision(d)
    assert d["data"]["original_candidate"] == "hf:clf"
    by = {c["technique"]["name"]: c for c in d["candidates"] if c["name"] != "original"}
    assert set(by) == {"onnx-fp32", "onnx-int8-dynamic"}
    assert by["onnx-fp32"]["groups"]["debate=VP"]["flip_rate"] == 0  # the same network on another runtime
    import frugalml
    import pandas as pd

    model = frugalml.load(tmp_path / "c")
    assert set(model.predict(pd.read_csv(data).head(8))) <= set(LABELS)


@pytest.mark.parametrize("case", ["pickle", "labels", "target"])
def test_bad_hugging_face_input_exits_2(case, hf_case, tmp_path, capsys):
    folder, data, df = hf_case
    args = ["--target", "party"]
    if case == "pickle":
        bad = tmp_path / "bin"
        shutil.copytree(folder, bad)
        (bad / "model.safetensors").unlink()
        (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
        folder, needle = bad, "pickle"
    elif case == "labels":
        df.assign(party=df.party.str.upper()).to_csv(tmp_path / "d.csv", index=False)
        data, needle = tmp_path / "d.csv", "neither those names nor class indices"
    else:
        args, needle = [], "--target"
    code = main(["compress", str(folder), "--data", str(data), *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_half_precision_folder_with_its_own_small_vocabulary(tmp_path):
    """Weights saved in fp16 are read as fp32 (the reference every variant is judged against), and the ONNX
    export traces with the model's own tokenizer (a 300-word vocabulary, not MiniLM's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [f"w{i}" for i in range(296)]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]")
    config = transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, num_labels=2)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).half().save_pretrained(tmp_path / "m")
    fast.save_pretrained(tmp_path / "m")
    est = HFTextClassifier.from_folder(tmp_path / "m", [0, 1, 1])
    assert est.labels_ == [0, 1] and next(est._network().parameters()).dtype == torch.float32
    from frugalml.compression.onnx_fp32 import OnnxFp32Config  # noqa: F401  (registers the technique)
    from frugalml.runtime.sessions import ort_session

    texts = np.asarray(["w1 w2 w3", "w5 w9"], dtype=object).reshape(-1, 1)
    session = ort_session(est.export_onnx())
    batch = est.tokenizer()(["w1 w2 w3", "w5 w9"], padding=True, return_tensors="np")
    onnx_p = session.run(None, {"input_ids": batch["input_ids"].astype(np.int64),
                                "attention_mask": batch["attention_mask"].astype(np.int64)})[0]
    np.testing.assert_allclose(onnx_p, est.predict_proba(texts), atol=1e-5)
