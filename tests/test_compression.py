"""Compression techniques on real tiny models, and the accuracy-aware search with its group guard."""

import hashlib
import pickle

import numpy as np
import pandas as pd
import pytest

import frugalml
from conftest import group_harm_data, linear_data
from frugalml.candidates import CANDIDATES, build_pipeline
from frugalml.runtime.model_dir import load_pipeline
from frugalml.compression import TECHNIQUES, compress
from frugalml.compression.boosting_truncate import BoostingTruncateConfig
from frugalml.compression.distill import DistillConfig
from frugalml.compression.tree_subset import TreeSubsetConfig
from frugalml.data import load_task, prepare_frame
from frugalml.evaluation import CostConfig
from frugalml.verbs.compress import compress as compress_run

FAST = CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=100, memory_probe=False)


def fitted(name, kind="classification", n=400):
    df = linear_data(n=n)
    if kind == "regression":
        df = df.assign(label=df["x1"] * 2 - df["x2"])
    task = load_task(df, "label")
    c = CANDIDATES.get(name)
    return build_pipeline(c.build(kind, 0), task.schema, c.scale).fit(task.X, task.y), task


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_tree_subset_is_the_average_of_the_kept_trees(kind):
    pipe, task = fitted("random_forest", kind)
    small = compress(pipe, TreeSubsetConfig(10))
    forest, kept = pipe.steps[-1][1], small.steps[-1][1]
    assert len(kept.estimators_) == 10 and len(forest.estimators_) == 100  # the original is untouched
    Z = pipe[:-1].transform(task.X)
    if kind == "classification":
        ref = np.mean([t.predict_proba(Z) for t in forest.estimators_[:10]], axis=0)
        np.testing.assert_allclose(small.predict_proba(task.X), ref)
    else:
        ref = np.mean([t.predict(Z) for t in forest.estimators_[:10]], axis=0)
        np.testing.assert_allclose(small.predict(task.X), ref)
    from frugalml.candidates.export import export_onnx

    assert len(export_onnx(small, task.schema)) < len(export_onnx(pipe, task.schema)) / 5


def test_boosting_truncation_equals_the_first_iterations():
    pipe, task = fitted("lightgbm")
    cut = compress(pipe, BoostingTruncateConfig(50))
    Z = pipe[:-1].transform(task.X)
    ref = pipe.steps[-1][1].booster_.predict(Z, num_iteration=50)
    np.testing.assert_allclose(cut.predict_proba(task.X)[:, 1], ref, rtol=1e-6)
    assert cut.steps[-1][1].booster_.current_iteration() == 50
    assert pipe.steps[-1][1].booster_.current_iteration() == 200

    hgb, task = fitted("hist_gradient_boosting", "regression")
    cut = compress(hgb, BoostingTruncateConfig(30))
    staged = list(hgb.steps[-1][1].staged_predict(hgb[:-1].transform(task.X)))
    np.testing.assert_allclose(cut.predict(task.X), staged[29])


def test_distilled_student_is_thin_and_follows_its_teacher():
    from sklearn.tree import DecisionTreeClassifier

    from frugalml.compression import with_final
    from frugalml.data import prepare_frame

    df = linear_data(n=1800, seed=4)
    task = load_task(df.iloc[:600], "label")
    c = CANDIDATES.get("random_forest")
    pipe = build_pipeline(c.build("classification", 0), task.schema, c.scale).fit(task.X, task.y)
    X_cal = prepare_frame(df.iloc[600:1200], task.schema)
    y_cal = (df["label"].iloc[600:1200] == "yes").to_numpy().astype(int)
    X_new = prepare_frame(df.iloc[1200:], task.schema)
    student = compress(pipe, DistillConfig("tree", 4), calibration=(X_cal, y_cal))
    tree = student.steps[-1][1]
    assert type(tree).__name__ == "DecisionTreeClassifier" and tree.get_depth() <= 4
    # Trained on the teacher's answers, it follows the teacher on new rows better than the same tree
    # trained on the true labels of the same rows.
    on_labels = with_final(pipe, DecisionTreeClassifier(max_depth=4, min_samples_leaf=5, random_state=0)
                           .fit(pipe[:-1].transform(X_cal), y_cal))
    agree = np.mean(student.predict(X_new) == pipe.predict(X_new))
    assert agree > np.mean(on_labels.predict(X_new) == pipe.predict(X_new)) and agree > 0.8
    assert TECHNIQUES.get("distill").interpretable and TECHNIQUES.get("distill").needs_data
    with pytest.raises(frugalml.FrugalError, match="needs calibration data"):
        compress(pipe, DistillConfig("linear"))


