"""Errors. Each subclasses FrugalError and the builtin it resembles, so callers may catch either."""

from __future__ import annotations

import importlib


class FrugalError(Exception):
    """Base of every error frugalml raises on purpose. The CLI prints it on one line and exits 2."""


class DataError(FrugalError, ValueError):
    """The data or the task description is unusable; the message says what to fix."""


class ConfigError(FrugalError, ValueError):
    """An option, a metric or a candidate name is wrong."""


class ModelError(FrugalError, ValueError):
    """A model file is missing, corrupt, or refused for safety."""


class MissingDependency(FrugalError, ImportError):
    """An optional package is needed for this feature and is not installed."""


def need(module: str, feature: str, extra: str | None = None):
    """Import ``module`` or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'frugalml[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MissingDependency(f"{feature} needs {module}; install with {hint}") from exc
