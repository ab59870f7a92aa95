"""Quantized weights made once (runtime/lm/weight_cache.py): the second load reads them, with the same greedy
tokens; a damaged file is made again; changed weights get a key of their own."""

import json
import os

import pytest

import torch
import transformers  # noqa: F401  (an installed extra: a missing one fails, never skips)

from frugalml.runtime.lm import weight_cache  # noqa: E402
from frugalml.runtime.lm.engine import Engine, EngineConfig  # noqa: E402
from frugalml.runtime.lm.formats.int4 import Int4WeightOnlyConfig  # noqa: E402
from frugalml.runtime.lm.formats.int8 import Int8WeightOnlyConfig  # noqa: E402
from lm_models import cache_in_tmp, tiny_folder  # noqa: E402,F401  (cache_in_tmp: autouse)

FORMATS = {"int8": Int8WeightOnlyConfig, "int4": Int4WeightOnlyConfig}
PROMPT = list(range(3, 20))


@pytest.fixture
def folder(tmp_path):
    return tiny_folder(tmp_path / "m")[0]


def tokens(folder, **config):
    return Engine.load(str(folder), EngineConfig(**config)).generate(PROMPT, 16)[0].tokens


def no_quantizing(monkeypatch):
    def refuse(self, linear):
        raise AssertionError("quantized again instead of reading the cache")

    for cls in FORMATS.values():
        monkeypatch.setattr(cls, "convert_linear", refuse)


def cached_files(cache):
    return sorted(cache.glob("*.safetensors"))


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_second_load_reads_the_cache_with_the_same_tokens(kind, folder, cache_in_tmp, monkeypatch):
    first = tokens(folder, quantize=kind)
    assert [p.name.split("-")[0] for p in cached_files(cache_in_tmp)] == [kind]
    no_quantizing(monkeypatch)
    assert tokens(folder, quantize=kind) == first
    # a self-draft of the same format quantizes the same weights: the same file serves it
    draft = Engine.load(str(folder), EngineConfig(quantize=kind, draft=f"self:{kind}"))
    assert draft.generate(PROMPT, 16)[0].tokens == first and len(cached_files(cache_in_tmp)) == 1


def test_no_cache_quantizes_and_keeps_nothing(folder, cache_in_tmp):
    assert tokens(folder, quantize="int4", cache=False) == tokens(folder, quantize="int4")
    assert len(cached_files(cache_in_tmp)) == 1  # from the second load only


@pytest.mark.parametrize("damage", ["truncated", "garbage", "another key", "missing layer"])
def test_damaged_cache_file_is_made_again(damage, folder, cache_in_tmp, caplog):
    first = tokens(folder, quantize="int4")
    [path] = cached_files(cache_in_tmp)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    else:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(path))
        if damage == "missing layer":
            tensors = {k: v for k, v in tensors.items() if not k.startswith("lm_head.")}
        save_file(tensors, str(path), metadata={"key": "0" * 64 if damage == "another key" else path_key(path)})
    assert tokens(folder, quantize="int4") == first
    assert "quantizing again" in caplog.text
    assert path.read_bytes() == data  # made again, whole


def path_key(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["key"]


def test_changed_weights_get_another_key(tmp_path, folder, cache_in_tmp):
    tokens(folder, quantize="int8")
    other = tiny_folder(tmp_path / "other", seed=7)[0]  # same shapes and size, other weights
    weights = folder / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes((other / "model.safetensors").read_bytes())
    assert weights.stat().st_size == stat.st_size
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    assert tokens(folder, quantize="int8") == tokens(folder, quantize="int8", cache=False)
    assert len(cached_files(cache_in_tmp)) == 2


def test_file_hashes_are_remembered_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_cache, "RECENT_NS", -1)  # remember files however recently written
    source = tmp_path / "weights.bin"
    source.write_bytes(b"a" * 1000)
    cache = weight_cache.WeightCache.for_sources([source])
    real = cache.file_hash(source)
    index_path = cache.folder / "hashes.json"
    index = json.loads(index_path.read_text())
    index[str(source.resolve())]["sha256"] = "remembered"
    index_path.write_text(json.dumps(index))
    assert cache.file_hash(source) == "remembered"  # not read again
    stat = source.stat()
    source.write_bytes(b"b" * 1000)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.file_hash(source) not in ("remembered", real)
    index_path.write_text("{not json")
    assert cache.file_hash(source) == cache.file_hash(source) != real


def test_unwritable_cache_folder_only_costs_the_cache(folder, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FRUGAL_CACHE_DIR", str(blocker / "lm"))
    assert tokens(folder, quantize="int8") == tokens(folder, quantize="int8", cache=False)
    assert "could not keep" in caplog.text


def test_generate_cli_reads_the_cache_and_takes_no_cache(folder, cache_in_tmp, capsys, monkeypatch):
    from frugalml.cli import main

    args = ["generate", str(folder), "w1 w2 w3", "--max-new-tokens", "8", "--quantize", "int4"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "loaded in" in err and len(cached_files(cache_in_tmp)) == 1
    for path in cached_files(cache_in_tmp):
        path.unlink()
    assert main([*args, "--no-cache"]) == 0 and capsys.readouterr().out == out
    assert not cached_files(cache_in_tmp)
    assert main(args) == 0
    no_quantizing(monkeypatch)
    assert main(args) == 0 and capsys.readouterr().out == out + out


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_weights_read_from_the_cache_are_aligned_and_run_at_every_batch_size(kind, folder, cache_in_tmp):
    """The packed int8 kernel reads with aligned loads: a weight at a file offset crashed it at 4 rows."""
    tokens(folder, quantize=kind)  # made and kept
    model = Engine.load(str(folder), EngineConfig(quantize=kind)).model  # read back
    buffers = [b for m in model.modules() if type(m).__module__.startswith("frugalml.runtime.lm.formats")
               for b in m.buffers()]
    assert buffers and all(b.data_ptr() % 64 == 0 for b in buffers)
    with torch.inference_mode():
        for rows in range(1, 9):
            assert model.lm_head(torch.randn(rows, 1, model.spec.hidden_size)).shape[0] == rows
