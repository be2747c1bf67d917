"""Next-item ranking over a large catalogue, one vocabulary slice at a time.

At the paper's 645K items a `[B, V]` logits tensor is 2.6 MB per user: 660 MB for a
batch of 256, several times that with the comparisons ranking needs. Scoring the
catalogue in slices of `chunk_size` ids keeps the working set at `[B, chunk_size]`:
ranks are counted slice by slice (exact: the same count of competitors at or above the
true item as `metrics.true_ranks` over the whole row), and top-k lists are merged from
each slice's own top-k (the same ids, in the same order, ties by lower id).

Both take an optional `excluded` `[B, E]` int32: per row, ids that are no answer for that
row (its history, under `--exclude_history`; entries outside [0, V) are ignored, so -1
pads a row). `mask_excluded` is the one place such ids are scored -inf, slice by slice.
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


def mask_excluded(logits, excluded, start=0):
    """`logits` `[B, W]` (ids start..start+W-1) with each row's `excluded` ids (`[B, E]`,
    any value outside the slice ignored) set to -inf. Scatters only the ids that fall in
    the slice, so the working set stays `[B, W] + [B, E]`, never `[B, W, E]`."""
    if excluded is None:
        return logits
    excluded = tf.cast(excluded, tf.int32)
    local = excluded - start
    inside = (local >= 0) & (local < tf.shape(logits)[1])
    rows = tf.broadcast_to(tf.range(tf.shape(excluded)[0])[:, None], tf.shape(excluded))
    where = tf.stack([tf.boolean_mask(rows, inside), tf.boolean_mask(local, inside)], axis=1)
    return tf.tensor_scatter_nd_update(
        logits, where, tf.fill(tf.shape(where)[:1], tf.constant(-float("inf"), logits.dtype)))


def excluded_but_truth(excluded, y_true):
    """`excluded` `[B, E]` with each row's true id (`[B]`) taken out (-1): evaluation never
    excludes the item it scores, even when the user had it before (RecBole's practice)."""
    excluded = tf.cast(excluded, tf.int32)
    return tf.where(excluded == tf.cast(y_true, tf.int32)[:, None], -1, excluded)


def next_item_ranks(model, item_ids, y_true, chunk_size=DEFAULT_CHUNK, excluded=None):
    """0-based rank `[B]` of each true next item after `item_ids` `[B, T]`, never building
    `[B, V]` logits. `y_true` is the true ids `[B]` (full ranking over ids 1..V-1) or
    candidates `[B, K]` with the true id first (sampled ranking). Non-finite scores follow
    `metrics.true_ranks`: a NaN competitor beats the true item, a non-finite true score
    is `MISS_RANK`. `excluded` `[B, E]`: ids that are no competitor of that row (the
    history, under --exclude_history; the true id itself is never excluded).

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
        beaten = beats(scores[:, 1:], truth)
        if excluded is not None:
            beaten &= ~is_excluded(y_true[:, 1:], excluded_but_truth(excluded, y_true[:, 0]))
        ranks = tf.reduce_sum(tf.cast(beaten, tf.int32), axis=1)
        return tf.where(tf.math.is_finite(truth[:, 0]), ranks, MISS_RANK)
    truth = tf.cast(head.logits_at(hidden, y_true[:, None]), tf.float32)  # [B, 1]
    if excluded is not None:
        excluded = excluded_but_truth(excluded, y_true)
    ranks = tf.zeros_like(y_true)
    for start, stop in slices(head.vocab_size, chunk_size):
        logits = mask_excluded(tf.cast(head.logits_range(hidden, start, stop), tf.float32),
                               excluded, start)
        ids = tf.range(start, stop, dtype=tf.int32)[None, :]
        competing = (ids != 0) & (ids != y_true[:, None])  # id 0 is padding, never an answer
        beaten = competing & beats(logits, truth)
        ranks += tf.reduce_sum(tf.cast(beaten, tf.int32), axis=1)
    return tf.where(tf.math.is_finite(truth[:, 0]), ranks, MISS_RANK)


def is_excluded(ids, excluded):
    """`[B, K]` bool: whether each of a row's candidate `ids` `[B, K]` is among its
    `excluded` `[B, E]` (for K candidates per row, not a whole catalogue)."""
    return tf.reduce_any(tf.cast(ids, tf.int32)[:, :, None]
                         == tf.cast(excluded, tf.int32)[:, None, :], axis=2)


def top_k_in_chunks(head, hidden, k, blocked=(0,), chunk_size=DEFAULT_CHUNK, excluded=None):
    """(scores `[B, k]` float32, ids `[B, k]` int32) of the k highest logits for `hidden`
    `[B, C]`, ids in `blocked` never chosen (scored -inf). Each slice keeps its own top
    min(k, slice) and one final top-k merges them: the result equals `tf.math.top_k` over
    the whole row (which also puts the lower id first among equal scores). `k` may be a
    scalar tensor, at most V - len(blocked); `excluded` `[B, E]` ids are no answer for
    their row (-inf, like blocked ids: a row with fewer answers than k ends in -inf)."""
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
        logits = mask_excluded(logits, excluded, start)
        top_values, top_ids = tf.math.top_k(logits, tf.minimum(k, stop - start))
        values.append(top_values)
        ids.append(top_ids + start)
    if len(values) == 1:
        return values[0], ids[0]
    merged, position = tf.math.top_k(tf.concat(values, axis=1), k)
    return merged, tf.gather(tf.concat(ids, axis=1), position, batch_dims=1)
