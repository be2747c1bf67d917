"""A model is not scored on users it trained on: a training job records which table and
seed split its data (flags.json `data_split`), and `evaluate` refuses a preparation of the
same user table split with another seed (most of its test users were training users); other
data is compared by its records with the model's training split (flags.json `data_dir`), so a
copy of the table with other bytes (CRLF, a BOM, rows reordered or added) split with another
seed is refused too; data holding few or none of them is evaluated with a warning saying how
many, and its results say which it was (`same_preparation_as_training`,
`records_seen_in_training`)."""

import hashlib
import json
import os
import random
import shutil
import struct

import pytest

from pipelines import inputs
from pipelines.dataset import file_checksum
from pipelines.dataset import hash_split_users
from pipelines.prepare import prepare
from test_one_class_labels import TINY, USERS, label_table, pretrained  # noqa: F401 (fixture)
from test_pipelines_user_tables import logs, options, quiet  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def task(logs, pretrained, tmp_path_factory):  # noqa: F811 (the imported fixtures)
    """A label table prepared with seeds 0 and 1, and a task fine-tuned on seed 0's."""
    from peterrec_tf.jobs.finetuning import run_finetune

    root = tmp_path_factory.mktemp("apart")
    table = label_table(root / "labels.csv", lambda user: "ab"[int(user[1:]) % 2])
    data = {seed: str(root / f"seed{seed}") for seed in (0, 1)}
    for seed, directory in data.items():
        prepare("user_labels", directory, table, label_col="tier", seed=seed, **options(logs))
    model_dir = str(root / "task")
    run_finetune(pretrained, data[0], model_dir, train_steps=2, **TINY, **quiet)
    return {"root": root, "table": table, "data": data, "model": model_dir}


def test_the_training_job_records_what_split_its_data(task):
    flags = json.load(open(os.path.join(task["model"], "flags.json")))
    assert flags["data_split"]["split_seed"] == 0
    assert flags["data_split"]["split_by"] == "user"
    assert flags["data_split"]["table_checksums"] == [file_checksum(task["table"])]
    assert "data_split" not in open(os.path.join(task["model"], "flags.txt")).read()


def test_the_same_table_split_with_another_seed_is_refused(logs, task):  # noqa: F811
    from peterrec_tf.jobs.evaluating import run_evaluate

    # the premise: many of seed 1's test users are seed 0's training users
    train0 = {u for u, s in hash_split_users(USERS, 0).items() if s == "train"}
    test1 = {u for u, s in hash_split_users(USERS, 1).items() if s == "test"}
    assert len(train0 & test1) > len(test1) / 2
    with pytest.raises(ValueError, match=r"splits the users of the table .* with --seed=1, "
                                         r"the model's training data with --seed=0"):
        run_evaluate(task["model"], task["data"][1], split="test", **quiet)
    # the same table under another name is the same users
    renamed = task["root"] / "renamed.csv"
    shutil.copy(task["table"], renamed)
    moved = str(task["root"] / "renamed_seed1")
    prepare("user_labels", moved, str(renamed), label_col="tier", seed=1, **options(logs))
    with pytest.raises(ValueError, match="with --seed=1, the model's training data with"):
        run_evaluate(task["model"], moved, split="test", **quiet)
    own = run_evaluate(task["model"], task["data"][0], split="test", **quiet)
    assert own["same_preparation_as_training"] is True
    assert own["examples"] == inputs.read_metadata(task["data"][0])["splits"]["test"]


def prepared(logs, task, name, raw, seed=1, **extra):  # noqa: F811
    """`raw` (bytes) saved as a label table and prepared as `name` with `seed`."""
    table = task["root"] / f"{name}.csv"
    table.write_bytes(raw)
    directory = str(task["root"] / name)
    prepare("user_labels", directory, str(table), label_col="tier", seed=seed,
            **options(logs, **extra))
    return directory


def re_drawn_users(seed=1):
    """Users the model trained on (seed 0's train split) that `seed` puts in its test split."""
    train0 = {u for u, s in hash_split_users(USERS, 0).items() if s == "train"}
    return sorted(u for u, s in hash_split_users(USERS, seed).items()
                  if s == "test" and u in train0)


