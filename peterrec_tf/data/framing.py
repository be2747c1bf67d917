"""How a user's history becomes the id matrix a model reads: the one definition of framing.

A model records its `Framing` (kind + length) in its own config, and every path that feeds
it calls this class: the training and evaluation input functions (ragged histories from
TFRecords), the SavedModel signatures (dense histories with padding anywhere), evaluation
and further fine-tuning of converted models. Kinds:

  history         the last `length` items, left-padded with 0 (pre-training and next-item
                  ranking: the model reads the last position)
  tcl             `[0] + history + [0]`: the [TCL] token at both ends (this project's
                  fine-tuning, and the release's non-causal fine-tuning scripts)
  release_causal  the first `length` positions right-padded with 0, then one `0`: what the
                  release's causal fine-tuning loaders feed (`[s1..sn, 0, .., 0, 0]`)
  release_plain   right-padded to `length`, no separator (the release's FineAll scripts)

`length=None` pads to the longest history of the batch (left-padded kinds only). Longer
histories keep their most recent `length` items in every kind. Which length a path uses is
decided in one place, `resolve_length`: the length asked for, else the model's own, else
the prepared data's. Id 0 is padding, [TCL],
[MASK] and out-of-vocabulary at once, as in the release.
"""

import dataclasses

import tensorflow as tf

FRAMINGS = ("history", "tcl", "release_causal", "release_plain")
RIGHT_PADDED = ("release_causal", "release_plain")


def _keep_recent(ragged, length):
    """(flat index of each kept row's first item, kept count) for the last `length` items."""
    lengths = tf.cast(ragged.row_lengths(), tf.int32)
    if length is None:
        length = tf.maximum(tf.reduce_max(lengths), 1)
    keep = tf.minimum(lengths, length)
    starts = tf.cast(ragged.row_starts(), tf.int32) + lengths - keep
    return starts, keep, length


def _gather_padded(ragged, starts, positions):
    """`flat[starts + positions]` where `positions >= 0`, else 0 (a zero appended to the
    flat values serves every padding position, also when the batch holds no item at all)."""
    flat = tf.concat([tf.cast(ragged.flat_values, tf.int32), [0]], axis=0)
    padding = tf.size(flat) - 1
    return tf.gather(flat, tf.where(positions >= 0, positions + starts[:, None], padding))


def left_pad(ragged, length):
    """Ragged ids `[B, None]` -> dense `[B, length]`: last `length` items, zeros on the left."""
    starts, keep, length = _keep_recent(ragged, length)
    positions = tf.range(length)[None, :] - (length - keep)[:, None]  # < 0 means padding
    return _gather_padded(ragged, starts, positions)


def right_pad(ragged, length):
    """Ragged ids `[B, None]` -> dense `[B, length]`: last `length` items, zeros on the right."""
    starts, keep, length = _keep_recent(ragged, length)
    positions = tf.range(length)[None, :]
    positions = tf.where(positions < keep[:, None], positions, -1)
    return _gather_padded(ragged, starts, positions)


def resolve_length(requested=None, recorded=None, metadata=None):
    """The history length a model reads, by the one rule every path follows: the length
    asked for (`requested`, a --max_len flag; 0 or None: none), else the one the model
    records (its framing's), else the prepared data's (metadata.json's `max_len`); None
    when none of them says."""
    for length in (requested, recorded, (metadata or {}).get("max_len")):
        if length:
            return int(length)
    return None


def default_framing(task):
    """This project's framing of a new model for data of `task` (metadata.json's "task"),
    its length still open: `history` for pre-training, `tcl` for fine-tuning."""
    return Framing("history" if task == "pretrain" else "tcl", None)


#: The id the token signatures give an item the model does not know. Like every id
#: outside [1, V) (an `item_ids` request may send any), it is framed as id 0 *in its
#: place*, which is how data preparation stores an unknown item in a history
#: (`pipelines/vocab.py`: unknown tokens -> 0), so a served history reads what training,
#: `evaluate` and `recommend` read, and the `_ids` signatures answer as the token ones and
#: the LiteRT model (which takes 0 in place) do. Only padding (0) is dropped.
UNKNOWN_IN_PLACE = -1


def drop_padding(ids, vocab_size):
    """Dense ids `[B, L]` with padding anywhere -> ragged int32 histories, order kept:
    padding (0) is removed, ids in [1, vocab_size) are kept, and any other id (an item the
    model does not know: `UNKNOWN_IN_PLACE`, a negative id, an id of a larger vocabulary)
    becomes 0 where it stands. The range is checked before any narrowing cast, so an int64
    id such as 2**32 + 5 is an unknown item, not item 5."""
    ids = tf.cast(ids, tf.int64)
    known = (ids > 0) & (ids < vocab_size)
    return tf.cast(tf.ragged.boolean_mask(tf.where(known, ids, tf.zeros_like(ids)),
                                          tf.not_equal(ids, 0)), tf.int32)


def unknown_between(ids):
    """An `item_ids` request `[B, L]` with a 0 between two items: that 0 becomes
    `UNKNOWN_IN_PLACE`. Prepared data stores an unknown item as 0 in its place and the
    LiteRT model reads a 0 so, so a history sent as prepared holds its unknown items there;
    leading and trailing 0s stay padding (dropped)."""
    ids = tf.cast(ids, tf.int64)
    present = tf.cast(tf.not_equal(ids, 0), tf.int32)
    inside = (tf.cumsum(present, axis=1) > 0) & (tf.cumsum(present, axis=1, reverse=True) > 0)
    return tf.where(inside & tf.equal(present, 0), tf.constant(UNKNOWN_IN_PLACE, tf.int64), ids)


@dataclasses.dataclass(frozen=True)
class Framing:
    """A framing kind and its history length (see the module docstring)."""

    kind: str = "tcl"
    length: int = None

    def __post_init__(self):
        if self.kind not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {self.kind!r}")
        if self.length is not None:
            if int(self.length) < 1:
                raise ValueError(f"framing length must be at least 1 (or None), got {self.length}")
            object.__setattr__(self, "length", int(self.length))
        elif self.kind in RIGHT_PADDED:
            raise ValueError(f"framing {self.kind} pads to a fixed width: give its length")

    @property
    def extra_positions(self):
        """Positions the framing adds around the history."""
        return {"history": 0, "tcl": 2, "release_causal": 1, "release_plain": 0}[self.kind]

    def resolved(self, requested=None, metadata=None):
        """The same kind at `resolve_length(requested, self.length, metadata)`."""
        return dataclasses.replace(self, length=resolve_length(requested, self.length, metadata))

    def frame(self, ragged_ids):
        """Ragged histories `[B, None]` (oldest first) -> framed int32 ids `[B, width]`."""
        if self.kind in RIGHT_PADDED:
            ids = right_pad(ragged_ids, self.length)
        else:
            ids = left_pad(ragged_ids, self.length)
        zeros = tf.zeros_like(ids[:, :1])
        if self.kind == "tcl":
            return tf.concat([zeros, ids, zeros], axis=1)
        if self.kind == "release_causal":
            return tf.concat([ids, zeros], axis=1)
        return ids

    def frame_padded(self, ids, vocab_size):
        """Dense histories with padding anywhere (what a serving request holds) -> framed
        ids: padding dropped first, ids outside the vocabulary (unknown items,
        `UNKNOWN_IN_PLACE` among them) kept as 0 in their place (`drop_padding`)."""
        return self.frame(drop_padding(ids, vocab_size))

    def get_config(self):
        return {"kind": self.kind, "length": self.length}

    @classmethod
    def from_config(cls, config):
        if isinstance(config, cls):
            return config
        return cls(**config)
