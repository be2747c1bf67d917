"""Faults of the data layer on a stranger's files (issue 21): one CSV dialect for every
delimited input, the same verdict on the local and the Beam runner, no preparation that
publishes an empty split, user paths escaped in globs, filesystem faults as one line.

Beam runs are few and batched (one file holds many bad lines; with --skip_bad_lines the
recorded examples give every line's verdict at once), since each DirectRunner run costs
seconds."""

import errno
import importlib.util
import os
import random
import subprocess
import sys
import tempfile

import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from pipelines import beam_stages, dialect, inputs, writer
from pipelines.errors import DataError
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}
BEAM = {"runner": "DirectRunner", "beam_args": ["--direct_num_workers=1"]}
needs_beam = pytest.mark.skipif(importlib.util.find_spec("apache_beam") is None,
                                reason="apache_beam is not installed")
RUNNERS = ["local", pytest.param("DirectRunner", marks=needs_beam)]


def runner_kwargs(runner):
    return dict(BEAM) if runner != "local" else {}


def write(path, text):
    data = text.encode("utf-8") if isinstance(text, str) else text
    with open(path, "wb") as handle:
        handle.write(data)
    return str(path)


def shard_records(directory):
    """{split: [serialized records]} in the prepared order."""
    found = {}
    for split in ("train", "validation", "test"):
        found[split] = [r.numpy() for name in inputs.shard_files(directory, split)
                        for r in tf.data.TFRecordDataset(name, compression_type="GZIP")]
    return found


def same_records(a, b):
    """Same vocabularies and the same records (metadata differs: source checksums)."""
    assert inputs.load_vocab(os.path.join(a, "vocab", "items.txt")) == inputs.load_vocab(
        os.path.join(b, "vocab", "items.txt"))
    assert shard_records(a) == shard_records(b)


# --- the dialect: every bad line is one counted, named line ------------------------------

# (line text, what its message says); each is a bad line of the interaction log below
BAD_INTERACTION_LINES = [
    ('u1,"i2,2', "field 2: the '\"' at column 4 is not closed on this line"),
    (' u1,i1,5', "field 1 (' u1') has whitespace around it"),
    ('u1,i1 ,5', "field 2 ('i1 ') has whitespace around it"),
    ('u1,i1,5 ', "field 3 ('5 ') has whitespace around it"),
    ('u1," i1",5', "field 2 (' i1') has whitespace around it inside its quotes"),
    ('u1,i"2,3', "field 2 ('i\"2') has a '\"' inside it"),
    ('"u1"x,i1,3', "field 1: text after its closing '\"'"),
    ("u1,i1,\u0663", "timestamp '\u0663' is not a number"),  # Arabic-Indic 3: float() takes it
    ("u1,i1,\uff13", "timestamp '\uff13' is not a number"),  # fullwidth 3
    ("u1,i1,1_0", "timestamp '1_0' is not a number"),  # float() reads 10
    ("u1,\uff13,5", "item '\uff13' holds the non-ASCII digit"),
    ("u\u0663,i1,5", "user 'u\u0663' holds the non-ASCII digit"),
    ("u1,i1\r,5", "a carriage return inside the line"),
    ("u1,\ufeffi1,5", "a byte order mark (U+FEFF) inside the file"),
    ("u1,i1,5\x00", "control character '\\x00'"),
    ('u2,i3",3', "field 2 ('i3\"') has a '\"' inside it"),  # the stray quote's "closing" one
]


def interaction_log(tmp_path):
    """72 valid rows of 6 users (12 events each) plus the quoted user "u,9" (3 events),
    with one bad line of each kind spread over them; the unclosed quote comes early, so
    that a reader joining lines would swallow most of the file."""
    valid = [f"u{u},i{(u + t) % 9},{t}" for t in range(12) for u in range(6)]
    valid[10:10] = ['"u,9",i1,1', '"u,9",i2,2', '"u""9",i3,3', '"u,9",i3,3']
    lines, bad = ["user,item,timestamp"], []
    spots = {3 + 4 * k: case for k, case in enumerate(BAD_INTERACTION_LINES)}
    for row in valid:
        while len(lines) + 1 in spots:
            text, message = spots.pop(len(lines) + 1)
            bad.append((len(lines) + 1, message))
            lines.append(text)
        lines.append(row)
    assert not spots
    return write(tmp_path / "log.csv", "\n".join(lines) + "\n"), bad, len(valid)


