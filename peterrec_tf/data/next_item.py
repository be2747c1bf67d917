"""Next-item examples (NextItNet's preprocessor): each window holds max_len + 1 items and
shares one with its neighbour; the inputs are its first max_len items and the labels its
last max_len, so every position is trained to predict the item after it."""

import dataclasses

import tensorflow as tf

from pipelines import schema

from peterrec_tf.data.framing import left_pad
from peterrec_tf.data.records import AUTOTUNE
from peterrec_tf.data.windows import FRESH_TARGETS


@dataclasses.dataclass(frozen=True)
class NextItemPreprocessor:
    """Ragged histories -> (x, y, weight) `[B, max_len]`: x = ids[:-1], y = ids[1:] of the
    left-padded window, weight 1 where y is an item the window owns (all of them, unless
    the batch says how many of its newest targets each window owns: `windows.FRESH_TARGETS`,
    made when `window_stride` cuts overlapping windows). `pad_to_max_len=False` pads each
    batch to its own longest row instead."""

    max_len: int
    pad_to_max_len: bool = True
    window_stride: int = 0

    def __post_init__(self):
        if not 0 <= self.window_stride <= self.max_len:
            raise ValueError(f"a next-item window stride must be in [1, max_len={self.max_len}]"
                             f" (0: windows sharing one item), got {self.window_stride}")

    @property
    def window(self):
        """(window size, overlap) of `windows.split_into_windows`."""
        return self.max_len + 1, 1

    @property
    def stride(self):
        """How many items apart windows are cut (None: `window`'s size less its overlap)."""
        return self.window_stride or None

    def examples(self, dataset, seed=0, input_context=None):
        """Batches `{item_ids: ragged [B, None]}` -> (x, y, weight) batches (draws nothing:
        `seed` and `input_context` are not needed)."""
        del seed, input_context
        length = self.max_len + 1 if self.pad_to_max_len else None

        def to_example(batch):
            ids = left_pad(batch[schema.ITEM_IDS], length)
            x, y = ids[:, :-1], ids[:, 1:]
            weight = y > 0
            if FRESH_TARGETS in batch:  # a window's own targets are its newest ones
                fresh = tf.cast(batch[FRESH_TARGETS], tf.int32)[:, None]
                from_newest = tf.shape(y)[1] - tf.range(tf.shape(y)[1])[None, :]
                weight &= from_newest <= fresh
            return x, y, tf.cast(weight, tf.float32)
        return dataset.map(to_example, num_parallel_calls=AUTOTUNE)
