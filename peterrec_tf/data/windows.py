"""Sequences cut into windows of a model's length, so that every stored item is trained on.

A pre-training objective's preprocessor says how long a window is and how many items two
neighbouring windows share (next item: max_len + 1 and 1; masked item: max_len and 0).
"""

import tensorflow as tf

#: How a pre-training split becomes examples: each sequence's most recent window only
#: ("last", the release's one example per user), or every window ("all").
WINDOWS = ("last", "all")


def split_into_windows(ragged, size, overlap):
    """Ragged ids `[B, None]` -> ragged windows `[W, None]` covering every item.

    Windows are cut from the newest end backwards: each holds at most `size` items and
    shares `overlap` items with the window before it, so with `overlap=1` every item after
    a sequence's first is the next-item target of exactly one window (the same set of
    (context, target) pairs a per-prefix dataset trains on, with contexts cut at window
    starts). A sequence of at most `size` items is one window, as with `left_pad`.
    """
    stride = size - overlap
    lengths = tf.cast(ragged.row_lengths(), tf.int32)
    starts = tf.cast(ragged.row_starts(), tf.int32)
    counts = window_counts(lengths, size, overlap)
    row = tf.repeat(tf.range(tf.shape(lengths)[0]), counts)
    index = tf.ragged.range(counts).flat_values  # 0 = newest window of its row
    ends = tf.gather(starts + lengths, row) - index * stride
    begins = tf.maximum(tf.gather(starts, row), ends - size)
    # oldest window first within a row, so a batch reads like the sequences
    order = tf.argsort(row * tf.reduce_max(tf.concat([counts, [1]], 0)) - index, stable=True)
    begins, ends = tf.gather(begins, order), tf.gather(ends, order)
    values = tf.gather(ragged.flat_values, tf.ragged.range(begins, ends).flat_values)
    return tf.RaggedTensor.from_row_lengths(values, tf.cast(ends - begins, tf.int64))


def window_counts(lengths, size, overlap):
    """Windows `split_into_windows` cuts from sequences of these lengths (at least one)."""
    stride = size - overlap
    return tf.maximum(1, (lengths - overlap + stride - 1) // stride)
