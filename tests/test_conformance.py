"""Conformance of every registered candidate and compression technique, in the spirit of scikit-learn's
``check_estimator``: parametrized over the registries, so an entry registered tomorrow is checked by the same
rules without a line added here (ids are the registered names).

Candidates (tabular: binary, three-class and regression tables with missing values and categories; text: a
small table of short reviews), each fitted as ``select`` fits it (``build_pipeline``):
  the factory builds the same estimator twice; ``__init__`` stores only its parameters; ``clone`` and
  ``get_params`` / ``set_params`` round-trip; ``fit`` returns self, leaves its input untouched and adds only
  attributes ending in ``_``; predictions have one value per row, in the label values it was fitted on (fitted
  on the original labels or on class indices, the same answers); ``predict_proba`` rows are probabilities that
  sum to 1 and agree with ``predict``; one row at a time answers as the batch; it beats a constant answer on
  its own training rows (the baseline excepted); it saves with skops and loads to the same predictions.

Techniques, on every fitted candidate kind above (and on a bare ONNX graph, the other kind of model ``frugal
compress`` reads), called as ``compression.search`` calls them (``settings``, then ``compress`` with the
calibration rows):
  each setting is a frozen dataclass of the technique's config type that round-trips through JSON (and through
  ``config.__dict__``, what ``decision.json`` records and a chain replays from) to an equal config, and
  dispatches to this technique alone; ``applies_to`` answers a bool on every kind; where it says yes, there is
  a setting to try and the cheapest one compresses into a variant that predicts one value per row in the
  original's classes, with probabilities, saves with skops, and that every later-stage technique can be asked
  about (the search chains on it); where it says no, ``compress`` and the search refuse it rather than make
  something; and in every case the input model, the calibration rows and the evaluation rows are left untouched
  (predictions equal, and a digest of the model's pickled state equal).

MiniLM: the default run uses a real tiny BERT (2 layers, random weights, MiniLM's tokenizer) in place of the
package's weights, as tests/test_compress_text.py does, so that every MiniLM candidate and technique is checked
in seconds; the same checks on the package's real weights are marked slow.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import pickle
import re
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from conftest import linear_data, save_tiny_bert
from frugalml.candidates import CANDIDATES, build_pipeline
from frugalml.compression import TECHNIQUES, compress
from frugalml.compression.search import technique_names
from frugalml.data import load_task, prepare_frame
from frugalml.errors import ConfigError
from frugalml.runtime.model_dir import load_skops, skops_bytes

TABLES = {"binary": "classification", "multiclass": "classification", "regression": "regression",
          "text-binary": "classification", "text-regression": "regression"}
N_TRAIN, N_CAL, N_EVAL = 200, 100, 100


# --- the kinds of fitted model, from the registries ---------------------------------------------------------

def _reads_minilm(cand) -> bool:
    """The candidate's estimator runs MiniLM (built only: no weights load until it fits)."""
    from frugalml.candidates.text import MiniLMClassifier, MiniLMEncoder

    try:
        est = cand.build(cand.tasks[0], 0)
    except Exception:  # test_candidate_conforms reports it
        return False
    parts = [est, *est.get_params(deep=True).values()]
    return any(isinstance(p, (MiniLMEncoder, MiniLMClassifier)) for p in parts)


@dataclass(frozen=True)
class Kind:
    source: str  # a registered candidate's name, or "onnx-..." (a bare ONNX file, as frugal compress reads it)
    table: str  # a key of TABLES
    real_minilm: bool = False  # a MiniLM candidate on the package's weights (slow) instead of the tiny stand-in

    @property
    def id(self) -> str:
        return f"{self.source}-{self.table}" + ("-real" if self.real_minilm else "")

    @property
    def task(self) -> str:
        return TABLES[self.table]


def candidate_kinds() -> list[Kind]:
    """Every registered candidate on every table it can fit: text candidates and the baseline (the text ladder)
    on the text table, the others on the tabular ones. Image candidates read image files, which these tables do
    not hold: tests/test_image.py checks them on real images (clone, parameters, fit, skops and ONNX round trips,
    the techniques that compress them)."""
    kinds = []
    for name, cand in CANDIDATES.items():
        if cand.image:
            continue
        tables = [t for t in TABLES if t.startswith("text") == cand.text or cand.family == "baseline"]
        for table in tables:
            if TABLES[table] in cand.tasks:
                kinds.append(Kind(name, table))
                if _reads_minilm(cand):
                    kinds.append(Kind(name, table, real_minilm=True))
    return kinds


