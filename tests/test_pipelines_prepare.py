"""pipelines.prepare: round trips, the release's id order, the on-disk contract, atomicity."""

import json
import os
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import FINETUNE_CSV, PRETRAIN_CSV, REPO_ROOT
from pipelines import inputs, writer
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}
SMALL_SYNTHETIC = dict(num_users=120, num_items=60, num_clusters=4, num_targets=20)


def write(path, text):
    path.write_text(text)
    return str(path)


def records(data_dir, split):
    """{user: [(item_ids, target or label), ...]} read straight from the shards."""
    found = {}
    for path in inputs.shard_files(data_dir, split):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            value = (feature["target"] if "target" in feature else feature["label"]).int64_list.value \
                if ("target" in feature or "label" in feature) else []
            found.setdefault(feature["user_id"].bytes_list.value[0].decode(), []).append(
                (list(feature["item_ids"].int64_list.value), value[0] if value else None))
    return found


def first_appearance(lines):
    tokens = ["<UNK>"]
    for line in lines:
        for token in line:
            if token not in tokens:
                tokens.append(token)
    return tokens


def test_round_trip_pretrain_csv(tmp_path):
    rows = [["5", "6", "7", "8"], ["9", "5", "6"], ["7", "7", "10", "11", "12"], ["3", "4"]]
    csv = write(tmp_path / "seq.csv", "".join(",".join(r) + "\n" for r in rows))
    out = str(tmp_path / "out")
    prepare("peterrec_pretrain_csv", out, csv, max_len=10, num_shards=2, **quiet)
    vocab = inputs.load_vocab(os.path.join(out, "vocab", "items.txt"))
    assert vocab == first_appearance(rows)
    decode = lambda ids: [vocab[i] for i in ids]  # noqa: E731
    test, valid, train = (records(out, s) for s in ("test", "validation", "train"))
    for number, row in enumerate(rows[:3], 1):
        user = f"line{number}"
        [(history, last)] = test[user]
        assert decode(history) + [vocab[last]] == row  # test: everything but the last as input
        [(history, second_last)] = valid[user]
        assert decode(history) + [vocab[second_last]] == row[:-1]
        assert decode(train[user][0][0]) == row[:-2] and train[user][0][1] is None
    meta = inputs.read_metadata(out)
    assert meta["splits"] == {"train": 3, "validation": 3, "test": 3}  # line4 too short
    assert meta["summary"]["dropped_users_too_short"] == 1
    assert meta["num_items"] == len(vocab) and meta["task"] == "pretrain"
    for key in ("max_len", "seeds", "source_checksums", "format", "version", "summary"):
        assert key in meta


def test_release_id_order_on_the_demo_csvs(tmp_path):
    """175 item ids and 32 target ids, in first-appearance order, with '0' an item of its own,
    the same order the checkpoint converter assumes (convert_tf1.release_token_order)."""
    from peterrec_tf.convert_tf1 import release_token_order
    lines = [l.strip() for l in open(PRETRAIN_CSV) if l.strip()]
    pre = str(tmp_path / "pre")
    prepare("peterrec_pretrain_csv", pre, PRETRAIN_CSV, **quiet)
    items = inputs.load_vocab(os.path.join(pre, "vocab", "items.txt"))
    assert len(items) == 175 and items == first_appearance(l.split(",") for l in lines)
    assert items == release_token_order(PRETRAIN_CSV)  # the converter's id order
    assert "0" in items and items.index("0") > 0  # the release counts "0" as a token

    fine_lines = [l.strip() for l in open(FINETUNE_CSV) if l.strip()]
    fine = str(tmp_path / "fine")
    prepare("peterrec_finetune_csv", fine, FINETUNE_CSV,
            vocab=os.path.join(pre, "vocab", "items.txt"), **quiet)
    targets = inputs.load_vocab(os.path.join(fine, "vocab", "targets.txt"))
    assert len(targets) == 32
    assert targets == first_appearance(l.split(",,")[1].split(",") for l in fine_lines)
    assert targets == release_token_order(FINETUNE_CSV, targets=True)
    assert inputs.load_vocab(os.path.join(fine, "vocab", "items.txt")) == items  # never rebuilt
    meta = inputs.read_metadata(fine)
    assert meta["num_targets"] == 32 and meta["num_items"] == 175 and meta["task"] == "item_rec"
    assert meta["summary"]["oov_occurrences"] == 0
    per_line = sum(len(l.split(",,")[1].split(",")) for l in fine_lines)
    assert sum(meta["splits"].values()) == per_line  # one instance per target
    # every instance of a line keeps the line's source sequence
    by_line = {}
    for split in ("train", "validation", "test"):
        for user, found in records(fine, split).items():
            by_line.setdefault(user, []).extend(found)
    number = 1
    source = [items.index(t) for t in fine_lines[0].split(",,")[0].split(",")]
    assert all(ids == source for ids, _ in by_line[f"line{number}"])
    assert [targets[t] for _, t in by_line["line1"]] == fine_lines[0].split(",,")[1].split(",")


