"""Next-item examples (NextItNet's preprocessor): each window holds max_len + 1 items and
shares one with its neighbour; the inputs are its first max_len items and the labels its
last max_len, so every position is trained to predict the item after it."""

import dataclasses

import tensorflow as tf

from pipelines import schema

from peterrec_tf.data.framing import left_pad
from peterrec_tf.data.records import AUTOTUNE


@dataclasses.dataclass(frozen=True)
class NextItemPreprocessor:
    """Ragged histories -> (x, y, weight) `[B, max_len]`: x = ids[:-1], y = ids[1:] of the
    left-padded window, weight 1 where y is an item. `pad_to_max_len=False` pads each batch
    to its own longest row instead."""

    max_len: int
    pad_to_max_len: bool = True

    @property
    def window(self):
        """(window size, overlap) of `windows.split_into_windows`."""
        return self.max_len + 1, 1

    def examples(self, dataset, seed=0, input_context=None):
        """Batches `{item_ids: ragged [B, None]}` -> (x, y, weight) batches (draws nothing:
        `seed` and `input_context` are not needed)."""
        del seed, input_context
        length = self.max_len + 1 if self.pad_to_max_len else None

        def to_example(batch):
            ids = left_pad(batch[schema.ITEM_IDS], length)
            x, y = ids[:, :-1], ids[:, 1:]
            return x, y, tf.cast(y > 0, tf.float32)
        return dataset.map(to_example, num_parallel_calls=AUTOTUNE)
