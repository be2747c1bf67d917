"""A SASRec-style self-attention block, with optional model patches grafted in."""

import keras
from keras import ops

from peterrec_tf.layers.residual_block import INSERTIONS, LAYER_NORM_EPSILON, block_patches

#: Where a block's layer norms sit. pre: in front of each residual branch, the sum left
#: unnormalised (SASRec's order; the backbone ends in a layer norm); post: after each
#: residual addition (the original Transformer's and BERT's order, which RecBole's SASRec
#: and BERT4Rec use; the backbone normalises the embedding instead).
NORM_ORDERS = ("pre", "post")
#: The feed-forward network's inner activation: relu (SASRec's) or gelu (RecBole's,
#: BERT's; the tanh-free form).
FEED_FORWARD_ACTIVATIONS = ("relu", "gelu")


def attention_mask(padding, causal):
    """`[B, T, T]` booleans, True where query t may read key s: keys that are items (not
    padding), at s <= t when causal; every query may also read itself, so a padding
    query (whose output is discarded) never has an empty row, which would be 0/0."""
    length = ops.shape(padding)[1]
    index = ops.arange(length)
    keys = ops.logical_not(padding)[:, None, :]
    allowed = ops.logical_or(keys, ops.equal(index[:, None], index[None, :])[None])
    if causal:
        allowed = ops.logical_and(allowed, (index[None, :] <= index[:, None])[None])
    return allowed