CANDIDATE_KINDS = candidate_kinds()
MODEL_KINDS = CANDIDATE_KINDS + [Kind(g, t) for g in ("onnx-skl2onnx", "onnx-matmul") for t in ("binary", "regression")]
FAST_KINDS = [k for k in MODEL_KINDS if not k.real_minilm]


# Known failures, reported; strict, so that the fix shows here as an unexpected pass to remove from this list.
KNOWN: dict[tuple, str] = {}


def _param(kind: Kind, *values):
    """A test parameter: ``values`` then the kind, named by them; the real MiniLM's seconds per fit (minutes to
    compress) are marked slow; a known failure is marked xfail."""
    marks = [pytest.mark.slow] if kind.real_minilm else []
    if (*values, kind.id) in KNOWN:
        marks.append(pytest.mark.xfail(strict=True, raises=ValueError, reason=KNOWN[(*values, kind.id)]))
    return pytest.param(*values, kind, id="-on-".join([*values, kind.id]), marks=marks)


# --- data -----------------------------------------------------------------------------------------------------

def tabular_frame(n: int = N_TRAIN + N_CAL + N_EVAL) -> pd.DataFrame:
    """Numbers (some missing), two categorical columns (some missing), and three targets."""
    df = linear_data(n=n, seed=3)
    df.loc[::17, "x1"] = np.nan
    df.loc[::13, "colour"] = None
    x1 = df["x1"].fillna(0.0)
    df["level"] = np.where(x1 > 0.5, "high", np.where(x1 < -0.5, "low", "mid"))
    df["amount"] = 2 * x1 - df["x2"] + (df["colour"] == "red") + np.random.default_rng(1).normal(0, 0.3, n)
    return df


POSITIVE = ["great", "wonderful", "superb", "loved", "moving", "brilliant", "charming", "fresh"]
NEGATIVE = ["awful", "boring", "dull", "hated", "clumsy", "tedious", "weak", "stale"]
NEUTRAL = ["the", "film", "plot", "cast", "story", "music", "ending", "was", "really", "quite", "and", "its"]