@pytest.mark.parametrize("runner", RUNNERS)
def test_every_bad_interaction_line_is_one_counted_line(tmp_path, runner):
    path, bad, valid = interaction_log(tmp_path)
    out = str(tmp_path / "out")
    prepare("interactions", out, path, skip_bad_lines=True, **runner_kwargs(runner), **quiet)
    meta = inputs.read_metadata(out)
    assert meta["summary"]["skipped_bad_lines"] == len(bad)
    examples = meta["stats"]["examples"]
    assert len(examples) == len(bad)
    for example, (number, message) in zip(examples, bad):
        assert example.startswith(f"{path}:{number}: ") and message in example, example
    # every valid row was kept: 6 users of 12 events, "u,9" (3) and 'u"9' (1, too short)
    assert meta["stats"]["users"] == 8 and meta["summary"]["dropped_users_too_short"] == 1
    assert meta["splits"] == {"train": 7, "validation": 7, "test": 7}
    records = shard_records(out)["test"]  # each kept user's events but its last
    assert sum(len(tf.train.Example.FromString(r).features.feature["item_ids"].int64_list.value)
               for r in records) == valid - 1 - 7
    tokens = inputs.load_vocab(os.path.join(out, "vocab", "items.txt"))
    assert not [t for t in tokens if "," in t or '"' in t]  # no rows merged into a token


def test_without_skip_the_first_bad_line_stops_with_its_message(tmp_path):
    path, bad, _ = interaction_log(tmp_path)
    with pytest.raises(DataError) as error:
        prepare("interactions", str(tmp_path / "out"), path, **quiet)
    assert str(error.value).startswith(f"{path}:{bad[0][0]}: {bad[0][1]}")
    assert sorted(os.listdir(tmp_path)) == ["log.csv"]


def test_quoted_fields_follow_the_dialect(tmp_path):
    path = write(tmp_path / "log.csv", 'user,item,timestamp\n"a,b",i1,1\n"a,b","i""2",2\n'
                 '"a,b",i3,3\n')
    out = str(tmp_path / "out")
    prepare("interactions", out, path, **quiet)
    assert inputs.load_vocab(os.path.join(out, "vocab", "items.txt"))[1:] == ["i1", 'i"2', "i3"]
    assert dialect.split_delimited('"x","",', ",") == ["x", "", ""]
    with pytest.raises(ValueError, match="--delimiter must be one character"):
        prepare("interactions", str(tmp_path / "o2"), path, delimiter='"', **quiet)


BAD_PRETRAIN_LINES = [
    ("1, 2,3", "item ' 2' has whitespace around it"),
    ("1,2,3 ", "item '3 ' has whitespace around it"),
    ("1,\u0663,3", "item '\u0663' is not written in ASCII digits"),
    ("1,\uff13,3", "item '\uff13' is not written in ASCII digits"),
    ("1,\u00b2,3", "item '\u00b2' is not written in ASCII digits"),  # int() raises on it
    ('"1",2,3', "expected integer item ids separated by ',', got '\"1\"'"),
    ("1,2\r,3", "item '2\\r' has whitespace around it"),
]


@pytest.mark.parametrize("runner", RUNNERS)
def test_release_csv_lines_follow_the_same_rules_on_both_runners(tmp_path, runner):
    lines = ["1,2,3", "4,5,6,7"] + [text for text, _ in BAD_PRETRAIN_LINES] + ["3,2,1"]
    path = write(tmp_path / "seq.csv", "\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    prepare("peterrec_pretrain_csv", out, path, skip_bad_lines=True, **runner_kwargs(runner),
            **quiet)
    meta = inputs.read_metadata(out)
    assert meta["summary"]["skipped_bad_lines"] == len(BAD_PRETRAIN_LINES)
    for number, (example, (_, message)) in enumerate(zip(meta["stats"]["examples"],
                                                         BAD_PRETRAIN_LINES), 3):
        assert example.startswith(f"{path}:{number}: ") and message in example, example
    assert inputs.load_vocab(os.path.join(out, "vocab", "items.txt")) == [
        "<UNK>", "1", "2", "3", "4", "5", "6", "7"]
    assert meta["splits"]["test"] == 3


