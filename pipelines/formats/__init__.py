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

from pipelines.registry import Registry

#: One format-specific flag of `prepare`: `kind` names absl's `DEFINE_<kind>`, `extra` are
#: the arguments between the default and the help (an enum's values).
Flag = collections.namedtuple("Flag", "kind name default help extra", defaults=((),))


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
      pipeline_options, log, chunk_bytes, quality)`: its Beam pipeline, same result;
    - `padding_tokens(options)`: item tokens the source uses as padding but keeps as items
      (recorded in metadata.json; models trained on the data never recommend them);
    - `named_users`: True when a record's user id is the user's own key in the source (a
      column of the data), so the same id in two preparations is the same user; False
      where ids are made up (line numbers, generated users).
    """

    name = None
    flags = ()
    generated = False
    named_users = False
    prepare_local = None
    prepare_beam = None

    def options(self, values):
        return {}

    def padding_tokens(self, options):
        return []

    def read(self, input, items, bad, seed, options):
        raise NotImplementedError


def _check_flags(instance):
    """A format reads its input one way or another (`read`, or a streaming local path), and
    a flag of the same name is declared the same way by every format reading it."""
    for flag in instance.flags:
        other = declared_flags().get(flag.name)
        if other is not None and other != flag:
            raise ValueError(f"format {instance.name!r} declares --{flag.name} differently "
                             f"from the format(s) that declared it first: {other} vs {flag}")
    if type(instance).read is DataFormat.read and instance.prepare_local is None:
        raise ValueError(f"format {instance.name!r} must define read() (or prepare_local)")


#: {name: format}, filled as this package's modules are imported (`pipelines.registry`).
REGISTRY = Registry("data format", "format", DataFormat, check=_check_flags)
register, get, names, module_of = (REGISTRY.register, REGISTRY.get, REGISTRY.names,
                                   REGISTRY.module_of)


def declared_flags():
    """{flag name: Flag} of every registered format's flags (each once)."""
    found = {}
    for instance in REGISTRY.instances():
        for flag in instance.flags:
            found.setdefault(flag.name, flag)
    return found


def define_flags(flags):
    """Define every format's flags with absl's `flags` (prepare's `define_flags`)."""
    for flag in declared_flags().values():
        getattr(flags, f"DEFINE_{flag.kind}")(flag.name, flag.default, *flag.extra, flag.help)


Registry.import_package(__name__, __path__)
