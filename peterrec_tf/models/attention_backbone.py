"""A SASRec-style causal self-attention user encoder behind the `Backbone` interface."""

import keras
from keras import ops

from peterrec_tf.layers.residual_block import LAYER_NORM_EPSILON
from peterrec_tf.layers.self_attention import (FEED_FORWARD_ACTIVATIONS, NORM_ORDERS,
                                                SelfAttentionBlock)
from peterrec_tf.models.backbone import Backbone

#: Where position 0 is. newest: the most recent item (SASRec's: the last item always has
#: the same position, whatever the window's length). oldest: the window's first real item
#: (RecBole's SASRec, right-padded prefixes): an item's position depends only on what came
#: before it, so every position's state is the state of its prefix read alone, and a
#: window trained at every position trains every prefix.
POSITION_ORIGINS = ("newest", "oldest")


@keras.saving.register_keras_serializable(package="peterrec_tf")
class SelfAttentionBackbone(Backbone):
    """Item + position embedding, `num_blocks` causal self-attention blocks and a layer
    norm: ids `[B, T]` -> hidden `[B, T, C]`. `norm_order` (`SelfAttentionBlock`): pre
    (SASRec's) normalises in front of each branch and ends in a layer norm (`output_norm`);
    post (BERT's, RecBole's SASRec) normalises the embedding (`embedding_norm`) and after
    each residual addition. `activation`: the feed-forward networks' (relu or gelu).

    Everything the pre-trainers, FineTuner, transfer methods, export and serving use of a
    `Backbone` holds: position t reads positions <= t only, `blocks` carry `patches`
    (`insertion` as in `SelfAttentionBlock`), `with_patches` grafts identity patches into
    a trained copy.

    Padding (id 0) is inert: its embedding is masked to zero, no item attends to it and
    its outputs are zero, so an answer does not depend on how much left padding a history
    carries. `position_origin` (POSITION_ORIGINS): newest counts positions back from the
    most recent item (0 = the last one) and positions beyond `max_positions` - 1 share the
    oldest one; oldest counts forward from the first real item (a history longer than
    `max_positions` shares position 0 among its oldest items, as newest does). Only
    causal (next-item) training: masked-item pre-training marks its masks with id 0, the
    padding id here.

    `dropout` (attention probabilities and each residual branch's output) and
    `embedding_dropout` (item + position embedding) act in training only; they are
    training settings, not architecture (a patched copy starts without them).
    """

    ARCHITECTURE_NAME = "self_attention"
    ARCHITECTURE_FIELDS = ("vocab_size", "channels", "num_blocks", "heads", "max_positions",
                           "feed_forward_dim", "causal", "norm_order", "activation",
                           "position_origin")
    #: The [TCL] token is id 0, padding here: fine-tuning reads the last item's state, as
    #: next-item pre-training does.
    FINE_TUNING_FRAMING = "history"

    def __init__(self, vocab_size, channels=64, num_blocks=2, heads=1, max_positions=200,
                 feed_forward_dim=None, causal=True, insertion=None, patch_config=None,
                 dropout=0.0, embedding_dropout=0.0, norm_order="pre", activation="relu",
                 position_origin="newest", **kwargs):
        kwargs.setdefault("name", "backbone")
        keras.Model.__init__(self, **kwargs)  # not Backbone's: it makes dilated-CNN blocks
        if vocab_size < 2 or channels < 1 or num_blocks < 1 or max_positions < 1:
            raise ValueError(
                f"need vocab_size >= 2, channels >= 1, num_blocks >= 1 and max_positions >= 1; "
                f"got {vocab_size}, {channels}, {num_blocks}, {max_positions}")
        if not causal:
            raise ValueError("the self-attention backbone is causal only (next-item "
                             "pre-training): masked-item pre-training marks masks with id 0, "
                             "which is its padding")
        if norm_order not in NORM_ORDERS:
            raise ValueError(f"norm_order must be one of {NORM_ORDERS}, got {norm_order!r}")
        if activation not in FEED_FORWARD_ACTIVATIONS:
            raise ValueError(f"activation must be one of {FEED_FORWARD_ACTIVATIONS}, got "
                             f"{activation!r}")
        if position_origin not in POSITION_ORIGINS:
            raise ValueError(f"position_origin must be one of {POSITION_ORIGINS}, got "
                             f"{position_origin!r}")
        for name, rate in (("dropout", dropout), ("embedding_dropout", embedding_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        self.vocab_size = int(vocab_size)
        self.channels = int(channels)
        self.num_blocks = int(num_blocks)
        self.heads = int(heads)
        if self.channels % self.heads:
            raise ValueError(f"{self.channels} channels cannot be split into {self.heads} heads")
        self.max_positions = int(max_positions)
        self.feed_forward_dim = None if feed_forward_dim is None else int(feed_forward_dim)
        self.dropout = float(dropout)
        self.embedding_dropout = float(embedding_dropout)
        self.causal = True
        self.norm_order = norm_order
        self.activation = activation
        self.position_origin = position_origin
        self.insertion = insertion
        self.patch_config = dict(patch_config or {})
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.item_embedding = keras.layers.Embedding(
            self.vocab_size, self.channels, embeddings_initializer=init, name="item_embedding")
        self.position_embedding = keras.layers.Embedding(
            self.max_positions, self.channels, embeddings_initializer=init,
            name="position_embedding")
        self.embedding_dropout_layer = keras.layers.Dropout(self.embedding_dropout,
                                                            name="embedding_dropout")
        self.blocks = [
            SelfAttentionBlock(self.heads, self.feed_forward_dim, self.dropout, True, insertion,
                               self.patch_config, norm_order=norm_order, activation=activation,
                               name=f"block_{i}")
            for i in range(self.num_blocks)
        ]
        # one of the two, by the norm order: the other would hold weights nothing reads
        norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON,
            name="output_norm" if norm_order == "pre" else "embedding_norm")
        self.output_norm = norm if norm_order == "pre" else None
        self.embedding_norm = norm if norm_order == "post" else None

    def build(self, input_shape=None):
        if self.built:
            return
        for layer in (self.item_embedding, self.position_embedding):
            if not layer.built:
                layer.build((None, None))
        for layer in (*self.blocks, self.output_norm or self.embedding_norm):
            layer.build((None, None, self.channels))
        self.built = True

    @property
    def embedding_layers(self):
        return [self.item_embedding, self.position_embedding] + (
            [self.embedding_norm] if self.embedding_norm is not None else [])

    @property
    def final_layers(self):
        return [self.output_norm] if self.output_norm is not None else []

    def call(self, item_ids, training=None):
        padding = ops.equal(item_ids, 0)
        hidden = self.item_embedding(item_ids) + self.position_embedding(
            self.positions(item_ids))
        if self.embedding_norm is not None:
            hidden = self.embedding_norm(hidden)
        hidden = self.embedding_dropout_layer(hidden, training=training)
        hidden = ops.where(padding[:, :, None], ops.zeros_like(hidden), hidden)
        stack = getattr(self, "_xla_blocks", None)
        # `training` as a Python value: it is part of the compiled function's signature,
        # so a function traced for training (dropout on) is never reused for evaluation
        training = bool(training) if training is None or isinstance(training, bool) else training
        return (stack or self._run_blocks)(hidden, padding, training)

    def positions(self, item_ids):
        """The position id of each of `item_ids` `[B, T]`: `[1, T]` (newest: the same for
        every row) or `[B, T]` (oldest: from each row's first real item, so left padding
        moves nothing; a row with more than `max_positions` items shares position 0 among
        its oldest ones, as newest does, so its newest items keep their own)."""
        length = ops.shape(item_ids)[1]
        if self.position_origin == "newest":
            return ops.minimum(length - 1 - ops.arange(length), self.max_positions - 1)[None]
        real = ops.cast(ops.not_equal(item_ids, 0), "int32")
        overflow = ops.maximum(ops.sum(real, axis=1, keepdims=True) - self.max_positions, 0)
        return ops.clip(ops.cumsum(real, axis=1) - 1 - overflow, 0, self.max_positions - 1)

    def _run_blocks(self, hidden, padding, training=False):
        for block in self.blocks:
            hidden = block(hidden, padding, training=training)
        if self.output_norm is not None:
            hidden = self.output_norm(hidden)
        return ops.where(padding[:, :, None], ops.zeros_like(hidden), hidden)

    def last_position(self, item_ids):
        """`self(item_ids)[:, -1, :]`: every position feeds the last one through attention,
        so the whole sequence runs."""
        return self(item_ids)[:, -1, :]

    @property
    def receptive_field(self):
        """Every earlier position (the attention sees the whole history)."""
        return None

    def get_config(self):
        config = keras.Model.get_config(self)
        config.update({field: getattr(self, field) for field in self.ARCHITECTURE_FIELDS})
        config.update(insertion=self.insertion, patch_config=self.patch_config,
                      dropout=self.dropout, embedding_dropout=self.embedding_dropout)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