SEEN = r"{} of its {} test records \(\d+%\) are records of the train split of .*seed0"


@pytest.mark.parametrize("name, edit", [
    ("crlf", lambda raw: raw.replace(b"\n", b"\r\n")),
    ("bom", lambda raw: b"\xef\xbb\xbf" + raw),
    ("one_row_added", lambda raw: raw + b"zed,a\n")], ids=("crlf", "bom", "one_row_added"))
def test_a_copy_of_the_table_split_with_another_seed_is_refused(logs, task, name,  # noqa: F811
                                                                edit):
    """The table saved with other line ends, a BOM or one more row is other bytes (the
    checksum comparison passed it, rc 0, accuracy 0.85 in the red-team run) but the same
    users: their records are compared with the model's training records."""
    from peterrec_tf.jobs.evaluating import run_evaluate

    copy = prepared(logs, task, name, edit(open(task["table"], "rb").read()))
    meta = inputs.read_metadata(copy)
    assert sorted(meta["source_checksums"].values()) != sorted(
        inputs.read_metadata(task["data"][0])["source_checksums"].values())
    seen, tests = len(re_drawn_users()), meta["splits"]["test"]
    assert seen > tests / 2  # the premise: most of seed 1's test users trained the model
    with pytest.raises(ValueError, match=SEEN.format(seen, tests) + r".*--seed=0"):
        run_evaluate(task["model"], copy, split="test", **quiet)


def test_a_reordered_copy_is_refused_though_its_classes_are_renumbered(logs, task):  # noqa: F811
    from peterrec_tf.jobs.evaluating import run_evaluate

    header, *rows = open(task["table"], "rb").read().splitlines(keepends=True)
    copy = prepared(logs, task, "reordered", header + b"".join(reversed(rows)), seed=2)
    assert inputs.read_data_vocab(copy, "labels.txt") == ["b", "a"]  # ids mean other classes
    seen, tests = len(re_drawn_users(2)), inputs.read_metadata(copy)["splits"]["test"]
    assert seen > tests / 2
    with pytest.raises(ValueError, match=SEEN.format(seen, tests)):
        run_evaluate(task["model"], copy, split="test", **quiet)


@pytest.fixture(scope="module")
def other_log(logs, task):  # noqa: F811
    """The fixture's event log plus 100 other users (o000...) over the same items."""
    rng = random.Random(5)
    path = task["root"] / "other_log.tsv"
    lines = [f"o{user:03d}\tSKU-{rng.randrange(25):02d}\t{rng.randrange(1000)}"
             for user in range(100) for _ in range(rng.randrange(3, 9))]
    path.write_text(open(logs["events"]).read() + "\n".join(lines) + "\n")
    return str(path)


def test_a_table_of_other_users_is_evaluated_with_a_warning(logs, task, other_log):  # noqa: F811
    from peterrec_tf.jobs.evaluating import run_evaluate

    others = "member,tier\n" + "".join(f"o{u:03d},{'ab'[u % 2]}\n" for u in range(100))
    other = prepared(logs, task, "other_users", others.encode(), events=other_log)
    said = []
    results = run_evaluate(task["model"], other, split="test", log=said.append)
    assert results["same_preparation_as_training"] is False
    assert results["records_seen_in_training"] == 0
    assert any(line.startswith(f"warning: {other}") and "is not the preparation" in line
               and "none of its" in line for line in said)
    # one of the model's training users among them: scored, with the count said
    user = re_drawn_users()[0]
    label = "ab"[int(user[1:]) % 2]
    mixed = prepared(logs, task, "one_user_trained", (others + f"{user},{label}\n").encode(),
                     events=other_log)
    tests = inputs.read_metadata(mixed)["splits"]["test"]
    assert 1 / tests < 0.05
    said = []
    results = run_evaluate(task["model"], mixed, split="test", log=said.append)
    assert results["records_seen_in_training"] == 1
    assert any(line.startswith(f"warning: {mixed}") and f"1 of its {tests} test records" in line
               for line in said)


