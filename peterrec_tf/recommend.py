"""Top-k recommendations for every user of a split, offline (RecBole's `full_sort_topk`).

    python -m peterrec_tf.recommend --model_dir=runs/pretrained --data_dir=PREPARED/pretrain \
        --split=test --k=10 --output=recs.jsonl [--exclude_history]

Whose history: `--history=record` (the default) ranks from each record's input, which on
the validation and test splits of next-item data ends before the item held out as its
target, so a user's most recent item can come back as a recommendation: what offline
evaluation needs. `--history=complete` (next-item data, validation or test split) appends
the held-out item, so the ranking starts from everything the split knows of the user, as
a production request would.

One JSON object a user, in the order of the users' first records in the split (item-rec
data holds one record per target, each with the user's whole history, so one line stands
for all of a user's records; next-item data holds one record a user a split):
`{"user": "u17", "items": ["i3", ...], "ids": [3, ...], "scores": [4.1, ...]}` (output
tokens, their ids and logits, best first). The ranking is the served one (`peterrec_tf.
serving.saved_model`): next item (pre-trained models) or targets (item recommendation),
never id 0 or a padding token, with `--exclude_history` never an item of the user's
history (all of it, as a request would send it); a catalogue above
`chunked_ranking.DEFAULT_CHUNK` ids is ranked slice by slice, so memory stays
`[batch, chunk]` at 645K items. Progress (records/s, time left) is printed every 30 s; the
output appears complete or not at all (written under a temporary name, renamed at the
end); the last line names it.
"""

import json
import os
import time

import numpy as np


def top_k_function(model, k, blocked, exclude_history, item_to_output, chunk_size=None):
    """tf.function `(framed ids [B, T], history ids [B, H] (-1 padded)) -> (scores, ids)`
    `[B, k]`, as the export ranks: next-item models by `chunked_ranking.top_k_in_chunks`
    (the whole catalogue in one slice below `DEFAULT_CHUNK`), item-rec models over their
    whole score row; blocked and (with `exclude_history`) history outputs never chosen."""
    import tensorflow as tf

    from peterrec_tf.training import chunked_ranking
    from peterrec_tf.training.scoring import history_exclusion

    chunk = chunk_size or chunked_ranking.DEFAULT_CHUNK
    exclusion = history_exclusion(item_to_output) if exclude_history else None

    @tf.function(reduce_retracing=True)
    def rank(x, history):
        excluded = exclusion(history) if exclusion is not None else None
        if model.task == "pretrain":
            hidden = model.user_embedding(x)
            return chunked_ranking.top_k_in_chunks(model.head, hidden, k, blocked, chunk, excluded)
        scores = tf.cast(model(x), tf.float32)
        answerable = np.ones(model.num_outputs, bool)
        answerable[list(blocked)] = False
        scores = tf.where(tf.constant(answerable)[None, :], scores, -np.inf)
        scores = chunked_ranking.mask_excluded(scores, excluded)
        return tf.math.top_k(scores, k)
    return rank


HISTORIES = ("record", "complete")


