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


def token_map(tokens, reference, missing):
    """Array taking ids of `tokens` to the ids of the same tokens in `reference` (`missing`
    for a token `reference` lacks; one more entry, -1, for ids past the end)."""
    index = {}
    for i, token in enumerate(reference):
        index.setdefault(token, i)
    return np.array([index.get(token, missing) for token in tokens] + [-1], dtype=np.int64)


def id_maps(data_dir, meta, reference_dir, reference_meta, reference_tokens=None):
    """[item map, answer map]: arrays taking `data_dir`'s ids to the reference's ids of the
    same token, None where both preparations hold the same vocabulary (SHA-256 in
    metadata.json). An item the reference lacks maps to 0, the id its preparation stores an
    unknown item as; an answer it lacks to -1 (no record holding it matches). The
    reference is `reference_dir`'s vocabularies, or `reference_tokens` ({file name:
    tokens}, a model's own)."""
    from pipelines import metadata_checksum
    from pipelines.inputs import read_data_vocab

    maps = []
    for name in dict.fromkeys(("items.txt", answer_vocab(meta["task"])[1])):
        ours = (meta.get(metadata_checksum.VOCAB_KEY) or {}).get(name)
        theirs = (reference_meta.get(metadata_checksum.VOCAB_KEY) or {}).get(name)
        if ours is not None and ours == theirs:
            maps.append(None)
            continue
        reference = (reference_tokens[name] if reference_tokens is not None
                     else read_data_vocab(reference_dir, name, reference_meta))
        maps.append(token_map(read_data_vocab(data_dir, name, meta), reference,
                              0 if name == "items.txt" else -1))
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
    return count_seen(trained, record_digests(data_dir, split, task, maps, parts=parts))


def count_seen(trained, batches):
    """(digests of `batches` found in the sorted `trained`, digests of `batches`), by a
    binary search (np.isin would sort `trained` again for every batch)."""
    seen = total = 0
    last = max(len(trained) - 1, 0)
    for digests in batches:
        if len(trained):
            found = trained[np.minimum(np.searchsorted(trained, digests), last)]
            seen += int((found == digests).sum())
        total += len(digests)
    return seen, total


def transitions_seen(data_dir, meta, split, train_dir, train_meta):
    """(next-item records of `split` inside `train_dir`'s training sequences, records of
    `split`): `sequence_overlap`."""
    import functools

    from peterrec_tf.jobs import sequence_overlap
    from pipelines import schema

    maps = id_maps(data_dir, meta, train_dir, train_meta)
    return sequence_overlap.transitions_seen(
        functools.partial(parsed_batches, data_dir, split, schema.TARGET, maps),
        functools.partial(parsed_batches, train_dir, "train"),
        compared_parts(meta, train_meta)[0])


#: What a fine-tuned model keeps of its training split (config.json records its SHA-256),
#: so that data scored after the training preparation is gone or prepared again is still
#: compared with it: the sorted digests of its train records by history and answer (item
#: and answer ids in the model's own vocabularies, its vocab.txt and labels.txt or
#: target_vocab.txt) and its task. No user id enters them: a digest of user and label would
#: let anyone holding the model directory and a list of user ids read off every training
#: user's label; one of history and label tells only whether that exact history and label
#: were trained on (the model itself predicts the label from the history).
TRAINING_RECORDS_FILE = "training_records.npz"  # one of model_files.EXTRA_FILES
KEPT_PARTS = (False, True)  # (with_user, with_history) of the kept digests


def write_training_records(path, data_dir, meta):
    """Write TRAINING_RECORDS_FILE of `data_dir`'s train split to `path` (8 bytes a
    record)."""
    import json

    digests = [np.empty(0, dtype=np.uint64)]
    digests.extend(record_digests(data_dir, "train", meta["task"], parts=KEPT_PARTS))
    with open(path, "wb") as handle:
        np.savez(handle, by_history=np.unique(np.concatenate(digests)),
                 about=np.array(json.dumps({"task": meta["task"]})))


def kept_records_seen(data_dir, meta, split, path, vocabs):
    """(records of `split` whose history and answer the model's kept training records hold,
    records of `split`), ids taken to the model's own vocabularies `vocabs` (as
    `load_model_dir` returns them) by token; or (None, why not) when they cannot be
    compared."""
    import json

    with np.load(path, allow_pickle=False) as kept:
        about = json.loads(str(kept["about"]))
        trained = kept["by_history"]
    if about.get("task") != meta["task"]:
        return None, f"the model trained on {about.get('task')} data, not {meta['task']} data"
    answer = answer_vocab(meta["task"])[1]
    keys = {"items.txt": "items", "labels.txt": "labels", "targets.txt": "targets"}
    lacking = [keys[name] for name in ("items.txt", answer) if keys[name] not in vocabs]
    if lacking:
        return None, f"the model has no {' or '.join(lacking)} vocabulary to read its ids by"
    maps = id_maps(data_dir, meta, None, {}, reference_tokens={
        name: vocabs[keys[name]] for name in ("items.txt", answer)})
    return count_seen(trained, record_digests(data_dir, split, meta["task"], maps,
                                              parts=KEPT_PARTS))
