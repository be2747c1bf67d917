"""Ids drawn besides the true one: uniform negatives for training a ranking head, and the
sampled candidates of evaluation.

Evaluation candidates are keyed by the example itself (user id, target, seed), so they are
identical on every call whatever the batch size, shard order or number of workers.
"""

import tensorflow as tf

#: How an evaluation ranks the true id: against sampled candidates or every id.
RANKINGS = ("sampled", "full")


def check_candidates(data_dir, meta, ranking, num_candidates):
    """Sampled ranking needs `num_candidates - 1` negatives besides the true id and id 0."""
    if meta["task"] == "classify" or ranking != "sampled":
        return
    universe = meta["num_items"] if meta["task"] == "pretrain" else meta["num_targets"]
    if universe - 2 < num_candidates - 1:
        raise ValueError(f"--num_candidates: {num_candidates} candidates need at least "
                         f"{num_candidates + 1} ids, {data_dir} has {universe}"
                         + (" targets" if meta["task"] == "item_rec" else " items")
                         + f"; use --num_candidates <= {universe - 1} or full ranking")


def check_excluded_candidates(data_dir, universe, num_candidates, width):
    """Sampled ranking with a history of up to `width` ids excluded still needs
    `num_candidates - 1` negatives outside it (besides the true id and id 0)."""
    if universe - 2 - width < num_candidates - 1:
        raise ValueError(f"--num_candidates: {num_candidates} candidates with "
                         f"--exclude_history need {num_candidates - 1} negatives outside a "
                         f"history of up to {width} ids, {data_dir} has {universe} ids; use "
                         f"--num_candidates <= {max(universe - 1 - width, 1)} or full ranking")


def sample_negatives(positives, count, num_targets, seed):
    """`[B, count]` uniform ids in [1, num_targets), never equal to the positive."""
    draw = tf.random.stateless_uniform(tf.concat([tf.shape(positives), [count]], 0), seed,
                                       minval=1, maxval=num_targets - 1, dtype=tf.int32)
    return draw + tf.cast(draw >= positives[:, None], tf.int32)


def example_seeds(user_ids, truth, seed):
    """`[B, 2]` stateless seeds that depend only on the example (user, target) and `seed`."""
    user_key = tf.strings.to_hash_bucket_fast(user_ids, 2 ** 62)
    return tf.stack([user_key, tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(truth, tf.int64)],
                    axis=1)


def sample_candidates(truth, count, num_items, seeds, excluded=None):
    """`[B, count]`: the true id, then count-1 distinct negatives drawn uniformly from
    [1, num_items) minus the true id and minus the row's `excluded` ids (`[B, E]`, -1
    pads; --exclude_history: the history is no competitor, so no negative is drawn from
    it and every row keeps count-1 of them). Row r depends only on `seeds[r]` (a `[2]`
    seed is used for every row) and its exclusions, so candidates do not change with
    batching or order.

    One stateless uniform vector of num_items per row, top-k of it (O(B * num_items),
    fine for evaluation). TF's stateless index_shuffle would be O(count) but is far from
    uniform on small ranges, so it is not used.
    """
    truth = tf.cast(truth, tf.int32)
    seeds = tf.cast(seeds, tf.int64)
    if seeds.shape.rank == 1:
        seeds = tf.tile(seeds[None, :], [tf.shape(truth)[0], 1])
    ids = tf.range(num_items, dtype=tf.int32)
    if excluded is None:
        excluded = -tf.ones([tf.shape(truth)[0], 1], tf.int32)

    def one_row(args):
        row_seed, true_id, row_excluded = args
        scores = tf.random.stateless_uniform([num_items], row_seed)
        scores = tf.where((ids == 0) | (ids == true_id), -1.0, scores)
        # the row's exclusions scattered in: O(num_items + E), not a [num_items, E] compare
        out = tf.cast(row_excluded, tf.int32)
        out = tf.boolean_mask(out, (out >= 0) & (out < num_items))
        scores = tf.tensor_scatter_nd_update(scores, out[:, None],
                                             -tf.ones_like(out, dtype=scores.dtype))
        return tf.math.top_k(scores, count - 1, sorted=True).indices

    negatives = tf.map_fn(one_row, (seeds, truth, excluded),
                          fn_output_signature=tf.TensorSpec([count - 1], tf.int32))
    return tf.concat([truth[:, None], negatives], axis=1)
