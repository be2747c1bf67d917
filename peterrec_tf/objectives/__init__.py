"""Pre-training objectives by name: what `pretrain --objective` trains.

An objective is one object pairing its pre-training model (`models.pretrainer`), its
preprocessor (`data.next_item`, `data.masked_item`: how prepared sequences become its
examples) and its XLA plan (`training.xla_policy`), defined in one module of this package
and registered there:

    @objectives.register
    class LastItem(Objective): ...

Every module of the package is imported here, so adding an objective is adding one file
(plus its test); the jobs, the flags and the experiments ask this registry instead of
comparing names.
"""

import importlib
import pkgutil

from peterrec_tf.objectives.base import Objective

_REGISTRY = {}


def register(objective):
    """Register an objective (an `Objective` subclass, instantiated without arguments, or an
    instance) under its `name`; returns what it was given, so it serves as a decorator.
    A second objective of a registered name is refused."""
    instance = objective() if isinstance(objective, type) else objective
    if not isinstance(instance, Objective):
        raise TypeError(f"an objective must be an Objective, got {type(instance).__name__}")
    name = instance.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"{type(instance).__name__} needs a name")
    if name in _REGISTRY and type(_REGISTRY[name]) is not type(instance):
        raise ValueError(f"objective {name!r} is already registered by "
                         f"{module_of(name)}.{type(_REGISTRY[name]).__name__}")
    _REGISTRY[name] = instance
    return objective


def get(name):
    """The registered objective `name`; a `ValueError` naming the choices otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"--objective must be one of {names()}, got {name!r}") from None


def names():
    """The registered names, the default first (the order of `--objective`'s choices)."""
    return tuple(sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].order, name)))


def module_of(name):
    """The dotted module that defines objective `name`."""
    return type(get(name)).__module__


def _import_all():
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_all()

__all__ = ["Objective", "get", "module_of", "names", "register"]
