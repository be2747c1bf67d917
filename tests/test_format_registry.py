"""A data format is one module registered by name (`pipelines.formats`): a toy format in a
module this test writes is listed, gets its flags and options through `prepare`, and
prepares the same bytes on the local and the Beam runner; the registry's errors."""

import filecmp
import importlib
import os
import sys
import types

import pytest

from pipelines import formats, inputs
from pipelines.formats import DataFormat, Flag, register
from pipelines.prepare import options_from_flags, prepare

quiet = {"log": lambda *_: None}
BEAM = {"runner": "DirectRunner", "beam_args": ["--direct_num_workers=1"]}

#: A whole new format, as a user would add it under pipelines/formats/: one user per line,
#: items separated by --toy_separator, the token "-" a padding placeholder (dropped, counted).
TOY_MODULE = '''
from pipelines.formats import Flag, register
from pipelines.formats.sequence_lines import SequenceLines


@register
class ToyLines(SequenceLines):
    name = "toy_lines"
    flags = SequenceLines.flags + (
        Flag("string", "toy_separator", ";", "toy_lines: the item separator."),)

    def options(self, values):
        return dict(super().options(values), separator=values.toy_separator)

    def parse_line(self, text, options):
        if not text:
            return None, "empty sequence (blank line)", 0
        tokens = text.split(options.get("separator", ";"))
        if "" in tokens:
            return None, "empty item", 0
        kept = [t for t in tokens if t != "-"]
        return kept, None, len(tokens) - len(kept)

    def line_stats(self, options, dropped):
        return {"placeholders_dropped": dropped}
'''


@pytest.fixture
def toy_format(tmp_path, monkeypatch):
    """The toy format's module, written and imported; unregistered afterwards."""
    folder = tmp_path / "toy_package"
    folder.mkdir()
    (folder / "toy_lines_format.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("toy_lines_format")
    yield module
    formats.REGISTRY.unregister("toy_lines")
    sys.modules.pop("toy_lines_format", None)


def same_files(a, b):
    """Every file under `a` and `b`, byte for byte."""
    listed = [sorted(os.path.relpath(os.path.join(root, name), top)
                     for root, _, names in os.walk(top) for name in names) for top in (a, b)]
    assert listed[0] == listed[1]
    for name in listed[0]:
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    return listed[0]


def test_a_new_format_module_prepares_alike_on_both_runners(toy_format, tmp_path):
    pytest.importorskip("apache_beam")
    assert "toy_lines" in formats.names()
    assert formats.module_of("toy_lines") == "toy_lines_format"
    source = tmp_path / "toy.txt"
    source.write_text("a;b;c;d\n-;b;e;f;a\n\nc;a;;b\ne;e;f;g;h\n")
    values = types.SimpleNamespace(format="toy_lines", min_seq_len=3, toy_separator=";")
    options = options_from_flags(values)
    assert options == {"separator": ";"}
    local, beam = str(tmp_path / "local"), str(tmp_path / "beam")
    prepare("toy_lines", local, str(source), skip_bad_lines=True, **options, **quiet)
    prepare("toy_lines", beam, str(source), skip_bad_lines=True, **options, **BEAM, **quiet)
    files = same_files(local, beam)
    assert "metadata.json" in files and "vocab/items.txt" in files
    metadata = inputs.read_metadata(local)
    assert metadata["format"] == "toy_lines" and metadata["task"] == "pretrain"
    assert metadata["stats"]["placeholders_dropped"] == 1
    assert metadata["summary"]["skipped_bad_lines"] == 2  # the blank line and "c;a;;b"
    assert metadata["splits"] == {"train": 3, "validation": 3, "test": 3}
    # ids in order of first appearance, line by line: a b c d e f g h after <UNK>
    assert open(os.path.join(local, "vocab", "items.txt")).read().split() == [
        "<UNK>", "a", "b", "c", "d", "e", "f", "g", "h"]


def test_a_format_declares_its_flags_to_prepare(toy_format):
    defined = {}

    class Recorder:
        def __getattr__(self, kind):
            return lambda name, default, *rest: defined.setdefault(name, (kind, default, rest))

    formats.define_flags(Recorder())
    assert defined["toy_separator"] == ("DEFINE_string", ";", ("toy_lines: the item separator.",))
    assert defined["min_seq_len"][:2] == ("DEFINE_integer", 3)  # declared by several: once
    assert defined["split_by"][2][0] == ["user", "instance"]  # an enum's values
    for name in ("interactions", "peterrec_pretrain_csv", "peterrec_finetune_csv",
                 "movielens_100k", "synthetic", "user_labels", "user_targets"):
        assert set(flag.name for flag in formats.get(name).flags) <= set(defined), name


def test_every_module_of_the_package_is_registered():
    """Each built-in format comes from the module named after it, found by the package's
    import of its own modules (nothing lists them)."""
    owners = {name: formats.module_of(name) for name in formats.names()}
    assert owners == {
        "interactions": "pipelines.formats.interactions",
        "movielens_100k": "pipelines.formats.movielens",
        "peterrec_finetune_csv": "pipelines.formats.peterrec_csv",
        "peterrec_pretrain_csv": "pipelines.formats.peterrec_csv",
        "synthetic": "pipelines.formats.synthetic",
        "user_labels": "pipelines.formats.user_labels",
        "user_targets": "pipelines.formats.user_targets",
    }
    assert formats.get("synthetic").generated and not formats.get("interactions").generated


def test_registry_errors(tmp_path):
    before = formats.names()
    with pytest.raises(ValueError, match=r"unknown data format 'nope': --format must be one of .*synthetic"):
        formats.get("nope")

    class Impostor(DataFormat):
        name = "interactions"
    with pytest.raises(ValueError, match="'interactions' is already registered by "
                                         "pipelines.formats.interactions"):
        register(Impostor)
    assert formats.module_of("interactions") == "pipelines.formats.interactions"

    class Nameless(DataFormat):
        pass
    with pytest.raises(ValueError, match="a format's name must be an identifier, got None"):
        register(Nameless)

    class Clashing(DataFormat):
        name = "clashing"
        flags = (Flag("integer", "min_seq_len", 5, "another default"),)
    with pytest.raises(ValueError, match="declares --min_seq_len differently"):
        register(Clashing)
    assert formats.names() == before
    with pytest.raises(ValueError, match="--runner=DirectRunner supports --format in .*; "
                                         "synthetic is prepared with --runner=local"):
        prepare("synthetic", str(tmp_path / "out"), **BEAM, **quiet)
    assert os.listdir(tmp_path) == []


def test_a_format_that_reads_nothing_is_refused():
    class Readerless(DataFormat):
        name = "readerless"
    with pytest.raises(ValueError, match="'readerless' must define read"):
        register(Readerless)
    assert "readerless" not in formats.names()



def test_which_formats_carry_the_users_own_keys():
    """`named_users`: only there is the same user id in two preparations the same user (the
    record comparison of `evaluate` matches classification records by user and label
    there); line numbers and generated users are not."""
    from pipelines import formats

    named = sorted(n for n in formats.names() if formats.get(n).named_users)
    assert named == ["interactions", "movielens_100k", "user_labels", "user_targets"]
