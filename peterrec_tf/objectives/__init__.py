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
#: default first, then the others by `order` and name.
def _check_complete(objective):
    """An objective names its model class and defines its preprocessor; at most one is the
    default (`pretrain --objective`'s: a plug-in must say so to take its place, and then
    it is refused while another holds it)."""
    if objective.model_class is None:
        raise ValueError(f"objective {objective.name!r} must set model_class")
    if type(objective).preprocessor is Objective.preprocessor:
        raise ValueError(f"objective {objective.name!r} must define preprocessor()")
    if objective.default and any(other.default for other in REGISTRY.instances()):
        raise ValueError(f"objective {objective.name!r} claims to be the default, which "
                         f"{default().name!r} is")


def default():
    """The default objective (the one that declares `default = True`)."""
    return next(objective for objective in REGISTRY.instances() if objective.default)


REGISTRY = Registry("objective", "objective", Objective, check=_check_complete,
                    order=lambda objective: (not objective.default, objective.order))
register, get, names, module_of = (REGISTRY.register, REGISTRY.get, REGISTRY.names,
                                   REGISTRY.module_of)

Registry.import_package(__name__, __path__)

__all__ = ["Objective", "default", "get", "module_of", "names", "register"]