def test_the_models_own_preparation_is_not_compared(task):
    from peterrec_tf.jobs.evaluating import run_evaluate

    said = []
    results = run_evaluate(task["model"], task["data"][0], split="test", log=said.append)
    assert results["same_preparation_as_training"] is True
    assert results["records_seen_in_training"] is None
    assert not any("warning" in line for line in said)


def test_a_copy_whose_model_data_is_gone_is_compared_with_the_records_the_model_keeps(  # noqa: F811
        logs, pretrained, task, tmp_path):  # noqa: F811
    """Without the model's training data (prepared again since, or deleted) a re-split copy
    was scored with a warning only, rc 0: a fine-tuned task now keeps digests of its
    training records (training_records.npz, in config.json's checksums) and is compared
    with those. A model that keeps none (saved before) gets the warning and no count; a
    replaced digest file is refused by its checksum."""
    import numpy as np

    from peterrec_tf import model_files
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.jobs.finetuning import run_finetune

    data = str(tmp_path / "data")
    prepare("user_labels", data, task["table"], label_col="tier", seed=0, **options(logs))
    model_dir = str(tmp_path / "task")
    run_finetune(pretrained, data, model_dir, train_steps=2, **TINY, **quiet)
    copy = prepared(logs, task, "crlf_gone", open(task["table"], "rb").read().replace(
        b"\n", b"\r\n"))
    seen, tests = len(re_drawn_users()), inputs.read_metadata(copy)["splits"]["test"]
    # its train split is no longer the one the model trained on
    prepare("user_labels", data, task["table"], label_col="tier", seed=3, overwrite=True,
            **options(logs))
    for gone, why in ((False, "was prepared again since"), (True, "is gone")):
        if gone:
            shutil.rmtree(data)
        with pytest.raises(ValueError, match=rf"{seen} of its {tests} test records .*\(by the "
                                             rf"digests it keeps, training_records.npz: .*{why}"):
            run_evaluate(model_dir, copy, split="test", **quiet)
    # a reordered copy numbers its classes otherwise: read through the model's labels.txt,
    # and a further fine-tuning on it is refused too (review: rc 0 once the data was gone)
    header, *rows = open(task["table"], "rb").read().splitlines(keepends=True)
    reordered = prepared(logs, task, "reordered_gone", header + b"".join(reversed(rows)), seed=2)
    assert inputs.read_data_vocab(reordered, "labels.txt") == ["b", "a"]
    refused = rf"{len(re_drawn_users(2))} of its \d+ test records .*\(by the digests it keeps"
    with pytest.raises(ValueError, match=refused):
        run_evaluate(model_dir, reordered, split="test", **quiet)
    with pytest.raises(ValueError, match=refused):
        run_finetune(model_dir, reordered, str(tmp_path / "further"), train_steps=2, **TINY,
                     **quiet)
    kept = os.path.join(model_dir, "training_records.npz")
    with np.load(kept) as digests:  # no user id enters them: no label can be read off
        assert sorted(digests.files) == ["about", "by_history"]
        kept_digests = set(digests["by_history"].tolist())
    assert len(kept_digests) > len(USERS) / 2
    for user in USERS:  # every (user, class) digest record_overlap would make: none kept
        for class_id in range(2):
            name = user.encode()
            digest = hashlib.blake2b(struct.pack("<I", len(name)) + name
                                     + struct.pack("<q", class_id), digest_size=8)
            assert int.from_bytes(digest.digest(), "little") not in kept_digests
    original = open(kept, "rb").read()
    with open(kept, "wb") as handle:
        np.savez(handle, by_user=np.zeros(0, np.uint64), by_history=np.zeros(0, np.uint64),
                 about=np.array("{}"))
    with pytest.raises(ValueError, match="training_records.npz: SHA-256 differs"):
        run_evaluate(model_dir, copy, split="test", **quiet)
    # a model saved before it kept any: the warning, no count
    open(kept, "wb").write(original)
    config = model_files.read_config(model_dir)
    del config["checksums"]["training_records.npz"]
    config["config_sha256"] = model_files.config_checksum(config)
    json.dump(config, open(os.path.join(model_dir, "config.json"), "w"))
    os.remove(kept)
    said = []
    results = run_evaluate(model_dir, copy, split="test", log=said.append)
    assert results["records_seen_in_training"] is None
    assert any(line.startswith(f"warning: {copy}") and "could not be compared" in line
               and "is gone" in line and "keeps no digests" in line for line in said), said