def test_zero_is_padding_drops_the_zero_token(tmp_path):
    out = str(tmp_path / "pre")
    prepare("peterrec_pretrain_csv", out, PRETRAIN_CSV, zero_is_padding=True, **quiet)
    items = inputs.load_vocab(os.path.join(out, "vocab", "items.txt"))
    assert len(items) == 174 and "0" not in items
    assert inputs.read_metadata(out)["summary"]["zero_tokens_dropped"] == 23


def test_finetune_data_needs_the_pretraining_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="--vocab"):
        prepare("peterrec_finetune_csv", str(tmp_path / "x"), FINETUNE_CSV, **quiet)


def test_unknown_items_map_to_zero_and_are_counted(tmp_path):
    vocab = write(tmp_path / "items.txt", "<UNK>\n1\n2\n3\n")
    # 4 lines without OOV items, so that no split is empty
    csv = write(tmp_path / "ft.csv", "1,2,99,,3\n2,98,97,,1,2\n" + "3,,1\n" * 4)
    out = str(tmp_path / "out")
    prepare("peterrec_finetune_csv", out, csv, vocab=vocab, **quiet)
    summary = inputs.read_metadata(out)["summary"]
    assert summary["oov_occurrences"] == 3 and summary["oov_distinct"] == 3
    assert summary["records_with_oov"] == 3  # 1 instance of line 1, 2 of line 2
    found = [ids for s in ("train", "validation", "test") for rs in records(out, s).values()
             for ids, _ in rs]
    assert sorted(map(tuple, found)) == [(1, 2, 0), (2, 0, 0), (2, 0, 0)] + [(3,)] * 4


def test_split_by_instance_is_the_release_split(tmp_path):
    vocab = write(tmp_path / "items.txt", "<UNK>\n1\n2\n3\n")
    csv = write(tmp_path / "ft.csv", "".join(f"1,2,,{','.join(str(t) for t in range(5, 25))}\n"
                                             for _ in range(10)))
    by_user, by_instance = str(tmp_path / "u"), str(tmp_path / "i")
    prepare("peterrec_finetune_csv", by_user, csv, vocab=vocab, **quiet)
    prepare("peterrec_finetune_csv", by_instance, csv, vocab=vocab, split_by="instance", **quiet)
    users = [set(records(by_user, s)) for s in ("train", "test")]
    assert not users[0] & users[1]  # a line's instances stay together
    users = [set(records(by_instance, s)) for s in ("train", "test")]
    assert users[0] & users[1]
    splits = inputs.read_metadata(by_instance)["splits"]
    assert splits == {"train": 140, "validation": 6, "test": 54}  # 70/3/27 of 200


def test_synthetic_writes_every_task_sharing_one_vocabulary(tmp_path):
    out = str(tmp_path / "syn")
    index = prepare("synthetic", out, max_len=20, seed=3, **SMALL_SYNTHETIC, **quiet)
    listed = json.load(open(os.path.join(out, "datasets.json")))["datasets"]
    assert listed == index
    assert listed["pretrain"]["task"] == "pretrain" and listed["coldrec"]["task"] == "item_rec"
    assert listed["attribute"]["task"] == "classify"
    items = inputs.load_vocab(os.path.join(out, "pretrain", "vocab", "items.txt"))
    for name, entry in listed.items():
        meta = inputs.read_metadata(os.path.join(out, name))
        assert meta["task"] == entry["task"] and meta["max_len"] == 20
        assert inputs.load_vocab(os.path.join(out, name, "vocab", "items.txt")) == items
        if entry["task"] == "item_rec":
            targets = inputs.load_vocab(os.path.join(out, name, "vocab", "targets.txt"))
            assert targets[0] == "<UNK>" and meta["num_targets"] == len(targets)
        if entry["task"] == "classify":
            labels = inputs.load_vocab(os.path.join(out, name, "vocab", "labels.txt"))
            assert meta["num_classes"] == len(labels)
    # leave-last-out holds for every user
    train, valid, test = (records(os.path.join(out, "pretrain"), s) for s in
                          ("train", "validation", "test"))
    for user, [(history, last)] in test.items():
        assert valid[user] == [(history[:-1], history[-1])]
        assert train[user][0][0] == history[:-1]
    # same seed, same data; another seed, other data
    again = str(tmp_path / "again")
    prepare("synthetic", again, max_len=20, seed=3, **SMALL_SYNTHETIC, **quiet)
    assert records(os.path.join(again, "coldrec"), "test") == records(os.path.join(out, "coldrec"), "test")
    other = str(tmp_path / "other")
    prepare("synthetic", other, max_len=20, seed=4, **SMALL_SYNTHETIC, **quiet)
    assert records(os.path.join(other, "pretrain"), "test") != test


