"""Pruning and distillation of the torch MLP on real tiny models, each checked against a reference, and
``frugal compress`` end to end on a select run of torch_mlp."""

import numpy as np
import pytest

import frugalml
from conftest import linear_data
from frugalml.candidates import CANDIDATES, build_pipeline
from frugalml.candidates.export import export_onnx, onnx_agreement, onnx_is_faithful
from frugalml.runtime.model_dir import load_skops, skops_bytes
from frugalml.compression import TECHNIQUES, compress, with_final
from frugalml.compression.distill_mlp import MLPDistillConfig
from frugalml.compression.prune_magnitude import MagnitudePruneConfig, magnitude_masks
from frugalml.compression.prune_neurons import NeuronPruneConfig, prune_neurons
from frugalml.data import load_task, prepare_frame
from frugalml.evaluation import CostConfig

import torch  # noqa: F401  (an installed extra: a missing one fails, never skips)
FAST = CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=100, memory_probe=False)
MLP_TECHNIQUES = ["mlp-prune-magnitude", "mlp-prune-neurons", "mlp-distill"]


def _setup(kind):
    """A torch_mlp teacher fitted on 800 rows; 600 calibration rows; 1000 new rows to compare on."""
    df = linear_data(n=2400, seed=4)
    if kind == "regression":
        df = df.assign(label=df.x1 * 2 - df.x2 + np.sin(3 * df.x3))
    task = load_task(df.iloc[:800], "label")
    c = CANDIDATES.get("torch_mlp")
    pipe = build_pipeline(c.build(kind, 0), task.schema, c.scale).fit(task.X, task.y)
    X_cal, X_new = prepare_frame(df.iloc[800:1400], task.schema), prepare_frame(df.iloc[1400:], task.schema)
    y_cal = df["label"].iloc[800:1400].to_numpy()
    y_cal = (y_cal == "yes").astype(int) if kind == "classification" else y_cal
    return pipe, task, (X_cal, y_cal), X_new


@pytest.fixture(scope="module")
def cls():
    return _setup("classification")


@pytest.fixture(scope="module")
def reg():
    return _setup("regression")


def _agreement(a, b, X):
    return float(np.mean(a.predict(X) == b.predict(X)))


def _proba_gap(a, b, X):
    return float(np.abs(a.predict_proba(X) - b.predict_proba(X)).mean())


def _r2_vs(a, ref, X):
    """How much of the reference's variation ``a`` reproduces (1 = identical predictions)."""
    r = ref.predict(X)
    return 1 - float(np.mean((a.predict(X) - r) ** 2) / np.var(r))


def test_applies_only_to_torch_mlps(cls):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neural_network import MLPClassifier

    pipe, task, _, _ = cls
    forest = with_final(pipe, RandomForestClassifier(n_estimators=3))
    sk_mlp = with_final(pipe, MLPClassifier())
    for name in MLP_TECHNIQUES:
        t = TECHNIQUES.get(name)
        assert t.applies_to(pipe) and not t.applies_to(forest) and t.needs_data
        assert t.applies_to(sk_mlp) == (name == "mlp-distill")  # a neural teacher on scaled features
    # the search keeps the first setting that holds, so each technique offers its cheapest first
    sparsity = [c.sparsity for c in TECHNIQUES.get("mlp-prune-magnitude").settings(pipe)]
    keep = [c.keep for c in TECHNIQUES.get("mlp-prune-neurons").settings(pipe)]
    hidden = [c.hidden for c in TECHNIQUES.get("mlp-distill").settings(pipe)]
    assert len(sparsity) > 1 and sparsity == sorted(sparsity, reverse=True) and 0 < min(sparsity) and max(sparsity) < 1
    assert len(keep) > 1 and keep == sorted(keep) and 0 < min(keep) and max(keep) < 1
    assert len(hidden) > 1 and hidden == sorted(hidden) and max(hidden) < max(pipe.steps[-1][1].hidden_layer_sizes)


