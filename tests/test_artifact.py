import json

import pytest

import frugalml
from conftest import linear_data
from frugalml.errors import ModelError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from frugalml.evaluation import CostConfig

    out = tmp_path_factory.mktemp("a") / "run"
    frugalml.select(linear_data(n=300), "label", candidates=["linear"], folds=2, repeats=1, out=out,
                    cost=CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=50, memory_probe=False))
    return out


def test_load_accepts_run_dir_and_model_dir(run_dir):
    assert frugalml.load(run_dir).name == frugalml.load(run_dir / "model").name == "linear"


def test_load_errors_are_clear(run_dir, tmp_path):
    with pytest.raises(ModelError, match="not a frugalml model folder"):
        frugalml.load(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    with pytest.raises(ModelError, match="damaged"):
        frugalml.load(broken)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "meta.json").write_text((run_dir / "model" / "meta.json").read_text())
    (corrupt / "model.onnx").write_bytes((run_dir / "model" / "model.onnx").read_bytes()[:100])
    with pytest.raises(ModelError, match="ONNX Runtime cannot load"):
        frugalml.load(corrupt)


def test_predict_needs_a_dataframe_with_the_columns(run_dir):
    model = frugalml.load(run_dir)
    X = linear_data(n=5).drop(columns=["label"])
    with pytest.raises(ModelError, match="DataFrame"):
        model.predict(X.to_numpy())
    with pytest.raises(frugalml.FrugalError, match="'colour'"):
        model.predict(X.drop(columns=["colour"]))
    meta = json.loads((run_dir / "model" / "meta.json").read_text())
    assert meta["format"] == "onnx" and meta["schema"]["classes"] == ["no", "yes"]


def test_column_names_that_onnx_renames(tmp_path):
    from frugalml.evaluation import CostConfig

    df = linear_data(n=300).rename(columns={"x1": "mean radius", "x2": "a-b/c", "colour": "colour (main)"})
    res = frugalml.select(df, "label", candidates=["linear", "random_forest"], folds=2, repeats=1, out=tmp_path / "r",
                          cost=CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=50, memory_probe=False))
    assert all(c["cost"]["format"] == "onnx" for c in res.decision["candidates"])
    onnx_model, native = frugalml.load(tmp_path / "r"), frugalml.load(tmp_path / "r", native=True)
    X = df.drop(columns=["label"])
    assert (onnx_model.predict(X) == native.predict(X)).all()