def test_interactions_format(tmp_path):
    path = write(tmp_path / "log.tsv", "uid\tsku\tts\nu1\ta\t3\nu1\tb\t1\nu1\tc\t2\nu2\ta\t1\n"
                 "u2\td\t5\nu2\tb\t2\nu2\te\t9\nu3\ta\t1\n")
    out = str(tmp_path / "out")
    prepare("interactions", out, path, user_col="uid", item_col="sku", time_col="ts", **quiet)
    vocab = inputs.load_vocab(os.path.join(out, "vocab", "items.txt"))
    test = {u: [vocab[i] for i in ids] + [vocab[t]] for u, [(ids, t)] in records(out, "test").items()}
    assert test == {"u1": ["b", "c", "a"], "u2": ["a", "b", "d", "e"]}  # by time; u3 too short
    assert inputs.read_metadata(out)["summary"]["dropped_users_too_short"] == 1


def test_rerun_is_a_no_op_a_different_preparation_is_refused(tmp_path):
    a = write(tmp_path / "a.csv", "1,2,3\n")
    b = write(tmp_path / "b.csv", "1,2,3,4\n")
    out = str(tmp_path / "out")
    first = prepare("peterrec_pretrain_csv", out, a, **quiet)
    stamp = os.path.getmtime(os.path.join(out, "metadata.json"))
    assert prepare("peterrec_pretrain_csv", out, a, **quiet) == first  # same: nothing to do
    assert os.path.getmtime(os.path.join(out, "metadata.json")) == stamp
    with pytest.raises(ValueError, match="different preparation"):
        prepare("peterrec_pretrain_csv", out, b, **quiet)
    with pytest.raises(ValueError, match="different preparation"):
        prepare("peterrec_pretrain_csv", out, a, max_len=7, **quiet)
    prepare("peterrec_pretrain_csv", out, b, overwrite=True, **quiet)
    assert inputs.read_metadata(out)["longest_sequence"] == 3
    assert sorted(os.listdir(tmp_path)) == ["a.csv", "b.csv", "out"]  # no leftovers


def test_overwrite_never_deletes_a_directory_that_is_not_a_preparation(tmp_path):
    a = write(tmp_path / "a.csv", "1,2,3\n")
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="holds no preparation"):
        prepare("peterrec_pretrain_csv", str(precious), a, overwrite=True, **quiet)
    assert (precious / "thesis.tex").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare("peterrec_pretrain_csv", str(empty), a, **quiet)  # an empty directory is fine
    assert os.path.exists(empty / "metadata.json")


