"""Every kind of bad input gives a clear error naming the file (and line), or is counted
with skip_bad_lines; nothing is written either way unless the run completes."""

import os

import pytest

from pipelines import inputs
from pipelines.errors import DataError
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}
ITEM = "|".join(["0"] * 19)


def write(path, text, mode="w"):
    with open(path, mode) as handle:
        handle.write(text)
    return str(path)


def movielens(directory, data=None, users=None, movies=None):
    """A tiny ml-100k directory: the given lines first, then 6 more users (3 ratings each),
    enough for every task's 70/3/27 split to have records."""
    directory.mkdir()
    more_data = "".join(f"{u}\t{m}\t3\t{100 + m}\n" for u in range(3, 9) for m in (10, 12, 13))
    more_users = "".join(f"{u}|30|F|writer|1\n" for u in range(3, 9))
    write(directory / "u.data", (data or "1\t10\t5\t100\n1\t11\t5\t101\n1\t12\t4\t102\n")
          + more_data)
    write(directory / "u.user", (users or "1|24|M|technician|85711\n") + more_users)
    write(directory / "u.item", movies or "".join(f"{m}|T|d||u|{ITEM}\n" for m in range(10, 14)))
    return str(directory)


CSV_CASES = [
    # (format, file text, expected message, line)
    ("peterrec_pretrain_csv", "1,2,3\n4,x,6\n", "expected integer item ids", 2),
    ("peterrec_pretrain_csv", "1,2,3\n4,-5,6\n", "expected integer item ids", 2),
    ("peterrec_pretrain_csv", "1,2,3\n4,5.0,6\n", "expected integer item ids", 2),
    ("peterrec_pretrain_csv", "1,2,3\n\n4,5,6\n", "empty sequence", 2),
    ("peterrec_pretrain_csv", "1,2,3\n4,,6\n", "empty item between commas", 2),
    ("peterrec_pretrain_csv", "1,2,3\n4,5,\n", "empty item", 2),
    ("peterrec_pretrain_csv", "1,2,3\n, ,\n", "empty item", 2),
    ("peterrec_finetune_csv", "1,2,,3\n4,5,6\n", "no ',,'", 2),
    ("peterrec_finetune_csv", "1,2,,3\n,,3\n", "empty source", 2),
    ("peterrec_finetune_csv", "1,2,,3\n1,2,,\n", "no target after ',,'", 2),
    ("peterrec_finetune_csv", "1,2,,3\n1,2,,3,,4\n", "empty item", 2),
    ("peterrec_finetune_csv", "1,2,,3\n1,a,,3\n", "expected integer item ids", 2),
    ("peterrec_finetune_csv", "1,2,,3\n1,2,,t\n", "expected integer item ids", 2),
    ("peterrec_finetune_csv", "1,2,,3\n\n1,2,,3\n", "empty sequence", 2),
]


@pytest.mark.parametrize("fmt,text,message,line", CSV_CASES)
def test_bad_csv_line_names_file_and_line(fmt, text, message, line, tmp_path):
    if "finetune" in fmt:  # enough good lines for a 70/3/27 split with no empty split
        text += "1,2,,3\n" * 6
    path = write(tmp_path / "bad.csv", text)
    vocab = write(tmp_path / "items.txt", "<UNK>\n1\n2\n") if "finetune" in fmt else None
    with pytest.raises(DataError) as error:
        prepare(fmt, str(tmp_path / "out"), path, vocab=vocab, **quiet)
    assert f"bad.csv:{line}: " in str(error.value) and message in str(error.value)
    assert error.value.line == line
    assert not os.path.exists(tmp_path / "out")
    # the same file with skip_bad_lines: counted, reported, the rest prepared
    prepare(fmt, str(tmp_path / "out"), path, vocab=vocab, skip_bad_lines=True, **quiet)
    summary = inputs.read_metadata(str(tmp_path / "out"))["summary"]
    assert summary["skipped_bad_lines"] == 1
    assert inputs.read_metadata(str(tmp_path / "out"))["stats"]["examples"][0].startswith(
        f"{path}:{line}: ")


def test_trailing_blank_lines_are_not_empty_sequences(tmp_path):
    path = write(tmp_path / "ok.csv", "1,2,3\n4,5,6\n\n\n")
    prepare("peterrec_pretrain_csv", str(tmp_path / "out"), path, **quiet)
    assert inputs.read_metadata(str(tmp_path / "out"))["splits"]["test"] == 2


