"""Every registered candidate on tiny data: fits, exports faithfully (or says why not), round-trips safely."""

import numpy as np
import pytest

from conftest import linear_data
from frugalml.candidates import CANDIDATES, build_pipeline, ladder
from frugalml.candidates.export import OnnxExportError, export_onnx, onnx_agreement, onnx_is_faithful
from frugalml.runtime.model_dir import load_skops, skops_bytes
from frugalml.data import load_task
from frugalml.evaluation.cost import count_params

# Candidates with no ONNX conversion in this stack; they deploy natively. (HistGradientBoosting, which skl2onnx
# cannot convert, exports through candidates.tree_graph.)
NO_ONNX = {"dummy"}


@pytest.fixture(scope="module")
def tasks():
    df = linear_data(n=300)
    df.loc[::17, "x1"] = np.nan  # missing numbers are imputed inside the pipeline
    df.loc[::13, "colour"] = None  # missing categories become their own value
    reg = df.assign(target=df["x1"].fillna(0) * 2 + df["x2"])
    return {"classification": load_task(df, "label"), "regression": load_task(reg.drop(columns=["label"]), "target")}


def test_ladder_is_thinnest_first():
    names = [c.name for c in ladder("classification")]
    assert names[:2] == ["dummy", "linear"] and names[-2:] == ["mlp", "torch_mlp"]
    assert "naive_bayes" not in [c.name for c in ladder("regression")]
    assert CANDIDATES.get("linear").interpretable and not CANDIDATES.get("mlp").interpretable


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_every_candidate_fits_exports_and_round_trips(kind, tasks):
    task = tasks[kind]
    for cand in ladder(kind):
        pipe = build_pipeline(cand.build(kind, 0), task.schema, cand.scale).fit(task.X, task.y)
        assert count_params(pipe) > count_params(pipe[:-1])  # the model learned numbers of its own
        if cand.name in NO_ONNX:
            with pytest.raises(OnnxExportError):
                export_onnx(pipe, task.schema)
        else:
            agreement = onnx_agreement(pipe, export_onnx(pipe, task.schema), task.X, task.schema)
            if cand.name != "knn":  # k-NN distance ties may resolve differently in float32
                assert onnx_is_faithful(agreement, kind), (cand.name, agreement)
        restored = load_skops(skops_bytes(pipe), "test")
        np.testing.assert_array_equal(restored.predict(task.X), pipe.predict(task.X))
        assert count_params(restored) == count_params(pipe)  # what is counted is what is saved


def test_param_counts_are_the_learned_numbers(tasks):
    task = tasks["classification"]
    pipe = build_pipeline(CANDIDATES.get("linear").build("classification", 0), task.schema).fit(task.X, task.y)
    model = pipe.named_steps["model"]
    prep = pipe.named_steps["prep"]
    scaler = prep.named_transformers_["num"].named_steps["scale"]
    imputer = prep.named_transformers_["num"].named_steps["impute"]
    # coefficients + intercept, scaler mean/scale/var, imputer statistics (one-hot categories are strings)
    expected = model.coef_.size + model.intercept_.size + scaler.mean_.size + scaler.scale_.size \
        + scaler.var_.size + imputer.statistics_.size
    assert count_params(pipe) == expected
    tree = build_pipeline(CANDIDATES.get("decision_tree").build("classification", 0), task.schema, False)
    tree.fit(task.X, task.y)
    assert count_params(tree) == tree.named_steps["model"].tree_.node_count + 3  # + imputer statistics


class Payload:
    """Stands for any type a frugalml model folder never contains."""

    def __init__(self):
        self.command = "echo owned"


def test_skops_refuses_untrusted_types(tmp_path):
    import skops.io as sio

    from frugalml.errors import ModelError

    data = sio.dumps({"model": np.arange(3), "payload": Payload()})
    with pytest.raises(ModelError, match="does not trust"):
        load_skops(data, "x.skops")
    with pytest.raises(ModelError, match="not a valid skops file"):
        load_skops(b"garbage" * 10, "x.skops")
