"""candidates: the ladder of model families, thinnest first, behind one registry.

A candidate is a named factory of an unfitted scikit-learn compatible estimator. The preprocessing
pipeline (imputation, scaling, one-hot encoding) is built here too and becomes part of every fitted
candidate, so it is exported and deployed with it.

Tasks with text columns (``--text``) have their own ladder: the baseline, then the text candidates
(``text.py``), which read the text and the other columns. A tabular candidate named on such a task sees
only the numeric and categorical columns. Image tasks (``--image``) have theirs too (``image.py``): the
baseline, then image candidates at several input resolutions each, named ``family@R``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, MissingDependency
from ..registry import Registry

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Candidate:
    name: str
    make: Callable[[str, int], Any]  # (task, seed) -> unfitted estimator
    family: str
    interpretable: bool = False
    tasks: tuple[str, ...] = TASKS
    rank: int = 1000  # position on the ladder: thinner first; user candidates go last unless told
    scale: bool = True  # standardise numeric features first (trees don't need it; it costs them ONNX fidelity)
    text: bool = False  # reads text columns (its factory returns a text.TextRecipe); on the text ladder only
    default: bool = True  # on the ladder when no candidate is named; False: only when named (slow ones)
    needs: tuple[str, ...] = ()  # optional packages it imports when it runs (modules), from the extra ``extra``
    extra: str | None = None
    image: bool = False  # reads an image column (its factory returns an image.ImageModel); on the image ladder only
    resolution: int | None = None  # an image candidate's input resolution, pixels per side

    def missing(self) -> str | None:
        """Why it cannot run here (a needed package is not installed, with the line that installs it), or None."""
        for module in self.needs:
            if importlib.util.find_spec(module) is None:
                hint = f"pip install 'frugalml[{self.extra}]'" if self.extra else f"pip install {module}"
                return f"candidate {self.name} needs {module}; install with {hint}"
        return None

    def build(self, task: str, seed: int):
        est = self.make(task, seed)
        if not hasattr(est, "fit") or not hasattr(est, "predict"):
            raise ConfigError(f"candidate {self.name!r} did not return an estimator with fit and predict")
        return est


CANDIDATES: Registry[Candidate] = Registry("candidate")


def register_candidate(name: str, make: Callable[[str, int], Any], *, family: str | None = None,
                       interpretable: bool = False, tasks: tuple[str, ...] = TASKS, rank: int = 1000,
                       scale: bool = True, text: bool = False, default: bool = True,
                       needs: tuple[str, ...] = (), extra: str | None = None, replace: bool = False) -> Candidate:
    """Register a candidate: ``make(task, seed)`` returns an unfitted scikit-learn compatible estimator
    (``text=True``: a ``text.TextRecipe``, for tasks with text columns). ``needs``: the optional packages
    (module names) it runs on, installed by ``pip install 'frugalml[extra]'``."""
    return CANDIDATES.add(name, Candidate(name, make, family or name, interpretable, tuple(tasks), rank, scale,
                                          text, default, tuple(needs), extra), replace=replace)


def from_estimator(estimator, name: str | None = None, *, family: str | None = None,
                   interpretable: bool = False) -> Candidate:
    """Wrap an unfitted estimator instance as a candidate (cloned for every fit)."""
    from sklearn.base import clone, is_classifier, is_regressor

    from .text import TextRecipe

    name = name or type(estimator).__name__.lower()
    text = isinstance(estimator, TextRecipe)
    tasks = TASKS
    if is_classifier(estimator.head if text else estimator):
        tasks = ("classification",)
    elif is_regressor(estimator.head if text else estimator):
        tasks = ("regression",)
    return Candidate(name, lambda task, seed: clone(estimator), family or "custom", interpretable, tasks, text=text)


def from_spec(spec: str) -> Candidate:
    """Resolve ``module:factory`` (the CLI's --candidate) into a Candidate.

    ``factory`` may be a Candidate, an estimator instance, or a callable returning either; a callable
    may take ``(task, seed)`` or nothing.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--candidate {spec!r} must be a registered name or module:factory")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} for --candidate {spec}: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r} (from --candidate {spec})")
    if isinstance(obj, Candidate):
        return obj
    if hasattr(obj, "fit"):
        return from_estimator(obj, attr)
    if callable(obj):
        def make(task, seed, _f=obj):
            try:
                out = _f(task, seed)
            except TypeError:
                out = _f()
            return out.make(task, seed) if isinstance(out, Candidate) else out
        return Candidate(attr, make, "custom")
    raise ConfigError(f"{spec} is neither an estimator nor a factory of one")


def ladder(task: str, names: list[str] | None = None, extra: list[Candidate] | None = None, *,
           text: bool = False, image: bool = False) -> list[Candidate]:
    """The registered candidates for ``task`` (or just ``names``), thinnest first, then ``extra``.

    ``text``: the task has text columns; the default ladder is then the baseline and the text candidates.
    ``image``: the task reads an image column; the default ladder is the baseline and the image candidates.
    A name ``family@R`` asks for an image family at any resolution R (``hog_linear@96``).
    A named candidate whose packages are not installed is an error (``MissingDependency``); the default ladder
    leaves such candidates out (``left_out`` says which).
    """
    if names:
        chosen = [image_mod.at_resolution(n) if n not in CANDIDATES and "@" in n else None for n in names]
        chosen = [c or CANDIDATES.get(n) for c, n in zip(chosen, names)]
        wrong = [c.name for c in chosen if task not in c.tasks]
        if wrong:
            raise ConfigError(f"candidate(s) {', '.join(wrong)} do not support {task}")
        for c in chosen:
            if why := c.missing():
                raise MissingDependency(why)
    else:
        chosen = [c for c in _default_ladder(task, text, image) if not c.missing()]
    for c in chosen + list(extra or []):
        if c.text and not text:
            raise ConfigError(f"candidate {c.name!r} reads text: name the text column with --text COL")
        if c.image and not image:
            raise ConfigError(f"candidate {c.name!r} reads images: name the image column with --image COL")
        if image and not c.image and c.family != "baseline":
            raise ConfigError(f"candidate {c.name!r} does not read images; image tasks take image candidates "
                              f"({', '.join(n for n, o in CANDIDATES.items() if o.image and o.default)})")
    out = sorted(chosen, key=lambda c: c.rank)
    for c in extra or []:
        if task not in c.tasks:
            raise ConfigError(f"candidate {c.name!r} does not support {task}")
        if any(c.name == o.name for o in out):
            raise ConfigError(f"two candidates are named {c.name!r}; rename one")
        out.append(c)
    return out


def _default_ladder(task: str, text: bool, image: bool = False) -> list[Candidate]:
    def fits(c: Candidate) -> bool:
        if c.family == "baseline":
            return True
        return c.image if image else (c.text if text else not c.text and not c.image)

    return [c for _, c in CANDIDATES.items() if task in c.tasks and c.default and fits(c)]


def left_out(task: str, text: bool = False, image: bool = False) -> dict[str, str]:
    """The default ladder's candidates that cannot run here -> why (the package missing, the install line)."""
    reasons = {c.name: c.missing() for c in _default_ladder(task, text, image)}
    return {name: why for name, why in reasons.items() if why}


from . import tabular, text  # noqa: E402,F401  (register the built-in ladders)
from . import image as image_mod  # noqa: E402  (the image ladder, after the others in frugal list)
from .preprocess import build_pipeline  # noqa: E402

__all__ = ["Candidate", "CANDIDATES", "register_candidate", "from_estimator", "from_spec", "ladder", "left_out",
           "build_pipeline"]
