"""The Beam pipeline (DirectRunner) and the local paths write the same datasets, record for
record: the demo CSVs, a paper-shaped interaction log (compact local path, the in-memory
reader and Beam), OOV against a given vocabulary, bad lines; atomic output; the CLI."""

import filecmp
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import FINETUNE_CSV, PRETRAIN_CSV, REPO_ROOT, SHARED, needs_shared
from pipelines import canonical, dialect, inputs, streaming, text_lines, writer
from pipelines.errors import DataError
from pipelines.paper_log import write_paper_log
from pipelines.prepare import prepare

pytest.importorskip("apache_beam")
quiet = {"log": lambda *_: None}
BEAM = {"runner": "DirectRunner", "beam_args": ["--direct_num_workers=1"]}


def shard_records(path):
    return [raw.numpy() for raw in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def assert_same_dataset(a, b):
    """Same files; vocabularies and metadata.json identical; every shard the same records
    in the same order."""
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    assert sorted(os.listdir(os.path.join(a, "vocab"))) == sorted(os.listdir(os.path.join(b, "vocab")))
    for name in os.listdir(os.path.join(a, "vocab")):
        assert filecmp.cmp(os.path.join(a, "vocab", name), os.path.join(b, "vocab", name),
                           shallow=False), name
    assert inputs.read_metadata(a) == inputs.read_metadata(b)
    shards = [n for n in names if n.endswith(".tfrecord.gz")]
    assert shards
    for name in shards:
        assert shard_records(os.path.join(a, name)) == shard_records(os.path.join(b, name)), name


@pytest.fixture
def in_memory(monkeypatch):
    """Run the local preparation through the original in-memory readers."""
    def use():
        monkeypatch.setattr(streaming, "handles", lambda format, runner: runner != "local")
    return use


@pytest.fixture
def small_chunks(monkeypatch):
    from pipelines import beam_stages
    monkeypatch.setattr(text_lines, "CHUNK_BYTES", 4096)  # many chunks on small files
    # Beam ranks records in buckets of 16 lines' keys: many buckets, offsets that matter
    monkeypatch.setattr(beam_stages, "RECORD_BUCKET_SHIFT", canonical.POSITION_BITS + 4)


def test_demo_csvs_beam_equals_local(tmp_path, small_chunks):
    local, beam = str(tmp_path / "pre_local"), str(tmp_path / "pre_beam")
    prepare("peterrec_pretrain_csv", local, PRETRAIN_CSV, **quiet)
    prepare("peterrec_pretrain_csv", beam, PRETRAIN_CSV, **BEAM, **quiet)
    assert_same_dataset(local, beam)
    assert len(inputs.load_vocab(os.path.join(beam, "vocab", "items.txt"))) == 175
    vocab = os.path.join(local, "vocab", "items.txt")
    for split_by in ("user", "instance"):
        local_ft, beam_ft = str(tmp_path / f"ft_local_{split_by}"), str(tmp_path / f"ft_beam_{split_by}")
        prepare("peterrec_finetune_csv", local_ft, FINETUNE_CSV, vocab=vocab, split_by=split_by,
                **quiet)
        prepare("peterrec_finetune_csv", beam_ft, FINETUNE_CSV, vocab=vocab, split_by=split_by,
                **BEAM, **quiet)
        assert_same_dataset(local_ft, beam_ft)
        assert inputs.read_metadata(beam_ft)["num_targets"] == 32
    zeros_local, zeros_beam = str(tmp_path / "z_local"), str(tmp_path / "z_beam")
    prepare("peterrec_pretrain_csv", zeros_local, PRETRAIN_CSV, zero_is_padding=True, **quiet)
    prepare("peterrec_pretrain_csv", zeros_beam, PRETRAIN_CSV, zero_is_padding=True, **BEAM,
            **quiet)
    assert_same_dataset(zeros_local, zeros_beam)
    assert inputs.read_metadata(zeros_beam)["summary"]["zero_tokens_dropped"] == 23


ML100K = os.path.join(SHARED, "data", "ml-100k")


@needs_shared(os.path.join(ML100K, "u.data"), "MovieLens-100K")
@pytest.mark.parametrize("genres", ["Comedy", ""])
def test_movielens_every_task_beam_equals_local(tmp_path, monkeypatch, genres):
    monkeypatch.setattr(text_lines, "CHUNK_BYTES", 1 << 16)  # u.data in ~30 chunks
    local, beam = str(tmp_path / "local"), str(tmp_path / "beam")
    index = prepare("movielens_100k", local, ML100K, target_genres=genres, **quiet)
    assert prepare("movielens_100k", beam, ML100K, target_genres=genres, **BEAM, **quiet) == index
    assert filecmp.cmp(os.path.join(local, "datasets.json"), os.path.join(beam, "datasets.json"),
                       shallow=False)
    assert sorted(os.listdir(local)) == sorted(os.listdir(beam))
    assert ("coldrec" in index) == bool(genres) and len(index) == 4 + bool(genres)
    for name in index:
        assert_same_dataset(os.path.join(local, name), os.path.join(beam, name))


def paper_log_with_faults(tmp_path):
    """A small paper-shaped log plus blank lines, a bad row and trailing blank lines."""
    path = tmp_path / "log.tsv"
    write_paper_log(str(path), 6000, num_items=2000, history=20, seed=5, block_users=70)
    lines = path.read_text().split("\n")
    lines.insert(40, "")  # a blank line between rows: a bad line
    lines.insert(700, "u1\ti1\tnot-a-time")
    lines.insert(900, "u1\ti1\tinf")  # not finite: a bad line
    lines.insert(1, "")
    lines[300:300] = ["ushort\ti7\t5", "ushort\ti3\t5"]  # too short for leave-last-out
    path.write_text("\n".join(lines) + "\n\n  \n")
    return str(path)


def test_interaction_log_three_paths_write_the_same_dataset(tmp_path, in_memory, small_chunks):
    log = paper_log_with_faults(tmp_path)
    compact, beam, memory = (str(tmp_path / n) for n in ("compact", "beam", "memory"))
    prepare("interactions", compact, log, skip_bad_lines=True, **quiet)
    prepare("interactions", beam, log, skip_bad_lines=True, **BEAM, **quiet)
    assert_same_dataset(compact, beam)
    summary = inputs.read_metadata(beam)["summary"]
    assert summary["skipped_bad_lines"] == 4 and summary["dropped_users_too_short"] > 0
    assert summary["duplicate_interactions"] > 0 and "unseen_test_target_share" in summary
    in_memory()
    prepare("interactions", memory, log, skip_bad_lines=True, **quiet)
    assert_same_dataset(compact, memory)
    # against a given vocabulary: OOV ids, counts and most-common order agree too
    other = str(tmp_path / "other.tsv")
    write_paper_log(other, 3000, num_items=2000, history=20, seed=6)
    base = str(tmp_path / "base")
    prepare("interactions", base, other, **quiet)
    vocab = os.path.join(base, "vocab", "items.txt")
    frozen = {}
    for name, kwargs in (("memory", {}), ("beam", BEAM)):
        frozen[name] = str(tmp_path / f"frozen_{name}")
        prepare("interactions", frozen[name], log, vocab=vocab, skip_bad_lines=True, **kwargs,
                **quiet)
    summary = inputs.read_metadata(frozen["beam"])["summary"]
    assert summary["oov_occurrences"] > 0 and summary["records_with_oov"] > 0
    assert_same_dataset(frozen["memory"], frozen["beam"])


def test_compact_local_path_with_a_given_vocabulary(tmp_path, small_chunks):
    log = paper_log_with_faults(tmp_path)
    other = str(tmp_path / "other.tsv")
    write_paper_log(other, 3000, num_items=2000, history=20, seed=6)
    base = str(tmp_path / "base")
    prepare("interactions", base, other, **quiet)
    vocab = os.path.join(base, "vocab", "items.txt")
    compact, beam = str(tmp_path / "compact"), str(tmp_path / "beam")
    prepare("interactions", compact, log, vocab=vocab, skip_bad_lines=True, **quiet)
    prepare("interactions", beam, log, vocab=vocab, skip_bad_lines=True, **BEAM, **quiet)
    assert_same_dataset(compact, beam)
    meta = inputs.read_metadata(compact)
    assert meta["stats"]["oov_most_common"] and meta["summary"]["oov_distinct"] > 0


@pytest.mark.parametrize("runner", ["local", "DirectRunner"])
def test_bad_lines_name_file_and_line_on_every_path(tmp_path, runner):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu1,a,1\n\nu1,b,2\nu2,c,x\nu2,d,3\n\n\n")
    kwargs = {"runner": runner} if runner == "local" else BEAM
    with pytest.raises(DataError, match=r"log.csv:3: blank line"):
        prepare("interactions", str(tmp_path / "out"), str(path), **kwargs, **quiet)
    assert os.listdir(tmp_path) == ["log.csv"]  # nothing written, no temporary left
    path.write_text("user,item,timestamp\nu1,a,1\nu1,b,2\nu2,c,x\n")
    with pytest.raises(DataError, match=r"log.csv:4: timestamp 'x' is not a number"):
        prepare("interactions", str(tmp_path / "out"), str(path), **kwargs, **quiet)
    path.write_bytes(b"user,item,timestamp\nu1,a,1\nu1,\xff,2\n")  # raised inside a worker
    with pytest.raises(DataError, match=r"log.csv:3: not UTF-8 text"):
        prepare("interactions", str(tmp_path / "out"), str(path), **kwargs, **quiet)
    path.write_text("user,item,timestamp\n\n")
    with pytest.raises(DataError, match="no interaction rows"):
        prepare("interactions", str(tmp_path / "out"), str(path), skip_bad_lines=True, **kwargs,
                **quiet)
    assert os.listdir(tmp_path) == ["log.csv"]


def test_the_reserved_item_is_a_bad_line_on_every_path(tmp_path, in_memory, small_chunks):
    """An item named `<UNK>` (the vocabulary's id 0: padding and every unknown item) is a
    bad line naming file and line on the compact, Beam and in-memory paths, with or
    without a given vocabulary: it used to merge silently into id 0, missing from
    items.txt and from the OOV counts."""
    log = str(tmp_path / "log.tsv")
    write_paper_log(log, 6000, num_items=2000, history=20, seed=5, block_users=70)
    lines = open(log).read().split("\n")
    user, item, stamp = lines[1].split("\t")
    # chunks holding the item <UNK> take the row path, the others the str.split path
    lines[400:400] = [f"{user}\t<UNK>\t{stamp}"]
    lines[2400:2400] = [f"<UNK>\t{item}\t{stamp}", f"{user}\t<UNK>\t7"]  # a user may be
    path = tmp_path / "unk.tsv"
    path.write_text("\n".join(lines))
    path, bad = str(path), [401, 2402]
    vocab = os.path.join(str(tmp_path / "base"), "vocab", "items.txt")
    prepare("interactions", str(tmp_path / "base"), log, **quiet)
    message = "item '<UNK>' is the reserved token of unknown items (id 0); rename this item"
    runs = (("compact", {}), ("beam", BEAM), ("frozen", {"vocab": vocab}),
            ("frozen_beam", dict(BEAM, vocab=vocab)), ("memory", {}))
    out = {}
    for name, kwargs in runs:
        if name == "memory":
            in_memory()
        with pytest.raises(DataError) as error:
            prepare("interactions", str(tmp_path / "x"), path, **kwargs, **quiet)
        assert str(error.value) == f"{path}:{bad[0]}: {message}", name
        out[name] = str(tmp_path / name)
        prepare("interactions", out[name], path, skip_bad_lines=True, **kwargs, **quiet)
        meta = inputs.read_metadata(out[name])
        examples = [e for e in meta["stats"]["examples"] if "<UNK>" in e]
        assert examples == [f"{path}:{n}: {message}" for n in bad], name
        tokens = inputs.load_vocab(os.path.join(out[name], "vocab", "items.txt"))
        assert tokens.count("<UNK>") == 1 and tokens[0] == "<UNK>"
    assert_same_dataset(out["compact"], out["beam"])
    assert_same_dataset(out["compact"], out["memory"])
    assert_same_dataset(out["frozen"], out["frozen_beam"])


def test_interrupted_beam_run_keeps_the_previous_preparation(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    prepare("peterrec_pretrain_csv", out, PRETRAIN_CSV, **BEAM, **quiet)
    before = {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(writer, "write_metadata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("peterrec_pretrain_csv", out, PRETRAIN_CSV, max_len=7, overwrite=True, **BEAM,
                **quiet)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert {n: os.path.getmtime(os.path.join(out, n)) for n in os.listdir(out)} == before


def test_cli_passes_pipeline_options_to_beam(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = str(tmp_path / "out")
    done = subprocess.run([sys.executable, "-m", "pipelines.prepare",
                           "--format=peterrec_pretrain_csv", f"--input={PRETRAIN_CSV}",
                           f"--output_dir={out}", "--runner=DirectRunner",
                           "--direct_num_workers=1"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert inputs.read_metadata(out)["splits"]["test"] == 30
    done = subprocess.run([sys.executable, "-m", "pipelines.prepare",
                           "--format=peterrec_pretrain_csv", f"--input={PRETRAIN_CSV}",
                           f"--output_dir={tmp_path / 'x'}", "--direct_num_workers=1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "need a Beam --runner" in done.stderr


@pytest.mark.parametrize("texts", [
    ["u1\ta\t1", "u2\tb\t2.5", "u1\tc\t1e3"],  # all valid: the str.split path
    ["u1\ta\t1", "u2\tb", "u1\tc\t3"],  # a short row
    ["u1\ta\t1", "u2\t\t2", "u1\tc\tnan"],  # an empty item
    ["u1\ta\t1", '"u\t2"\tb\t2', "u1\tc\t3"],  # quoted delimiter: csv rules
    ["u1\ta\t1", "", "u1\tc\tx"],  # blank line, bad time
    ["u1\ta\t1", " u2\tb\t2", "u1\tc \t3", "u1\tc\t3 "],  # whitespace around a field
    ["u1\ta\t1", "u2\tb\t\u0663", "u1\t\uff13\t3", "u1\tc\t1_0"],  # non-ASCII digits
    ["u1\ta\t1", 'u2\t"b\t2', "u1\tc\t3\x00", "u1\tc\r\t3"],  # open quote, controls

    ["u1\ta\t1", "u2\t<UNK>\t2", "<UNK>\tc\t3"],  # the reserved item (a user may be named so)
    ["<UNK>\ta\t1", "u1\t<UNK>x\t2"],  # no item is <UNK>: the str.split path
])
def test_chunk_parser_equals_the_row_parser(texts):
    lines = list(enumerate(texts, 2))
    numbers, users, items, stamps, bad = dialect.parse_interaction_chunk(lines, "\t", 3, (0, 1, 2))
    rows = list(dialect.parse_interaction_rows(lines, "\t", 3, (0, 1, 2)))
    assert bad == [r for r in rows if len(r) == 3]
    valid = [(n, u, i, repr(t)) for n, u, i, t in (r for r in rows if len(r) == 4)]
    assert list(zip(numbers, users, items, map(repr, stamps))) == valid  # repr: nan == nan
