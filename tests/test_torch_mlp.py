"""The torch MLP candidate on tiny data: learns, is seeded, exports to ONNX faithfully, round-trips through skops."""

import numpy as np
import pytest

from conftest import linear_data
from frugalml.candidates import CANDIDATES, build_pipeline, ladder
from frugalml.candidates.export import export_onnx, onnx_agreement, onnx_is_faithful
from frugalml.runtime.model_dir import load_skops, skops_bytes
from frugalml.data import load_task
from frugalml.evaluation.cost import count_params

import torch  # noqa: F401  (an installed extra: a missing one fails, never skips)


@pytest.fixture(scope="module")
def fitted():
    df = linear_data(n=400)
    df.loc[::17, "x1"] = np.nan  # imputed inside the pipeline, in ONNX too
    reg = df.assign(target=df["x1"].fillna(0) * 2 - df["x2"]).drop(columns=["label"])
    out = {}
    for kind, frame, target in (("classification", df, "label"), ("regression", reg, "target")):
        task = load_task(frame, target)
        c = CANDIDATES.get("torch_mlp")
        out[kind] = build_pipeline(c.build(kind, 0), task.schema, c.scale).fit(task.X, task.y), task
    return out


def test_on_the_default_ladder_when_torch_is_installed():
    c = CANDIDATES.get("torch_mlp")
    assert c.family == "neural" and c.rank == 85 and c.default  # this module runs only where torch imports
    assert [x.name for x in ladder("classification")][-1] == "torch_mlp"
    assert [x.name for x in ladder("regression", ["torch_mlp"])] == ["torch_mlp"]


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_learns_exports_and_round_trips(kind, fitted):
    pipe, task = fitted[kind]
    model = pipe.steps[-1][1]
    assert [W.shape for W, _ in model.layers()][:2] == [(128, model.n_features_in_), (64, 128)]
    # it learned the rule: a linear model scores ~0.75 accuracy and R2 1.0 here
    assert pipe.score(task.X, task.y) > (0.7 if kind == "classification" else 0.95)
    assert count_params(pipe) >= model.n_features_in_ * 128 + 128 * 64
    onx = export_onnx(pipe, task.schema)
    agreement = onnx_agreement(pipe, onx, task.X, task.schema)
    assert onnx_is_faithful(agreement, kind), agreement
    if kind == "classification":
        assert agreement["onnx_label_agreement"] == 1.0 and agreement["onnx_max_abs_diff"] < 1e-4
    else:
        assert agreement["onnx_max_rel_diff"] < 1e-5
    restored = load_skops(skops_bytes(pipe), "test")  # frugalml's trusted types only, never pickle
    np.testing.assert_array_equal(restored.predict(task.X), pipe.predict(task.X))
    if kind == "classification":
        np.testing.assert_array_equal(restored.predict_proba(task.X), pipe.predict_proba(task.X))


def test_seeded_and_fitted_weights_are_safetensors(fitted):
    from safetensors.numpy import load

    pipe, task = fitted["classification"]
    model = pipe.steps[-1][1]
    again = build_pipeline(CANDIDATES.get("torch_mlp").build("classification", 0), task.schema).fit(task.X, task.y)
    assert again.steps[-1][1].weights_.tobytes() == model.weights_.tobytes()
    other = build_pipeline(CANDIDATES.get("torch_mlp").build("classification", 1), task.schema).fit(task.X, task.y)
    assert other.steps[-1][1].weights_.tobytes() != model.weights_.tobytes()
    tensors = load(model.weights_.tobytes())
    assert sorted(tensors) == ["0.bias", "0.weight", "1.bias", "1.weight", "2.bias", "2.weight"]
    assert "_cache" not in model.__getstate__()


def test_trains_on_one_thread_unless_told_and_leaves_torchs_count_alone():
    import torch

    from frugalml.candidates.torch_mlp import TorchMLPRegressor

    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    before = torch.get_num_threads()
    assert TorchMLPRegressor().threads == 1
    TorchMLPRegressor(hidden_layer_sizes=(4,), max_epochs=2, threads=2).fit(X, X[:, 0])
    assert torch.get_num_threads() == before


def test_string_classes_export_through_skl2onnx():
    import onnxruntime as ort
    from skl2onnx import to_onnx

    from frugalml.candidates.torch_mlp import TorchMLPClassifier, register_onnx

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = np.array(["cat", "dog", "eel"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    model = TorchMLPClassifier(hidden_layer_sizes=(16,), learning_rate=1e-2).fit(X, y)
    register_onnx()
    onx = to_onnx(model, X[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    label, proba = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": X})
    np.testing.assert_array_equal(label, model.predict(X))
    assert np.abs(proba - model.predict_proba(X)).max() < 1e-5
    assert np.mean(model.predict(X) == y) > 0.8
