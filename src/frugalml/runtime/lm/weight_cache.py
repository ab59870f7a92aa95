"""Quantized weights made once: the tensors a quantized format made of a model, kept as safetensors in a cache
folder and read back on the next load instead of quantizing again (SmolLM2-135M on 2 cores: int4 0.60 -> 0.26 s,
int8 0.24 -> 0.01 s; the gain grows with the model; benchmarks/RESULTS.md).

Folder: ``$FRUGAL_CACHE_DIR``, else ``~/.cache/frugalml/lm``. A file's key is the sha256 of the source files'
contents, the format with its options and layout version, the dtype of the weights quantized, and the names
and shapes of the model's linear layers (a draft cut to fewer layers is a model of its own). The key is in the
file's name and in its header; a file that does not read back (damaged, truncated, another key, a layer
missing) is deleted and the weights are quantized again. Files are written under a temporary name and renamed.

Hashing costs 0.15 s for a 100 MB GGUF file here, seconds for a folder of several GB: ``hashes.json`` in the
folder remembers each source file's hash under its path, size, inode and change times, so any write to the file
(which moves its mtime and ctime) makes it hashed again. A file changed in the last few seconds is not
remembered: a coarse file-system clock could give a second change within the same tick the same times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from ...errors import need
from .formats import WeightFormat

log = logging.getLogger(__name__)
RECENT_NS = 5 * 10**9  # a file changed this recently is hashed every time
CHUNK_BYTES = 8 * 2**20


def cache_dir() -> Path:
    return Path(os.environ.get("FRUGAL_CACHE_DIR") or Path.home() / ".cache" / "frugalml" / "lm")


@dataclass(frozen=True)
class WeightCache:
    sources: tuple[Path, ...]  # the files the model's weights come from
    folder: Path

    @classmethod
    def for_sources(cls, sources) -> "WeightCache":
        return cls(tuple(Path(p) for p in sources), cache_dir())

    def convert(self, model: nn.Module, fmt: WeightFormat) -> None:
        """``fmt.convert(model)``, through the cache."""
        key = self.key(model, fmt)
        path = self.folder / f"{fmt.name}-{key[:32]}.safetensors"
        if path.exists():
            try:
                fmt.restore(model, read(path, key))
                log.info("%s weights read from %s", fmt.name, path)
                return
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                log.warning("cached %s weights %s do not read back (%s); quantizing again", fmt.name, path,
                            str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                path.unlink(missing_ok=True)
        fmt.convert(model)
        try:
            write(path, key, fmt.state(model))
        except OSError as exc:
            log.warning("could not keep the %s weights in %s (%s)", fmt.name, self.folder, exc)

    def key(self, model: nn.Module, fmt: WeightFormat) -> str:
        linears = [(name, list(m.weight.shape)) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        dtype = str(next(m.weight.dtype for m in model.modules() if isinstance(m, nn.Linear)))
        what = {"sources": [[p.name, self.file_hash(p)] for p in self.sources], "format": fmt.name,
                "options": asdict(fmt), "version": fmt.version, "dtype": dtype, "linears": linears}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def file_hash(self, path: Path) -> str:
        st = path.stat()
        stamp = [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
        index_path, name = self.folder / "hashes.json", str(path.resolve())
        index = read_index(index_path)
        entry = index.get(name)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RECENT_NS:
            index[name] = {"stamp": stamp, "sha256": digest.hexdigest()}
            try:
                write_atomic(index_path, lambda tmp: tmp.write_text(json.dumps(index, indent=1)))
            except OSError as exc:
                log.warning("could not remember the hash of %s in %s (%s)", path, index_path, exc)
        return digest.hexdigest()


def read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def read(path: Path, key: str) -> dict:
    """The tensors of a cache file whose header holds ``key``; ValueError for any other file."""
    safetensors = need("safetensors", "the quantized-weight cache", "lm")
    try:
        with safetensors.safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") != key:
                raise ValueError("its header holds another key")
            return {name: aligned(f.get_tensor(name)) for name in f.keys()}
    except safetensors.SafetensorError as exc:
        raise ValueError(f"not a readable safetensors file: {exc}") from None


def aligned(t):
    """A tensor read from a file sits wherever the file put it; torch's own allocations start on 64 bytes, and
    the packed int8 kernel reads with aligned vector loads: on a misaligned weight it crashed (a segfault at 4
    rows, seen serving 4 requests at once). Copied when misaligned."""
    return t.clone() if t.data_ptr() % 64 else t


def write(path: Path, key: str, tensors: dict) -> None:
    save_file = need("safetensors.torch", "the quantized-weight cache", "lm").save_file
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata={"key": key}))


def write_atomic(path: Path, write_to) -> None:
    """``write_to(tmp)`` on a temporary name in the same folder, then renamed to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_to(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