def test_a_further_fine_tuning_on_the_users_re_drawn_is_refused(logs, task, tmp_path):  # noqa: F811
    """Fine-tuning a task further on its table split with another seed would train on its
    own test users' labels and report them as held out; a copy of the table is compared by
    its records as `evaluate` compares it."""
    from peterrec_tf.jobs.finetuning import run_finetune

    with pytest.raises(ValueError, match="with --seed=1, the model's training data with"):
        run_finetune(task["model"], task["data"][1], str(tmp_path / "further"), train_steps=2,
                     **TINY, **quiet)
    copy = prepared(logs, task, "crlf_further",
                    open(task["table"], "rb").read().replace(b"\n", b"\r\n"))
    with pytest.raises(ValueError, match=SEEN.format(len(re_drawn_users()), r"\d+")):
        run_finetune(task["model"], copy, str(tmp_path / "further"), train_steps=2,
                     **TINY, **quiet)
    assert not os.path.exists(tmp_path / "further")


def test_an_item_recommendation_copy_is_compared_by_its_targets(logs, pretrained, task,  # noqa: F811
                                                               tmp_path):
    """Item recommendation records are compared by their target item (targets.txt) as
    classification records are by their label: a CRLF copy of a target table re-split with
    another seed is refused, and so is one whose users' histories all grew by an event
    (before: compared with the history, "none of its test records", rc 0)."""
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.jobs.finetuning import run_finetune

    rows = "member\tsku\tts\n" + "".join(f"{u}\tT-{i % 3}\t{i}\n" for i, u in enumerate(USERS))
    tables = {"lf": rows.encode(), "crlf": rows.replace("\n", "\r\n").encode()}
    events = tmp_path / "more_events.tsv"
    events.write_text(open(logs["events"]).read()
                      + "".join(f"{u}\tSKU-01\t999999\n" for u in USERS))
    data = {}
    for seed, (name, raw, log) in enumerate([(n, r, logs["events"]) for n, r in tables.items()]
                                            + [("grown", tables["crlf"], str(events))]):
        (tmp_path / f"{name}.tsv").write_bytes(raw)
        data[name] = str(tmp_path / name)
        prepare("user_targets", data[name], str(tmp_path / f"{name}.tsv"), seed=min(seed, 1),
                **options(logs, events=log))
    model_dir = str(tmp_path / "task")
    settings = dict(TINY, num_candidates=3, ks=(1,))
    run_finetune(pretrained, data["lf"], model_dir, train_steps=2, **settings, **quiet)
    for name in ("crlf", "grown"):
        tests = inputs.read_metadata(data[name])["splits"]["test"]
        refused = SEEN.format(len(re_drawn_users()), tests).replace("seed0", "lf")
        with pytest.raises(ValueError, match=refused + r".*the same user and target\)"):
            run_evaluate(model_dir, data[name], split="test", num_candidates=3, ks=(1,),
                         **quiet)


def test_a_label_copy_whose_histories_all_grew_is_compared_by_user_and_label(logs, task):  # noqa: F811
    """One event added to every user's history made every record another one, so a CRLF copy
    re-split with --seed=1 was scored with "none of its test records" (red-team review: 12
    of 16 test users trained the model). A class label is the user's own: for data whose
    user ids are the source's keys, the same user with the same label counts."""
    from peterrec_tf.jobs.evaluating import run_evaluate

    events = task["root"] / "more_events.tsv"
    events.write_text(open(logs["events"]).read()
                      + "".join(f"{u}\tSKU-01\t999999\n" for u in USERS))
    copy = prepared(logs, task, "more_events", open(task["table"], "rb").read().replace(
        b"\n", b"\r\n"), events=str(events))
    seen, tests = len(re_drawn_users()), inputs.read_metadata(copy)["splits"]["test"]
    with pytest.raises(ValueError, match=SEEN.format(seen, tests) + r".*the same user and label"):
        run_evaluate(task["model"], copy, split="test", **quiet)


