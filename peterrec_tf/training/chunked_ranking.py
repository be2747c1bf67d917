"""Next-item ranking over a large catalogue, one vocabulary slice at a time.

At the paper's 645K items a `[B, V]` logits tensor is 2.6 MB per user: 660 MB for a
batch of 256, several times that with the comparisons ranking needs. Scoring the
catalogue in slices of `chunk_size` ids keeps the working set at `[B, chunk_size]`:
ranks are counted slice by slice (exact: the same count of competitors at or above the
true item as `metrics.true_ranks` over the whole row), and top-k lists are merged from
each slice's own top-k (the same ids, in the same order, ties by lower id).
"""

import tensorflow as tf

from peterrec_tf.metrics import MISS_RANK, beats

#: Vocabulary ids scored at once; below this a catalogue is scored in one piece.
DEFAULT_CHUNK = 65_536


def slices(vocab_size, chunk_size):
    """[(start, stop)] covering ids 0..vocab_size-1."""
    chunk_size = max(1, int(chunk_size))
    return [(start, min(start + chunk_size, vocab_size))
            for start in range(0, vocab_size, chunk_size)]


def next_item_ranks(model, item_ids, y_true, chunk_size=DEFAULT_CHUNK):
    """0-based rank `[B]` of each true next item after `item_ids` `[B, T]`, never building
    `[B, V]` logits. `y_true` is the true ids `[B]` (full ranking over ids 1..V-1) or
    candidates `[B, K]` with the true id first (sampled ranking). Non-finite scores follow
    `metrics.true_ranks`: a NaN competitor beats the true item, a non-finite true score
    is `MISS_RANK`.

    The true item's logit is a row-wise dot product, its competitors' come from a matrix
    product; the two agree to float rounding, so only competitors tied with the true item
    within a few ulps could be counted differently from the unchunked matrix.
    """
    head = model.head
    hidden = model.user_embedding(item_ids)
    y_true = tf.cast(y_true, tf.int32)
    if y_true.shape.rank == 2 and y_true.shape[-1] == 1:
        y_true = y_true[:, 0]
    if y_true.shape.rank == 2:  # sampled: only the candidates are scored
        scores = tf.cast(head.logits_at(hidden, y_true), tf.float32)
        truth = scores[:, :1]
        ranks = tf.reduce_sum(tf.cast(beats(scores[:, 1:], truth), tf.int32), axis=1)
        return tf.where(tf.math.is_finite(truth[:, 0]), ranks, MISS_RANK)
    truth = tf.cast(head.logits_at(hidden, y_true[:, None]), tf.float32)  # [B, 1]
    ranks = tf.zeros_like(y_true)
    for start, stop in slices(head.vocab_size, chunk_size):
        logits = tf.cast(head.logits_range(hidden, start, stop), tf.float32)
        ids = tf.range(start, stop, dtype=tf.int32)[None, :]
        competing = (ids != 0) & (ids != y_true[:, None])  # id 0 is padding, never an answer
        beaten = competing & beats(logits, truth)
        ranks += tf.reduce_sum(tf.cast(beaten, tf.int32), axis=1)
    return tf.where(tf.math.is_finite(truth[:, 0]), ranks, MISS_RANK)


def top_k_in_chunks(head, hidden, k, blocked=(0,), chunk_size=DEFAULT_CHUNK):
    """(scores `[B, k]` float32, ids `[B, k]` int32) of the k highest logits for `hidden`
    `[B, C]`, ids in `blocked` never chosen (scored -inf). Each slice keeps its own top
    min(k, slice) and one final top-k merges them: the result equals `tf.math.top_k` over
    the whole row (which also puts the lower id first among equal scores). `k` may be a
    scalar tensor, at most V - len(blocked)."""
    blocked = sorted({int(b) for b in blocked})
    values, ids = [], []
    for start, stop in slices(head.vocab_size, chunk_size):
        logits = tf.cast(head.logits_range(hidden, start, stop), tf.float32)
        inside = [b - start for b in blocked if start <= b < stop]
        if inside:
            allowed = tf.tensor_scatter_nd_update(tf.ones([stop - start], tf.bool),
                                                  [[i] for i in inside],
                                                  tf.zeros(len(inside), tf.bool))
            logits = tf.where(allowed[None, :], logits, -float("inf"))
        top_values, top_ids = tf.math.top_k(logits, tf.minimum(k, stop - start))
        values.append(top_values)
        ids.append(top_ids + start)
    if len(values) == 1:
        return values[0], ids[0]
    merged, position = tf.math.top_k(tf.concat(values, axis=1), k)
    return merged, tf.gather(tf.concat(ids, axis=1), position, batch_dims=1)
