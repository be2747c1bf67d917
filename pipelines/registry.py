"""Named plug-ins of one kind, each defined in its own module of one package.

The transfer methods (`peterrec_tf.transfer_methods`), the pre-training objectives
(`peterrec_tf.objectives`) and the data formats (`pipelines.formats`) are each a
`Registry`: a package whose `__init__` makes one, imports every module of itself
(`import_package`), and whose modules `register` one object each. Consumers ask `get(name)`
and `names()` (flag choices come from it), so adding one is one new file; the name is
compared only in the module that defines it (`module_of` says which: `tests/test_layout.py`
holds every consumer to it). It lives in `pipelines`, the lowest layer, because both
packages use it.
"""

import importlib
import pkgutil


class Registry:
    """{name: instance} of `base` subclasses, filled as a package's modules are imported.

    `kind` names the plug-in in messages ("transfer method"), `flag` is the command-line
    flag that chooses one ("method"), `check(instance)` refuses an incomplete one (a
    ValueError), `order(instance)` sorts `names()` before the name (default: by name)."""

    def __init__(self, kind, flag, base, check=None, order=None):
        self.kind, self.flag, self.base = kind, flag, base
        self._check, self._order = check, order
        self._entries = {}

    def register(self, plugin):
        """Register `plugin` (a `base` subclass, instantiated without arguments, or an
        instance) under its `name`; returns `plugin`, so it serves as a class decorator. A
        name that is not an identifier, a second registration of a name and whatever
        `check` refuses are ValueErrors; nothing is replaced."""
        instance = plugin() if isinstance(plugin, type) else plugin
        if not isinstance(instance, self.base):
            raise TypeError(f"{self.kind} plug-ins must be {self.base.__name__} instances, "
                            f"got {type(instance).__name__}")
        name = instance.name
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f"{type(instance).__qualname__}: a {self.kind}'s name must be an "
                             f"identifier, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered by "
                             f"{self.module_of(name)}; pick another name")
        if self._check is not None:
            self._check(instance)
        self._entries[name] = instance
        return plugin

    def unregister(self, name):
        """Remove `name` (what a test registered); an unknown name is ignored."""
        self._entries.pop(name, None)

    def get(self, name):
        """The instance registered as `name`; a ValueError naming the choices otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}: --{self.flag} must be one of "
                             f"{', '.join(self.names())}") from None

    def names(self):
        """The registered names in the order the flag offers them."""
        if self._order is None:
            return tuple(sorted(self._entries))
        return tuple(sorted(self._entries,
                            key=lambda name: (self._order(self._entries[name]), name)))

    def module_of(self, name):
        """The dotted module that defines `name` (the one place its name may be compared)."""
        return type(self.get(name)).__module__

    def instances(self):
        """The registered instances, in `names()` order."""
        return [self._entries[name] for name in self.names()]

    @staticmethod
    def import_package(package_name, package_path):
        """Import every module of a package (its `__name__`, `__path__`), so each module's
        `register` runs: adding a plug-in is adding a file."""
        for module in pkgutil.iter_modules(package_path):
            importlib.import_module(f"{package_name}.{module.name}")
