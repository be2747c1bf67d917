"""An in-memory prepared dataset and the split helpers every format shares."""

import dataclasses
import hashlib

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Record:
    """One example: item ids (oldest first), user, and target item or class label."""
    item_ids: list
    user_id: str
    target: int = None
    label: int = None


@dataclasses.dataclass
class PreparedDataset:
    """What a format produces; `writer.write_dataset` puts it on disk."""
    task: str                       # pretrain | item_rec | classify
    splits: dict                    # split -> list[Record]
    items: object                   # Vocabulary
    targets: object = None          # Vocabulary (item_rec)
    labels: list = None             # class names (classify)
    stats: dict = dataclasses.field(default_factory=dict)
    name: str = None                # sub-directory for multi-task sources


def leave_last_out(user_sequences, min_length=3):
    """Pre-training splits per user: train = seq[:-2]; validation target seq[-2] from
    seq[:-2]; test target seq[-1] from seq[:-1].  Users with fewer than `min_length`
    items cannot give all three and are dropped (counted)."""
    splits = {split: [] for split in SPLITS}
    dropped = 0
    for user, seq in user_sequences:
        if len(seq) < min_length:
            dropped += 1
            continue
        splits["train"].append(Record(seq[:-2], user))
        splits["validation"].append(Record(seq[:-2], user, target=seq[-2]))
        splits["test"].append(Record(seq[:-1], user, target=seq[-1]))
    return splits, {"users_too_short": dropped, "min_length": min_length}


def split_sizes(count, fractions=(0.70, 0.03, 0.27)):
    """(train, validation, test) sizes `split_users` gives `count` users."""
    n_train = int(round(fractions[0] * count))
    n_valid = max(1, int(round(fractions[1] * count))) if count > 2 else 0
    return n_train, n_valid, count - n_train - n_valid


def smallest_full_split(fractions=(0.70, 0.03, 0.27)):
    """The fewest users for which `split_users` gives every split at least one."""
    return next(n for n in range(1, 1000) if min(split_sizes(n, fractions)) > 0)


def split_users(users, seed, fractions=(0.70, 0.03, 0.27)):
    """{user: split}, random by a seeded permutation (the paper's 70/3/27)."""
    users = sorted(set(users))
    order = np.random.RandomState(seed).permutation(len(users))
    n_train, n_valid, _ = split_sizes(len(users), fractions)
    assignment = {}
    for rank, index in enumerate(order):
        split = "train" if rank < n_train else "validation" if rank < n_train + n_valid else "test"
        assignment[users[index]] = split
    return assignment


def by_user_split(records, seed):
    """Group records into splits by their user (all of a user's instances together)."""
    assignment = split_users([r.user_id for r in records], seed)
    splits = {split: [] for split in SPLITS}
    for record in records:
        splits[assignment[record.user_id]].append(record)
    return splits


def by_instance_split(records, seed, fractions=(0.70, 0.03, 0.27)):
    """The release's split: each instance on its own (a user's targets may land in
    different splits, so its source sequence is seen in training and testing)."""
    keyed = [Record(r.item_ids, f"{r.user_id}#{i}", r.target, r.label) for i, r in enumerate(records)]
    assignment = split_users([r.user_id for r in keyed], seed, fractions)
    splits = {split: [] for split in SPLITS}
    for record, key in zip(records, keyed):
        splits[assignment[key.user_id]].append(record)
    return splits


def file_checksum(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


VOCAB_CHECKSUMS = "vocab_sha256"  # metadata.json: file name in vocab/ -> SHA-256


def vocab_checksums(directory):
    """SHA-256 of each file in DIRECTORY/vocab/, recorded in metadata.json so that a job
    reading a vocabulary can tell one edited or swapped in after the preparation."""
    import os

    folder = os.path.join(directory, "vocab")
    if not os.path.isdir(folder):
        return {}
    return {name: file_checksum(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def check_vocab_checksum(path):
    """`DataError` if `path`, a DIR/vocab/NAME of a preparation, differs from the SHA-256
    DIR/metadata.json records for it: its ids would no longer mean what the shards hold.
    Nothing for a file outside a preparation or of an older one (no record)."""
    import json
    import os

    from pipelines.errors import DataError

    folder = os.path.dirname(os.path.abspath(path))
    meta_path = os.path.join(os.path.dirname(folder), "metadata.json")
    if os.path.basename(folder) != "vocab" or not os.path.exists(meta_path):
        return
    with open(meta_path, encoding="utf-8") as handle:
        recorded = json.load(handle).get(VOCAB_CHECKSUMS, {}).get(os.path.basename(path))
    if recorded and recorded != file_checksum(path):
        raise DataError(path, None, "SHA-256 differs from metadata.json's record (edited, or "
                        "copied from another preparation, after this one was written): its "
                        "ids would not mean what the shards hold; prepare the data again")


def quality(dataset):
    """Shares a user should hear about: item occurrences mapped to OOV (id 0) over every
    record, and test targets never seen in training (as a training target for item_rec,
    as an item of a training sequence for pre-training)."""
    records = [r for split in SPLITS for r in dataset.splits.get(split, [])]
    occurrences = sum(len(r.item_ids) for r in records)
    oov = sum(r.item_ids.count(0) for r in records)
    result = {"oov_share": round(oov / occurrences, 6) if occurrences else 0.0}
    test = dataset.splits.get("test", [])
    if dataset.task == "classify" or not test:
        return result
    train = dataset.splits.get("train", [])
    seen = ({r.target for r in train} if dataset.task == "item_rec"
            else {i for r in train for i in r.item_ids})
    unseen = sum(r.target == 0 or r.target not in seen for r in test)
    result.update(unseen_test_targets=unseen,
                  unseen_test_target_share=round(unseen / len(test), 6))
    return result