def test_finetune_and_movielens_refuse_non_ascii_digits(tmp_path):
    vocab = write(tmp_path / "items.txt", "<UNK>\n1\n2\n3\n")
    path = write(tmp_path / "ft.csv", "1,2,,3\n1,2,,\u0663\n")
    with pytest.raises(DataError, match=r"ft.csv:2: item '\u0663' is not written in ASCII"):
        prepare("peterrec_finetune_csv", str(tmp_path / "out"), path, vocab=vocab, **quiet)
    ml = tmp_path / "ml"
    ml.mkdir()
    write(ml / "u.user", "1|24|M|technician|85711\n")
    write(ml / "u.item", "".join(f"{m}|T|d||u|{'|'.join(['0'] * 19)}\n" for m in (10, 11)))
    for stamp in ("\u0663", "\u00b2"):  # '²' passed isdigit() and made int() raise
        write(ml / "u.data", f"1\t10\t5\t100\n1\t11\t5\t10{stamp}\n")
        with pytest.raises(DataError, match="u.data:2: expected integers"):
            prepare("movielens_100k", str(tmp_path / "out"), str(ml), **quiet)
    write(ml / "u.data", "1\t10\t5\t100\n1\t11\t5\t101\n")
    write(ml / "u.user", "1|24|M|technician |85711\n")  # a label with a space: another class
    with pytest.raises(DataError, match="u.user:1: expected"):
        prepare("movielens_100k", str(tmp_path / "out"), str(ml), **quiet)


def test_invalid_utf8_names_its_line_in_every_format(tmp_path):
    path = write(tmp_path / "seq.csv", b"1,2,3\n4,5,6\n7,\xff,9\n")
    with pytest.raises(DataError, match=r"seq.csv:3: not UTF-8 text"):
        prepare("peterrec_pretrain_csv", str(tmp_path / "out"), path, skip_bad_lines=True,
                **quiet)
    header = write(tmp_path / "log.csv", b"user,it\xc3em,timestamp\nu,a,1\n")
    with pytest.raises(DataError, match=r"log.csv:1: not UTF-8 text"):
        prepare("interactions", str(tmp_path / "out"), header, **quiet)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("runner", RUNNERS)