def text_frame(n: int = N_TRAIN + N_CAL + N_EVAL) -> pd.DataFrame:
    """Short reviews: a verdict from the share of positive words, a score, a channel and a star count."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        n_pos = int(rng.integers(0, 4))
        n_neg = int(rng.integers(0, 4))
        words = list(rng.choice(NEUTRAL, 5)) + list(rng.choice(POSITIVE, n_pos)) + list(rng.choice(NEGATIVE, n_neg))
        rng.shuffle(words)
        rows.append({"review": " ".join(words), "channel": rng.choice(["web", "app", "shop"]),
                     "stars": float(np.clip(3 + n_pos - n_neg + rng.normal(0, 0.5), 1, 5)),
                     "verdict": "fresh" if n_pos > n_neg or (n_pos == n_neg and rng.random() < 0.5) else "rotten",
                     "score": n_pos - n_neg + rng.normal(0, 0.3)})
    df = pd.DataFrame(rows)
    df.loc[::29, "review"] = None  # a missing text is an empty one
    return df


TARGETS = {"binary": "label", "multiclass": "level", "regression": "amount", "text-binary": "verdict",
           "text-regression": "score"}


def split(table: str):
    """(train, calibration, evaluation) frames of a table; the other targets dropped."""
    if table.startswith("text"):
        df = text_frame()
        df = df.drop(columns=[c for c in ("verdict", "score") if c != TARGETS[table]])
    else:
        df = tabular_frame()
        df = df.drop(columns=[c for c in ("label", "level", "amount") if c != TARGETS[table]])
    return df.iloc[:N_TRAIN], df.iloc[N_TRAIN:N_TRAIN + N_CAL], df.iloc[N_TRAIN + N_CAL:]


def load(table: str, train: pd.DataFrame):
    return load_task(train, TARGETS[table], text=["review"] if table.startswith("text") else None)


def encode(schema, values: pd.Series) -> np.ndarray:
    """Target values -> what frugalml fits on: class indices (in schema.classes) or floats."""
    if schema.classes is None:
        return values.to_numpy(dtype=float)
    index = pd.Index(schema.classes).get_indexer(values)
    assert (index >= 0).all(), "a class missing from the training rows"
    return index


# --- a digest of a model's state ------------------------------------------------------------------------------

class _StatePickler(pickle.Pickler):
    """Pickles a model's state, less the query counters scikit-learn's KD and ball trees keep in theirs (n_trims,
    n_leaves, n_splits, n_calls: a k-NN teacher answering a distillation query is not a modified model)."""

    def reducer_override(self, obj):
        from sklearn.neighbors import BallTree, KDTree

        if isinstance(obj, (KDTree, BallTree)):
            state = obj.__getstate__()
            return tuple, ((type(obj).__name__, *state[:7], *state[11:]),)
        return NotImplemented


def state_digest(model) -> str:
    """SHA-256 of the pickled state (what skops saves too: caches such as ONNX Runtime sessions and rebuilt torch
    networks are left out by the models' ``__getstate__``)."""
    buf = io.BytesIO()
    _StatePickler(buf, protocol=5).dump(model)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def frame_copy(X):
    return X.copy(deep=True) if hasattr(X, "copy") else copy.deepcopy(X)


def assert_same_frame(a, b):
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    else:
        np.testing.assert_array_equal(a, b)


# --- fitted models, once per module ---------------------------------------------------------------------------

@dataclass
class Fitted:
    kind: Kind
    pipeline: object  # fitted on class indices, as select fits it
    schema: object
    X: pd.DataFrame  # training rows
    y: np.ndarray
    X_cal: pd.DataFrame
    y_cal: np.ndarray
    X_eval: pd.DataFrame
    predict: np.ndarray  # the pipeline's predictions on X_eval when fitted (the reference for "untouched")
    proba: np.ndarray | None
    digest: str

    @property
    def n_classes(self) -> int | None:
        return None if self.schema.classes is None else len(self.schema.classes)


def _onnx_graph_model(kind: Kind, folder):
    """A linear model fitted by scikit-learn, as a bare ONNX file reading one float matrix, read back by
    ``load_onnx_model`` against the data as ``frugal compress model.onnx --data ... --target ...`` does:
    "onnx-skl2onnx" as skl2onnx writes it (an ai.onnx.ml LinearClassifier / LinearRegressor node), "onnx-matmul"
    as torch.onnx.export writes a network (MatMul, Add and, for classes, Softmax)."""
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression, Ridge

    from frugalml.candidates.onnx_graph import load_onnx_model

    target = TARGETS[kind.table]
    df = tabular_frame()[["x1", "x2", "x3", target]].dropna().reset_index(drop=True)
    train, cal, held = df.iloc[:N_TRAIN], df.iloc[N_TRAIN:N_TRAIN + N_CAL], df.iloc[N_TRAIN + N_CAL:]
    X = train[["x1", "x2", "x3"]].to_numpy(np.float32)
    classify = kind.task == "classification"
    model = (LogisticRegression() if classify else Ridge()).fit(X, train[target])
    if kind.source == "onnx-skl2onnx":
        graph = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, 3]))],
                                options={id(model): {"zipmap": False}} if classify else None)
    else:
        w, b = model.coef_.reshape(-1, 3).T, np.atleast_1d(model.intercept_)  # (3, outputs), (outputs,)
        if classify and w.shape[1] == 1:  # one logistic unit: scores (0, z), so that softmax is its sigmoid
            w, b = np.hstack([np.zeros_like(w), w]), np.hstack([np.zeros_like(b), b])
        init = [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b")]
        nodes = [helper.make_node("MatMul", ["features", "w"], ["m"]),
                 helper.make_node("Add", ["m", "b"], ["scores" if classify else "prediction"])]
        if classify:
            nodes.append(helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1))
        out = "probabilities" if classify else "prediction"
        graph = helper.make_model(helper.make_graph(
            nodes, "linear", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 3])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, w.shape[1]])], init),
            opset_imports=[helper.make_opsetid("", 17)])
        graph.ir_version = 8
    path = folder / f"{kind.id}.onnx"
    path.write_bytes(graph.SerializeToString())
    pipe, schema, _ = load_onnx_model(path, df, target, [])
    return pipe, schema, train, cal, held


@contextmanager
def minilm_weights_for(kind: Kind, tiny):
    """MiniLM reads the tiny stand-in's folder, or the package's weights for a kind on the real ones."""
    import frugalml.candidates.text as text

    with pytest.MonkeyPatch.context() as mp:
        if not kind.real_minilm:
            mp.setattr(text, "model_path", lambda: tiny)
        yield


