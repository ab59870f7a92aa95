"""frugalml: use the most efficient model, and optimise it for inference, as a measured step.

The public API. Heavy libraries (scikit-learn, ONNX Runtime, torch) load only when a verb runs, so
``import frugalml`` stays light.
"""

from .version import __version__

__all__ = ["__version__", "select", "compress", "load", "load_task", "register_candidate", "candidates_from_estimator",
           "serve", "bench", "FrugalError"]

from .errors import FrugalError


def __getattr__(name):
    if name == "select":
        from .verbs.select import select

        return select
    if name == "compress":
        from .verbs.compress import compress

        return compress
    if name == "load":
        from .runtime.model_dir import load

        return load
    if name == "load_task":
        from .data import load_task

        return load_task
    if name == "register_candidate":
        from .candidates import register_candidate

        return register_candidate
    if name == "candidates_from_estimator":
        from .candidates import from_estimator

        return from_estimator
    if name in ("serve", "bench"):  # the server (foreground) and the load tool
        from . import serve as room

        return room.serve if name == "serve" else room.bench
    raise AttributeError(f"module 'frugalml' has no attribute {name!r}")
