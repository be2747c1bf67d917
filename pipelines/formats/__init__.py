"""Data formats, registered by name: `prepare --format=NAME` and every runner look them up here.

A format is one module of this package holding a `DataFormat` subclass decorated with
`@register`: its `name`, the flags it reads (`flags`, `Flag`s; a flag two formats read is
one `Flag` object both list), its `prepare` options from the parsed flags (`options`),
its local reader (`read`) and, where it has them, a streaming local path
(`prepare_local`) and its Beam pipeline (`prepare_beam`). This package imports each of
its modules, so adding a format is one new module (and its test): `prepare`, `streaming`
and `beam_prepare` only ask the registry (`names`, `get`). Modules that register
nothing hold what several formats share (`common`, `sequence_lines`, `user_history`) or
what one format splits off (`movielens_files`).
"""

import collections
import importlib
import pkgutil

#: One format-specific flag of `prepare`: `kind` names absl's `DEFINE_<kind>`, `extra` are
#: the arguments between the default and the help (an enum's values).
Flag = collections.namedtuple("Flag", "kind name default help extra", defaults=((),))

_FORMATS = {}


class DataFormat:
    """What `prepare` needs of a format; subclasses set `name` and define `read`.

    - `flags`: the flags it reads; `options(values)` its options from the parsed flags,
      only the relevant ones (an option at its default is left out where the fingerprint
      of earlier preparations must stay what it was);
    - `generated`: True when it reads no `--input` (the data come from `--seed`);
    - `read(input, items, bad, seed, options)`: its datasets (`PreparedDataset`s), in
      memory, for `--runner=local`;
    - `prepare_local(input, tmp, items, bad, num_shards, common, options, log,
      chunk_bytes, quality)`: set for a format that streams locally instead of `read`
      (writes one dataset into `tmp`, returns the datasets index);
    - `prepare_beam(input, tmp, items, bad, num_shards, seed, common, options,
      pipeline_options, log, chunk_bytes, quality)`: its Beam pipeline, same result.
    """

    name = None
    flags = ()
    generated = False
    prepare_local = None
    prepare_beam = None

    def options(self, values):
        return {}

    def read(self, input, items, bad, seed, options):
        raise NotImplementedError


def register(format_class):
    """Class decorator: register an instance of `format_class` under its `name`. A name
    registered by another class, or a flag of the same name declared differently by
    another format, is a ValueError."""
    instance = format_class()
    name = instance.name
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"{format_class.__qualname__}: a format's name must be an "
                         f"identifier, got {name!r}")
    found = _FORMATS.get(name)
    if found is not None and _origin(type(found)) != _origin(format_class):
        raise ValueError(f"format {name!r} is already registered by {module_of(name)}")
    for flag in instance.flags:
        other = declared_flags().get(flag.name)
        if other is not None and other != flag:
            raise ValueError(f"format {name!r} declares --{flag.name} differently from "
                             f"the format(s) that declared it first: {other} vs {flag}")
    _FORMATS[name] = instance
    return format_class


def _origin(format_class):
    return format_class.__module__, format_class.__qualname__


def names():
    """The registered format names, sorted."""
    return tuple(sorted(_FORMATS))


def get(name):
    """The registered format `name`; a ValueError naming the choices otherwise."""
    if name not in _FORMATS:
        raise ValueError(f"--format must be one of {names()}, got {name!r}")
    return _FORMATS[name]


def module_of(name):
    """The dotted module that defines format `name` (where its name may be compared)."""
    return type(get(name)).__module__


def declared_flags():
    """{flag name: Flag} of every registered format's flags (each once)."""
    found = {}
    for name in names():
        for flag in _FORMATS[name].flags:
            found.setdefault(flag.name, flag)
    return found


def define_flags(flags):
    """Define every format's flags with absl's `flags` (prepare's `define_flags`)."""
    for flag in declared_flags().values():
        getattr(flags, f"DEFINE_{flag.kind}")(flag.name, flag.default, *flag.extra, flag.help)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