class Models:
    """Fits each kind once, on first use, and keeps its reference predictions and state digest."""

    def __init__(self, folder, tiny):
        self.folder, self.tiny = folder, tiny
        self._fitted: dict[Kind, Fitted] = {}
        self._configs: dict[str, tuple] = {}

    def get(self, kind: Kind) -> Fitted:
        if kind not in self._fitted:
            with minilm_weights_for(kind, self.tiny):
                self._fitted[kind] = self._fit(kind)
        return self._fitted[kind]

    def forget(self, kind: Kind) -> None:
        self._fitted.pop(kind, None)

    def sample_configs(self, name: str) -> tuple:
        """Configs of a technique to check: every setting it offers on the default kinds it applies to; failing
        those, its default config, or the settings it offers on any default kind."""
        if name in self._configs:
            return self._configs[name]
        t = TECHNIQUES.get(name)
        configs = []
        with minilm_weights_for(FAST_KINDS[0], self.tiny):
            for kind in FAST_KINDS:
                pipe = self.get(kind).pipeline
                if t.applies_to(pipe):
                    configs += [c for c in t.settings(pipe) if c not in configs]
            if not configs:
                try:
                    configs = [t.config()]
                except TypeError:  # a config with required fields
                    for kind in FAST_KINDS:
                        try:
                            configs = list(t.settings(self.get(kind).pipeline))
                        except Exception:  # settings that read a model it does not apply to
                            continue
                        if configs:
                            break
        assert configs, f"no config of {name} to check: it applies to no registered candidate"
        self._configs[name] = tuple(configs)
        return self._configs[name]

    def _fit(self, kind: Kind) -> Fitted:
        if kind.source.startswith("onnx-"):
            pipe, schema, train, cal, held = _onnx_graph_model(kind, self.folder)
            X, y = prepare_frame(train, schema), encode(schema, train[schema.target])
        else:
            train, cal, held = split(kind.table)
            task = load(kind.table, train)
            cand = CANDIDATES.get(kind.source)
            schema, X, y = task.schema, task.X, task.y
            pipe = build_pipeline(cand.build(task.kind, 0), schema, cand.scale).fit(X, y)
        X_cal, y_cal = prepare_frame(cal, schema), encode(schema, cal[schema.target])
        X_eval = prepare_frame(held, schema)
        proba = pipe.predict_proba(X_eval) if schema.classes is not None else None
        return Fitted(kind, pipe, schema, X, y, X_cal, y_cal, X_eval, pipe.predict(X_eval), proba, state_digest(pipe))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One BLAS / OpenMP thread, as select's worker processes fit: on the shared 2-core machine, hist gradient
    boosting's OpenMP threads fitted a 3-class model in 42 s instead of 0.2 s."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT (hidden 64, random weights) saved with MiniLM's tokenizer: the stand-in for the package's
    MiniLM in the default run (as in tests/test_compress_text.py)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(autouse=True)
def minilm_weights(request, tiny_bert):
    """MiniLM reads the tiny stand-in, except in the tests of a kind on the real weights."""
    callspec = getattr(request.node, "callspec", None)
    kind = callspec.params.get("kind") if callspec else None
    with minilm_weights_for(kind or FAST_KINDS[0], tiny_bert):
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_bert):
    return Models(tmp_path_factory.mktemp("models"), tiny_bert)


# --- candidates -----------------------------------------------------------------------------------------------

def same_params(a, b, where="") -> None:
    """The two estimators have equal parameters, nested estimators compared by their own parameters."""
    pa, pb = a.get_params(deep=False), b.get_params(deep=False)
    assert pa.keys() == pb.keys(), where
    for k, va in pa.items():
        vb = pb[k]
        if hasattr(va, "get_params") and not isinstance(va, type):
            assert type(va) is type(vb), f"{where}{k}"
            same_params(va, vb, f"{where}{k}__")
        else:
            assert repr(va) == repr(vb), f"{where}{k}: {va!r} != {vb!r}"


def init_parameters(cls) -> set[str]:
    """Parameters of the class's ``__init__`` and of its parents' (scikit-learn's trees store a parent's
    parameter that their regressors do not take, as ``check_no_attributes_set_in_init`` allows)."""
    import inspect

    return {p for c in cls.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}


