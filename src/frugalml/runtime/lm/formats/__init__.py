"""formats: how the decode engine stores a model's linear layers, one format per file, behind one registry.

A format is a frozen dataclass with a plain ``name``, the word used on the command line (``--dtype
bfloat16``, ``--quantize int4``, ``--draft self:int8``). It converts a model's nn.Linear layers in place and
counts the bytes each layer it made reads per decoded token, which ``weight_bytes`` sums for the roofline.
Quantized formats also hand out the tensors of each layer they made and rebuild the layer from them, so
that ``weight_cache.py`` quantizes a model once; ``version`` numbers that layout and is part of the cache key.

    weight_format("int4").convert(model)  # every nn.Linear replaced, in place
    weight_bytes(model)                   # bytes of weights read per token
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Callable, ClassVar

import torch
from torch import nn

from ....errors import ConfigError
from ....registry import Registry


class WeightFormat(ABC):
    """Base of the formats; subclasses are frozen dataclasses whose fields are the format's options.

    A quantized format's layers have ``in_features``, ``out_features``, ``bias`` and ``tensors()``, the dict
    of tensors ``restore_linear`` takes back."""

    name: ClassVar[str]
    quantized: ClassVar[bool] = False
    version: ClassVar[int] = 1  # of what the layers' ``tensors()`` hold; bump when it changes meaning

    @abstractmethod
    def convert_linear(self, linear: nn.Linear) -> nn.Module | None:
        """The layer that replaces ``linear``, or None to keep it."""

    @classmethod
    @abstractmethod
    def layer_bytes(cls, layer: nn.Module) -> int | None:
        """Bytes of weights ``layer`` reads per decoded token if this format made it, else None."""

    def restore_linear(self, linear: nn.Linear, tensors: dict[str, torch.Tensor]) -> nn.Module:
        """Quantized formats: the layer ``convert_linear`` made from ``linear``, rebuilt from its tensors
        (KeyError when one is missing). A floating-point format stores nothing to rebuild from."""
        raise ConfigError(f"weight format {self.name} keeps no quantized tensors to restore")

    def convert(self, model: nn.Module) -> nn.Module:
        """Replace the nn.Linear layers of ``model`` in place (a tied output layer gets its own copy)."""
        return replace_linears(model, lambda name, linear: self.convert_linear(linear))

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors of every layer a quantized format made in ``model`` (those with ``tensors()``), under
        '<layer name>.<tensor>'."""
        return {f"{name}.{key}": t.detach().contiguous() for name, layer in model.named_modules()
                if hasattr(layer, "tensors") for key, t in layer.tensors().items()}

    def restore(self, model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        """Convert ``model`` from ``state`` instead of quantizing; all or nothing (KeyError or ValueError
        before any layer is replaced when ``state`` lacks a layer or holds one of another shape)."""
        tensors = defaultdict(dict)
        for key, t in state.items():
            name, _, tensor = key.rpartition(".")
            tensors[name][tensor] = t

        def rebuild(name: str, linear: nn.Linear) -> nn.Module:
            layer = self.restore_linear(linear, tensors[name])
            if (layer.in_features, layer.out_features, layer.bias is None) != \
                    (linear.in_features, linear.out_features, linear.bias is None):
                raise ValueError(f"the stored layer {name} does not fit the model's")
            return layer

        return replace_linears(model, rebuild)


def replace_linears(model: nn.Module, make: Callable[[str, nn.Linear], nn.Module | None]) -> nn.Module:
    """Put ``make(name, linear)`` in place of every nn.Linear of ``model`` (None keeps it). Every replacement is
    made before the first is put in, so an error leaves ``model`` as it was."""
    made = {name: make(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name, layer in made.items():
        if layer is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
    return model


FORMATS: Registry[type[WeightFormat]] = Registry("weight format")


def register_format(cls: type[WeightFormat], *, replace: bool = False) -> type[WeightFormat]:
    return FORMATS.add(cls.name, cls, replace=replace)


def weight_format(name: str, **options) -> WeightFormat:
    """The registered format ``name`` with ``options``; an unknown name is a ConfigError listing the known."""
    return FORMATS.get(name)(**options)


def format_names(quantized: bool) -> list[str]:
    return [name for name, cls in FORMATS.items() if cls.quantized == quantized]


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights read per decoded token: the linear layers', each counted by the format that made it
    (embeddings excluded: one row is read, not the table)."""
    total = 0
    for layer in model.modules():
        counts = (cls.layer_bytes(layer) for _, cls in FORMATS.items())
        total += next((n for n in counts if n is not None), 0)
    return total


from . import floating, int8, int4  # noqa: E402,F401,I001  (register the built-ins, in this order)