@pytest.fixture(scope="module")
def harm_run(tmp_path_factory):
    """A random forest selected on group-harm data; the other half of the data is for compress."""
    df = group_harm_data(n=4000, seed=1)
    train, held = df.iloc[:2000], df.iloc[2000:]
    base = tmp_path_factory.mktemp("harm")
    frugalml.select(train, "y", candidates=["random_forest"], folds=2, repeats=1, out=base / "rf", cost=FAST)
    held.to_csv(base / "held.csv", index=False)
    return base


def test_variant_that_hurts_one_group_is_rejected(harm_run, validate_decision):
    kw = dict(techniques=["distill"], tolerance=0.15, cost=FAST, n_boot=200, cost_priority="size")
    blind = compress_run(harm_run / "rf", harm_run / "held.csv", **kw).decision
    linear = next(c for c in blind["candidates"] if c["name"].startswith("distill:student=linear"))
    assert linear["on_par"] and blind["recommended"] != "original"  # blind to groups, a student wins

    d = compress_run(harm_run / "rf", harm_run / "held.csv", groups=["g"], out=harm_run / "c", **kw).decision
    validate_decision(d)
    assert d["command"] == "compress" and d["best"] == "original"
    linear = next(c for c in d["candidates"] if c["name"].startswith("distill:student=linear"))
    assert linear["vs_best"]["non_inferior"]  # fine overall...
    assert linear["groups"]["g=B"]["non_inferior"] is False  # ...but not for group B
    assert linear["groups"]["g=B"]["flip_rate"] > 0.2 > linear["groups"]["g=A"]["flip_rate"]
    assert not linear["on_par"] and linear["rejected_because"].startswith("screening: group g=B")
    assert linear["groups"]["g=B"]["verdict"] == "harm" and linear["evaluated_on"] == "screening"
    assert d["recommended"] != linear["name"]
    assert frugalml.load(harm_run / "c").name == d["recommended"]


def test_forest_shrinks_within_tolerance(harm_run):
    d = compress_run(harm_run / "rf", harm_run / "held.csv", groups=["g"], techniques=["tree-subset"],
                     tolerance=0.02, cost=FAST, n_boot=200, cost_priority="size").decision
    rec = next(c for c in d["candidates"] if c["name"] == d["recommended"])
    orig = d["candidates"][0]
    assert d["recommended"].startswith("tree-subset")
    assert rec["cost"]["size_bytes"] * 5 < orig["cost"]["size_bytes"]
    assert rec["vs_best"]["ci_low"] > -0.02


