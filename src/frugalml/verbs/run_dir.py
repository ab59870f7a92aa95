"""What both verbs share: their options checked, the machine described, and the run directory written whole.

A run directory is written to a temporary folder beside ``out`` and renamed when complete, so a failed
run leaves nothing behind and never damages an earlier run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..report.render import write_reports
from ..runtime.model_dir import DeployedModel, load, save_model_dir
from ..selection import COST_PRIORITIES
from ..version import __version__


@dataclass
class RunResult:
    """What ``select`` and ``compress`` return: the decision (``decision.json``) and where the run was saved."""
    decision: dict
    run_dir: Path | None

    @property
    def recommended(self) -> str:
        return self.decision["recommended"]

    def load(self) -> DeployedModel:
        if self.run_dir is None:
            raise ConfigError("this run was made without out=; nothing was saved to load")
        return load(self.run_dir)


def check_options(folds, repeats, tolerance, alpha, min_group_size, cost_priority, stability_draws=0,
                  requests_per_day=1):
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, not {folds}")
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, not {repeats}")
    if not tolerance >= 0:
        raise ConfigError(f"--tolerance must be zero or positive, not {tolerance}")
    if not 0 < alpha < 0.5:
        raise ConfigError(f"--alpha must be between 0 and 0.5, not {alpha}")
    if min_group_size < 1:
        raise ConfigError(f"--min-group-size must be at least 1, not {min_group_size}")
    if stability_draws < 0:
        raise ConfigError(f"--stability-draws must be zero (skip) or positive, not {stability_draws}")
    if requests_per_day < 1:
        raise ConfigError(f"--requests-per-day must be at least 1, not {requests_per_day}")
    if cost_priority not in COST_PRIORITIES:
        raise ConfigError(f"--cost-priority must be one of {', '.join(COST_PRIORITIES)}, not {cost_priority!r}")


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


PACKAGES = ("numpy", "scipy", "pandas", "scikit-learn", "lightgbm", "onnx", "onnxruntime", "skl2onnx", "onnxmltools",
            "skops", "fairlearn", "codecarbon", "torch", "transformers", "dask", "distributed", "flaml")


def environment() -> dict:
    """What a bug report or an efficiency card needs: the machine, memory and the versions that make the numbers."""
    from importlib import metadata

    env = {"machine": machine_info(), "memory_gib": None, "packages": {},
           "threads_env": {v: os.environ[v] for v in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_NUM_THREADS")
                           if os.environ.get(v)}}
    try:
        import psutil

        env["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    for pkg in PACKAGES:
        try:
            env["packages"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env["packages"][pkg] = None
    return env


def prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")


def open_store(out_path: Path | None, resume: bool, fingerprint):
    """The run's trial store, beside ``out`` while the run is under way (``.NAME.trials``) and moved into it
    (``NAME/trials``) when the run is written; ``resume`` starts from the pending store of a killed run, or
    from a copy of a finished run's (which stays whole if this run fails). None without ``out``.
    ``fingerprint()``: what the trials depend on (``TrialStore``), called only when there is a store: it hashes
    every row (and compress's model files)."""
    from ..evaluation.trials import TrialStore

    if out_path is None:
        return None
    pending = out_path.parent / f".{out_path.name}.trials"
    finished = out_path / "trials"
    if resume and not pending.exists() and finished.is_dir():
        shutil.copytree(finished, pending)
    return TrialStore(pending, fingerprint(), resume)


def commit(tmp: Path, out: Path) -> None:
    """Move a finished run directory into place; an existing one is replaced only once the new one is whole."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def write_run(out_path: Path, decision: dict, schema, art: dict, info: dict, files: dict[str, str],
               trials: Path | None = None) -> None:
    """Write a run directory beside ``out_path`` and rename it into place once whole."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a run directory is an ordinary folder
    try:
        save_model_dir(tmp / "model", schema=schema, name=decision["recommended"], skops_data=art["skops"],
                       onnx_data=art["onnx"], info={"agreement": art.get("agreement"),
                                                    "onnx_error": art.get("onnx_error"),
                                                    "frugalml_version": __version__, **info})
        for name, text in files.items():
            (tmp / name).write_text(text)
        (tmp / "decision.json").write_text(json.dumps(decision, indent=2))
        write_reports(tmp)
        if trials is not None:
            os.replace(trials, tmp / "trials")
        commit(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise



def plain(o):
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN and infinities as null."""
    if isinstance(o, dict):
        return {str(k): plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, np.ndarray)):
        return [plain(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o