@pytest.mark.parametrize("kind", ["empty", "blank", "missing", "directory", "binary"])
def test_unreadable_or_empty_files(kind, tmp_path):
    path = tmp_path / "in.csv"
    if kind == "empty":
        write(path, "")
    elif kind == "blank":
        write(path, "\n \n\t\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "binary":
        write(path, b"\xff\xfe\x00\x81,1,2\n", "wb")
    message = {"empty": "file is empty", "blank": "file is empty", "missing": "not found",
               "directory": "is a directory", "binary": "not UTF-8"}[kind]
    with pytest.raises(DataError, match=message) as error:
        prepare("peterrec_pretrain_csv", str(tmp_path / "out"), str(path), **quiet)
    assert "in.csv" in str(error.value)
    assert not os.path.exists(tmp_path / "out")


def test_bad_vocabulary_files(tmp_path):
    csv = write(tmp_path / "ft.csv", "1,2,,3\n")
    with pytest.raises(DataError, match="items.txt.*--vocab not found"):
        prepare("peterrec_finetune_csv", str(tmp_path / "o"), csv,
                vocab=str(tmp_path / "items.txt"), **quiet)
    vocab = write(tmp_path / "items.txt", "1\n2\n")
    with pytest.raises(DataError, match="items.txt.*must be <UNK>"):
        prepare("peterrec_finetune_csv", str(tmp_path / "o"), csv, vocab=vocab, **quiet)
    vocab = write(tmp_path / "items.txt", "<UNK>\n1\n1\n")
    with pytest.raises(DataError, match="items.txt.*duplicate"):
        prepare("peterrec_finetune_csv", str(tmp_path / "o"), csv, vocab=vocab, **quiet)


@pytest.mark.parametrize("name,data,users,movies,message", [
    ("u.data", "1\t10\t5\t100\n1\t11\t5\n", None, None, "u.data:2: expected 4 tab-separated"),
    ("u.data", "1\t10\t5\t100\n1\tx\t5\t101\n", None, None, "u.data:2: expected integers"),
    ("u.user", None, "1|24|M|technician|85711\n2|old|F|writer|1\n", None, "u.user:2: expected"),
    ("u.item", None, None, f"10|T|d||u|{ITEM}\n11|T|d|u|0\n", "u.item:2: expected 24"),
])
def test_bad_movielens_lines(name, data, users, movies, message, tmp_path):
    directory = movielens(tmp_path / "ml", data, users, movies)
    with pytest.raises(DataError, match=message):
        prepare("movielens_100k", str(tmp_path / "out"), directory, target_genres="", **quiet)
    prepare("movielens_100k", str(tmp_path / "out"), directory, skip_bad_lines=True,
            target_genres="", **quiet)
    meta = inputs.read_metadata(str(tmp_path / "out" / "pretrain"))
    assert meta["summary"]["skipped_bad_lines"] == 1
    assert message.split(": ")[0] in meta["stats"]["examples"][0]  # file and line, e.g. u.data:2


def test_movielens_directory_without_its_files(tmp_path):
    (tmp_path / "ml").mkdir()
    with pytest.raises(DataError, match="u.data: not found"):
        prepare("movielens_100k", str(tmp_path / "out"), str(tmp_path / "ml"), **quiet)


@pytest.mark.parametrize("text,message", [
    ("user,item,timestamp\nu1,a,1\nu1,b\n", "log.csv:3: expected 3 fields, got 2"),
    ("user,item,timestamp\nu1,a,1\nu1,b,soon\n", "log.csv:3: timestamp 'soon' is not a number"),
    ("user,item,timestamp\nu1,a,1\n,b,2\n", "log.csv:3: empty user or item"),
    ("user,item,timestamp\nu1,a,1\n\nu1,b,2\n", "log.csv:3: blank line"),
    ("user,item,timestamp\nu1,a,1\nu1,<UNK>,2\n",
     "log.csv:3: item '<UNK>' is the reserved token of unknown items \\(id 0\\); rename"),
])
def test_bad_interaction_rows(text, message, tmp_path):
    path = write(tmp_path / "log.csv", text)
    with pytest.raises(DataError, match=message):
        prepare("interactions", str(tmp_path / "out"), path, **quiet)


def test_interactions_header_problems(tmp_path):
    path = write(tmp_path / "log.csv", "uid,sku,when\nu1,a,1\n")
    with pytest.raises(DataError, match=r"log.csv:1: header .* lacks column\(s\) \['user', 'item', 'timestamp'\]"):
        prepare("interactions", str(tmp_path / "out"), path, **quiet)
    path = write(tmp_path / "log.csv", "user,item,timestamp\n")
    with pytest.raises(DataError, match="log.csv: no interaction rows"):
        prepare("interactions", str(tmp_path / "out"), path, **quiet)


def test_missing_input_and_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="--input is required"):
        prepare("interactions", str(tmp_path / "out"), **quiet)
    with pytest.raises(ValueError, match="--format must be one of"):
        prepare("parquet", str(tmp_path / "out"), str(tmp_path), **quiet)