def test_the_training_data_is_found_from_any_working_directory(logs, pretrained, task,  # noqa: F811
                                                             tmp_path, monkeypatch):
    """flags.json keeps --data_dir as given; read from another working directory a relative
    one named nothing, and the re-split copy was evaluated with a warning (review). The
    model's config.json records it absolute."""
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.jobs.finetuning import run_finetune

    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    prepare("user_labels", "data", task["table"], label_col="tier", seed=0, **options(logs))
    run_finetune(pretrained, "data", "model", train_steps=2, **TINY, **quiet)
    copy = prepared(logs, task, "crlf_elsewhere", open(task["table"], "rb").read().replace(
        b"\n", b"\r\n"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=SEEN.format(len(re_drawn_users()), r"\d+")
                       .replace(".*seed0", ".*project")):
        run_evaluate(str(work / "model"), copy, split="test", **quiet)


def log_variant(logs, name, edit, vocab=None):  # noqa: F811
    """The pre-training log with each user's events (oldest first: by time, ties in file
    order, as prepare orders them) passed through `edit`, prepared as next-item data (with
    its own item vocabulary unless `vocab`)."""
    header, *lines = open(os.path.join(logs["root"], "pre_log.tsv")).read().splitlines()
    by_user = {}
    for line in lines:
        by_user.setdefault(line.split("\t")[0], []).append(line)
    kept = [line for events in by_user.values()
            for line in edit(sorted(events, key=lambda e: int(e.split("\t")[2])))]
    path = logs["root"] / f"{name}.tsv"
    path.write_text("\r\n".join([header] + kept) + "\r\n")
    directory = str(logs["root"] / name)
    prepare("interactions", directory, str(path), **options(logs, events=None, vocab=vocab))
    return directory


def test_next_item_data_cut_earlier_is_refused_and_a_later_log_is_not(logs, pretrained):  # noqa: F811
    """Next-item data is split by position, so a copy of the log (other bytes) holds out
    the items the model held out, but a log cut earlier (each user's two newest events
    gone) holds out items inside the model's training sequences: before, it was scored
    with a warning only, rc 0. A history and next item that begin a training sequence of
    the same user count as trained on."""
    from peterrec_tf.jobs.evaluating import run_evaluate

    def evaluate(data, split="test"):
        said = []
        return run_evaluate(pretrained, data, split=split, num_candidates=5, ks=(1, 3),
                            log=said.append), said

    cut = log_variant(logs, "cut_by_two", lambda events: events[:-2])
    tests = inputs.read_metadata(cut)["splits"]["test"]
    with pytest.raises(ValueError, match=rf"{tests} of its {tests} test records \(100%\) are "
                                         r"inside the training sequences of .*pre, .*\(the same "
                                         r"user, history and next item\).*cut earlier"):
        evaluate(cut)
    # cut at both ends (a "last N events" export): its test items lie inside the user's
    # training sequence, though not at its start (review: before, "none of its" test records)
    both = log_variant(logs, "cut_at_both_ends", lambda events: events[1:-2])
    with pytest.raises(ValueError, match=r"test records \(100%\) are inside the training"):
        evaluate(both)
    # the rest are scored, so they number the items as the model does
    copy = log_variant(logs, "same_log_crlf", lambda events: events, vocab=logs["vocab"])
    later = log_variant(logs, "one_event_later", lambda events: events + [
        events[-1].rsplit("\t", 1)[0].replace(events[-1].split("\t")[1], "SKU-07")
        + "\t100000"], vocab=logs["vocab"])
    one = log_variant(logs, "cut_by_one", lambda events: events[:-1], vocab=logs["vocab"])
    for data, split in ((copy, "test"), (copy, "validation"), (later, "test"), (one, "test")):
        results, said = evaluate(data, split)
        assert results["records_seen_in_training"] == 0, (data, split)
        assert any("none of its" in line for line in said), (data, split)
    with pytest.raises(ValueError, match=r"validation records \(100%\) are inside"):
        evaluate(one, "validation")  # its validation item is the model's last trained one