def test_bom_and_crlf_give_the_same_dataset(tmp_path, runner):
    rows = ["user,item,timestamp"] + [f"u{u},i{t},{t}" for u in range(3) for t in range(4)]
    plain = write(tmp_path / "plain.csv", "\n".join(rows) + "\n")
    dos = write(tmp_path / "dos.csv", b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    prepare("interactions", str(tmp_path / "a"), plain, **quiet)
    prepare("interactions", str(tmp_path / "b"), dos, **runner_kwargs(runner), **quiet)
    same_records(str(tmp_path / "a"), str(tmp_path / "b"))
    seq = ["1,2,3", "4,5,6,7"]
    plain = write(tmp_path / "plain_seq.csv", "\n".join(seq) + "\n")
    dos = write(tmp_path / "dos_seq.csv", b"\xef\xbb\xbf" + "\r\n".join(seq).encode() + b"\r\n")
    prepare("peterrec_pretrain_csv", str(tmp_path / "c"), plain, **quiet)
    prepare("peterrec_pretrain_csv", str(tmp_path / "d"), dos, **runner_kwargs(runner), **quiet)
    same_records(str(tmp_path / "c"), str(tmp_path / "d"))


# --- no preparation publishes an empty split ---------------------------------------------

@pytest.mark.parametrize("runner", RUNNERS)
def test_a_preparation_with_no_usable_user_is_an_error(tmp_path, runner):
    log = write(tmp_path / "log.csv", "user,item,timestamp\n"
                + "".join(f"{u},i{t},{t}\n" for t, u in enumerate("abcde")) + "a,i2,9\n")
    with pytest.raises(DataError, match=r"log.csv: pretrain: 0 of 5 users have at least 3 "
                       r"items \(--min_seq_len=3\); nothing written"):
        prepare("interactions", str(tmp_path / "out"), log, **runner_kwargs(runner), **quiet)
    vocab = write(tmp_path / "items.txt", "<UNK>\n1\n2\n3\n")
    fine = write(tmp_path / "ft.csv", "1,2,,3\n2,,1\n1,,2\n")  # 3 lines: no test split
    with pytest.raises(DataError, match=r"ft.csv: item_rec: the test split would hold no "
                       r"records \(train 2, validation 1, test 0\): the 70/3/27 split by user "
                       r"needs at least 6 users"):
        prepare("peterrec_finetune_csv", str(tmp_path / "out"), fine, vocab=vocab,
                **runner_kwargs(runner), **quiet)
    assert sorted(os.listdir(tmp_path)) == ["ft.csv", "items.txt", "log.csv"]


def test_empty_preparations_of_the_other_formats(tmp_path):
    seq = write(tmp_path / "seq.csv", "1,2\n3\n4,x,5\n")
    with pytest.raises(DataError, match=r"seq.csv: pretrain: 0 of 2 users have at least 3 items"
                       r" \(--min_seq_len=3\); nothing written; 1 bad lines were skipped"):
        prepare("peterrec_pretrain_csv", str(tmp_path / "out"), seq, skip_bad_lines=True,
                **quiet)
    with pytest.raises(DataError, match=r"0 of 2 users have at least 5 items"):
        prepare("peterrec_pretrain_csv", str(tmp_path / "out"), write(
            tmp_path / "ok.csv", "1,2,3\n1,2,3,4\n"), min_length=5, **quiet)
    ml = tmp_path / "ml"  # enough users, but no movie of the target genre: coldrec is empty
    ml.mkdir()
    write(ml / "u.data", "".join(f"{u}\t{m}\t3\t{m}\n" for u in range(1, 9) for m in (10, 11, 12)))
    write(ml / "u.user", "".join(f"{u}|30|F|writer|1\n" for u in range(1, 9)))
    write(ml / "u.item", "".join(f"{m}|T|d||u|{'|'.join(['0'] * 19)}\n" for m in (10, 11, 12)))
    with pytest.raises(DataError, match=r"ml: coldrec: the train and validation and test "
                       r"splits would hold no records"):
        prepare("movielens_100k", str(tmp_path / "out"), str(ml), **quiet)
    prepare("movielens_100k", str(tmp_path / "out"), str(ml), target_genres="", **quiet)


def test_the_command_line_says_it_in_one_line(tmp_path):
    log = write(tmp_path / "log.csv", "user,item,timestamp\na,i1,1\nb,i2,2\n")
    done = subprocess.run([sys.executable, "-m", "pipelines.prepare", "--format=interactions",
                           f"--input={log}", f"--output_dir={tmp_path / 'out'}"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {log}: pretrain: 0 of 2 users have at least 3 items (--min_seq_len=3); "
        "nothing written")
    assert "Traceback" not in done.stderr and not os.path.exists(tmp_path / "out")


# --- globs on user paths -------------------------------------------------------------------

def test_an_output_named_like_a_pattern_leaves_other_temporaries_alone(tmp_path):
    live = tmp_path / ".xyz.tmp-live"  # a running preparation of DATA/xyz owns it
    live.mkdir()
    stale = tmp_path / ".x*.tmp-stale"  # left by a killed preparation of DATA/x*
    stale.mkdir()
    seq = write(tmp_path / "seq.csv", "1,2,3\n4,5,6\n")
    prepare("peterrec_pretrain_csv", str(tmp_path / "x*"), seq, **quiet)
    assert live.is_dir() and not stale.exists()
    # a prepared directory named like a pattern reads its own shards, not its neighbour's
    prepare("peterrec_pretrain_csv", str(tmp_path / "d1"), seq, num_shards=1, **quiet)
    prepare("peterrec_pretrain_csv", str(tmp_path / "d[1]"), seq, num_shards=2, **quiet)
    assert [os.path.dirname(f) for f in inputs.shard_files(str(tmp_path / "d[1]"), "test")] == [
        str(tmp_path / "d[1]")] * 2


# --- filesystem faults -----------------------------------------------------------------------

def test_a_full_disk_is_one_line_and_keeps_the_earlier_preparation(tmp_path, monkeypatch):
    seq = write(tmp_path / "seq.csv", "1,2,3\n4,5,6\n")
    out = str(tmp_path / "out")
    prepare("peterrec_pretrain_csv", out, seq, **quiet)
    before = shard_records(out)

    def full(path, records):  # the disk fills while shards are written
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(writer, "shard_record", full)
    with pytest.raises(DataError) as error:
        prepare("peterrec_pretrain_csv", out, seq, max_len=9, overwrite=True, **quiet)
    assert str(error.value).startswith(f"{out}: No space left on device (nothing was published")
    monkeypatch.undo()
    assert shard_records(out) == before and sorted(os.listdir(tmp_path)) == ["out", "seq.csv"]

    def exhausted(self, serialized):  # what tf.io reports for a full disk
        raise tf.errors.ResourceExhaustedError(None, None, "out; No space left on device")
    monkeypatch.setattr(writer.ShardWriters, "write", exhausted)
    log = write(tmp_path / "log.csv", "user,item,timestamp\n" + "".join(
        f"u,i{t},{t}\n" for t in range(3)))
    with pytest.raises(DataError, match=f"{out}: out; No space left on device"):
        prepare("interactions", out, log, overwrite=True, **quiet)
    assert shard_records(out) == before
    assert sorted(os.listdir(tmp_path)) == ["log.csv", "out", "seq.csv"]


def test_a_read_only_location_is_one_line(tmp_path, monkeypatch):
    seq = write(tmp_path / "seq.csv", "1,2,3\n4,5,6\n")

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", dir)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    for name in ("seq", "log"):
        with pytest.raises(DataError, match=f"{tmp_path}: Read-only file system"):
            if name == "seq":
                prepare("peterrec_pretrain_csv", str(tmp_path / "out"), seq, **quiet)
            else:
                prepare("interactions", str(tmp_path / "out"), write(
                    tmp_path / "log.csv", "user,item,timestamp\nu,a,1\nu,b,2\nu,c,3\n"), **quiet)
    monkeypatch.undo()
    if os.geteuid() != 0:  # root writes anywhere: chmod does not bite
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises((DataError, ValueError), match="not writable|Permission denied"):
                prepare("peterrec_pretrain_csv", str(locked / "out"), seq, **quiet)
        finally:
            locked.chmod(0o700)


def test_a_failing_final_move_puts_the_earlier_preparation_back(tmp_path, monkeypatch):
    seq = write(tmp_path / "seq.csv", "1,2,3\n4,5,6\n")
    out = str(tmp_path / "out")
    prepare("peterrec_pretrain_csv", out, seq, **quiet)
    before = shard_records(out)
    replace = os.replace

    def failing(src, dst):
        if os.path.basename(str(src)).startswith(".out.tmp-"):
            raise OSError(errno.EIO, "Input/output error", src)
        return replace(src, dst)
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(DataError, match=f"{out}: Input/output error"):
        prepare("peterrec_pretrain_csv", out, seq, max_len=9, overwrite=True, **quiet)
    monkeypatch.undo()
    assert shard_records(out) == before and sorted(os.listdir(tmp_path)) == ["out", "seq.csv"]


@needs_beam
def test_a_full_disk_in_a_beam_worker_is_one_line(tmp_path, monkeypatch):
    def full(grouped, directory):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(directory, "x"))
    monkeypatch.setattr(beam_stages, "write_shard", full)
    seq = write(tmp_path / "seq.csv", "1,2,3\n4,5,6\n")
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match=f"{out}: No space left on device"):
        prepare("peterrec_pretrain_csv", out, seq, **BEAM, **quiet)
    assert sorted(os.listdir(tmp_path)) == ["seq.csv"]


