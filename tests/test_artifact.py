import json

import numpy as np
import pandas as pd
import pytest

import frugalml
from conftest import linear_data, linear_run
from frugalml.errors import ModelError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return linear_run(tmp_path_factory.mktemp("a") / "run")


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


# -- tree models deploy as one compact TreeEnsemble node (candidates.tree_graph) -----------------------------------

FAMILIES = ["decision_tree", "random_forest", "extra_trees", "hist_gradient_boosting", "lightgbm"]


def tree_task(kind: str):
    """linear_data with missing numbers and categories; its label (binary), three classes, or a number."""
    from frugalml.data import load_task

    df = linear_data(n=400)
    df.loc[::17, "x1"] = np.nan  # imputed inside the pipeline (its ONNX graph too)
    df.loc[::13, "colour"] = None  # its own category
    if kind == "multi-class":
        x1 = df["x1"].fillna(0)
        df["label"] = np.where(x1 > 0.5, "a", np.where(x1 < -0.5, "b", "c"))
    if kind == "regression":
        df = df.assign(target=df["x1"].fillna(0) * 2 + df["x2"] + (df["colour"] == "red")).drop(columns=["label"])
        return load_task(df.iloc[:300], "target"), df.iloc[300:].drop(columns=["target"])
    return load_task(df.iloc[:300], "label"), df.iloc[300:].drop(columns=["label"])


def tree_pipeline(family: str, task):
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    from frugalml.candidates import CANDIDATES, build_pipeline

    if family == "extra_trees":  # not on the ladder; a user's candidate
        cls = ExtraTreesClassifier if task.kind == "classification" else ExtraTreesRegressor
        est = cls(n_estimators=30, min_samples_leaf=2, random_state=0)
    else:
        est = CANDIDATES.get(family).build(task.kind, 0)
    return build_pipeline(est, task.schema, scale=False).fit(task.X, task.y)


def ops(onnx_bytes: bytes) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node]


@pytest.mark.parametrize("kind", ["binary", "multi-class", "regression"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tree_models_deploy_as_one_compact_tree_ensemble(family, kind, tmp_path):
    """Every tree family on the ladder ships as one TreeEnsemble node where that node reproduces it; a multi-class
    forest or tree (a probability per class in each leaf) keeps skl2onnx's export. Either way: the native model's
    answers on held-out rows, and the same again through frugalml.load."""
    from frugalml.candidates.export import export_onnx, onnx_agreement, onnx_is_faithful
    from frugalml.runtime.model_dir import save_model_dir, skops_bytes
    from frugalml.data import prepare_frame

    task, held = tree_task(kind)
    held = pd.concat([held, held.iloc[:3].assign(x1=np.nan, x2=np.nan, colour="violet")])  # NaN, unseen category
    pipe = tree_pipeline(family, task)
    onx = export_onnx(pipe, task.schema)
    compact = not (kind == "multi-class" and family in ("decision_tree", "random_forest", "extra_trees"))
    if compact:
        assert ops(onx).count("TreeEnsemble") == 1
        assert not {"TreeEnsembleClassifier", "TreeEnsembleRegressor"} & set(ops(onx))
        if family != "hist_gradient_boosting":  # skl2onnx has no converter for it
            assert len(onx) < 0.9 * len(export_onnx(pipe, task.schema, compact_trees=False))
    else:
        assert "TreeEnsemble" not in ops(onx) and "TreeEnsembleClassifier" in ops(onx)
        assert onx == export_onnx(pipe, task.schema, compact_trees=False)
    assert onnx_is_faithful(onnx_agreement(pipe, onx, prepare_frame(held, task.schema), task.schema), task.kind)

    save_model_dir(tmp_path / "m", schema=task.schema, name=family, skops_data=skops_bytes(pipe), onnx_data=onx)
    model, native = frugalml.load(tmp_path / "m"), frugalml.load(tmp_path / "m", native=True)
    assert model.format == "onnx"
    X = prepare_frame(held, task.schema)
    if task.kind == "classification":
        np.testing.assert_allclose(model.predict_proba(held), pipe.predict_proba(X), atol=1e-6)
        labels = np.asarray(task.schema.classes, dtype=object)[pipe.predict(X)]
        np.testing.assert_array_equal(model.predict(held), labels)
        np.testing.assert_array_equal(model.predict(held), native.predict(held))
    else:
        np.testing.assert_allclose(model.predict(held), pipe.predict(X), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.predict(held), native.predict(held), rtol=1e-5, atol=1e-5)


def test_a_compact_graph_that_disagrees_is_not_shipped(monkeypatch):
    """The agreement check decides: a converter that got the thresholds wrong falls back to skl2onnx's graph."""
    from frugalml.candidates import tree_graph
    from frugalml.candidates.export import export_onnx

    task, _ = tree_task("binary")
    pipe = tree_pipeline("random_forest", task)
    right = tree_graph.graph_thresholds
    monkeypatch.setattr(tree_graph, "graph_thresholds", lambda ens, t: right(ens, t) + np.float32(0.3))
    onx = export_onnx(pipe, task.schema)
    assert "TreeEnsemble" not in ops(onx) and onx == export_onnx(pipe, task.schema, compact_trees=False)


@pytest.mark.parametrize("family", ["decision_tree", "random_forest", "hist_gradient_boosting", "lightgbm"])
def test_compact_trees_route_missing_values_as_the_model_does(family):
    """Trees fitted on NaN (no imputer in front): the compact graph sends NaN where the model does, on held-out rows
    and on the rows at its split thresholds that export_onnx checks it with."""
    import lightgbm as lgb
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    from frugalml.candidates.tree_graph import compact_trees, edge_rows, reproduction

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4))
    y = (X[:, 0] + np.where(np.isnan(X[:, 1]), 1.0, X[:, 1]) > 0).astype(int)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:, 3] = rng.normal(size=600)  # a column without NaN: the model chose a side for it anyway
    model = {"decision_tree": DecisionTreeClassifier(max_depth=6, random_state=0),
             "random_forest": RandomForestClassifier(30, random_state=0),
             "hist_gradient_boosting": HistGradientBoostingClassifier(max_iter=50, random_state=0),
             "lightgbm": lgb.LGBMClassifier(n_estimators=50, verbose=-1, random_state=0)}[family].fit(X[:400], y[:400])
    held = X[400:].copy()
    held[:20, 3] = np.nan
    compact = compact_trees(model)
    np.testing.assert_allclose(compact.predict_proba(held.astype(np.float32)), model.predict_proba(held), atol=1e-6)
    rows = edge_rows(model)
    assert np.isnan(rows).any()
    agreement = reproduction(model, compact, rows)
    assert agreement["onnx_label_agreement"] == 1.0 and agreement["onnx_max_abs_diff"] < 1e-6


