"""The model registry: build any network of the two papers by name.

    import minigrad.models as models
    models.list_models()                       # every name, sorted
    models.list_models(family="resnet", dataset="cifar")
    net = models.create("resnet20")            # CIFAR-10 ResNet-20, He init
    net = models.create("vgg16", num_classes=10, init="glorot")

A builder is a function that takes keyword arguments (always ``num_classes``)
and returns a :class:`minigrad.nn.Module`; ``@register(...)`` adds it.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable

__all__ = ["register", "create", "list_models", "model_info", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one name."""
    name: str
    builder: Callable
    family: str          # "vgg", "resnet" or "plain"
    dataset: str         # "imagenet" or "cifar"
    paper: str           # the configuration in the paper, e.g. "VGG Table 1, D"


_REGISTRY: dict[str, ModelInfo] = {}


def register(name: str | None = None, *, family: str, dataset: str, paper: str = ""):
    """Decorator adding a builder under ``name`` (default: the function's name)."""
    def add(builder):
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"register: a model named {key!r} is already registered")
        _REGISTRY[key] = ModelInfo(key, builder, family, dataset, paper)
        return builder
    return add


def _lookup(name: str) -> ModelInfo:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    _load_builders()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = (f"did you mean {', '.join(close)}?" if close
                else f"known models: {', '.join(sorted(_REGISTRY))}")
        raise ValueError(f"unknown model {name!r}; {hint}")
    return _REGISTRY[name]


def create(name: str, **kwargs):
    """Build the registered model ``name``; keyword arguments go to its builder
    (``num_classes``, ``init``, and per family ``shortcut``, ``width``, ...)."""
    return _lookup(name).builder(**kwargs)


def model_info(name: str) -> ModelInfo:
    """The registry entry of ``name`` (family, dataset, paper configuration)."""
    return _lookup(name)


def list_models(pattern: str | None = None, *, family: str | None = None,
                dataset: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell pattern
    (``"resnet*"``), a family (``"vgg"``, ``"resnet"``, ``"plain"``) and a
    dataset (``"imagenet"``, ``"cifar"``)."""
    _load_builders()
    names = []
    for info in _REGISTRY.values():
        if pattern is not None and not fnmatch.fnmatchcase(info.name, pattern):
            continue
        if family is not None and info.family != family:
            continue
        if dataset is not None and info.dataset != dataset:
            continue
        names.append(info.name)
    return sorted(names)


def _load_builders():
    """Import the files whose ``@register`` lines fill the registry."""
    from . import resnet, vgg  # noqa: F401