def run_recommend(model_dir, data_dir, split="test", k=10, output="recs.jsonl",
                  exclude_history=False, batch_size=256, max_len=0, backbone_dir=None,
                  log=print, every_seconds=30.0, history="record"):
    """Write `output` (see the module docstring); returns {"users", "records", "output",
    ...}: users written, one a line, and the split's records they came from."""
    from pipelines import inputs
    from peterrec_tf.data import records
    from peterrec_tf.training.scoring import item_to_output_ids

    if history not in HISTORIES:
        raise ValueError(f"history must be one of {HISTORIES}, got {history!r}")
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not output:
        raise ValueError("give --output, the JSON-lines file to write")
    meta = inputs.read_metadata(data_dir)
    if history == "complete" and meta["task"] != "pretrain":
        raise ValueError(f"--history=complete appends the item a next-item record holds out; "
                         f"{data_dir} holds {meta['task']} data, whose targets are no history "
                         "items: use --history=record")
    if history == "complete" and split == "train":
        raise ValueError("--history=complete appends the item a record holds out; the train "
                         "split's records hold out none: use --history=record")
    model, items, outputs, blocked, framing = ranked_outputs(model_dir, data_dir, meta, max_len,
                                                             backbone_dir)
    k = min(int(k), len(outputs) - len(blocked))
    total = meta["splits"].get(split)
    if not total:
        raise ValueError(f"{data_dir}: split {split!r} holds no examples")
    tmp = f"{output}.tmp{os.getpid()}"
    try:
        handle = open(tmp, "w", encoding="utf-8")  # unwritable output: refused before work
    except OSError as error:
        raise ValueError(f"{output}: cannot write here ({error.strerror})") from error
    try:  # from here on, any stop (Ctrl-C included) removes the temporary
        rank = top_k_function(model, k, blocked, exclude_history,
                              item_to_output_ids(items, outputs))
        dataset = records.record_batches(data_dir, split, int(batch_size), False, 0, True,
                                         False, False, None).map(records.parser(meta["task"],
                                                                                 split))
        started = time.monotonic()
        with handle, inputs.reading(data_dir, (split,)):
            count, users = write_recommendations(handle, dataset, rank, framing, outputs,
                                                 UserProgress(split, total, log, every_seconds),
                                                 complete=history == "complete")
        inputs.check_count(data_dir, split, count, "recommended for")
        os.replace(tmp, output)
    except OSError as error:
        raise ValueError(f"{output}: {error.strerror or error}") from error
    finally:
        handle.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    seconds = time.monotonic() - started
    if history == "record" and meta["task"] == "pretrain" and split != "train":
        log(f"  (each {split} history ends before the item the split holds out; "
            "--history=complete ranks from everything the split knows of a user)")
    records = f", from {count:,} records" if count != users else ""
    log(f"wrote top-{k} recommendations for {users:,} users of {split}{records} to {output} "
        f"({users / max(seconds, 1e-9):,.0f} users/s{', history excluded' if exclude_history else ''})")
    return {"users": users, "records": count, "output": output, "k": k, "seconds": seconds,
            "exclude_history": bool(exclude_history), "history": history}


def ranked_outputs(model_dir, data_dir, meta, max_len, backbone_dir):
    """(model, item tokens, output tokens, output ids never recommended, framing) of a
    model that ranks items (next item or targets) in the vocabulary of `data_dir`."""
    from pipelines import inputs
    from peterrec_tf.data import datasets
    from peterrec_tf.model_dir import load_model_dir

    model, config, vocabs = load_model_dir(model_dir, backbone_dir=backbone_dir)
    if model.task == "classify":
        raise ValueError(f"{model_dir} is a classification model: it recommends no items")
    if model.backbone.vocab_size != meta["num_items"]:
        raise ValueError(f"{model_dir} has {model.backbone.vocab_size} items, {data_dir} has "
                         f"{meta['num_items']}: not the same vocabulary")
    items = vocabs.get("items")
    data_vocab = os.path.join(data_dir, "vocab", "items.txt")
    if items is None:
        raise ValueError(f"{model_dir} has no vocab.txt: recommendations would have no names")
    if os.path.exists(data_vocab) and items != inputs.load_vocab(data_vocab):
        raise ValueError(f"{data_vocab} differs from {model_dir}/vocab.txt: item ids would mean "
                         "other items")
    outputs = items if model.task == "pretrain" else vocabs.get("targets")
    if outputs is None:
        raise ValueError(f"{model_dir} has no target_vocab.txt: recommendations would have no names")
    padding = set(config.get("padding_tokens", []))
    blocked = [0] + [i for i, token in enumerate(outputs) if i > 0 and token in padding]
    framing = datasets.data_framing(meta, model.framing, max_len)
    return model, items, outputs, blocked, framing


class UserProgress:
    """Records read of a split's total (and the users among them), records/s and the time
    left, every `every_seconds`."""

    def __init__(self, split, total, log, every_seconds):
        self.split, self.total, self.log, self.every_seconds = split, total, log, every_seconds
        self.started = self.last = time.monotonic()

    def done(self, count, users):
        now = time.monotonic()
        if now - self.last >= self.every_seconds:
            self.last = now
            rate = count / max(now - self.started, 1e-9)
            self.log(f"  {self.split}: {count:,} of {self.total:,} records ({users:,} users), "
                     f"{rate:,.0f} records/s, {(self.total - count) / rate:.0f} s left")


