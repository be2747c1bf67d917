"""Fine-tuning data from string-keyed logs and tables (`user_labels`, `user_targets`):
what the records hold (history before --cutoff_time, labels/targets, table order), the
checks, local and Beam byte for byte, and the fine-tuning job reading the result."""

import json
import os
import random
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from pipelines import canonical, inputs, text_lines
from pipelines.dataset import hash_split_users, split_users
from pipelines.errors import DataError
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}
COLUMNS = {"user_col": "member", "item_col": "sku", "time_col": "ts"}
BEAM = {"runner": "DirectRunner", "beam_args": ["--direct_num_workers=1"]}


def records(directory):
    """{split: [(user, item ids, target or label)]} in file order (round-robin read back)."""
    meta = inputs.read_metadata(directory)
    key = "label" if meta["task"] == "classify" else "target"
    found = {}
    for split in ("train", "validation", "test"):
        shards = []
        for name in sorted(n for n in os.listdir(directory) if n.startswith(split + "-")):
            shards.append([])
            for raw in tf.data.TFRecordDataset(os.path.join(directory, name),
                                               compression_type="GZIP"):
                example = tf.train.Example.FromString(raw.numpy()).features.feature
                shards[-1].append((example["user_id"].bytes_list.value[0].decode(),
                                   list(example["item_ids"].int64_list.value),
                                   example[key].int64_list.value[0]))
        rows = [shard[i] for i in range(max(map(len, shards))) for shard in shards
                if i < len(shard)]  # records are written round-robin over the shards
        found[split] = rows
    return found


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A string-keyed event log (60 users), its pre-training preparation, a label table and
    a target-domain log; plus a few hand-made users whose records the tests spell out."""
    root = tmp_path_factory.mktemp("user_tables")
    rng = random.Random(3)
    events = ["member\tsku\tts"]
    for user in range(60):
        for _ in range(rng.randrange(4, 12)):
            events.append(f"m{user:03d}\tSKU-{rng.randrange(25):02d}\t{rng.randrange(1000)}")
    # hand-made: ties keep file order, a later event before an earlier one, an OOV item
    events += ["zed\tSKU-03\t500", "zed\tSKU-01\t100", "zed\tSKU-02\t500", "zed\tNEW-9\t900",
               "late\tSKU-04\t950"]
    (root / "log.tsv").write_text("\n".join(events) + "\n")
    labels = ["member,tier,extra"] + [f"m{user:03d},{rng.choice(['gold', 'silver', 'bronze'])},x"
                                      for user in range(0, 64)]
    labels += ["zed,platinum,x", "late,gold,x"]
    (root / "labels.csv").write_text("\n".join(labels) + "\n")
    targets = ["member\tsku\tts"]
    for _ in range(150):
        targets.append(f"m{rng.randrange(64):03d}\tT-{rng.randrange(12)}\t{rng.randrange(1000)}")
    targets += ["zed\tT-late\t20", "zed\tT-early\t10", "late\tT-0\t5"]
    (root / "targets.tsv").write_text("\n".join(targets) + "\n")
    pre = str(root / "pre")
    # the pre-training log lacks NEW-9 (OOV later)
    (root / "pre_log.tsv").write_text("\n".join(e for e in events if "NEW-9" not in e) + "\n")
    prepare("interactions", pre, str(root / "pre_log.tsv"), **COLUMNS, **quiet)
    return {"root": root, "events": str(root / "log.tsv"), "labels": str(root / "labels.csv"),
            "targets": str(root / "targets.tsv"), "vocab": os.path.join(pre, "vocab", "items.txt"),
            "pre": pre}


def options(logs, **extra):
    return dict(COLUMNS, **{"events": logs["events"], "vocab": logs["vocab"], **extra}, **quiet)


def test_hash_split_is_by_user_70_3_27_and_seeded():
    users = [f"u{i}" for i in range(1000)]
    split = hash_split_users(users, seed=0)
    assert [sum(s == name for s in split.values()) for name in ("train", "validation", "test")] \
        == [700, 30, 270]
    assert hash_split_users(list(reversed(users)), seed=0) == split
    assert hash_split_users(users, seed=1) != split
    # the same counts as the permutation split every other fine-tuning format uses
    assert sorted(split.values()) == sorted(split_users(users, seed=0).values())


def test_user_labels_records_history_before_cutoff(logs, tmp_path):
    out = str(tmp_path / "labels")
    prepare("user_labels", out, logs["labels"], label_col="tier", cutoff_time=600.0,
            **options(logs))
    meta = inputs.read_metadata(out)
    assert meta["task"] == "classify"
    labels = inputs.load_vocab(os.path.join(out, "vocab", "labels.txt"))
    assert labels[:1] == [open(logs["labels"]).read().split("\n")[1].split(",")[1]]
    assert "platinum" in labels and meta["num_classes"] == len(labels) == 4
    with open(os.path.join(out, "vocab", "items.txt"), "rb") as a, open(logs["vocab"], "rb") as b:
        assert a.read() == b.read()  # the pre-training vocabulary, copied
    items = inputs.load_vocab(logs["vocab"])
    found = {user: (ids, label) for rows in records(out).values() for user, ids, label in rows}
    # zed: events before 600 by time, the tie at 500 in file order; NEW-9 is at 900 (cut)
    assert found["zed"] == ([items.index("SKU-01"), items.index("SKU-03"),
                             items.index("SKU-02")], labels.index("platinum"))
    assert "late" not in found  # its only event is at 950
    stats = meta["stats"]
    assert stats["users"] == 66 and stats["users_not_in_events"] == 4  # m060..m063
    assert stats["users_without_history"] == len([u for u in range(60)
                                                  if f"m{u:03d}" not in found]) + 4 + 1
    assert stats["cutoff_time"] == 600.0 and stats["oov_occurrences"] == 0
    assert sum(meta["splits"].values()) == len(found) == stats["instances"]
    # every record's user in exactly one split, train records in table order
    train_users = [user for user, _, _ in records(out)["train"]]
    order = [line.split(",")[0] for line in open(logs["labels"]).read().split("\n")[1:]]
    assert train_users == sorted(train_users, key=order.index)


def test_user_labels_without_cutoff_counts_oov(logs, tmp_path):
    out = str(tmp_path / "labels_all")
    prepare("user_labels", out, logs["labels"], label_col="tier", **options(logs))
    meta = inputs.read_metadata(out)
    found = {user: ids for rows in records(out).values() for user, ids, _ in rows}
    assert found["zed"][-1] == 0 and len(found["zed"]) == 4  # NEW-9: OOV, id 0
    assert meta["stats"]["oov_occurrences"] == 1
    assert meta["stats"]["oov_most_common"] == [["NEW-9", 1]]
    assert "late" in found and meta["stats"]["users_without_history"] == 4


def test_user_targets_one_record_per_target_in_time_order(logs, tmp_path):
    out = str(tmp_path / "targets")
    prepare("user_targets", out, logs["targets"], cutoff_time=600.0, **options(logs))
    meta = inputs.read_metadata(out)
    assert meta["task"] == "item_rec"
    targets = inputs.load_vocab(os.path.join(out, "vocab", "targets.txt"))
    assert targets[0] == "<UNK>" and meta["num_targets"] == len(targets)
    rows = [row for split in records(out).values() for row in split]
    zed = [(ids, target) for user, ids, target in rows if user == "zed"]
    assert [targets[t] for _, t in zed] == ["T-early", "T-late"]  # by time, not file order
    assert all(len(ids) == 3 for ids, _ in zed)
    assert not [row for row in rows if row[0] == "late"]
    splits_of = {}
    for split, found in records(out).items():
        for user, _, _ in found:
            splits_of.setdefault(user, set()).add(split)
    assert all(len(s) == 1 for s in splits_of.values())  # a user's targets stay together
    assert meta["stats"]["instances"] == len(rows)


def write(path, text):
    path.write_text(text)
    return str(path)


def test_user_targets_a_repeated_target_row_is_a_bad_line_on_both_runners(logs, tmp_path,
                                                                          small_chunks):
    """A target row repeating an earlier row of its user (same item, same time) would be a
    second, identical record (a duplicated test target counts twice): a bad line naming
    the line it repeats, on both runners; the same item at another time stays a target."""
    from test_pipelines_beam import assert_same_dataset
    lines = open(logs["targets"]).read().split("\n")
    first = lines.index("zed\tT-late\t20") + 1  # its line number
    table = write(tmp_path / "targets.tsv", "\n".join(lines[:-1] + [
        "zed\tT-late\t30", "zed\tT-late\t20", "late\tT-0\t5.0"]) + "\n")
    repeat, late = len(lines) + 1, lines.index("late\tT-0\t5") + 1  # 5.0 is time 5 too
    for runner in ({}, BEAM):
        with pytest.raises(DataError) as error:
            prepare("user_targets", str(tmp_path / "x"), table, **options(logs), **runner)
        assert str(error.value).startswith(
            f"{table}:{repeat}: repeats line {first} (the same user, item and time)")
    kept = {"before": str(tmp_path / "before")}
    prepare("user_targets", kept["before"], logs["targets"], **options(logs))
    for name, runner in (("local", {}), ("beam", BEAM)):
        kept[name] = str(tmp_path / name)
        prepare("user_targets", kept[name], table, skip_bad_lines=True, **options(logs),
                **runner)
    assert_same_dataset(kept["local"], kept["beam"])
    meta = inputs.read_metadata(kept["local"])
    assert meta["stats"]["examples"] == [
        f"{table}:{repeat}: repeats line {first} (the same user, item and time): it would be "
        "a second, identical record; a target at another time is one of its own",
        f"{table}:{repeat + 1}: repeats line {late} (the same user, item and time): it "
        "would be a second, identical record; a target at another time is one of its own"]
    targets = inputs.load_vocab(os.path.join(kept["local"], "vocab", "targets.txt"))
    rows = [row for split in records(kept["local"]).values() for row in split]
    assert [targets[t] for user, _, t in rows if user == "zed"] == ["T-early", "T-late",
                                                                    "T-late"]  # 10, 20, 30
    before = inputs.read_metadata(kept["before"])["stats"]["instances"]
    assert meta["stats"]["instances"] == len(rows) == before + 1  # only T-late at 30 added


def test_one_label_written_two_ways_is_refused_on_both_runners(logs, tmp_path):
    """Labels are exact text: `0` and `0.0` (or `Gold` and `gold`) were two classes, exit 0,
    a split nothing in the data means (red team: 1, 0 and 0.0 gave num_classes 3). Refused
    on both runners, naming the spellings and their first lines; --exact_labels keeps them
    apart, identically on both runners; a label only a dropped user holds is not counted."""
    from test_pipelines_beam import assert_same_dataset
    lines = open(logs["labels"]).read().split("\n")
    numbers = [line.replace("gold", "1").replace("silver", "0").replace("bronze", "1.0")
               for line in lines]
    first_one = next(n for n, line in enumerate(numbers, 1) if line.split(",")[1:2] == ["1"])
    first_other = next(n for n, line in enumerate(numbers, 1)
                       if line.split(",")[1:2] == ["1.0"])
    table = write(tmp_path / "numbers.csv", "\n".join(numbers))
    cased = write(tmp_path / "cased.csv", "\n".join(
        line.replace("m007,gold", "m007,Gold").replace("m007,silver", "m007,Silver")
        .replace("m007,bronze", "m007,Bronze") for line in lines))
    for runner in ({}, BEAM):
        with pytest.raises(DataError) as error:
            prepare("user_labels", str(tmp_path / "x"), table, label_col="tier",
                    **options(logs), **runner)
        assert str(error.value).startswith(
            f"{table}: '1' (line {first_one}) and '1.0' (line {first_other}): one label "
            "written two ways would be two classes"), error.value
        assert "--exact_labels" in str(error.value)
        with pytest.raises(DataError, match="'(Gold|Silver|Bronze)' \\(line 9\\)"):
            prepare("user_labels", str(tmp_path / "y"), cased, label_col="tier",
                    **options(logs), **runner)
    kept = {}
    for name, runner in (("local", {}), ("beam", BEAM)):
        kept[name] = str(tmp_path / name)
        prepare("user_labels", kept[name], table, label_col="tier", exact_labels=True,
                **options(logs), **runner)
    assert_same_dataset(kept["local"], kept["beam"])
    assert inputs.read_metadata(kept["local"])["num_classes"] == 4  # 1, 0, 1.0, platinum
    # a second spelling held only by a user without history is no class: not refused
    dropped = write(tmp_path / "dropped.csv", "\n".join(lines[:-1] + ["ghost,Gold,x", ""]))
    prepare("user_labels", str(tmp_path / "z"), dropped, label_col="tier", **options(logs))


def test_what_counts_as_one_label_written_two_ways():
    """`label_value`: decimal numbers by exact value, words by NFKC case-folded text; an
    exponent past Decimal's range is text (it raised decimal.InvalidOperation, a traceback
    from prepare: review)."""
    from pipelines.formats.user_labels import label_value

    same = [("1", "1.0"), ("01", "1"), ("1e3", "1000"), ("-0", "0"), ("Gold", "gold"),
            ("\u00e9", "e\u0301"), ("1.1", "1.10")]
    apart = [("0.1", "0.10000000000000001"), ("1_000", "1000"), ("0x10", "16"), ("a", "b")]
    assert all(label_value(a) == label_value(b) for a, b in same)
    assert not any(label_value(a) == label_value(b) for a, b in apart)
    huge = "1e9999999999999999999999"
    assert label_value(huge) == ("text", huge) != label_value("1")


def test_the_reserved_item_is_a_bad_line_in_the_event_and_target_logs(logs, tmp_path,
                                                                      small_chunks):
    """An item named `<UNK>` (id 0 of the item and target vocabularies: padding and every
    unknown item) in `--events` or in user_targets' target log is a bad line naming file
    and line on both runners; it used to become id 0 silently (a history item missing from
    the OOV counts, a target the evaluation skips as padding)."""
    from test_pipelines_beam import assert_same_dataset
    message = "item '<UNK>' is the reserved token of unknown items (id 0); rename this item"
    events = open(logs["events"]).read().split("\n")
    events[5:5] = ["zed\t<UNK>\t50"]
    log = write(tmp_path / "log.tsv", "\n".join(events))
    targets = open(logs["targets"]).read().split("\n")
    targets[7:7] = ["m001\t<UNK>\t40"]
    table = write(tmp_path / "targets.tsv", "\n".join(targets))
    for runner in ({}, BEAM):
        with pytest.raises(DataError) as error:
            prepare("user_labels", str(tmp_path / "x"), logs["labels"], label_col="tier",
                    **options(logs, events=log), **runner)
        assert str(error.value) == f"{log}:6: {message}"
        with pytest.raises(DataError) as error:
            prepare("user_targets", str(tmp_path / "x"), table, **options(logs), **runner)
        assert str(error.value) == f"{table}:8: {message}"
    kept = {}
    for name, runner in (("local", {}), ("beam", BEAM)):
        kept[name] = str(tmp_path / name)
        prepare("user_targets", kept[name], table, skip_bad_lines=True,
                **options(logs, events=log), **runner)
    assert_same_dataset(kept["local"], kept["beam"])
    meta = inputs.read_metadata(kept["local"])
    assert meta["stats"]["examples"] == [f"{table}:8: {message}", f"{log}:6: {message}"]
    assert meta["stats"]["oov_most_common"] == [["NEW-9", 1]]
    found = inputs.load_vocab(os.path.join(kept["local"], "vocab", "targets.txt"))
    assert found.count("<UNK>") == 1 and found[0] == "<UNK>"
    rows = [row for split in records(kept["local"]).values() for row in split]
    assert all(target > 0 for _, _, target in rows)


def test_checks_and_messages(logs, tmp_path):
    with pytest.raises(ValueError, match="--vocab"):
        prepare("user_labels", str(tmp_path / "a"), logs["labels"], events=logs["events"],
                **COLUMNS, **quiet)
    with pytest.raises(ValueError, match="--events"):
        prepare("user_labels", str(tmp_path / "b"), logs["labels"], vocab=logs["vocab"],
                **COLUMNS, **quiet)
    with pytest.raises(DataError, match="lacks column"):
        prepare("user_labels", str(tmp_path / "c"), logs["labels"], **options(logs))
    # six more valid users after the bad lines: every 70/3/27 split gets one
    more = "".join(f"m{user:03d},b\n" for user in range(10, 16))
    table = write(tmp_path / "t.csv", "member,tier\nm001,a\n\nm002,b\nm001,c\nm003,\n" + more)
    with pytest.raises(DataError, match=r"t\.csv:3: blank line"):
        prepare("user_labels", str(tmp_path / "d"), table, label_col="tier", **options(logs))
    kept = str(tmp_path / "e")
    prepare("user_labels", kept, table, label_col="tier", skip_bad_lines=True, **options(logs))
    assert inputs.read_metadata(kept)["stats"]["examples"] == [
        f"{table}:3: blank line (expected a user, label row)",
        f"{table}:5: a second row for this user (first on line 2); the table holds one label "
        "per user",
        f"{table}:6: empty user or label"]
    nobody = write(tmp_path / "n.csv", "member,tier\nghost,a\n")
    with pytest.raises(DataError, match="no user of this table has events"):
        prepare("user_labels", str(tmp_path / "f"), nobody, label_col="tier", **options(logs))
    with pytest.raises(DataError, match="before --cutoff_time=1.0"):
        prepare("user_labels", str(tmp_path / "g"), logs["labels"], label_col="tier",
                cutoff_time=1.0, **options(logs))
    warned = []
    prepare("user_labels", str(tmp_path / "h"), write(tmp_path / "w.csv",
                                                      "member,tier\nm001,a\nghost,b\n" + more),
            label_col="tier", **dict(options(logs), log=warned.append))
    assert any("1 of 8 users of the table" in line and "dropped" in line for line in warned)


@pytest.fixture
def small_chunks(monkeypatch):
    from pipelines import beam_stages
    monkeypatch.setattr(text_lines, "CHUNK_BYTES", 256)  # many chunks on small files
    # Beam ranks records in buckets of 4 lines' keys: many buckets, offsets that matter
    monkeypatch.setattr(beam_stages, "RECORD_BUCKET_SHIFT", canonical.POSITION_BITS + 2)


def test_beam_equals_local(logs, tmp_path, small_chunks):
    from test_pipelines_beam import assert_same_dataset
    # bad lines in both files (blank, a repeated user, wrong width), skipped and counted
    table = write(tmp_path / "labels.csv", open(logs["labels"]).read()
                  + "\nm005,gold,x\nbroken\nzed,other,x\n\n")
    log = write(tmp_path / "log.tsv", open(logs["events"]).read() + "zed\tSKU-05\n\n")
    for format, source, extra in (("user_labels", table, {"label_col": "tier"}),
                                  ("user_targets", logs["targets"], {})):
        for cutoff in ({}, {"cutoff_time": 600.0}):
            settings = dict(options(logs), events=log, skip_bad_lines=True, seed=4, **extra,
                            **cutoff)
            local, beam = str(tmp_path / f"{format}_local"), str(tmp_path / f"{format}_beam")
            prepare(format, local, source, **settings, overwrite=True)
            prepare(format, beam, source, **settings, **BEAM, overwrite=True)
            assert_same_dataset(local, beam)
            assert inputs.read_metadata(beam)["stats"]["skipped_bad_lines"] == (
                5 if format == "user_labels" else 1)
    # the first bad line is the error on both paths
    for runner in ({}, BEAM):
        with pytest.raises(DataError, match=r"labels\.csv:\d+: blank line"):
            prepare("user_labels", str(tmp_path / "x"), table, label_col="tier",
                    **options(logs, events=log), **runner)


def test_fine_tuning_reads_both_formats(logs, tmp_path):
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain
    tiny = {"channels": 8, "dilations": (1, 2), "batch_size": 16, "log_every": 5,
            "checkpoint_every": 10, "jit_compile": False}  # the formats, not XLA, are tested
    model_dir = str(tmp_path / "pre_model")
    run_pretrain(logs["pre"], model_dir, train_steps=3, seed=0, **tiny, **quiet)
    labelled, targeted = str(tmp_path / "labels"), str(tmp_path / "targets")
    prepare("user_labels", labelled, logs["labels"], label_col="tier", **options(logs))
    prepare("user_targets", targeted, logs["targets"], **options(logs))
    classify = run_finetune(model_dir, labelled, str(tmp_path / "cls"), train_steps=3,
                            batch_size=8, log_every=5, jit_compile=False, **quiet)
    assert 0.0 <= classify["test"]["accuracy"] <= 1.0 and classify["test"]["examples"] > 0
    recommend = run_finetune(model_dir, targeted, str(tmp_path / "rec"), train_steps=3,
                             batch_size=8, log_every=5, num_candidates=10, ks=(1, 3),
                             jit_compile=False, **quiet)
    assert recommend["test"]["examples"] == inputs.read_metadata(targeted)["splits"]["test"]


def test_command_line(logs, tmp_path):
    out = str(tmp_path / "cli")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.prepare", "--format=user_labels",
         f"--input={logs['labels']}", f"--events={logs['events']}", f"--vocab={logs['vocab']}",
         "--user_col=member", "--item_col=sku", "--time_col=ts", "--label_col=tier",
         "--cutoff_time=600", f"--output_dir={out}"], cwd=REPO_ROOT, capture_output=True,
        text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr
    meta = json.load(open(os.path.join(out, "metadata.json")))
    assert meta["options"]["cutoff_time"] == 600.0 and meta["options"]["label_col"] == "tier"
    assert any(name.startswith("events:") for name in meta["source_checksums"])
    assert meta["events_source"] == logs["events"] and "events" not in meta["options"]


def test_paper_log_writes_a_learnable_label_table_and_a_target_log(tmp_path):
    """`pipelines.paper_log --labels/--target_log` (the README's fine-tuning inputs): the
    log is the same bytes with or without them, each user's label is the parity most of
    their items have, and each user's target events come after their last event and are
    counterparts of their own items."""
    from collections import defaultdict

    from pipelines.paper_log import TARGETS_PER_USER, write_paper_log

    plain, log = tmp_path / "plain.tsv", tmp_path / "log.tsv"
    labels, targets = tmp_path / "labels.tsv", tmp_path / "targets.tsv"
    settings = dict(events=3000, num_items=300, history=20, seed=4, block_users=40)
    write_paper_log(str(plain), **settings)
    write_paper_log(str(log), labels_path=str(labels), target_log_path=str(targets), **settings)
    assert log.read_bytes() == plain.read_bytes()
    items, last = defaultdict(list), {}
    for line in log.read_text().splitlines()[1:]:
        user, item, stamp = line.split("\t")
        items[user].append(int(item[1:]))
        last[user] = max(last.get(user, 0), int(stamp))
    label_rows = [line.split("\t") for line in labels.read_text().splitlines()]
    assert label_rows[0] == ["user", "label"]
    assert [user for user, _ in label_rows[1:]] == [f"u{n}" for n in range(len(items))]
    expected = {user: "even" if 2 * sum(i % 2 == 0 for i in got) > len(got) else "odd"
                for user, got in items.items()}
    assert dict(label_rows[1:]) == expected
    assert set(expected.values()) == {"even", "odd"}
    target_rows = [line.split("\t") for line in targets.read_text().splitlines()]
    assert target_rows[0] == ["user", "item", "timestamp"]
    per_user = defaultdict(list)
    for user, item, stamp in target_rows[1:]:
        per_user[user].append((item, int(stamp)))
    assert set(per_user) == set(items)
    for user, events in per_user.items():
        assert len(events) == TARGETS_PER_USER
        assert all(item.startswith("t") and int(item[1:]) in items[user] for item, _ in events)
        assert all(stamp > last[user] for _, stamp in events)
