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
    """(train, validation, test) sizes `split_users` gives `count` users: the paper's
    70/3/27, at least one validation user when there are more than two."""
    n_train = int(round(fractions[0] * count))
    n_valid = max(1, int(round(fractions[1] * count))) if count > 2 else 0
    return n_train, n_valid, count - n_train - n_valid


def smallest_full_split(fractions=(0.70, 0.03, 0.27)):
    """The fewest users for which `split_users` gives every split at least one."""
    return next(n for n in range(1, 1000) if min(split_sizes(n, fractions)) > 0)


def split_of_rank(rank, count, fractions=(0.70, 0.03, 0.27)):
    """The split of the user at `rank` (0-based) of `count` randomly ordered users."""
    n_train, n_valid, _ = split_sizes(count, fractions)
    return "train" if rank < n_train else "validation" if rank < n_train + n_valid else "test"


def split_users(users, seed, fractions=(0.70, 0.03, 0.27)):
    """{user: split}, random by a seeded permutation (the paper's 70/3/27)."""
    users = sorted(set(users))
    order = np.random.RandomState(seed).permutation(len(users))
    assignment = {}
    for rank, index in enumerate(order):
        assignment[users[index]] = split_of_rank(rank, len(users), fractions)
    return assignment


HASH_BITS = 63


def user_hash(user, seed):
    """A user's place in the seeded random order of `hash_split_users`: 63 bits of
    SHA-256(seed, user), so a worker computes it alone (no gathering of users)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{user}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - HASH_BITS)


def hash_split_users(users, seed, fractions=(0.70, 0.03, 0.27)):
    """{user: split}: users ordered by (`user_hash`, user), the first 70% train, the next
    3% validation, the rest test (`split_sizes`). The same split as the Beam pipeline's,
    which ranks the hashes in buckets instead of gathering the users."""
    ordered = sorted((user_hash(user, seed), user) for user in set(users))
    return {user: split_of_rank(rank, len(ordered), fractions)
            for rank, (_, user) in enumerate(ordered)}


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
    """SHA-256 of a file (local, or any scheme Beam's filesystems know)."""
    from pipelines import fileio
    return fileio.sha256(path)


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
