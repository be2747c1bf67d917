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

from peterrec_tf.objectives.base import Objective
from pipelines.registry import Registry

#: {name: objective}, filled as this package's modules are imported; `names()` puts the
#: default (the lowest `order`) first.
REGISTRY = Registry("objective", "objective", Objective, order=lambda objective: objective.order)
register, get, names, module_of = (REGISTRY.register, REGISTRY.get, REGISTRY.names,
                                   REGISTRY.module_of)

Registry.import_package(__name__, __path__)

__all__ = ["Objective", "get", "module_of", "names", "register"]
