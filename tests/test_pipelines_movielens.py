"""MovieLens-100K preparation, read from ../shared/data/ml-100k (skipped if absent; the
licence forbids copying it, or anything derived from it, into the repository)."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import SHARED, needs_shared
from peterrec_tf.data import datasets
from pipelines import inputs
from pipelines.prepare import prepare

ML100K = os.path.join(SHARED, "data", "ml-100k")
pytestmark = needs_shared(os.path.join(ML100K, "u.data"), "MovieLens-100K")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ml") / "ml")
    index = prepare("movielens_100k", out, ML100K, seed=0, log=lambda *_: None)
    return out, index


def read(data_dir, split):
    found = {}
    for path in inputs.shard_files(data_dir, split):
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            value = f["target"] if "target" in f else f["label"] if "label" in f else None
            found.setdefault(f["user_id"].bytes_list.value[0].decode(), []).append(
                (list(f["item_ids"].int64_list.value), value.int64_list.value[0] if value else None))
    return found


def test_tasks_and_shared_vocabulary(prepared):
    out, index = prepared
    assert {name: entry["task"] for name, entry in index.items()} == {
        "pretrain": "pretrain", "gender": "classify", "age": "classify",
        "occupation": "classify", "coldrec": "item_rec"}
    items = inputs.load_vocab(os.path.join(out, "pretrain", "vocab", "items.txt"))
    for name in index:
        assert inputs.load_vocab(os.path.join(out, name, "vocab", "items.txt")) == items
    meta = inputs.read_metadata(os.path.join(out, "pretrain"))
    assert set(meta["source_checksums"]) >= {"u.data", "u.item", "u.user"}
    assert meta["splits"]["test"] >= 940  # 943 users, a few without 3 source-domain movies


def test_pretrain_sequences_follow_time_and_leave_last_out(prepared):
    out, _ = prepared
    items = inputs.load_vocab(os.path.join(out, "pretrain", "vocab", "items.txt"))
    comedy = set()
    with open(os.path.join(ML100K, "u.item"), encoding="latin-1") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("|")
            if fields[5 + 5] == "1":  # Comedy is the 6th genre flag
                comedy.add(fields[0])
    events = collections.defaultdict(list)
    with open(os.path.join(ML100K, "u.data")) as handle:
        for line in handle:
            user, movie, _, stamp = line.split("\t")
            if movie not in comedy:
                events[user].append((int(stamp), int(movie), movie))
    test = read(os.path.join(out, "pretrain"), "test")
    for user in ("1", "500", "943"):
        expected = [m for _, _, m in sorted(events[user])]
        [(history, last)] = test[user]
        assert [items[i] for i in history] + [items[last]] == expected


def test_user_splits_are_70_3_27_disjoint_and_reproducible(prepared, tmp_path):
    out, _ = prepared
    users = {s: set(read(os.path.join(out, "gender"), s)) for s in ("train", "validation", "test")}
    total = sum(map(len, users.values()))
    assert abs(len(users["train"]) / total - 0.70) < 0.01
    assert abs(len(users["validation"]) / total - 0.03) < 0.01
    assert abs(len(users["test"]) / total - 0.27) < 0.01
    assert not (users["train"] & users["test"]) and not (users["train"] & users["validation"])
    cold = {s: set(read(os.path.join(out, "coldrec"), s)) for s in ("train", "test")}
    assert not cold["train"] & cold["test"]  # a user's target instances stay together
    again = str(tmp_path / "again")
    prepare("movielens_100k", again, ML100K, seed=0, log=lambda *_: None)
    assert read(os.path.join(again, "gender"), "test") == read(os.path.join(out, "gender"), "test")


def test_labels(prepared):
    out, _ = prepared
    ages = inputs.load_vocab(os.path.join(out, "age", "vocab", "labels.txt"))
    assert ages[0] == "0-9" and len(ages) >= 6
    assert all(a.split("-")[1] == str(int(a.split("-")[0]) + 9) for a in ages)
    assert inputs.load_vocab(os.path.join(out, "gender", "vocab", "labels.txt")) == ["M", "F"]
    occupations = inputs.load_vocab(os.path.join(out, "occupation", "vocab", "labels.txt"))
    assert len(occupations) == 21 and "programmer" in occupations
    users = {}
    with open(os.path.join(ML100K, "u.user")) as handle:
        for line in handle:
            user, age, gender, occupation, _ = line.strip().split("|")
            if not age.isdigit():
                continue  # this copy of u.user starts with a header line
            users[user] = (int(age), gender, occupation)
    for name, of in (("age", lambda u: ages.index(f"{u[0] // 10 * 10}-{u[0] // 10 * 10 + 9}")),
                     ("gender", lambda u: ["M", "F"].index(u[1])),
                     ("occupation", lambda u: occupations.index(u[2]))):
        for user, [(_, label)] in read(os.path.join(out, name), "test").items():
            assert label == of(users[user]), (name, user)


def test_coldrec_targets_at_most_three_per_user(prepared):
    out, _ = prepared
    data_dir = os.path.join(out, "coldrec")
    meta = inputs.read_metadata(data_dir)
    per_user = collections.Counter()
    for split in ("train", "validation", "test"):
        for user, found in read(data_dir, split).items():
            per_user[user] += len(found)
    assert max(per_user.values()) == 3 and meta["num_targets"] > 100
    assert meta["stats"]["max_targets_per_user"] == 3
    x, y = next(iter(datasets.finetune_dataset(data_dir, "train", 64, max_len=50)))
    assert x.shape == (64, 52) and y.shape == (64, 2)
    _, y = next(iter(datasets.eval_dataset(data_dir, "test", 64)))
    assert y.shape == (64, 100) and all(len(set(row)) == 100 for row in y.numpy())
    x, _, w = next(iter(datasets.pretrain_dataset(os.path.join(out, "pretrain"), "train", 64,
                                                  "masked_item", max_len=100)))
    assert x.shape == (64, 100) and np.isclose(w.numpy().sum() / (x.numpy() > 0).sum(), 0.3, atol=0.12)


def test_no_domain_split_for_library_comparisons(tmp_path):
    out = str(tmp_path / "all")
    index = prepare("movielens_100k", out, ML100K, target_genres="", log=lambda *_: None)
    assert "coldrec" not in index
    assert inputs.read_metadata(os.path.join(out, "pretrain"))["splits"]["test"] == 943