def test_interrupted_preparation_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    original, calls = writer.write_dataset, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(writer, "write_dataset", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare("synthetic", str(tmp_path / "syn"), **SMALL_SYNTHETIC, **quiet)
    assert os.listdir(tmp_path) == []
    # an interrupted overwrite keeps the previous preparation intact
    monkeypatch.setattr(writer, "write_dataset", original)
    prepare("synthetic", str(tmp_path / "syn"), **SMALL_SYNTHETIC, **quiet)
    before = records(str(tmp_path / "syn" / "pretrain"), "test")
    calls.clear()
    monkeypatch.setattr(writer, "write_dataset", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare("synthetic", str(tmp_path / "syn"), seed=9, overwrite=True, **SMALL_SYNTHETIC, **quiet)
    assert records(str(tmp_path / "syn" / "pretrain"), "test") == before
    assert os.listdir(tmp_path) == ["syn"]


def run_cli(*args, cwd=REPO_ROOT):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "pipelines.prepare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_synthetic_defaults_are_small_and_helpfull_documents_every_flag(tmp_path):
    """The defaults make a small dataset (its size asserted below; speed is a benchmark's
    business, not a test's)."""
    done = run_cli("--format=synthetic", f"--output_dir={tmp_path / 'syn'}")
    assert done.returncode == 0, done.stderr
    assert "prepared in" in done.stdout and "wrote pretrain" in done.stdout
    meta = inputs.read_metadata(str(tmp_path / "syn" / "pretrain"))
    assert meta["splits"]["test"] == 2000 and meta["num_items"] == 501
    helpfull = run_cli("--helpfull").stdout
    for flag in ("format", "input", "output_dir", "max_len", "num_shards", "vocab", "seed",
                 "skip_bad_lines", "overwrite", "zero_is_padding", "split_by", "min_seq_len",
                 "target_genres", "max_targets", "user_col", "item_col", "time_col",
                 "delimiter", "synthetic_users", "synthetic_items", "synthetic_clusters",
                 "synthetic_min_len", "synthetic_max_len", "synthetic_targets"):
        assert f"--{flag}" in helpfull or f"--[no]{flag}" in helpfull, flag


def test_cli_reports_bad_input_with_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.csv", "1,2,3\n4,x,6\n")
    done = run_cli("--format=peterrec_pretrain_csv", f"--input={bad}",
                   f"--output_dir={tmp_path / 'out'}")
    assert done.returncode == 2
    assert "bad.csv:2: expected integer item ids" in done.stderr
    assert not os.path.exists(tmp_path / "out")
    done = run_cli("--format=peterrec_pretrain_csv", f"--input={bad}", "--skip_bad_lines",
                   f"--output_dir={tmp_path / 'out'}")
    assert done.returncode == 0 and "skipped 1 bad lines" in done.stdout
    assert inputs.read_metadata(str(tmp_path / "out"))["summary"]["skipped_bad_lines"] == 1


def test_tfds_builder_from_prepared_dir_and_manual_dir(tmp_path):
    import tensorflow_datasets as tfds
    import pipelines.tfds_builder  # noqa: F401  (registers the builder)
    out = str(tmp_path / "syn")
    prepare("synthetic", out, max_len=20, **SMALL_SYNTHETIC, **quiet)
    coldrec = os.path.join(out, "coldrec")
    builder = tfds.builder("peterrec_prepared", data_dir=str(tmp_path / "a"), prepared_dir=coldrec)
    builder.download_and_prepare()
    manual = tfds.builder("peterrec_prepared/item_rec", data_dir=str(tmp_path / "b"))
    manual.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=coldrec))
    meta = inputs.read_metadata(coldrec)
    expected = records(coldrec, "test")
    for each in (builder, manual):
        assert str(each.info.version) == "1.0.0"
        assert {s: each.info.splits[s].num_examples for s in meta["splits"] if meta["splits"][s]} \
            == {s: n for s, n in meta["splits"].items() if n}
        assert json.loads(each.info.metadata["prepared"])["num_targets"] == meta["num_targets"]
        loaded = {}
        for ex in tfds.as_numpy(each.as_dataset(split="test")):
            loaded.setdefault(ex["user_id"].decode(), []).append((list(ex["item_ids"]), int(ex["target"])))
        assert {u: sorted(v) for u, v in loaded.items()} == {u: sorted(v) for u, v in expected.items()}
    with pytest.raises(ValueError, match="holds a item_rec dataset"):
        tfds.builder("peterrec_prepared/classify", data_dir=str(tmp_path / "c"), prepared_dir=coldrec)
    # a classification dataset serves its labels
    attribute = os.path.join(out, "attribute")
    builder = tfds.builder("peterrec_prepared", data_dir=str(tmp_path / "d"), prepared_dir=attribute)
    builder.download_and_prepare()
    meta = inputs.read_metadata(attribute)
    assert {s: builder.info.splits[s].num_examples for s in meta["splits"] if meta["splits"][s]} \
        == {s: n for s, n in meta["splits"].items() if n}
    assert json.loads(builder.info.metadata["prepared"])["labels"] == \
        inputs.load_vocab(os.path.join(attribute, "vocab", "labels.txt"))
    loaded = {}
    for ex in tfds.as_numpy(builder.as_dataset(split="test")):
        loaded.setdefault(ex["user_id"].decode(), []).append((list(ex["item_ids"]), int(ex["label"])))
    expected = records(attribute, "test")
    assert expected and {u: sorted(v) for u, v in loaded.items()} == {u: sorted(v) for u, v in expected.items()}
