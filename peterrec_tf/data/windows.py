"""Sequences cut into windows of a model's length, so that every stored item is trained on.

A pre-training objective's preprocessor says how long a window is and how many items two
neighbouring windows share (next item: max_len + 1 and 1; masked item: max_len and 0).
"""

import tensorflow as tf

#: How a pre-training split becomes examples: each sequence's most recent window only
#: ("last", the release's one example per user), or every window ("all").
WINDOWS = ("last", "all")
#: The key of each window's count of own targets in the batches `windows="all"` makes
#: (`windows_and_fresh_targets`); a batch without it owns every target.
FRESH_TARGETS = "fresh_targets"


def split_into_windows(ragged, size, overlap, stride=None):
    """Ragged ids `[B, None]` -> ragged windows `[W, None]` covering every item.

    Windows are cut from the newest end backwards: each holds at most `size` items and
    shares `overlap` items with the window before it, so with `overlap=1` every item after
    a sequence's first is the next-item target of exactly one window (the same set of
    (context, target) pairs a per-prefix dataset trains on, with contexts cut at window
    starts). A sequence of at most `size` items is one window, as with `left_pad`.
    `stride` (default `size - overlap`) cuts a window every `stride` items instead: see
    `windows_and_fresh_targets`.
    """
    return windows_and_fresh_targets(ragged, size, overlap, stride)[0]


def windows_and_fresh_targets(ragged, size, overlap, stride=None):
    """(windows `[W, None]`, fresh `[W]`): `split_into_windows` plus, per window, how many
    of its newest positions are its own to train on.

    With `stride < size - overlap` neighbouring windows share more than `overlap` items, so
    a target sits in several windows; it is trained in the one where it has the longest
    context, the newest window whose end is past it. That window owns its newest `stride`
    targets; a sequence's oldest window owns all of its own (no older window holds them).
    With the default stride every window owns all its targets (fresh = `size`), so every
    target is trained exactly once either way, and with a small stride each with at least
    `size - stride - 1` items before it (a per-prefix dataset's full context at stride 1).
    """
    unstrided = stride is None
    stride = size - overlap if unstrided else int(stride)
    if not 0 < stride <= size - overlap:
        raise ValueError(f"a window stride must be in [1, {size - overlap}] for windows of "
                         f"{size} items sharing {overlap}, got {stride}")
    window_overlap = size - stride
    lengths = tf.cast(ragged.row_lengths(), tf.int32)
    starts = tf.cast(ragged.row_starts(), tf.int32)
    counts = window_counts(lengths, size, window_overlap)
    row = tf.repeat(tf.range(tf.shape(lengths)[0]), counts)
    index = tf.ragged.range(counts).flat_values  # 0 = newest window of its row
    ends = tf.gather(starts + lengths, row) - index * stride
    begins = tf.maximum(tf.gather(starts, row), ends - size)
    oldest = index == tf.gather(counts, row) - 1
    fresh = tf.where(oldest | unstrided, size, stride)
    # oldest window first within a row, so a batch reads like the sequences
    order = tf.argsort(row * tf.reduce_max(tf.concat([counts, [1]], 0)) - index, stable=True)
    begins, ends = tf.gather(begins, order), tf.gather(ends, order)
    values = tf.gather(ragged.flat_values, tf.ragged.range(begins, ends).flat_values)
    return (tf.RaggedTensor.from_row_lengths(values, tf.cast(ends - begins, tf.int64)),
            tf.gather(fresh, order))


def window_counts(lengths, size, overlap):
    """Windows `split_into_windows` cuts from sequences of these lengths (at least one)."""
    stride = size - overlap
    return tf.maximum(1, (lengths - overlap + stride - 1) // stride)
