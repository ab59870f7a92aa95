"""frugal compress on a bare ONNX file: the graph read against the data, its quantized variants judged by the
same guard, the file never modified. The graphs are real trained models (scikit-learn weights) written as
plain ONNX MatMul graphs, or exported by skl2onnx."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

import onnx
import onnxruntime  # noqa: F401

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from frugalml.candidates.onnx_graph import OnnxGraphModel  # noqa: E402
from frugalml.cli import main  # noqa: E402

F = 8


@pytest.fixture(scope="module")
def mlp_case(tmp_path_factory):
    """A 2-class MLP (256 and 256 hidden units) trained by scikit-learn; its weights as an ONNX graph reading
    one matrix."""
    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier

    X, y = make_classification(n_samples=1600, n_features=F, n_informative=5, random_state=0)
    g = np.where(X[:, 0] > 0, "a", "b")
    mlp = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=60, random_state=0).fit(X[:800], y[:800])
    (w1, w2, w3), (b1, b2, b3) = mlp.coefs_, mlp.intercepts_
    # scikit-learn's binary output is one logistic unit: write it as two scores (0, z) so softmax = its sigmoid
    w3, b3 = np.hstack([np.zeros_like(w3), w3]), np.hstack([np.zeros_like(b3), b3])
    init = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in
            ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (w3, "w3"), (b3, "b3"))]
    nodes = []
    x = "features"
    for k in (1, 2, 3):
        nodes += [helper.make_node("MatMul", [x, f"w{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"])]
        x = f"a{k}"
        if k < 3:
            nodes.append(helper.make_node("Relu", [x], [f"r{k}"]))
            x = f"r{k}"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, F])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("onnx")
    path = folder / "mlp.onnx"
    path.write_bytes(model.SerializeToString())
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(F)]).assign(label=np.where(y == 1, "yes", "no"), g=g)
    frame.iloc[800:].to_csv(folder / "held.csv", index=False)
    return path, folder / "held.csv", mlp, frame.iloc[800:].reset_index(drop=True)


def test_graph_model_reproduces_the_trained_model(mlp_case):
    path, _, mlp, held = mlp_case
    est, schema = OnnxGraphModel.from_graph(path.read_bytes(), held, "label", ["g"])
    assert schema.task == "classification" and schema.classes == ["no", "yes"]
    assert schema.numeric == [f"x{i}" for i in range(F)] and est.feed_mode_ == "matrix"
    X = held[schema.numeric]
    np.testing.assert_allclose(est.predict_proba(X), mlp.predict_proba(X.to_numpy()), atol=1e-5)
    assert (est.predict(X) == mlp.predict(X.to_numpy())).all()
    assert est.frugal_param_count() == F * 256 + 256 + 256 * 256 + 256 + 256 * 2 + 2


def test_named_inputs_and_zipmap_outputs_of_skl2onnx():
    """A scikit-learn pipeline exported by skl2onnx with one input per column and ZipMap probabilities."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=300), "c": rng.choice(["u", "v", "w"], 300)})
    df["y"] = np.where(df.a + (df.c == "u") > 0.3, 2, 5)
    pipe = Pipeline([("prep", ColumnTransformer([("num", "passthrough", ["a"]), ("cat", OneHotEncoder(), ["c"])])),
                     ("lr", LogisticRegression())]).fit(df[["a", "c"]], df.y)
    onx = to_onnx(pipe, initial_types=[("a", FloatTensorType([None, 1])), ("c", StringTensorType([None, 1]))],
                  target_opset={"": 17, "ai.onnx.ml": 3})
    est, schema = OnnxGraphModel.from_graph(onx.SerializeToString(), df, "y", [])
    assert est.feed_mode_ == "columns" and schema.numeric == ["a"] and schema.categorical == ["c"]
    assert schema.classes == [2, 5] and est.proba_output_ is not None
    X = df[["a", "c"]]
    np.testing.assert_allclose(est.predict_proba(X), pipe.predict_proba(X), atol=1e-5)
    assert (np.asarray(schema.classes)[est.predict(X)] == pipe.predict(X)).all()


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compress_an_onnx_file_end_to_end(mlp_case, tmp_path, validate_decision):
    path, held, _, _ = mlp_case
    before = _digest(path)
    code = main(["compress", str(path), "--data", str(held), "--target", "label", "--group", "g", "--tolerance",
                 "0.03", "--techniques", "onnx-int8-dynamic,onnx-int8-static,onnx-fp16", "--no-memory-probe",
                 "--throughput-batch", "200", "--quiet", "--out", str(tmp_path / "c")])
    assert code == 0 and _digest(path) == before
    d = json.loads((tmp_path / "c" / "decision.json").read_text())
    validate_decision(d)
    assert d["command"] == "compress" and d["data"]["original_candidate"] == "onnx:mlp.onnx"
    by = {c["name"]: c for c in d["candidates"]}

    def variant(technique):
        return next(c for c in d["candidates"] if c["technique"]["name"] == technique)

    orig = by["original"]
    # int8 weights: the graph is about a quarter of the fp32 one; fp16 about half
    for technique, ratio in (("onnx-int8-dynamic", 0.5), ("onnx-int8-static", 0.6), ("onnx-fp16", 0.75)):
        assert variant(technique)["cost"]["size_bytes"] < ratio * orig["cost"]["size_bytes"], technique
    # a graph variant changes few predictions of this well-conditioned MLP
    assert all(abs(c["vs_best"]["diff_mean"]) < 0.03 for c in by.values())
    assert variant("onnx-fp16")["groups"]["g=a"]["flip_rate"] < 0.01  # fp16 of a small MLP: nearly no change
    import frugalml

    model = frugalml.load(tmp_path / "c")
    rows = pd.read_csv(held).head(5)
    assert set(model.predict(rows)) <= {"no", "yes"}


@pytest.mark.parametrize("case", ["corrupt", "no target", "width", "columns"])
def test_bad_onnx_input_exits_2(case, mlp_case, tmp_path, capsys):
    path, held, _, frame = mlp_case
    args = ["--target", "label", "--group", "g"]
    if case == "corrupt":
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(path.read_bytes()[:300])
        path, needle = bad, "not a valid ONNX model"
    elif case == "no target":
        args, needle = [], "--target"
    elif case == "width":  # one feature too many: the matrix has F columns
        frame.assign(extra=1.0).to_csv(tmp_path / "d.csv", index=False)
        held, needle = tmp_path / "d.csv", "reads 8 features"
    else:  # the group column left among the features: not numeric
        args, needle = ["--target", "label"], "reads 8 features"
    code = main(["compress", str(path), "--data", str(held), *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_numeric_labels_match_by_value_and_unknown_labels_are_an_error():
    """A float target (a column that had NaNs) against a graph answering int64 labels: 1.0 is class 1."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    from frugalml.errors import ModelError

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    df["y"] = (df.a > 0).astype(int)
    lr = LogisticRegression().fit(df[["a", "b"]], df.y)
    graph = to_onnx(lr, initial_types=[("features", FloatTensorType([None, 2]))],
                    target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    est, schema = OnnxGraphModel.from_graph(graph, df.assign(y=df.y.astype(float)), "y", [])
    assert (est.predict(df[["a", "b"]]) == lr.predict(df[["a", "b"]])).all()
    with pytest.raises(ModelError, match="answers label"):
        OnnxGraphModel.from_graph(graph, df.assign(y=df.y + 5), "y", [])