def public_attributes(obj) -> set[str]:
    return {k for k in vars(obj) if not k.startswith("_")}


@pytest.mark.parametrize("kind", [_param(k) for k in CANDIDATE_KINDS])
def test_candidate_conforms(kind, models):
    cand = CANDIDATES.get(kind.source)
    train, _, _ = split(kind.table)
    task = load(kind.table, train)
    est = cand.build(kind.task, 0)

    # the factory builds the same estimator every time; __init__ stores its parameters and nothing else
    same_params(est, cand.build(kind.task, 0))
    params = est.get_params(deep=False)
    extra = public_attributes(est) - init_parameters(type(est)) - set(params)  # LightGBM: **kwargs parameters
    assert not extra, f"__init__ sets more than its parameters: {sorted(extra)}"
    assert not [k for k in public_attributes(est) if k.endswith("_")], "a learned attribute before fit"
    # clone and get_params / set_params round-trip (clone also checks that __init__ keeps each parameter as given)
    twin = clone(est)
    assert twin is not est
    same_params(est, twin)
    assert est.set_params(**params) is est
    same_params(est, twin)

    # fitted as select fits it, on the original label values: preprocessing, then the model itself
    classes = None if task.schema.classes is None else np.asarray(task.schema.classes, dtype=object)
    y = task.y if classes is None else classes[task.y]  # the original labels ("yes", "high", ...)
    X, X_before, y_before = task.X, frame_copy(task.X), y.copy()
    pipe = build_pipeline(est, task.schema, cand.scale)
    model = pipe.steps[-1][1]
    unfitted = public_attributes(model)
    Z = pipe[:-1].fit_transform(X, y)
    assert model.fit(Z, y) is model, "fit must return self"
    assert_same_frame(X, X_before)
    np.testing.assert_array_equal(y, y_before)  # fit modified neither its rows nor its targets
    learned = public_attributes(model) - unfitted
    assert learned and all(k.endswith("_") for k in learned), f"attributes set by fit: {sorted(learned)}"

    pred = pipe.predict(X)
    assert pred.shape == (len(X),)
    if classes is None:
        assert pred.dtype.kind == "f" and np.isfinite(pred).all()
    else:
        assert set(pred) <= set(classes), f"predictions outside the labels: {set(pred) - set(classes)}"
        assert list(model.classes_) == list(classes)
        proba = pipe.predict_proba(X)
        assert proba.shape == (len(X), len(classes))
        assert (proba >= -1e-9).all() and (proba <= 1 + 1e-9).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
        assert np.mean(model.classes_[proba.argmax(axis=1)] == pred) >= 0.99  # ties may break either way
    # a row at a time (how latency is measured) answers as the batch
    for i in (0, 7, len(X) - 1):
        one = pipe.predict(X.iloc[[i]])
        assert one.shape == (1,) and (one[0] == pred[i] if classes is not None else np.isclose(one[0], pred[i]))
    # it learned something from the features: better than a constant answer on its own training rows
    if cand.family != "baseline" and not (_reads_minilm(cand) and not kind.real_minilm):  # random stand-in
        if classes is None:
            r2 = 1 - np.mean((pred - y) ** 2) / np.var(y)
            assert r2 > 0.3, r2
        else:
            majority = pd.Series(y).value_counts(normalize=True).iloc[0]
            assert np.mean(pred == y) > majority + 0.1, (np.mean(pred == y), majority)
    # the skops file it is saved as loads to the same model
    again = load_skops(skops_bytes(pipe), kind.id)
    np.testing.assert_array_equal(again.predict(X), pred)
    # a clone of the fitted pipeline is an unfitted copy with the same parameters
    same_params(clone(pipe), pipe)

    # fitted on class indices (what select fits), it gives the same answers, decoded by the schema
    indexed = models.get(kind)
    pd.testing.assert_frame_equal(indexed.X, X)
    by_index = indexed.pipeline.predict(X)
    if classes is None:
        np.testing.assert_allclose(by_index, pred, rtol=1e-6, atol=1e-9)
    else:
        assert set(np.unique(by_index)) <= set(range(len(classes)))
        assert np.array_equal(classes[by_index.astype(int)], pred), "label values change what it learns"
        np.testing.assert_allclose(indexed.pipeline.predict_proba(X), pipe.predict_proba(X), atol=1e-6)


