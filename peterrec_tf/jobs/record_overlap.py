"""Which records of one preparation are records another preparation trained on, compared by
what they mean, not by bytes: the same user, the same history (item tokens) and the same
label or target (its token). Which of the three count (`compared_parts`): a user id is
compared only where both preparations hold the source's own user keys
(`DataFormat.named_users`); made-up ids (release-CSV line numbers, generated users) name
another record once the file is reordered, so those records compare by history and answer
alone. Where the user keys are real, the same user with the same label (or target item)
counts whatever the history: one event added to every user's history must not hide a
re-drawn split, and the same user scored on a later target (another target token) is
still a legitimate test. Next-item records keep the history (`transitions_seen`). Two
preparations of one table number their
items, classes and targets each from what they read (classes follow first appearance, so
a reordered table renumbers them); ids are compared through each preparation's
vocabularies, or directly where both hold the same vocabulary (by its checksum).

Each record becomes an 8-byte digest (BLAKE2b of a canonical encoding), so the memory a
comparison holds is 8 bytes per training record; the shards are streamed in batches.
A false match needs two 64-bit digests to collide: about one in 2**64 / (records trained)
per record scored.
"""

import hashlib
import struct

import numpy as np

BATCH = 4096


def answer_vocab(task):
    """(the record feature holding the answer, the vocabulary naming it) of a task; a
    next-item (pre-training) record's answer is an item."""
    from pipelines import schema

    if task == "classify":
        return schema.LABEL, "labels.txt"
    return schema.TARGET, "items.txt" if task == "pretrain" else "targets.txt"


def id_maps(data_dir, meta, reference_dir, reference_meta):
    """[item map, answer map]: arrays taking `data_dir`'s ids to `reference_dir`'s ids of the
    same token (-1: a token the reference does not have, so no record holding it matches),
    None where both preparations hold the same vocabulary (SHA-256 in metadata.json)."""
    from pipelines import metadata_checksum
    from pipelines.inputs import read_data_vocab

    maps = []
    for name in dict.fromkeys(("items.txt", answer_vocab(meta["task"])[1])):
        ours = (meta.get(metadata_checksum.VOCAB_KEY) or {}).get(name)
        theirs = (reference_meta.get(metadata_checksum.VOCAB_KEY) or {}).get(name)
        if ours is not None and ours == theirs:
            maps.append(None)
            continue
        index = {}
        for i, token in enumerate(read_data_vocab(reference_dir, name, reference_meta)):
            index.setdefault(token, i)
        maps.append(np.array([index.get(token, -1) for token in
                              read_data_vocab(data_dir, name, meta)] + [-1], dtype=np.int64))
    return maps * 2 if len(maps) == 1 else maps


def translate(ids, table):
    """`ids` through `table` (an id past its end, never written by a checked preparation,
    becomes -1: the table's last entry)."""
    if table is None:
        return ids
    return table[np.minimum(ids, len(table) - 1)]


def compared_parts(meta, other_meta):
    """(with_user, with_history): which parts besides the answer make a record of these two
    preparations the same record (see the module docstring)."""
    from pipelines import formats

    def named(m):
        return m.get("format") in formats.names() and formats.get(m["format"]).named_users

    with_user = named(meta) and named(other_meta)
    return with_user, meta["task"] == "pretrain" or not with_user


def parsed_batches(data_dir, split, answer=None, maps=(None, None)):
    """Yield per batch of `split`'s records (user ids, item ids of all histories, their row
    bounds, the answers: the `answer` feature, or None), ids taken through `maps` (items,
    then answers)."""
    import tensorflow as tf

    from pipelines import schema
    from pipelines.inputs import reading, shard_files

    spec = {schema.ITEM_IDS: tf.io.RaggedFeature(tf.int64),
            schema.USER_ID: tf.io.FixedLenFeature([], tf.string)}
    if answer is not None:
        spec[answer] = tf.io.FixedLenFeature([], tf.int64)
    dataset = tf.data.TFRecordDataset(shard_files(data_dir, split), compression_type="GZIP")
    with reading(data_dir, (split,)):
        for batch in dataset.batch(BATCH):
            parsed = tf.io.parse_example(batch, spec)
            yield (parsed[schema.USER_ID].numpy(),
                   translate(parsed[schema.ITEM_IDS].values.numpy(), maps[0]),
                   parsed[schema.ITEM_IDS].row_splits.numpy(),
                   None if answer is None else translate(parsed[answer].numpy(), maps[1]))