def test_chain_makes_the_kept_forest_shallower_and_is_judged_against_the_original(harm_run):
    # tolerance 0.03: at 0.02 the chained forest holds on the screening rows but its g=A bound misses by 0.0005
    # on the confirmation rows, and the kept one is tree-prune alone
    kw = dict(groups=["g"], techniques=["tree-prune", "tree-depth"], tolerance=0.03, cost=FAST, n_boot=200,
              cost_priority="size")
    d = compress_run(harm_run / "rf", harm_run / "held.csv", out=harm_run / "chain", **kw).decision
    by = {c["name"]: c for c in d["candidates"]}
    singles = [c for c in d["candidates"] if len(c["technique"]["chain"]) == 1]
    chained = [c for c in d["candidates"] if len(c["technique"]["chain"]) == 2]
    kept_prune = next(c for c in singles if c["on_par"] and c["technique"]["name"] == "tree-prune")
    # only what held is chained, and only with a later stage: tree-prune -> tree-depth, never the reverse
    assert chained and all(c["name"].startswith(kept_prune["name"] + " + tree-depth:") for c in chained)
    assert all(c["technique"]["chain"][0] == kept_prune["technique"]["chain"][0] for c in chained)
    rec = by[d["recommended"]]
    assert rec in chained and rec["on_par"]
    assert rec["cost"]["size_bytes"] < min(c["cost"]["size_bytes"] for c in singles if c["on_par"])
    # the chain replays on the original to the model written to the run, fewer and shallower trees
    from sklearn.model_selection import train_test_split

    original, schema, _ = load_pipeline(harm_run / "rf")
    held = pd.read_csv(harm_run / "held.csv")
    X, y = prepare_frame(held, schema), np.asarray([schema.classes.index(v) for v in held["y"]])
    cal, _ = train_test_split(np.arange(len(y)), test_size=0.7, random_state=0, stratify=y)  # compress's split
    pipe = original
    for step in rec["technique"]["chain"]:
        pipe = compress(pipe, TECHNIQUES.get(step["name"]).config(**step["config"]), calibration=(X.iloc[cal], y[cal]))
    kept, _, _ = load_pipeline(harm_run / "chain")
    np.testing.assert_array_equal(pipe.predict_proba(X), kept.predict_proba(X))
    forest = pipe.steps[-1][1]
    assert len(forest.estimators_) == rec["technique"]["chain"][0]["config"]["n_trees"]
    assert max(t.get_depth() for t in forest.estimators_) <= rec["technique"]["config"]["max_depth"]
    # judged against the original, not against the pruned forest it was made from
    ref = by["original"]["groups"]["g=B"]["mean"]
    assert rec["groups"]["g=B"]["diff_vs_best"] == pytest.approx(rec["groups"]["g=B"]["mean"] - ref)
    flat = compress_run(harm_run / "rf", harm_run / "held.csv", chain=False, **kw).decision
    assert all(len(c["technique"]["chain"]) <= 1 for c in flat["candidates"])
    assert flat["settings"]["chain"] is False and len(flat["candidates"]) == len(d["candidates"]) - len(chained)