def write_recommendations(handle, dataset, rank, framing, outputs, progress, complete=False):
    """One JSON line a user of `dataset` (see the module docstring), at the user's first
    record; returns (records read, users written). Item-rec data holds one record per
    target, each with the user's whole history: the later ones are not ranked again (a
    user whose records hold different histories is an error). `complete`: each history
    ends with its record's held-out target, id 0 included (an item outside a frozen
    vocabulary: a served request keeps an unknown token in its place as id 0 too)."""
    import tensorflow as tf

    from pipelines import schema

    records, seen = 0, {}
    for batch in dataset:
        history = batch[schema.ITEM_IDS]
        if complete:
            held_out = tf.RaggedTensor.from_tensor(  # id 0 stays, as serving keeps it
                batch[schema.TARGET][:, None], row_splits_dtype=history.row_splits.dtype)
            history = tf.concat([history, held_out], axis=1)
        users = [user.decode("utf-8") for user in batch[schema.USER_ID].numpy()]
        records += len(users)
        first = first_records(users, history, seen, progress.split)
        if first:
            history = tf.gather(history, first) if len(first) < len(users) else history
            scores, ids = rank(framing.frame(history), history.to_tensor(-1))
            for index, row_scores, row_ids in zip(first, scores.numpy(), ids.numpy()):
                answered = ~np.isneginf(row_scores)
                row_ids = row_ids[answered]
                handle.write(json.dumps({
                    "user": users[index], "items": [outputs[i] for i in row_ids],
                    "ids": [int(i) for i in row_ids],
                    "scores": [float(s) for s in row_scores[answered]]}) + "\n")
        progress.done(records, len(seen))
    return records, len(seen)


def first_records(users, history, seen, split):
    """Indexes of the rows whose user is not in `seen` (user -> hash of the history ranked),
    added to it; a later record of a user must hold the same history."""
    values, bounds = history.values.numpy(), history.row_splits.numpy()
    first = []
    for index, user in enumerate(users):
        fingerprint = hash(values[bounds[index]:bounds[index + 1]].tobytes())
        if user not in seen:
            seen[user] = fingerprint
            first.append(index)
        elif seen[user] != fingerprint:
            raise ValueError(f"user {user!r} has {split} records with different histories: "
                             "recommend writes one line a user, from the history the user's "
                             "records share (one per target of item-rec data)")
    return first


def define_flags():
    """Defines the command's absl flags (called by the entry point, never at import)."""
    from absl import flags

    flags.DEFINE_string("model_dir", None, "A pre-trained (next item) or item-rec model directory.")
    flags.DEFINE_string("data_dir", None, "A prepared dataset with the same item vocabulary.")
    flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Whose histories.")
    flags.DEFINE_integer("k", 10, "Items per user.")
    flags.DEFINE_string("output", None, "The JSON-lines file to write (replaced only when "
                        "complete).")
    flags.DEFINE_boolean("exclude_history", False, "Never recommend an item of the user's "
                         "history, as an export with --exclude_history serves.")
    flags.DEFINE_integer("batch_size", 256, "Users ranked at once.")
    flags.DEFINE_integer("max_len", 0, "History length the model sees (most recent items); "
                         "0 = the model's own.")
    flags.DEFINE_string("backbone_dir", None, "For a task stored alone: its pre-trained model "
                        "directory, when it is no longer where the task recorded it.")
    flags.DEFINE_enum("history", "record", list(HISTORIES), "record: each record's input "
                      "(validation and test of next-item data end before their held-out "
                      "item, as evaluation ranks); complete: that input plus the held-out "
                      "item, everything the split knows of the user (next-item data, "
                      "validation or test).")
    flags.mark_flags_as_required(["model_dir", "data_dir", "output"])


def main(v):
    """flags -> run_recommend, whose last line names the file it wrote."""
    run_recommend(v.model_dir, v.data_dir, v.split, v.k, v.output, v.exclude_history,
                  v.batch_size, v.max_len, v.backbone_dir, history=v.history)


def cli():
    """The command (`python -m peterrec_tf.recommend`)."""
    from pipelines.command import STARTS_OVER, run_command

    run_command(define_flags, main, __doc__, on_interrupt=STARTS_OVER)


if __name__ == "__main__":
    cli()