def test_magnitude_pruning_zeroes_exactly_the_smallest_weights(cls):
    pipe, task, cal, X_new = cls
    teacher = pipe.steps[-1][1]
    before = teacher.weights_.tobytes()
    original = teacher.layers()
    onnx_dense = len(export_onnx(pipe, task.schema))
    for sparsity in (0.5, 0.7, 0.9):
        pruned = compress(pipe, MagnitudePruneConfig(sparsity), calibration=cal)
        layers = pruned.steps[-1][1].layers()
        for (W, _), (W0, _), mask in zip(layers[:-1], original[:-1], magnitude_masks(original, sparsity)):
            assert np.sum(W == 0) == round(sparsity * W.size)  # exactly the requested share...
            np.testing.assert_array_equal(W != 0, mask)  # ...at the positions of the smallest original weights
            assert np.abs(W0[~mask]).max() <= np.abs(W0[mask]).min()
        assert np.all(layers[-1][0] != 0)  # the output layer stays dense
        # fine-tuned against the teacher, it answers like it on new rows, far closer than pruning alone
        raw = with_final(pipe, teacher.with_layers([(W * m if m is not None else W, b) for (W, b), m
                                                     in zip(original, magnitude_masks(original, sparsity))]))
        assert _agreement(pruned, pipe, X_new) >= 0.95
        assert _proba_gap(pruned, pipe, X_new) < _proba_gap(raw, pipe, X_new) / 2
        # stored as bitmask + kept values: the ONNX file shrinks with the sparsity and stays faithful
        onx = export_onnx(pruned, task.schema)
        assert len(onx) < onnx_dense * (1 - sparsity + 0.15)
        agreement = onnx_agreement(pruned, onx, X_new, task.schema)
        assert onnx_is_faithful(agreement, "classification") and agreement["onnx_max_abs_diff"] < 1e-4
    assert pruned.steps[-1][1].weight_sparsity()["layers"][:2] == pytest.approx([0.9, 0.9], abs=1e-3)
    restored = load_skops(skops_bytes(pruned), "test")
    np.testing.assert_array_equal(restored.predict_proba(X_new), pruned.predict_proba(X_new))
    assert len(restored.steps[-1][1].weights_) < len(teacher.weights_) / 5  # 10% of the weights + a bitmask
    assert teacher.weights_.tobytes() == before  # the input pipeline is untouched


def test_magnitude_pruning_of_a_regressor(reg):
    pipe, task, cal, X_new = reg
    pruned = compress(pipe, MagnitudePruneConfig(0.7), calibration=cal)
    assert pruned.steps[-1][1].weight_sparsity()["layers"][0] == pytest.approx(0.7, abs=1e-3)
    assert _r2_vs(pruned, pipe, X_new) > 0.98
    agreement = onnx_agreement(pruned, export_onnx(pruned, task.schema), X_new, task.schema)
    assert onnx_is_faithful(agreement, "regression")


