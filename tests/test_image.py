"""Image tasks: builtin:elpv, the user's own images (a table of paths or a folder), the image ladder at several
resolutions through select, the deployed ONNX model on paths, bytes and arrays, and bad input."""

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import frugalml
from frugalml.cli import main


def elpv():
    from frugalml.data.builtin import DATASETS

    return DATASETS.get("elpv").load()


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """120 elpv cells, 30 of each (type, defective), copied beside a CSV that names them by relative path."""
    folder = tmp_path_factory.mktemp("cells")
    df = elpv()
    df = pd.concat([d.sample(30, random_state=0) for _, d in df.groupby(["type", "defective"])], ignore_index=True)
    (folder / "img").mkdir()
    for path in df["image"]:
        shutil.copy(path, folder / "img")
    df["image"] = ["img/" + p.rsplit("/", 1)[1] for p in df["image"]]
    df.drop(columns="level").to_csv(folder / "cells.csv", index=False)
    return folder / "cells.csv"


def test_builtin_elpv_is_the_dataset_its_paper_describes():
    from frugalml.data import load_task

    t = load_task("builtin:elpv")
    assert t.n_rows == 2624 and t.schema.image == ["image"] and t.image_channels == 1
    assert t.schema.classes == ["no", "yes"] and int(t.y.sum()) == 821  # probability >= 0.5
    assert {k: int((v == k).sum()) for v in t.groups.values() for k in ("mono", "poly")} == {"mono": 1074, "poly": 1550}
    assert t.schema.numeric == t.schema.categorical == [] and "level" in t.dropped_columns
    four = load_task("builtin:elpv", "level")
    assert four.schema.classes == ["0", "1", "1/3", "2/3"] and np.bincount(four.y).tolist() == [1508, 715, 295, 106]


def test_a_folder_of_class_folders_is_a_table(tmp_path):
    from frugalml.data import load_task

    paths = elpv()["image"].head(6)
    for k, p in enumerate(paths):
        (tmp_path / ("ok" if k % 2 else "cracked")).mkdir(exist_ok=True)
        shutil.copy(p, tmp_path / ("ok" if k % 2 else "cracked") / f"c{k}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    t = load_task(str(tmp_path), min_rows=2)
    assert t.schema.target == "label" and t.schema.classes == ["cracked", "ok"] and t.n_rows == 6


def test_each_image_is_decoded_once_per_resolution_across_the_folds(cells, monkeypatch):
    from frugalml.candidates import CANDIDATES, tables
    from frugalml.candidates.image import ImageFeatures
    from frugalml.data import load_task, make_splits
    from frugalml.evaluation import evaluate_quality, resolve_metric

    monkeypatch.setattr(tables, "_TABLES", type(tables._TABLES)())
    seen, real = [], ImageFeatures._embed

    def counting(self, values):
        seen.extend((self.resolution, v) for v in values)
        return real(self, values)

    monkeypatch.setattr(ImageFeatures, "_embed", counting)
    task = load_task(str(cells), "defective", image=["image"], groups=["type"])
    splits = make_splits(task, 3, 2, 0)
    metric = resolve_metric("accuracy", task.kind, 2)
    chosen = [CANDIDATES.get("pixels_linear@32"), CANDIDATES.get("hog_linear@64")]
    shared = evaluate_quality(task, chosen, splits, metric, n_jobs=1)
    assert sorted(seen) == sorted((r, p) for r in (32, 64) for p in task.X["image"])  # once per image and size
    monkeypatch.setattr(tables, "embed_distinct", lambda *a, **k: [])
    alone = evaluate_quality(task, chosen, splits, metric, n_jobs=1)
    for a, b in zip(shared, alone):  # the same scores as decoding in every fold
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-9)