@keras.saving.register_keras_serializable(package="peterrec_tf")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Scaled dot-product self-attention over `heads` heads: `x [B, T, C]` and a mask
    `[B, T, T]` (see `attention_mask`) -> `[B, T, C]` (the output projection included).
    Written out instead of `keras.layers.MultiHeadAttention` so that the weights are four
    plain `[C, C]` kernels and the masked softmax is the one XLA-friendly expression."""

    def __init__(self, heads=1, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.heads = int(heads)
        self.dropout = float(dropout)
        self.probability_dropout = keras.layers.Dropout(self.dropout, name="probability_dropout")

    def build(self, input_shape):
        if self.built:
            return
        channels = int(input_shape[-1])
        if channels % self.heads:
            raise ValueError(f"{channels} channels cannot be split into {self.heads} heads")
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        for name in ("query", "key", "value", "output"):
            setattr(self, f"{name}_kernel", self.add_weight(
                name=f"{name}_kernel", shape=(channels, channels), initializer=init))
            setattr(self, f"{name}_bias", self.add_weight(
                name=f"{name}_bias", shape=(channels,), initializer="zeros"))

    def _split(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (batch, length, self.heads, -1)), (0, 2, 1, 3))

    def call(self, x, mask, training=None):
        query = self._split(ops.matmul(x, self.query_kernel) + self.query_bias)
        key = self._split(ops.matmul(x, self.key_kernel) + self.key_bias)
        value = self._split(ops.matmul(x, self.value_kernel) + self.value_bias)
        depth = ops.cast(ops.shape(query)[-1], query.dtype)
        scores = ops.einsum("bhqd,bhkd->bhqk", query, key) / ops.sqrt(depth)
        # masked keys get a score whose exp underflows to exactly 0 (float16's range ends
        # at 65504)
        lowest = -3.0e4 if keras.backend.standardize_dtype(scores.dtype) == "float16" else -1.0e9
        scores = ops.where(mask[:, None, :, :], scores, lowest)
        probabilities = self.probability_dropout(ops.softmax(scores, axis=-1), training=training)
        context = ops.einsum("bhqk,bhkd->bhqd", probabilities, value)
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (batch, length, -1))
        return ops.matmul(context, self.output_kernel) + self.output_bias

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="peterrec_tf")
class SelfAttentionBlock(keras.layers.Layer):
    """One Transformer block, each residual branch's output through dropout,
    `ffn = W2 act(W1 .)` (`activation` relu or gelu). `norm_order` (NORM_ORDERS):
      pre (SASRec's):  `h = x + attend(LN1(x))`,    `out = h + ffn(LN2(h))`;
      post (BERT's):   `h = LN1(x + attend(x))`,    `out = LN2(h + ffn(h))`.
    A branch's "normalised input" below is `LN(x)` in pre order and `x` itself in post
    order (there the block's input is already the output of a layer norm).

    `insertion` grafts model patches into the two residual branches, by analogy with
    the paper's Figure 3 for the dilated CNN (`ResidualBlock`):
      b: serial, `mp_1` on the attention's output, `mp_2` on the feed-forward's output
         (before each residual addition: Houlsby's adapter places);
      c: serial, one `mp` on the feed-forward branch's output;
      d: parallel to each branch, from its normalised input: `attend(n) + mp_1(n)`;
      e: parallel to each branch, from the block's un-normalised input: `attend(n) + mp_1(x)`.
    Serial patches carry the identity shortcut, parallel ones none; with the patches'
    zero-initialised up-projection a freshly patched block computes the unpatched one.
    `padding` `[B, T]` (True at padding) zeroes the outputs there, so padding stays inert.
    """

    def __init__(self, heads=1, feed_forward_dim=None, dropout=0.0, causal=True,
                 insertion=None, patch_config=None, norm_order="pre", activation="relu",
                 **kwargs):
        super().__init__(**kwargs)
        if insertion is not None and insertion not in INSERTIONS:
            raise ValueError(f"insertion must be one of {INSERTIONS} or None, got {insertion!r}")
        if norm_order not in NORM_ORDERS:
            raise ValueError(f"norm_order must be one of {NORM_ORDERS}, got {norm_order!r}")
        if activation not in FEED_FORWARD_ACTIVATIONS:
            raise ValueError(f"activation must be one of {FEED_FORWARD_ACTIVATIONS}, got "
                             f"{activation!r}")
        self.norm_order = norm_order
        self.activation = activation
        self.heads = int(heads)
        self.feed_forward_dim = None if feed_forward_dim is None else int(feed_forward_dim)
        self.dropout = float(dropout)
        self.causal = bool(causal)
        self.insertion = insertion
        self.patch_config = dict(patch_config or {})
        self.layer_norm1 = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="layer_norm1")
        self.attention = MultiHeadSelfAttention(self.heads, self.dropout, name="attention")
        self.layer_norm2 = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="layer_norm2")
        self.branch_dropout = keras.layers.Dropout(self.dropout, name="branch_dropout")
        self.patches = block_patches(insertion, self.patch_config)

    def build(self, input_shape):
        if self.built:
            return
        channels = int(input_shape[-1])
        # made here: their widths follow the input's C, which the constructor does not know
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.feed_forward_in = keras.layers.Dense(
            self.feed_forward_dim or channels, kernel_initializer=init,
            name="feed_forward_in")
        self.feed_forward_out = keras.layers.Dense(channels, kernel_initializer=init,
                                                   name="feed_forward_out")
        self.layer_norm1.build(input_shape)
        self.attention.build(input_shape)
        self.layer_norm2.build(input_shape)
        self.feed_forward_in.build(input_shape)
        self.feed_forward_out.build((*input_shape[:-1], self.feed_forward_in.units))
        for patch in self.patches:
            patch.build(input_shape)

    def call(self, x, padding, training=None):
        patches, insertion = self.patches, self.insertion
        pre = self.norm_order == "pre"
        normed = self.layer_norm1(x) if pre else x
        branch = self.attention(normed, attention_mask(padding, self.causal), training=training)
        if insertion == "b":
            branch = patches[0](branch)
        elif insertion == "d":
            branch = branch + patches[0](normed)
        elif insertion == "e":
            branch = branch + patches[0](x)
        h = x + self.branch_dropout(branch, training=training)
        if not pre:
            h = self.layer_norm1(h)
        normed = self.layer_norm2(h) if pre else h
        inner = self.feed_forward_in(normed)
        inner = ops.relu(inner) if self.activation == "relu" else ops.gelu(inner, approximate=False)
        branch = self.feed_forward_out(inner)
        if insertion in ("b", "c"):
            branch = patches[-1](branch)
        elif insertion == "d":
            branch = branch + patches[1](normed)
        elif insertion == "e":
            branch = branch + patches[1](h)
        out = h + self.branch_dropout(branch, training=training)
        if not pre:
            out = self.layer_norm2(out)
        return ops.where(padding[:, :, None], ops.zeros_like(out), out)

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def backbone_layers(self):
        """The pre-trained sub-layers (everything but the patches)."""
        return [self.layer_norm1, self.attention, self.layer_norm2,
                self.feed_forward_in, self.feed_forward_out]

    @property
    def transform_layers(self):
        """The layers that mix channels (what the paper compares the patches with)."""
        return [self.attention, self.feed_forward_in, self.feed_forward_out]

    @property
    def trained_norms(self):
        """The layer norms PeterRec trains with the patches (`train_layer_norm`): both,
        each the normalisation in front of one patched branch (pre order) or of the sum
        after it (post order)."""
        return [self.layer_norm1, self.layer_norm2]

    def get_config(self):
        config = super().get_config()
        config.update(heads=self.heads, feed_forward_dim=self.feed_forward_dim,
                      dropout=self.dropout, causal=self.causal, insertion=self.insertion,
                      patch_config=self.patch_config, norm_order=self.norm_order,
                      activation=self.activation)
        return config