def test_neuron_pruning_drops_the_weakest_neurons_exactly(cls):
    pipe, _, _, X_new = cls
    teacher = pipe.steps[-1][1]
    layers = teacher.layers()
    # silence half of each hidden layer (zero outgoing weights): those neurons carry nothing, so pruning
    # half must remove exactly them and leave the function unchanged
    rng = np.random.default_rng(0)
    for k in range(2):
        W_next, b_next = layers[k + 1]
        dead = rng.choice(W_next.shape[1], W_next.shape[1] // 2, replace=False)
        W_next[:, dead] = 0
    silenced = with_final(pipe, teacher.with_layers(layers))
    halved = prune_neurons(layers, 0.5)
    assert [W.shape for W, _ in halved] == [(64, teacher.n_features_in_), (32, 64), (2, 32)]
    smaller = with_final(pipe, teacher.with_layers(halved, hidden_layer_sizes=(64, 32)))
    np.testing.assert_allclose(smaller.predict_proba(X_new), silenced.predict_proba(X_new), atol=1e-5)


@pytest.mark.parametrize("keep, widths", [(0.25, (32, 16)), (0.5, (64, 32))])
def test_neuron_pruning_gives_a_smaller_network_that_follows_the_teacher(keep, widths, cls):
    pipe, task, cal, X_new = cls
    teacher = pipe.steps[-1][1]
    before = teacher.weights_.tobytes()
    small = compress(pipe, NeuronPruneConfig(keep), calibration=cal)
    model = small.steps[-1][1]
    assert model.hidden_layer_sizes == widths
    assert [W.shape for W, _ in model.layers()] == [(widths[0], teacher.n_features_in_), (widths[1], widths[0]),
                                                     (2, widths[1])]
    assert _agreement(small, pipe, X_new) >= 0.95 and _proba_gap(small, pipe, X_new) < 0.03
    assert model.frugal_param_count() < teacher.frugal_param_count() * (keep + 0.05)
    onx = export_onnx(small, task.schema)
    assert len(onx) < len(export_onnx(pipe, task.schema)) * (keep + 0.1)
    assert onnx_agreement(small, onx, X_new, task.schema)["onnx_max_abs_diff"] < 1e-4
    assert teacher.weights_.tobytes() == before and teacher.hidden_layer_sizes == (128, 64)


def test_distilled_student_follows_the_teacher_better_than_one_trained_on_labels(cls):
    from frugalml.candidates.torch_mlp import TorchMLPClassifier

    pipe, task, (X_cal, y_cal), X_new = cls
    before = pipe.steps[-1][1].weights_.tobytes()
    student = compress(pipe, MLPDistillConfig(16), calibration=(X_cal, y_cal))
    model = student.steps[-1][1]
    assert model.hidden_layer_sizes == (16,) and [W.shape[0] for W, _ in model.layers()] == [16, 2]
    # the same student trained on the true labels of the same rows
    on_labels = with_final(pipe, TorchMLPClassifier(hidden_layer_sizes=(16,), seed=0)
                           .fit(pipe[:-1].transform(X_cal), y_cal))
    assert _agreement(student, pipe, X_new) >= max(0.95, _agreement(on_labels, pipe, X_new))
    assert _proba_gap(student, pipe, X_new) < _proba_gap(on_labels, pipe, X_new) / 2
    assert onnx_agreement(student, export_onnx(student, task.schema), X_new, task.schema)["onnx_max_abs_diff"] < 1e-4
    assert pipe.steps[-1][1].weights_.tobytes() == before


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # the scikit-learn teacher need not converge
def test_distillation_of_a_regressor_and_of_a_scikit_learn_mlp(reg, cls):
    from sklearn.neural_network import MLPClassifier

    pipe, _, cal, X_new = reg
    student = compress(pipe, MLPDistillConfig(32), calibration=cal)
    assert _r2_vs(student, pipe, X_new) > 0.97

    pipe, task, (X_cal, y_cal), X_new = cls
    Z = pipe[:-1].transform(X_cal)
    sk = with_final(pipe, MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0).fit(Z, y_cal))
    student = compress(sk, MLPDistillConfig(16), calibration=(X_cal, y_cal))
    assert type(student.steps[-1][1]).__name__ == "TorchMLPClassifier"
    assert _agreement(student, sk, X_new) >= 0.95


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A torch_mlp chosen by select on 1000 rows; 1000 other rows for compress."""
    df = linear_data(n=2000, seed=7)
    base = tmp_path_factory.mktemp("torch_mlp")
    frugalml.select(df.iloc[:1000], "label", candidates=["torch_mlp"], folds=2, repeats=1, n_jobs=1,
                    out=base / "run", cost=FAST)
    df.iloc[1000:].to_csv(base / "held.csv", index=False)
    return base


def test_compress_a_selected_torch_mlp_end_to_end(mlp_run, validate_decision):
    from frugalml.verbs.compress import compress as compress_run

    model = frugalml.load(mlp_run / "run")
    assert model.name == "torch_mlp" and model.format == "onnx"  # select's artifact exported faithfully
    held = mlp_run / "held.csv"
    d = compress_run(mlp_run / "run", held, techniques=MLP_TECHNIQUES, tolerance=0.02, cost=FAST, n_boot=200,
                     cost_priority="size", out=mlp_run / "small").decision
    validate_decision(d)
    assert (mlp_run / "small" / "decision.json").exists()
    assert d["command"] == "compress" and d["data"]["original_candidate"] == "torch_mlp"
    tried = {c["technique"]["name"] for c in d["candidates"]}
    assert tried == {"original", *MLP_TECHNIQUES}
    assert all(c["cost"]["format"] == "onnx" for c in d["candidates"])
    chosen = next(c for c in d["candidates"] if c["name"] == d["recommended"])
    original = d["candidates"][0]
    assert d["recommended"] != "original" and chosen["on_par"]
    assert chosen["cost"]["size_bytes"] * 3 < original["cost"]["size_bytes"]
    assert chosen["cost"]["params"] < original["cost"]["params"]
    small = frugalml.load(mlp_run / "small")
    assert small.format == "onnx" and small.name == d["recommended"]
    import pandas as pd

    rows = pd.read_csv(held).head(50)
    assert np.mean(small.predict(rows) == model.predict(rows)) >= 0.9
