"""The tf.data input functions that feed every training and evaluation job.

All return batches of Keras-ready tuples with int32 ids, framed by `data.framing` (the
most recent items kept when a sequence is longer than `max_len`). Pre-training examples
come from the objective's own preprocessor (`objectives`); randomness (masking, negatives,
shuffling) is drawn from stateless ops keyed by `seed`, the batch index and the input
pipeline id, so the same seed gives the same batches. Evaluation candidates are keyed by
the example itself (`candidates`), identical on every call.
"""

import tensorflow as tf

from pipelines import schema
from pipelines.inputs import check_count, read_metadata, reading, shard_files

from peterrec_tf import objectives
from peterrec_tf.data.candidates import (RANKINGS, check_candidates, check_excluded_candidates,
                                         example_seeds, sample_candidates, sample_negatives)
from peterrec_tf.data.framing import Framing, default_framing, resolve_length
from peterrec_tf.data.records import AUTOTUNE, finish, parser, record_batches, with_batch_seeds
from peterrec_tf.data.windows import (FRESH_TARGETS, WINDOWS, window_counts,
                                      windows_and_fresh_targets)


def objective_of(objective):
    """The registered objective of a name (an objective object passes as it is)."""
    return objectives.get(objective) if isinstance(objective, str) else objective


def _all_windows(data_dir, split, batch_size, preprocessor, shuffle, seed, deterministic,
                 repeat, drop_remainder, input_context, shuffle_buffer):
    """Batches `{item_ids: ragged, fresh_targets: [B]}` of every window of every sequence
    (`windows.windows_and_fresh_targets`, cut as `preprocessor.window` and `.stride` say):
    whole record batches parsed, cut into windows, then re-batched to `batch_size`
    (shuffled again: a user's windows would otherwise sit side by side)."""
    size, overlap = preprocessor.window
    dataset = record_batches(data_dir, split, 256, shuffle, seed, deterministic, False, False,
                             input_context, shuffle_buffer).map(parser("pretrain", "train"),
                                                                num_parallel_calls=AUTOTUNE)

    def cut(batch):
        windows, fresh = windows_and_fresh_targets(batch[schema.ITEM_IDS], size, overlap,
                                                   getattr(preprocessor, "stride", None))
        return {schema.ITEM_IDS: windows, FRESH_TARGETS: fresh}
    dataset = dataset.map(cut, num_parallel_calls=AUTOTUNE).unbatch()
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.ragged_batch(batch_size, drop_remainder=drop_remainder)


def pretrain_dataset(data_dir, split, batch_size, objective="next_item", max_len=None,
                     mask_rate=0.3, max_predictions=None, shuffle=None, seed=0,
                     deterministic=True, repeat=False, drop_remainder=False, input_context=None,
                     pad_to_max_len=True, shuffle_buffer=10_000, windows="last",
                     window_stride=0):
    """(x, y, sample_weight) batches for pre-training with `objective` (a registered name or
    objective), made by its preprocessor (`objectives.Objective.preprocessor`).

    `windows="last"` takes each sequence's most recent window only (one example per user,
    the release's behaviour); `windows="all"` cuts every sequence into windows
    (`windows.split_into_windows`) so every item is trained on, as libraries that train on
    every prefix do. `window_stride` > 0 (an objective whose preprocessor takes one: next
    item) cuts a window every that many items, each trained on its newest `window_stride`
    targets only, so that every target keeps a context of at least max_len - stride items
    (`windows.windows_and_fresh_targets`); 0 cuts windows sharing the objective's overlap.
    `pad_to_max_len=False` pads each batch to its own longest row instead (bucketing by
    batch). `shuffle` defaults to split == "train".
    """
    meta = read_metadata(data_dir)
    if meta["task"] != "pretrain":
        raise ValueError(f"{data_dir} holds a {meta['task']} dataset, not pre-training data")
    objective = objective_of(objective)
    if windows not in WINDOWS:
        raise ValueError(f"windows must be one of {WINDOWS}, got {windows!r}")
    preprocessor = objective.preprocessor(
        resolve_length(max_len, metadata=meta), meta["num_items"], mask_rate=mask_rate,
        max_predictions=max_predictions, pad_to_max_len=pad_to_max_len,
        **objective.stride_keyword(window_stride))
    if window_stride and windows != "all":
        raise ValueError("a window stride cuts every window of a sequence: it needs "
                         f"windows='all', not {windows!r}")
    shuffle = (split == "train") if shuffle is None else shuffle
    if windows == "all":
        dataset = _all_windows(data_dir, split, batch_size, preprocessor, shuffle, seed,
                               deterministic, repeat, drop_remainder, input_context,
                               shuffle_buffer)
    else:
        dataset = record_batches(data_dir, split, batch_size, shuffle, seed, deterministic,
                                 repeat, drop_remainder, input_context, shuffle_buffer).map(
                                     parser("pretrain", "train"), num_parallel_calls=AUTOTUNE)
    return finish(preprocessor.examples(dataset, seed, input_context), deterministic)


def count_windows(data_dir, split, max_len, objective="next_item", window_stride=0):
    """How many examples `pretrain_dataset(..., windows="all")` yields per pass."""
    objective = objective_of(objective)
    preprocessor = objective.preprocessor(
        max_len, read_metadata(data_dir)["num_items"],
        **objective.stride_keyword(window_stride))
    size, overlap = preprocessor.window
    if getattr(preprocessor, "stride", None):
        overlap = size - preprocessor.stride
    total = records = 0
    with reading(data_dir, (split,)):
        for batch in tf.data.TFRecordDataset(shard_files(data_dir, split),
                                             compression_type="GZIP") \
                .batch(4096).map(parser("pretrain", "train")):
            lengths = batch[schema.ITEM_IDS].row_lengths()
            total += int(tf.reduce_sum(window_counts(lengths, size, overlap)))
            records += int(tf.shape(lengths)[0])
    check_count(data_dir, split, records)
    return total


