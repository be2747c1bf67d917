"""Masked-item examples (GRec's preprocessor): windows of max_len items sharing none; some
items of each are masked, and the model is trained to restore them."""

import dataclasses

import tensorflow as tf

from pipelines import schema

from peterrec_tf.data.framing import left_pad
from peterrec_tf.data.records import AUTOTUNE, with_batch_seeds


def mask_items(ids, seed, num_items, mask_rate=0.3, max_predictions=None):
    """GRec masking: choose max(1, round(rate * n)) of each row's n real positions; a chosen
    token becomes 0 w.p. 0.8, stays w.p. 0.1, becomes a random item w.p. 0.1.
    Rounding is half away from zero in float64, as the release's Python 2 `round`
    (Python 3 / tf.round would give 4 instead of 5 for 15 items at rate 0.3).
    Returns (masked ids, chosen-position weights)."""
    real = ids > 0
    n = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)
    wanted = tf.floor(tf.constant(mask_rate, tf.float64) * tf.cast(n, tf.float64) + 0.5)
    k = tf.maximum(1, tf.cast(wanted, tf.int32))
    if max_predictions:
        k = tf.minimum(k, max_predictions)
    k = tf.minimum(k, n)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    scores = tf.random.stateless_uniform(tf.shape(ids), seeds[0])
    scores = tf.where(real, scores, -1.0)
    rank = tf.argsort(tf.argsort(scores, axis=1, direction="DESCENDING"), axis=1)
    chosen = rank < k[:, None]
    action = tf.random.stateless_uniform(tf.shape(ids), seeds[1])
    random_items = tf.random.stateless_uniform(tf.shape(ids), seeds[2], minval=1,
                                               maxval=num_items, dtype=tf.int32)
    masked = tf.where(chosen & (action < 0.8), tf.zeros_like(ids), ids)
    masked = tf.where(chosen & (action >= 0.9), random_items, masked)
    return masked, tf.cast(chosen, tf.float32)


@dataclasses.dataclass(frozen=True)
class MaskedItemPreprocessor:
    """Ragged histories -> (masked ids, ids, weight) `[B, max_len]`, weight 1 at the chosen
    positions (`mask_items`). `pad_to_max_len=False` pads each batch to its own longest
    row instead."""

    max_len: int
    num_items: int
    mask_rate: float = 0.3
    max_predictions: int = None
    pad_to_max_len: bool = True

    @property
    def window(self):
        """(window size, overlap) of `windows.split_into_windows`."""
        return self.max_len, 0

    #: Windows never overlap: a masked position is a target once (no stride).
    stride = None

    def examples(self, dataset, seed=0, input_context=None):
        """Batches `{item_ids: ragged [B, None]}` -> (masked, ids, weight) batches, masked
        with a stateless seed per batch (`records.with_batch_seeds`)."""
        length = self.max_len if self.pad_to_max_len else None

        def to_masked(batch_seed, batch):
            ids = left_pad(batch[schema.ITEM_IDS], length)
            masked, weights = mask_items(ids, batch_seed, self.num_items, self.mask_rate,
                                         self.max_predictions)
            return masked, ids, weights
        return with_batch_seeds(dataset, seed, input_context).map(to_masked,
                                                                 num_parallel_calls=AUTOTUNE)