def test_the_fast_chunk_parser_equals_the_row_parser_on_mutated_lines():
    """`parse_interaction_chunk` splits clean chunks with str.split; on any chunk it must
    give exactly what the row parser (`split_delimited`) gives."""
    rng = random.Random(0)
    noise = ['"', " ", "\t", ",", "\r", "\x00", "\ufeff", "\u0663", "\uff13", "\u00a0", "_",
             "e", ".", "-", ""]
    for trial in range(400):
        delimiter = ",\t"[trial % 2]
        lines = []
        for number in range(2, 2 + rng.randint(1, 5)):
            fields = [f"u{rng.randint(0, 9)}", f"i{rng.randint(0, 9)}", str(rng.randint(0, 99))]
            text = delimiter.join(fields)
            if rng.random() < 0.3:
                at = rng.randint(0, len(text))
                text = text[:at] + rng.choice(noise) + text[at:]
            lines.append((number, text))
        numbers, users, items, stamps, bad = dialect.parse_interaction_chunk(
            lines, delimiter, 3, (0, 1, 2))
        rows = list(dialect.parse_interaction_rows(lines, delimiter, 3, (0, 1, 2)))
        assert bad == [r for r in rows if len(r) == 3], lines
        assert list(zip(numbers, users, items, stamps)) == [r for r in rows if len(r) == 4], lines