# --- techniques -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(TECHNIQUES))
def test_technique_configs_round_trip_and_dispatch(name, models):
    t = TECHNIQUES.get(name)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", t.name), "names are kebab-case (the CLI's --techniques)"
    assert dataclasses.is_dataclass(t.config) and t.config.__dataclass_params__.frozen
    assert t.config.__name__.endswith("Config") and t.stage in (0, 1, 2, 3)
    for config in models.sample_configs(name):
        assert type(config) is t.config
        assert config == config and hash(config) == hash(copy.deepcopy(config))
        # JSON, as decision.json records a variant's settings; and config.__dict__, what the search records
        text = json.dumps(dataclasses.asdict(config))
        again = t.config(**json.loads(text))
        assert again == config and hash(again) == hash(config), (text, again)
        assert t.config(**json.loads(json.dumps(config.__dict__))) == config
        # compress finds this technique, and only this one, for the config
        assert [n for n, u in TECHNIQUES.items() if isinstance(config, u.config)] == [name]
        for field in dataclasses.fields(config):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(config, field.name, getattr(config, field.name))


def _check_outputs(fitted: Fitted, variant, X) -> None:
    """A variant predicts one value per row in the original's classes (indices), with probabilities, read as the
    search reads them (``model_outputs``: a class the variant never saw gets a column of zeros)."""
    from frugalml.evaluation.quality import model_outputs

    out = model_outputs(variant, X, fitted.n_classes)
    pred = out["predict"]
    assert pred.shape == (len(X),)
    if fitted.n_classes is None:
        assert np.isfinite(np.asarray(pred, dtype=float)).all()
        return
    assert set(np.unique(pred)) <= set(range(fitted.n_classes)), "not class indices of the original"
    proba = out["predict_proba"]
    assert proba.shape == (len(X), fitted.n_classes)
    assert (proba >= -1e-6).all() and (proba <= 1 + 1e-6).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-3)  # fp16 graphs sum within 1e-3


@pytest.mark.parametrize("name, kind", [_param(k, n) for n in TECHNIQUES for k in MODEL_KINDS])
def test_technique_applies_honestly_and_leaves_its_input_untouched(name, kind, models):
    t = TECHNIQUES.get(name)
    fitted = models.get(kind)
    pipe = fitted.pipeline
    calibration = (fitted.X_cal, fitted.y_cal)
    rows_before = (frame_copy(fitted.X_cal), fitted.y_cal.copy(), frame_copy(fitted.X_eval))
    applies = t.applies_to(pipe)
    assert isinstance(applies, bool), f"applies_to answered {applies!r}"
    if applies:
        settings = t.settings(pipe)
        assert isinstance(settings, list) and all(type(c) is t.config for c in settings)
        assert settings, f"{name} says it applies to {kind.id} but has no setting to try"
        assert technique_names([name], pipe) == [name]
        variant = compress(pipe, settings[0], calibration=calibration)  # the cheapest, as the search tries first
        assert variant is not pipe
        _check_outputs(fitted, variant, fitted.X_eval)
        again = load_skops(skops_bytes(variant), name)  # what compress writes to the run
        np.testing.assert_array_equal(again.predict(fitted.X_eval), variant.predict(fitted.X_eval))
        for later in TECHNIQUES:  # the search asks later stages about the variant to chain on it
            assert isinstance(TECHNIQUES.get(later).applies_to(variant), bool), later
        if not t.needs_data:
            _check_outputs(fitted, compress(pipe, settings[0]), fitted.X_eval)
        if state_digest(pipe) != fitted.digest:
            models.forget(kind)  # refitted for the next technique, which should not be blamed
            pytest.fail(f"{name} modified the model it compressed (its pickled state changed)")
    else:
        config = models.sample_configs(name)[0]
        with pytest.raises(ConfigError, match="does not apply"):
            compress(pipe, config, calibration=calibration)
        with pytest.raises(ConfigError, match="applies"):
            technique_names([name], pipe)
    # the input model answers as before, and the rows it was given are as they were
    np.testing.assert_array_equal(pipe.predict(fitted.X_eval), fitted.predict)
    if fitted.proba is not None:
        np.testing.assert_array_equal(pipe.predict_proba(fitted.X_eval), fitted.proba)
    for before, now in zip(rows_before, (fitted.X_cal, fitted.y_cal, fitted.X_eval)):
        assert_same_frame(now, before)
