"""frugal compress on a scikit-learn model the user saved with skops: read against the data, never modified."""

import fractions
import hashlib

import numpy as np
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import frugalml
from conftest import group_harm_data, linear_data
from frugalml.runtime.model_dir import load_pipeline
from frugalml.evaluation import CostConfig
from frugalml.verbs.compress import compress

FAST = CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=100, memory_probe=False)


@pytest.fixture(scope="module")
def harm(tmp_path_factory):
    """A forest the user trained on a numpy matrix (labels "no"/"yes"), saved with skops; unseen rows."""
    df = group_harm_data(n=3000, seed=2)
    df["y"] = np.where(df["y"] == 1, "yes", "no")
    train, held = df.iloc[:1500], df.iloc[1500:]
    rf = RandomForestClassifier(60, random_state=0).fit(train[["x1", "x2"]].to_numpy(), train["y"])
    base = tmp_path_factory.mktemp("skops")
    sio.dump(rf, base / "rf.skops")
    held.to_csv(base / "held.csv", index=False)
    return base, rf, held


def test_a_users_forest_is_compressed_and_never_modified(harm, validate_decision):
    base, rf, held = harm
    before = hashlib.sha256((base / "rf.skops").read_bytes()).hexdigest()
    d = compress(base / "rf.skops", held, "y", groups=["g"], techniques=["tree-prune", "tree-depth", "onnx-trees"],
                 tolerance=0.02, cost=FAST, n_boot=200, cost_priority="size", out=base / "run").decision
    validate_decision(d)
    assert d["data"]["original_candidate"] == "skops:rf.skops" and d["recommended"] != "original"
    original, schema, _ = load_pipeline(base / "run")
    assert schema.classes == ["no", "yes"] and schema.numeric == ["x1", "x2"]
    # the original, as frugalml reads it, is the user's forest: same answers on every held-out row
    orig = d["candidates"][0]
    assert orig["quality"]["mean"] == pytest.approx(
        np.mean(rf.predict(held[["x1", "x2"]].to_numpy())[-orig["groups"]["g=A"]["n"] - orig["groups"]["g=B"]["n"]:]
                == held["y"].to_numpy()[-orig["groups"]["g=A"]["n"] - orig["groups"]["g=B"]["n"]:]), abs=0.05)
    kept = frugalml.load(base / "run")
    assert np.mean(kept.predict(held) == held["y"].to_numpy()) > 0.9  # labels, not class indices
    assert hashlib.sha256((base / "rf.skops").read_bytes()).hexdigest() == before
    assert list(rf.classes_) == ["no", "yes"] and len(rf.estimators_) == 60  # the user's object untouched


def test_the_original_reads_columns_by_name_and_matches_the_users_model(tmp_path):
    df = linear_data(n=600, seed=3)
    X = df[["x3", "x1", "x2"]]  # fitted on a frame in another column order than the data's
    rf = RandomForestClassifier(20, random_state=0).fit(X, df["label"])
    sio.dump(rf, tmp_path / "named.skops")
    from frugalml.candidates.skops_model import load_skops_model
    from frugalml.data import prepare_frame

    pipe, schema, _ = load_skops_model(tmp_path / "named.skops", df, "label", [])
    assert schema.numeric == ["x3", "x1", "x2"] and schema.categorical == []
    got = np.asarray(schema.classes)[pipe.predict(prepare_frame(df, schema))]
    np.testing.assert_array_equal(got, rf.predict(X))

    # a pipeline with its own encoders keeps its steps and reads its columns by name
    user = Pipeline([("prep", ColumnTransformer([("num", StandardScaler(), ["x1", "x2"]),
                                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"])])),
                     ("clf", RandomForestClassifier(30, random_state=0))]).fit(df[["colour", "x1", "x2"]], df["label"])
    sio.dump(user, tmp_path / "pipe.skops")
    pipe, schema, _ = load_skops_model(tmp_path / "pipe.skops", df, "label", ["region"])
    assert schema.categorical == ["colour"]
    got = np.asarray(schema.classes)[pipe.predict(prepare_frame(df, schema))]
    np.testing.assert_array_equal(got, user.predict(df[["colour", "x1", "x2"]]))
    d = compress(tmp_path / "pipe.skops", df, "label", groups=["region"], techniques=["tree-subset", "onnx-trees"],
                 tolerance=0.05, cost=FAST, n_boot=100).decision
    assert {c["technique"]["name"] for c in d["candidates"]} == {"original", "tree-subset", "onnx-trees"}
    size = {c["name"]: c["cost"]["size_bytes"] for c in d["candidates"]}
    assert size["onnx-trees"] < size["original"] / 3  # in native format too: the compact graph is what it holds


@pytest.mark.parametrize("case", ["no target", "width", "labels", "text", "untrusted"])
def test_bad_skops_input_exits_2(case, harm, tmp_path, capsys):
    base, rf, held = harm
    model, data, extra = base / "rf.skops", base / "held.csv", []
    if case == "no target":
        extra = []
    elif case == "width":
        held.assign(x3=1.0).to_csv(tmp_path / "wide.csv", index=False)
        data = tmp_path / "wide.csv"
    elif case == "labels":
        held.assign(y=np.where(held["y"] == "yes", "maybe", "no")).to_csv(tmp_path / "labels.csv", index=False)
        data = tmp_path / "labels.csv"
    elif case == "text":
        held.assign(g2=held["g"]).drop(columns=["x2"]).to_csv(tmp_path / "text.csv", index=False)
        data = tmp_path / "text.csv"
    else:
        sio.dump(fractions.Fraction(1, 2), tmp_path / "frame.skops")  # a type frugalml does not trust
        model = tmp_path / "frame.skops"
    if case != "no target":
        extra = ["--target", "y"]
    from frugalml.cli import main

    code = main(["compress", str(model), "--data", str(data), *extra, "--group", "g", "--quiet",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    expected = {"no target": "give --target", "width": "reads 2 features", "labels": "never saw",
                "text": "not numeric", "untrusted": "does not trust"}[case]
    assert expected in err and not (tmp_path / "o").exists()