def test_select_measures_and_ships_the_compact_graph(tmp_path):
    """HistGradientBoosting, which skl2onnx cannot export, was shipped as its scikit-learn pipeline: select now
    times and writes the TreeEnsemble graph, and frugalml.load predicts through it."""
    from frugalml.evaluation import CostConfig

    df = linear_data(n=300)
    df.loc[::11, "x2"] = np.nan
    res = frugalml.select(df, "label", candidates=["hist_gradient_boosting"], folds=2, repeats=1, out=tmp_path / "r",
                          cost=CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=50, memory_probe=False))
    cost = res.decision["candidates"][0]["cost"]
    assert cost["format"] == "onnx" and cost["size_bytes"] < cost["skops_size_bytes"] / 5
    onx = (tmp_path / "r" / "model" / "model.onnx").read_bytes()
    assert ops(onx).count("TreeEnsemble") == 1 and len(onx) == cost["size_bytes"]
    model, native = frugalml.load(tmp_path / "r"), frugalml.load(tmp_path / "r", native=True)
    X = df.drop(columns=["label"])
    assert model.format == "onnx" and (model.predict(X) == native.predict(X)).all()
    np.testing.assert_allclose(model.predict_proba(X), native.predict_proba(X), atol=1e-6)


def test_a_model_folder_saved_before_the_move_still_loads(tmp_path, monkeypatch):
    """CompactTrees* lived in frugalml.compression.onnx_trees; skops files name a class by its module, so a folder
    saved then still loads (and one saved now names candidates.tree_graph)."""
    from frugalml.runtime.model_dir import load_pipeline, save_model_dir, skops_bytes
    from frugalml.candidates.tree_graph import CompactTreesClassifier, compact_trees
    from frugalml.compression import with_final
    from frugalml.data import prepare_frame

    task, held = tree_task("binary")
    pipe = tree_pipeline("random_forest", task)
    compressed = with_final(pipe, compact_trees(pipe.steps[-1][1]))
    import skops.io as sio

    now = skops_bytes(compressed)
    assert "frugalml.candidates.tree_graph.CompactTreesClassifier" in sio.get_untrusted_types(data=now)
    monkeypatch.setattr(CompactTreesClassifier, "__module__", "frugalml.compression.onnx_trees")
    before = skops_bytes(compressed)
    monkeypatch.undo()
    assert "frugalml.compression.onnx_trees.CompactTreesClassifier" in sio.get_untrusted_types(data=before)
    save_model_dir(tmp_path / "old", schema=task.schema, name="random_forest", skops_data=before, onnx_data=None)
    X = prepare_frame(held, task.schema)
    loaded, _, _ = load_pipeline(tmp_path / "old")
    assert type(loaded.steps[-1][1]) is CompactTreesClassifier
    np.testing.assert_array_equal(loaded.predict_proba(X), compressed.predict_proba(X))
    np.testing.assert_array_equal(frugalml.load(tmp_path / "old").predict(held),
                                  np.asarray(task.schema.classes, dtype=object)[pipe.predict(X)])