@pytest.mark.slow
def test_select_on_images_deploys_one_onnx_graph_from_pixels(cells, tmp_path, fast_cost, validate_decision):
    """dummy, HOG at two resolutions and the frozen backbone at two, on 120 cells (the small CNN: in the compress
    test): a valid decision with each candidate's resolution, a report that shows it, and a model that loads and
    predicts on paths, encoded bytes and arrays of other sizes as the native pipeline does."""
    from dataclasses import replace

    cost = replace(fast_cost, memory_probe=True, throughput_budget_s=0.5)  # a backbone at 224 px: 10 ms an image
    run = frugalml.select(str(cells), "defective", image="image", groups=["type"], folds=3, repeats=1,
                          candidates=["dummy", "hog_linear@32", "hog_linear@64", "effnet_linear@64",
                                      "effnet_linear@224"],
                          out=tmp_path / "run", cost=cost, stability_draws=20, n_jobs=2)
    d = run.decision
    validate_decision(d)
    by = {c["name"]: c for c in d["candidates"]}
    assert not d["failed"] and set(by) == {"dummy", "hog_linear@32", "hog_linear@64", "effnet_linear@64",
                                          "effnet_linear@224"}
    assert {n: c.get("resolution") for n, c in by.items()} == {"dummy": None, "hog_linear@32": 32,
                                                              "hog_linear@64": 64, "effnet_linear@64": 64,
                                                              "effnet_linear@224": 224}
    assert d["data"]["image"] == ["image"] and all(c["cost"]["format"] == "onnx" for n, c in by.items() if n != "dummy")
    # the resolution knob moves the cost: more HOG features at 64 px; the backbone at 224 px is slower than at 64
    assert by["hog_linear@64"]["cost"]["params"] > 3 * by["hog_linear@32"]["cost"]["params"]
    # (about 4x on a quiet 2-vCPU machine: 12 times the pixels; 1.96x seen once with the machine busy)
    assert by["effnet_linear@224"]["cost"]["latency_ms_p50"] > 1.3 * by["effnet_linear@64"]["cost"]["latency_ms_p50"]
    assert all(np.isfinite(c["cost"]["peak_memory_mb"]) for c in by.values())
    assert "224 px" in (tmp_path / "run" / "report.html").read_text()

    model = frugalml.load(tmp_path / "run")
    native = frugalml.load(tmp_path / "run", native=True)
    table = pd.read_csv(cells)
    paths = [str(cells.parent / p) for p in table["image"][:8]]
    arrays = [np.asarray(Image.open(p)) for p in paths]
    encoded = [open(p, "rb").read() for p in paths]
    bigger = [np.asarray(Image.fromarray(a).resize((340, 300))) for a in arrays]  # another size, not square
    rgb = [np.repeat(a[:, :, None], 3, axis=2) for a in arrays]  # a colour copy of a grayscale image
    expected = native.predict(paths)
    for images in (paths, arrays, encoded, rgb):
        np.testing.assert_array_equal(model.predict(images), expected)
    np.testing.assert_allclose(model.predict_proba(paths), native.predict_proba(paths), atol=1e-4)
    assert set(model.predict(bigger)) <= {"no", "yes"}
    assert set(model.predict(pd.DataFrame({"image": paths}))) <= {"no", "yes"}
    meta = json.loads((tmp_path / "run" / "model" / "meta.json").read_text())
    assert meta["schema"]["image"] == ["image"]