def record_digests(data_dir, split, task, maps=(None, None), parts=(True, True)):
    """Yield a uint64 array per batch of `split`'s records: the digest of each record's user
    id and history item ids (each where `parts`, as `compared_parts` gives them, says so)
    and label (target) id, ids first taken through `maps`."""
    with_user, with_history = parts
    for users, items, bounds, answers in parsed_batches(data_dir, split,
                                                        answer_vocab(task)[0], maps):
        digests = np.empty(len(users), dtype=np.uint64)
        for row, user in enumerate(users):
            # length-prefixed user (or none), fixed-width answer, then the history:
            # unambiguous
            user = struct.pack("<I", len(user)) + user if with_user else b"-"
            digest = hashlib.blake2b(user + struct.pack("<q", int(answers[row])),
                                     digest_size=8)
            if with_history:
                digest.update(items[bounds[row]:bounds[row + 1]].astype("<i8").tobytes())
            digests[row] = int.from_bytes(digest.digest(), "little")
        yield digests


def records_seen(data_dir, meta, split, train_dir, train_meta):
    """(records of `split` of `data_dir` identical to a record of `train_dir`'s train split,
    records of `split`), both read from the records. The training split is held as sorted
    8-byte digests; the split checked is streamed against it. Next-item data: see
    `transitions_seen`."""
    if meta["task"] == "pretrain":
        return transitions_seen(data_dir, meta, split, train_dir, train_meta)
    task, parts = meta["task"], compared_parts(meta, train_meta)
    trained = [np.empty(0, dtype=np.uint64)]
    trained.extend(record_digests(train_dir, "train", task, parts=parts))
    trained = np.unique(np.concatenate(trained))
    maps = id_maps(data_dir, meta, train_dir, train_meta)
    seen = total = 0
    last = max(len(trained) - 1, 0)
    for digests in record_digests(data_dir, split, task, maps, parts=parts):
        if len(trained):  # a binary search in the sorted digests (np.isin sorts them again)
            found = trained[np.minimum(np.searchsorted(trained, digests), last)]
            seen += int((found == digests).sum())
        total += len(digests)
    return seen, total


PREFIX_ITEMS = 4  # the items of a sequence's start that bucket next-item records


def sequence_digest(user, items):
    """8-byte digest (an unsigned integer) of a user part and an item id sequence."""
    digest = hashlib.blake2b(user + np.asarray(items, dtype="<i8").tobytes(), digest_size=8)
    return int.from_bytes(digest.digest(), "little")


def user_part(user, with_user):
    return struct.pack("<I", len(user)) + user if with_user else b"-"


def split_sequences(data_dir, split, maps=(None, None)):
    """Yield (user id bytes, item ids: the history then the target where the split has
    one), ids taken through `maps` (items, then targets)."""
    from pipelines import schema

    answer = None if split == "train" else schema.TARGET
    for users, items, bounds, targets in parsed_batches(data_dir, split, answer, maps):
        for row, user in enumerate(users):
            history = items[bounds[row]:bounds[row + 1]]
            yield user, (history if targets is None else np.append(history, targets[row]))