# -- the one-row path ------------------------------------------------------------------------------------------------

def mixed_frame(n=240, seed=0) -> pd.DataFrame:
    """Numbers with NaN, categories with None, and a text column with None and non-ASCII words."""
    rng = np.random.default_rng(seed)
    df = linear_data(n=n, seed=seed)
    words = np.array(["tax", "school", "health", "war", "jobs", "café", "naïve", "über"])
    df["note"] = [" ".join(rng.choice(words, 4)) for _ in range(n)]
    df["note"] = np.where(df["label"] == "yes", df["note"] + " growth", df["note"])
    df.loc[::9, "x1"] = np.nan
    df.loc[::7, "colour"] = None
    df.loc[::11, "note"] = None
    return df


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    from frugalml.candidates import CANDIDATES, build_pipeline
    from frugalml.candidates.export import export_onnx
    from frugalml.runtime.model_dir import save_model_dir, skops_bytes
    from frugalml.data import load_task

    df = mixed_frame()
    task = load_task(df, "label", text=["note"])
    pipe = build_pipeline(CANDIDATES.get("tfidf_linear").build(task.kind, 0), task.schema).fit(task.X, task.y)
    folder = tmp_path_factory.mktemp("mixed") / "m"
    save_model_dir(folder, schema=task.schema, name="tfidf_linear", skops_data=skops_bytes(pipe),
                   onnx_data=export_onnx(pipe, task.schema))
    return folder, task


def odd_rows(task) -> pd.DataFrame:
    """Held-out rows in the dtypes a user sends: unseen and missing categories, NaN, None texts, pandas' own
    nullable and categorical dtypes, numbers as strings, columns in another order with an extra one."""
    X = mixed_frame(n=60, seed=1).drop(columns=["label"])
    X.loc[X.index[:5], "colour"] = "violet"
    X.loc[X.index[5:8], "note"] = ""
    X["region"] = X["region"].astype("category")
    X["x3"] = X["x3"].round(2).astype(object).where(X.index % 5 != 0, None)
    X["x2"] = pd.array(np.where(X.index % 4 == 0, None, X.index), dtype="Int64")
    X["x1"] = X["x1"].astype("float32")
    X["extra"] = "ignored"
    return X[list(X.columns[::-1])]


def test_one_row_predictions_equal_the_batch_on_every_column_type(mixed_model):
    from frugalml.runtime.sessions import onnx_inputs
    from frugalml.data import prepare_frame

    folder, task = mixed_model
    model = frugalml.load(folder)
    assert model.format == "onnx"
    for X in (mixed_frame(n=60, seed=1).drop(columns=["label"]), odd_rows(task)):
        batch, proba = model.predict(X), model.predict_proba(X)
        one = np.concatenate([model.predict(X.iloc[[i]]) for i in range(len(X))])
        one_proba = np.concatenate([model.predict_proba(X.iloc[[i]]) for i in range(len(X))])
        np.testing.assert_array_equal(one, batch)
        # the same inputs (below); ONNX Runtime's float32 sums may round differently at batch 1 than at batch 60
        np.testing.assert_allclose(one_proba, proba, rtol=0, atol=1e-6)
        # the inputs are data.prepare_frame's conversions, row by row as for the whole frame
        ref = prepare_frame(X, task.schema)
        feeds = onnx_inputs(X, task.schema)
        np.testing.assert_array_equal(feeds["num"], ref[task.schema.numeric].to_numpy(dtype=np.float32))
        np.testing.assert_array_equal(feeds["cat"], ref[task.schema.categorical].to_numpy(dtype=object))
        np.testing.assert_array_equal(feeds["text"], ref[task.schema.text].to_numpy(dtype=object))
        for i in (0, 3, len(X) - 1):
            row = onnx_inputs(X.iloc[[i]], task.schema)
            for k, v in feeds.items():
                np.testing.assert_array_equal(row[k], v[i:i + 1])
                assert row[k].dtype == v.dtype
        native = frugalml.load(folder, native=True)
        np.testing.assert_allclose(proba, native.predict_proba(X), atol=1e-5)
    # a column the model needs and the frame lacks: one error naming it, on one row as on many
    with pytest.raises(frugalml.FrugalError, match="'note'"):
        model.predict(odd_rows(task).drop(columns=["note"]).iloc[[0]])