def _cells(tmp_path, rows=12):
    df = elpv().head(rows)[["image", "type", "defective"]].copy()
    df.loc[df.index[:rows // 2], "defective"] = "yes"
    df.loc[df.index[rows // 2:], "defective"] = "no"
    return df


def _csv(tmp_path, df):
    path = tmp_path / "cells.csv"
    df.to_csv(path, index=False)
    return str(path)


def _broken(tmp_path, df, how):
    df = df.copy()
    if how == "missing":
        df.loc[df.index[3], "image"] = str(tmp_path / "gone.png")
    elif how == "unreadable":
        (tmp_path / "bad.png").write_bytes(open(df["image"].iloc[3], "rb").read()[:300])  # a torn PNG
        df.loc[df.index[3], "image"] = str(tmp_path / "bad.png")
    elif how == "not an image":
        (tmp_path / "notes.png").write_text("hello")
        df.loc[df.index[3], "image"] = str(tmp_path / "notes.png")
    elif how == "not a path":  # a column of numbers named as the image column
        df["image"] = np.arange(len(df)) + 0.5
    return _csv(tmp_path, df)


@pytest.mark.parametrize("how, needle", [("missing", "gone.png (column 'image', row 4) not found"),
                                         ("unreadable", "cannot read image"), ("not an image", "cannot read image"),
                                         ("not a path", "holds 0.5 in row 1, not a file path")])
def test_a_bad_image_is_one_line_and_nothing_is_written(tmp_path, capsys, how, needle):
    out = tmp_path / "out"
    code = main(["select", _broken(tmp_path, _cells(tmp_path), how), "--target", "defective", "--image", "image",
                 "--folds", "2", "--out", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not out.exists()


def test_a_folder_with_one_class_and_other_image_mistakes_are_refused(tmp_path, capsys):
    (tmp_path / "only" / "ok").mkdir(parents=True)
    shutil.copy(elpv()["image"].iloc[0], tmp_path / "only" / "ok" / "a.png")
    cases = [
        (["select", str(tmp_path / "only")], "single class ('ok')"),
        (["select", _csv(tmp_path, _cells(tmp_path)), "--target", "defective", "--image", "nope"],
         "image column 'nope' not found"),
        (["select", _csv(tmp_path, _cells(tmp_path)), "--target", "defective", "--image", "image", "--candidate",
          "linear"], "does not read images"),
        (["select", _csv(tmp_path, _cells(tmp_path)), "--target", "defective", "--candidate", "hog_linear@32"],
         "--image COL"),
    ]
    for args, needle in cases:
        code = main([*args, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_images_of_mixed_sizes_and_modes_decode_to_the_models_resolution():
    """Every image is squeezed to R x R: a user's images may differ in size, and in colour."""
    from frugalml.data.images import decode

    gray = np.arange(300 * 200, dtype=np.uint32).reshape(300, 200).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(gray).save(png, format="PNG")
    colour = np.dstack([gray[:150, :150]] * 3)
    out = decode([gray, png.getvalue(), colour], 32, 1)
    assert out.shape == (3, 1, 32, 32) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], out[1])  # an array and its PNG bytes decode alike
    assert decode([colour], 48, 3).shape == (1, 3, 48, 48)
    with pytest.raises(frugalml.errors.DataError, match="uint8"):
        decode([gray.astype(np.float64)], 32, 1)


@pytest.mark.slow
def test_compress_keeps_a_cnn_variant_that_holds_per_group(cells, tmp_path, fast_cost, validate_decision):
    """The guard on a small CNN: its ONNX graph quantized to int8 (dynamic, and static on calibration images) and
    in float16, each judged per group against the original; the kept one loads and predicts on image files."""
    from dataclasses import replace

    fast_cost = replace(fast_cost, throughput_budget_s=0.5)
    frugalml.select(str(cells), "defective", image="image", groups=["type"], folds=2, repeats=1,
                    candidates=["small_cnn@32"], out=tmp_path / "sel", cost=fast_cost, stability_draws=0, n_jobs=2)
    # the graph techniques (channel pruning and distillation have tests of their own)
    run = frugalml.compress(tmp_path / "sel", str(cells), groups=["type"], out=tmp_path / "cmp", cost=fast_cost,
                            techniques=["onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16"])
    d = run.decision
    validate_decision(d)
    tried = {c["name"].split(":")[0] for c in d["candidates"]}
    assert {"original", "onnx-int8-dynamic", "onnx-int8-static", "onnx-fp16"} <= tried
    assert all(set(c["groups"]) == {"type=mono", "type=poly"} for c in d["candidates"])
    kept = {c["name"]: c for c in d["candidates"]}[d["recommended"]]
    original = {c["name"]: c for c in d["candidates"]}["original"]
    assert kept["cost"]["format"] == "onnx" and kept["cost"]["size_bytes"] <= original["cost"]["size_bytes"]
    model = frugalml.load(tmp_path / "cmp")
    paths = [str(cells.parent / p) for p in pd.read_csv(cells)["image"][:6]]
    assert set(model.predict(paths)) <= {"no", "yes"} and model.predict_proba(paths).shape == (6, 2)


def test_the_fine_tuned_backbone_starts_from_imagenet_and_exports_whole(cells):
    """effnet_finetune: the frozen trunk and the copied last block compute the pretrained network exactly (before
    its new linear layer); fitted, its one ONNX graph from pixels gives its probabilities."""
    import torch

    from frugalml.candidates import build_pipeline
    from frugalml.candidates.efficientnet_lite import FineTunedHead, PixelFeatures, PixelTrunk
    from frugalml.candidates.image import EffNetFineTuned, ImageFeatures
    from frugalml.data import load_task
    from frugalml.runtime.sessions import ort_session

    x = torch.rand(3, 1, 64, 64) * 255
    head = FineTunedHead(15, 64, 2).eval()
    with torch.inference_mode():
        h = PixelTrunk(1, 15)(x).reshape(-1, *head.shape)
        for block in head.blocks:
            h = block(h)
        pooled = torch.nn.functional.relu6(head.bn(head.conv_head(h))).mean((2, 3))
        np.testing.assert_allclose(pooled.numpy(), PixelFeatures(1)(x).numpy(), atol=1e-5)

    task = load_task(str(cells), "defective", image=["image"])
    pipe = build_pipeline(EffNetFineTuned(ImageFeatures("efficientnet-lite0:15", 32), epochs=1), task.schema, False)
    pipe.fit(task.X.iloc[:80], task.y[:80])
    model = pipe[-1]
    rest = task.X.iloc[80:96]
    pixels = model.features_.pixels(list(rest["image"]))
    onnx = ort_session(model.export_onnx(), 1).run(["probabilities"], {"image": pixels})[0]
    np.testing.assert_allclose(onnx, pipe.predict_proba(rest), atol=1e-4)
    trunk = model.features_.frugal_param_count()
    assert 2e6 < trunk < 2.5e6 and model.frugal_param_count() == trunk + sum(
        p.numel() for p in model.torch_network().parameters())


def test_an_efficientnet_model_distills_into_the_small_cnn(cells):
    """cnn-distill: a student CNN at 32 px trained on the teacher's probabilities for the calibration images; it
    follows the teacher more than the labels, and exports to one ONNX graph."""
    from frugalml.candidates import build_pipeline
    from frugalml.candidates.image import ImageFeatures, ImageLinear, SmallCNN
    from frugalml.compression import TECHNIQUES, compress
    from frugalml.compression.distill_cnn import CNNDistillConfig
    from frugalml.data import load_task

    task = load_task(str(cells), "defective", image=["image"])
    teacher = build_pipeline(ImageLinear(ImageFeatures("efficientnet-lite0", 64)), task.schema, False)
    teacher.fit(task.X, task.y)
    assert TECHNIQUES.get("cnn-distill").applies_to(teacher)
    assert [c.resolution for c in TECHNIQUES.get("cnn-distill").settings(teacher)] == [32, 64]
    before = teacher.predict_proba(task.X)
    calibration = task.X.iloc[::2], task.y[::2]  # 60 images, as compress would give it part of the rows
    student = compress(teacher, CNNDistillConfig(32), calibration=calibration)
    np.testing.assert_array_equal(teacher.predict_proba(task.X), before)  # the teacher is not modified
    model = student[-1]
    assert isinstance(model, SmallCNN) and model.resolution == 32 and list(model.classes_) == [0, 1]
    follows = (student.predict(task.X) == teacher.predict(task.X)).mean()
    assert follows >= 0.7, follows
    assert not TECHNIQUES.get("cnn-distill").applies_to(student)  # a CNN is not distilled again
    from frugalml.runtime.sessions import ort_session

    pixels = model.features_.pixels(list(task.X["image"][:5]))
    np.testing.assert_allclose(ort_session(model.export_onnx(), 1).run(["probabilities"], {"image": pixels})[0],
                               student.predict_proba(task.X.iloc[:5]), atol=1e-4)


@pytest.mark.parametrize("name", ["pixels_linear@32", "hog_linear@32", "small_cnn@32", "effnet_linear@64",
                                  "effnet_finetune@32"])
def test_image_candidates_follow_the_estimator_rules(cells, name):
    """What tests/test_conformance.py checks of every tabular and text candidate, on images: the factory builds
    equal estimators, clone and get_params round-trip, fit returns the model and leaves its input alone, and the
    fitted pipeline survives skops (frugalml's trusted types only) with the same probabilities."""
    from sklearn.base import clone

    from frugalml.candidates import build_pipeline, ladder
    from frugalml.data import load_task
    from frugalml.runtime.model_dir import load_skops, skops_bytes

    cand = ladder("classification", [name], image=True)[0]
    assert cand.image and cand.resolution == int(name.split("@")[1])
    est = cand.build("classification", 0)
    assert repr(est) == repr(cand.build("classification", 0)) == repr(clone(est))
    assert clone(est).set_params(**est.get_params()).get_params().keys() == est.get_params().keys()
    task = load_task(str(cells), "defective", image=["image"])
    X, y = task.X.iloc[::2], task.y[::2]
    before = X.copy()
    pipe = build_pipeline(est, task.schema, cand.scale)
    assert pipe.fit(X, y) is pipe and pipe[-1].fit(pipe[:-1].transform(X), y) is pipe[-1]
    pd.testing.assert_frame_equal(X, before)
    back = load_skops(skops_bytes(pipe), name)
    np.testing.assert_allclose(back.predict_proba(task.X.iloc[1::8]), pipe.predict_proba(task.X.iloc[1::8]), atol=1e-6)