@pytest.mark.parametrize("kind", ["classification", "regression"])
@pytest.mark.parametrize("model, smaller", [("random_forest", 0.4), ("lightgbm", 0.4), ("hist_gradient_boosting", 0.1)])
def test_onnx_trees_is_the_same_ensemble_in_a_smaller_file(kind, model, smaller):
    from frugalml.candidates.export import OnnxExportError, export_onnx
    from frugalml.runtime.sessions import OnnxPredictor
    from frugalml.runtime.model_dir import load_skops, skops_bytes
    from frugalml.compression.onnx_trees import OnnxTreesConfig

    pipe, task = fitted(model, kind)
    t = TECHNIQUES.get("onnx-trees")
    assert t.applies_to(pipe) and t.stage == 3
    new = compress(pipe, OnnxTreesConfig())
    X = task.X
    after = export_onnx(new, task.schema)
    if model == "hist_gradient_boosting":  # skl2onnx cannot export it: before tree_graph it shipped as skops
        with pytest.raises(OnnxExportError):
            export_onnx(pipe, task.schema, compact_trees=False)
        before = skops_bytes(pipe)
    else:
        before = export_onnx(pipe, task.schema, compact_trees=False)
    assert export_onnx(pipe, task.schema) == after  # what select deploys already is the compact graph
    assert len(after) < smaller * len(before)
    graph = OnnxPredictor(after, task.schema)
    if kind == "classification":
        # the variant predicts through the compact graph: float32 sums of the same leaves
        np.testing.assert_allclose(new.predict_proba(X), pipe.predict_proba(X), atol=1e-6)
        np.testing.assert_allclose(graph.predict_proba(X), new.predict_proba(X), atol=1e-6)
        assert np.array_equal(new.predict(X), pipe.predict(X)) and np.array_equal(graph.predict(X), pipe.predict(X))
    else:
        np.testing.assert_allclose(new.predict(X), pipe.predict(X), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(graph.predict(X), pipe.predict(X), rtol=1e-5, atol=1e-5)
    again = load_skops(skops_bytes(new), "test")  # the graph travels as bytes; no session is saved
    np.testing.assert_array_equal(again.predict(X), new.predict(X))
    if model != "random_forest":
        return
    # one weight per leaf: a three-class forest (a probability per class in every leaf) is left alone
    three = task.X.assign(label=np.where(task.X["x1"] > 0.5, "a", np.where(task.X["x1"] < -0.5, "b", "c")))
    t3 = load_task(three, "label")
    c = CANDIDATES.get("random_forest")
    multi = build_pipeline(c.build("classification", 0), t3.schema, c.scale).fit(t3.X, t3.y)
    assert not t.applies_to(multi) and not t.applies_to(fitted("linear")[0])


@pytest.mark.parametrize("model, smaller", [("lightgbm", 0.4), ("hist_gradient_boosting", 0.1)])
def test_onnx_trees_writes_multi_class_boosting_a_tree_per_class(model, smaller):
    """Multi-class boosting grows one tree per class each iteration: each leaf adds to its tree's class, then a
    Softmax; the same probabilities as the model, in the variant and in the exported pipeline graph."""
    import onnx

    from frugalml.runtime.sessions import OnnxPredictor

    from frugalml.candidates.export import export_onnx

    from frugalml.runtime.model_dir import load_skops, skops_bytes
    from frugalml.compression.onnx_trees import OnnxTreesConfig

    df = linear_data(n=400)
    df = df.assign(label=np.where(df["x1"] > 0.5, "a", np.where(df["x1"] < -0.5, "b", "c")))
    task = load_task(df, "label")
    c = CANDIDATES.get(model)
    pipe = build_pipeline(c.build("classification", 0), task.schema, c.scale).fit(task.X, task.y)
    t = TECHNIQUES.get("onnx-trees")
    assert t.applies_to(pipe)
    new = compress(pipe, OnnxTreesConfig())
    X = task.X
    np.testing.assert_allclose(new.predict_proba(X), pipe.predict_proba(X), atol=1e-6)
    assert np.array_equal(new.predict(X), pipe.predict(X))
    attrs, post = new.steps[-1][1].nodes()
    assert attrs["n_targets"] == 3 and sorted(set(attrs["leaf_targetids"])) == [0, 1, 2] and post.op_type == "Softmax"
    after = export_onnx(new, task.schema)
    graph = OnnxPredictor(after, task.schema)
    np.testing.assert_allclose(graph.predict_proba(X), new.predict_proba(X), atol=1e-6)
    assert np.array_equal(graph.predict(X), pipe.predict(X))
    assert {o.domain: o.version for o in onnx.load_from_string(after).opset_import}["ai.onnx.ml"] == 5
    before = export_onnx(pipe, task.schema, compact_trees=False) if model == "lightgbm" else skops_bytes(pipe)
    assert len(after) < smaller * len(before)
    np.testing.assert_array_equal(load_skops(skops_bytes(new), "test").predict_proba(X), new.predict_proba(X))


def test_onnx_trees_keeps_one_leaf_trees():
    from sklearn.ensemble import RandomForestRegressor

    from frugalml.compression.onnx_trees import CompactTreesRegressor

    X = np.random.default_rng(0).normal(size=(50, 2))
    y = np.where(np.arange(50) == 0, 2.0, 1.0)  # bootstrap samples without row 0 grow a single leaf
    rf = RandomForestRegressor(20, random_state=0).fit(X, y)
    assert min(e.tree_.node_count for e in rf.estimators_) == 1
    np.testing.assert_allclose(CompactTreesRegressor().from_trees(rf, 2).predict(X), rf.predict(X), rtol=1e-6)


def _digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["pickle", "corrupt", "columns", "technique", "too small", "onnx", "labels",
                                  "threads"])