def data_framing(meta, framing=None, max_len=None):
    """The framing a dataset's examples get: `framing` (the model's own, e.g. a converted
    release model's) or this project's default for the data's task (`default_framing`),
    at the length `framing.resolve_length` gives (`max_len`, the framing's, the data's)."""
    framing = Framing.from_config(framing) if framing is not None else default_framing(meta["task"])
    return framing.resolved(max_len, meta)


def _framed_labels(dataset, framing):
    """Classification batches -> (framed histories, class ids)."""
    return dataset.map(lambda b: (framing.frame(b[schema.ITEM_IDS]),
                                  tf.cast(b[schema.LABEL], tf.int32)),
                       num_parallel_calls=AUTOTUNE)


def finetune_dataset(data_dir, split, batch_size, num_negatives=1, max_len=None, shuffle=None,
                     seed=0, deterministic=True, repeat=False, drop_remainder=False,
                     input_context=None, shuffle_buffer=10_000, framing=None):
    """(x, y) batches, x = the histories framed by `framing` (default `[0] + items + [0]`
    `[B, max_len+2]`, see `data_framing`): item_rec y = [target, negatives...]
    `[B, 1+num_negatives]` (negatives uniform over the other real targets); classify y =
    `[B]` class ids."""
    meta = read_metadata(data_dir)
    task = meta["task"]
    if task not in ("item_rec", "classify"):
        raise ValueError(f"{data_dir} holds {task} data, not a fine-tuning task")
    framing = data_framing(meta, framing, max_len)
    shuffle = (split == "train") if shuffle is None else shuffle
    dataset = record_batches(data_dir, split, batch_size, shuffle, seed, deterministic, repeat,
                             drop_remainder, input_context, shuffle_buffer).map(
                                 parser(task, split), num_parallel_calls=AUTOTUNE)
    if task == "classify":
        return finish(_framed_labels(dataset, framing), deterministic)
    num_targets = meta["num_targets"]
    if num_negatives and num_targets < 3:
        raise ValueError(f"{data_dir}: need at least 2 real targets to sample negatives")

    def to_pairs(batch_seed, batch):
        positives = tf.cast(batch[schema.TARGET], tf.int32)
        labels = positives[:, None]
        if num_negatives:
            negatives = sample_negatives(positives, num_negatives, num_targets, batch_seed)
            labels = tf.concat([labels, negatives], axis=1)
        return framing.frame(batch[schema.ITEM_IDS]), labels
    dataset = with_batch_seeds(dataset, seed, input_context).map(to_pairs,
                                                                 num_parallel_calls=AUTOTUNE)
    return finish(dataset, deterministic)


def eval_dataset(data_dir, split, batch_size, ranking="sampled", num_candidates=100, seed=0,
                 max_len=None, shuffle=False, deterministic=True, repeat=False,
                 drop_remainder=False, input_context=None, shuffle_buffer=10_000, framing=None,
                 exclude=None):
    """(x, y) for evaluation. sampled: y = true id + (num_candidates-1) negatives; full: y = true id.
    `exclude` (`scoring.history_exclusion`, --exclude_history): sampled negatives are drawn
    outside those ids of x, so every example still has num_candidates-1 competitors.

    x is the history framed by `framing` (see `data_framing`; by default the history for
    pre-training splits, the model predicting from its last position, and `[0] + items +
    [0]` for fine-tuning datasets); classify: y = label.
    Sampled candidates depend only on (user id, true id, seed): the same on every call.
    """
    meta = read_metadata(data_dir)
    task = meta["task"]
    if task == "pretrain" and split == "train":
        raise ValueError("pre-training evaluation uses the validation or test split")
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be sampled or full, got {ranking!r}")
    framing = data_framing(meta, framing, max_len)
    dataset = record_batches(data_dir, split, batch_size, shuffle, seed, deterministic, repeat,
                             drop_remainder, input_context, shuffle_buffer).map(
                                 parser(task, split), num_parallel_calls=AUTOTUNE)
    if task == "classify":
        return finish(_framed_labels(dataset, framing), deterministic)
    universe = meta["num_items"] if task == "pretrain" else meta["num_targets"]
    check_candidates(data_dir, meta, ranking, num_candidates)
    if exclude is not None and ranking == "sampled":  # checked here, not inside the map
        width = int(exclude(framing.frame(tf.ragged.constant([[1]], tf.int64))).shape[1])
        most = getattr(exclude, "most", None)  # distinct ids it can exclude, if it knows
        check_excluded_candidates(data_dir, universe, num_candidates,
                                  width if most is None else min(width, most))

    def to_eval(batch):
        x = framing.frame(batch[schema.ITEM_IDS])
        truth = tf.cast(batch[schema.TARGET], tf.int32)
        if ranking == "full":
            return x, truth
        seeds = example_seeds(batch[schema.USER_ID], truth, seed)
        excluded = None if exclude is None else exclude(x)
        return x, sample_candidates(truth, num_candidates, universe, seeds, excluded)
    dataset = dataset.map(to_eval, num_parallel_calls=AUTOTUNE)
    return finish(dataset, deterministic)
