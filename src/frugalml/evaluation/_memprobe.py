"""Child process that measures the peak memory of loading each of several model folders and predicting one batch.

Run as ``python -m frugalml.evaluation._memprobe BATCH.parquet MODEL_DIR...``; prints one line per folder, in
order: the MB added to the peak resident set by loading that model and predicting the batch (``nan`` when it
cannot be measured).

Python and the runtimes (pandas, scikit-learn, skops, ONNX Runtime) are imported once, here; each model is
then measured in a process forked from this one, so every model starts from the same state and memory one
model used (and freed, or left in the allocator) cannot hide another's. A fork costs milliseconds where a
fresh interpreter with its imports costs seconds.

A fork copies the page tables of this process's own memory, not those of the shared libraries' code: the
copy would fault ONNX Runtime's pages (about 20 MB) in again and count them as the model's. So the copy first
maps the library pages this process has resident, and its baseline is this process's, as a fresh child's was.
"""

import os
import sys
import time

TIMEOUT_S = 300  # per model: a model that takes longer to load and predict one batch is reported as unknown
CHUNK_PAGES = 2048  # pagemap entries read at a time (16 kB)


def peak_mb(folder: str, batch_path: str) -> float:
    """MB added to the peak resident set by loading ``folder`` and predicting the batch, in this process."""
    import pandas as pd

    from frugalml.runtime.model_dir import load
    from frugalml.runtime.memory import reset_peak, rss_mb

    batch = pd.read_parquet(batch_path)  # before the baseline: the batch is the input, not the model
    if not reset_peak():
        return float("nan")
    base, _ = rss_mb()
    model = load(folder, threads=1)
    model.predict(batch)
    _, peak = rss_mb()
    return max(0.0, peak - base)


def resident_file_pages() -> list[tuple[int, int]]:
    """(address, bytes) runs of the file-backed pages (library code and data) resident in this process, from
    /proc/self/maps and /proc/self/pagemap (Linux; [] elsewhere)."""
    import numpy as np

    page = os.sysconf("SC_PAGE_SIZE")
    runs = []
    try:
        maps = open("/proc/self/maps").read().splitlines()
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return []
    try:
        for line in maps:
            parts = line.split(maxsplit=5)
            path = parts[5] if len(parts) == 6 else ""
            if not path.startswith("/") or (path.startswith("/dev/") and not path.startswith("/dev/shm/")) \
                    or not parts[1].startswith("r"):
                continue  # anonymous memory is copied by the fork; devices and unreadable mappings are left alone
            start, end = (int(x, 16) for x in parts[0].split("-"))
            # in small pieces: a large buffer, once freed, would stay in the heap for the model to reuse unseen
            for lo in range(start, end, CHUNK_PAGES * page):
                n = min(CHUNK_PAGES, (end - lo) // page)
                entries = np.frombuffer(os.pread(fd, n * 8, lo // page * 8), dtype=np.uint64)
                present = np.flatnonzero(entries >> np.uint64(63))  # bit 63: the page is in memory
                if not len(present):
                    continue
                breaks = np.flatnonzero(np.diff(present) != 1)  # contiguous runs of present pages
                for a, b in zip(np.r_[0, breaks + 1], np.r_[breaks, len(present) - 1]):
                    runs.append((lo + int(present[a]) * page, int(present[b] - present[a] + 1) * page))
    except (OSError, ValueError):
        return []
    finally:
        os.close(fd)
    return runs


def map_pages(runs: list[tuple[int, int]]) -> None:
    """Map ``runs`` into this process's page tables (madvise MADV_POPULATE_READ; else one read per page)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = os.sysconf("SC_PAGE_SIZE")
    for addr, size in runs:
        if libc.madvise(addr, size, 22) != 0:  # MADV_POPULATE_READ: Linux 5.14 and later
            for a in range(addr, addr + size, page):
                ctypes.string_at(a, 1)


def start_fork(folder: str, batch_path: str, resident) -> tuple[int, int]:
    """Run ``peak_mb`` in a forked copy of this process -> (pid, the pipe its answer comes back through)."""
    sys.stdout.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: measure, answer, and leave without running this process's exit handlers
        value = float("nan")
        try:
            os.close(r)
            os.dup2(2, 1)  # what a model prints (LightGBM's notes) goes to stderr; stdout carries the answers
            map_pages(resident)
            value = peak_mb(folder, batch_path)
        except BaseException:  # a model that fails to load or predict has no peak; nothing unwinds into the loop
            pass
        finally:
            try:
                os.write(w, repr(value).encode())
            finally:
                os._exit(0)
    os.close(w)
    return pid, r


def answer(r: int) -> float:
    with os.fdopen(r, "rb") as f:
        text = f.read().decode()
    try:
        return float(text)
    except ValueError:  # the copy died before answering
        return float("nan")


def measure_all(folders: list[str], batch_path: str, workers: int) -> list[float]:
    """``peak_mb`` of every folder, each in its own copy of this process, ``workers`` copies at a time (memory
    is per process: copies side by side do not see each other's)."""
    if not hasattr(os, "fork"):
        return [float("nan")] * len(folders)
    resident = resident_file_pages()
    out = [float("nan")] * len(folders)
    pending, running = list(range(len(folders))), {}  # pid -> (index, pipe, deadline)
    while pending or running:
        while pending and len(running) < workers:
            k = pending.pop(0)
            pid, r = start_fork(folders[k], batch_path, resident)
            running[pid] = (k, r, time.monotonic() + TIMEOUT_S)
        for pid, (k, r, deadline) in list(running.items()):
            done = os.waitpid(pid, os.WNOHANG) != (0, 0)
            if not done and time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                done = True
            if done:
                out[k] = answer(r)
                del running[pid]
        time.sleep(0.005)
    return out


def main() -> None:
    batch_path, folders = sys.argv[1], sys.argv[2:]
    import pandas as pd  # noqa: F401

    import frugalml.runtime.model_dir  # noqa: F401
    import frugalml.runtime.memory  # noqa: F401

    import onnxruntime  # noqa: F401,I001  (imported before the baseline: it is the runtime, not the model)
    import pyarrow.parquet  # noqa: F401
    import sklearn  # noqa: F401
    import skops.io  # noqa: F401

    for value in measure_all(folders, batch_path, max(1, os.cpu_count() or 1)):
        print(value)


if __name__ == "__main__":
    main()