def transitions_seen(data_dir, meta, split, train_dir, train_meta):
    """(next-item records of `split` that `train_dir`'s train split trained on, records of
    `split`). Next-item data is split by position (each user's last items are held out),
    so a copy of the log scores items the model never trained on, but a log cut earlier
    (fewer events a user, an earlier `--cutoff_time`) scores items that were inside the
    training sequences. A record (history, target) was trained on when history + [target]
    begins a training sequence (prepare keeps each user's items from the oldest; the same
    user too where both preparations hold the source's keys). The scored records are held
    as sorted arrays (digest of their first PREFIX_ITEMS items, digest of all, length: 20
    bytes a record); each training sequence is digested at those prefix lengths, and in
    full only where a bucket matches: one pass over the training split."""
    with_user = compared_parts(meta, train_meta)[0]
    maps = id_maps(data_dir, meta, train_dir, train_meta)
    buckets, wholes, lengths = [], [], []
    for user, sequence in split_sequences(data_dir, split, maps):
        user = user_part(user, with_user)
        buckets.append(sequence_digest(user, sequence[:PREFIX_ITEMS]))
        wholes.append(sequence_digest(user, sequence))
        lengths.append(len(sequence))
    order = np.argsort(np.array(buckets, dtype=np.uint64), kind="stable")
    buckets = np.array(buckets, dtype=np.uint64)[order]
    wholes = np.array(wholes, dtype=np.uint64)[order]
    lengths = np.array(lengths, dtype=np.int64)[order]
    widths = sorted({int(min(n, PREFIX_ITEMS)) for n in lengths})
    seen = np.zeros(len(buckets), dtype=bool)
    for user, sequence in split_sequences(train_dir, "train"):
        user = user_part(user, with_user)
        for width in widths:
            if width > len(sequence):
                break
            bucket = np.uint64(sequence_digest(user, sequence[:width]))
            first = np.searchsorted(buckets, bucket)
            last = np.searchsorted(buckets, bucket, side="right")
            for index in range(first, last):
                if (not seen[index] and min(lengths[index], PREFIX_ITEMS) == width
                        and lengths[index] <= len(sequence)
                        and sequence_digest(user, sequence[:lengths[index]])
                        == wholes[index]):
                    seen[index] = True
    return int(seen.sum()), len(buckets)


#: What a fine-tuned model keeps of its training split (config.json records its SHA-256),
#: so that data scored after the training preparation is gone or prepared again is still
#: compared with it: the sorted digests of its train records by user and answer and by
#: history and answer (`compared_parts` picks one), its data format and task, and the
#: SHA-256 of the vocabularies whose ids the digests hold.
TRAINING_RECORDS_FILE = "training_records.npz"  # one of model_files.EXTRA_FILES


def write_training_records(path, data_dir, meta):
    """Write TRAINING_RECORDS_FILE of `data_dir`'s train split to `path` (8 bytes a record,
    twice)."""
    import json

    from pipelines import metadata_checksum

    task = meta["task"]
    sets = {}
    for name, parts in (("by_user", (True, False)), ("by_history", (False, True))):
        digests = [np.empty(0, dtype=np.uint64)]
        digests.extend(record_digests(data_dir, "train", task, parts=parts))
        sets[name] = np.unique(np.concatenate(digests))
    vocabs = {name: (meta.get(metadata_checksum.VOCAB_KEY) or {}).get(name)
              for name in dict.fromkeys(("items.txt", answer_vocab(task)[1]))}
    with open(path, "wb") as handle:
        np.savez(handle, **sets, about=np.array(json.dumps(
            {"format": meta.get("format"), "task": task, "vocab_sha256": vocabs})))


def kept_records_seen(data_dir, meta, split, path):
    """(records of `split` that the model's kept training records hold, records of
    `split`, what they say of the training data: format and task), or (None, why not,
    None) when `data_dir` numbers its items or answers otherwise than the model's
    training data did (its ids would mean other tokens; the evaluation refuses such data
    on its own)."""
    import json

    from pipelines import metadata_checksum

    with np.load(path, allow_pickle=False) as kept:
        about = json.loads(str(kept["about"]))
        if about["task"] != meta["task"]:
            return (None, f"the model trained on {about['task']} data, not {meta['task']} "
                          "data", None)
        ours = meta.get(metadata_checksum.VOCAB_KEY) or {}
        differ = [name for name, digest in about["vocab_sha256"].items()
                  if digest is None or ours.get(name) != digest]
        if differ:
            return None, f"its {', '.join(differ)} differ from the model's training data's", None
        parts = compared_parts(meta, about)
        trained = kept["by_user" if parts[0] else "by_history"]
    seen = total = 0
    last = max(len(trained) - 1, 0)
    for digests in record_digests(data_dir, split, meta["task"], parts=parts):
        if len(trained):
            found = trained[np.minimum(np.searchsorted(trained, digests), last)]
            seen += int((found == digests).sum())
        total += len(digests)
    return seen, total, about