def test_bad_input_exits_2_and_never_touches_the_model(case, harm_run, tmp_path, capsys):
    from frugalml.cli import main

    model = harm_run / "rf"
    data = str(harm_run / "held.csv")
    args = []
    if case == "pickle":
        bad = tmp_path / "model.pkl"
        bad.write_bytes(pickle.dumps({"x": 1}))
        model, needle = bad, "pickle"
    elif case == "corrupt":
        bad = tmp_path / "m"
        bad.mkdir()
        (bad / "meta.json").write_text((model / "model" / "meta.json").read_text())
        (bad / "model.skops").write_bytes((model / "model" / "model.skops").read_bytes()[:500])
        model, needle = bad, "not a valid skops file"
    elif case == "columns":
        import pandas as pd

        pd.read_csv(data).drop(columns=["x2"]).to_csv(tmp_path / "d.csv", index=False)
        data, needle = str(tmp_path / "d.csv"), "missing column(s) 'x2'"
    elif case == "technique":
        args, needle = ["--techniques", "magic"], "unknown technique 'magic'"
    elif case == "threads":
        args, needle = ["--threads", "0"], "--threads"
    elif case == "too small":
        import pandas as pd

        pd.read_csv(data).head(20).to_csv(tmp_path / "d.csv", index=False)
        data, needle = str(tmp_path / "d.csv"), "at least 40"
    elif case == "onnx":  # a bare graph is read against the data: it needs to be told the target
        model, needle = model / "model" / "model.onnx", "ONNX file does not say which column it predicts"
    else:
        import pandas as pd

        pd.read_csv(data).assign(y=7).to_csv(tmp_path / "d.csv", index=False)
        data, needle = str(tmp_path / "d.csv"), "never saw"
    before = _digest(harm_run / "rf")
    code = main(["compress", str(model), "--data", data, "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert _digest(harm_run / "rf") == before


def test_cost_options_reach_the_run(harm_run, tmp_path):
    import json

    from frugalml.cli import main

    code = main(["compress", str(harm_run / "rf"), "--data", str(harm_run / "held.csv"), "--techniques",
                 "tree-subset", "--no-memory-probe", "--throughput-batch", "64", "--quiet", "--out",
                 str(tmp_path / "c")])
    d = json.loads((tmp_path / "c" / "decision.json").read_text())
    assert code == 0 and d["settings"]["cost"]["batch_large"] == 64 and d["settings"]["cost"]["memory_probe"] is False
    assert all(c["cost"]["peak_memory_mb"] is None for c in d["candidates"])  # not probed: NaN -> null


def test_tree_prune_matches_the_forest_better_than_the_first_trees():
    from frugalml.compression.tree_prune import TreePruneConfig
    from frugalml.data import prepare_frame

    df = linear_data(n=3000, seed=2)
    df = df.assign(label=df.x1 * 2 - df.x2 + np.random.default_rng(0).normal(size=len(df)))
    task = load_task(df.iloc[:1000], "label")
    c = CANDIDATES.get("random_forest")
    pipe = build_pipeline(c.build("regression", 0), task.schema, False).fit(task.X, task.y)
    X_cal, X_new = prepare_frame(df.iloc[1000:2000], task.schema), prepare_frame(df.iloc[2000:], task.schema)
    full = pipe.predict(X_new)
    for k in (5, 10, 20):
        pruned = compress(pipe, TreePruneConfig(k), calibration=(X_cal, None))
        first = compress(pipe, TreeSubsetConfig(k))
        assert len(pruned.steps[-1][1].estimators_) == k
        assert np.mean((pruned.predict(X_new) - full) ** 2) < np.mean((first.predict(X_new) - full) ** 2)
    assert len(pipe.steps[-1][1].estimators_) == 100


def _walk(tree, X, depth):
    """Reference for tree-depth: follow the original tree down to ``depth`` and read the node's value."""
    t = tree.tree_
    out = []
    for x in X:
        node, d = 0, 0
        while t.children_left[node] != -1 and d < depth:
            node = t.children_left[node] if x[t.feature[node]] <= t.threshold[node] else t.children_right[node]
            d += 1
        out.append(t.value[node][0])
    return np.array(out)


@pytest.mark.parametrize("kind", ["forest", "regressor", "tree"])
def test_tree_depth_cuts_every_tree_at_the_depth(kind):
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    from frugalml.compression.tree_depth import TreeDepthConfig

    if kind == "regressor":
        X, y = make_regression(600, 5, noise=10, random_state=0)
        model = RandomForestRegressor(10, random_state=0).fit(X, y)
    else:
        X, y = make_classification(600, 8, random_state=0)
        model = (RandomForestClassifier(10, random_state=0) if kind == "forest"
                 else DecisionTreeClassifier(random_state=0)).fit(X, y)
    pipe = Pipeline([("model", model)])
    originals = model.estimators_ if kind != "tree" else [model]
    before = ([t.tree_.node_count for t in originals], pipe.predict(X))
    cut = compress(pipe, TreeDepthConfig(4))
    trees = cut[-1].estimators_ if kind != "tree" else [cut[-1]]
    assert all(t.tree_.max_depth == 4 and t.get_depth() == 4 for t in trees)
    assert sum(t.tree_.node_count for t in trees) * 2 < sum(t.tree_.node_count for t in originals)
    ref = np.mean([_walk(t, X, 4) for t in originals], axis=0)  # (n, classes) or (n, 1)
    if kind == "regressor":
        np.testing.assert_allclose(cut.predict(X), ref[:, 0], rtol=1e-9)
    else:
        np.testing.assert_allclose(cut.predict_proba(X), ref / ref.sum(1, keepdims=True), atol=1e-9)
    assert [t.tree_.node_count for t in originals] == before[0]  # the input model is untouched
    np.testing.assert_array_equal(pipe.predict(X), before[1])
    from frugalml.runtime.model_dir import load_skops, skops_bytes

    again = load_skops(skops_bytes(cut), "cut")
    np.testing.assert_array_equal(again.predict(X), cut.predict(X))


def test_a_distilled_student_keeps_every_class_the_teacher_knows():
    """The teacher never answers its rare class on the calibration rows: the student still has that column
    (probability about 0), so a saved student answers as many columns as the schema has classes."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from frugalml.compression.distill import DistillConfig

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 2)  # class 2 or 3: a few rows with a large second feature
    pipe = Pipeline([("s", StandardScaler()), ("m", RandomForestClassifier(n_estimators=20, random_state=0))])
    pipe.fit(X, y)
    calibration = X[X[:, 1] < 1.5]
    assert len(np.unique(pipe.predict(calibration))) < len(pipe.classes_)
    for cfg in (DistillConfig("linear"), DistillConfig("tree", 4)):
        student = compress(pipe, cfg, calibration=(calibration, None))
        proba = student.predict_proba(X)
        assert list(student.classes_) == list(pipe.classes_) and proba.shape == (len(X), len(pipe.classes_))
        assert proba[:, -1].max() < 1e-3  # the class it never saw answered
        assert np.mean(student.predict(calibration) == pipe.predict(calibration)) > 0.95
