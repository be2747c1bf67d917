"""Pre-training output heads: the release's `full` (1x1 conv on relu(h)) and `dot`, and
`tied` (SASRec's: the item embedding scores the next item)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="peterrec_tf")
class FullSoftmaxHead(keras.layers.Layer):
    """`logits = relu(h) @ W + b`, W `[C, V]`: the release's `logits` head (note the ReLU)."""

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)

    def build(self, input_shape):
        if self.built:
            return
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.vocab_size),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")

    def call(self, hidden):
        return ops.matmul(ops.relu(hidden), self.kernel) + self.bias

    def logits_range(self, hidden, start, stop):
        """Logits `[B, stop-start]` of ids start..stop-1 for `hidden` `[B, C]`: one slice
        of the vocabulary, so a catalogue of 645K items is scored without a `[B, V]` tensor."""
        return ops.matmul(ops.relu(hidden), self.kernel[:, start:stop]) + self.bias[start:stop]

    def logits_at(self, hidden, ids):
        """Logits `[B, K]` of the ids `[B, K]` (each row its own candidates) for `hidden` `[B, C]`."""
        columns = ops.take(self.kernel, ids, axis=1)  # [C, B, K]
        return ops.einsum("bc,cbk->bk", ops.relu(hidden), columns) + ops.take(self.bias, ids)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size)
        return config


@keras.saving.register_keras_serializable(package="peterrec_tf")
class DotProductHead(keras.layers.Layer):
    """`logits = h @ W^T + b`, W `[V, C]`: the release's `softmax_w`/`softmax_b` head.

    Stored as `[V, C]` so that training can use a sampled softmax over rows of W.
    """

    def __init__(self, vocab_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)

    def build(self, input_shape):
        if self.built:
            return
        self.kernel = self.add_weight(
            name="kernel", shape=(self.vocab_size, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.bias = self.add_weight(
            name="bias", shape=(self.vocab_size,),
            initializer=keras.initializers.Constant(0.1))

    def call(self, hidden):
        return ops.matmul(hidden, ops.transpose(self.kernel)) + self.bias

    def logits_range(self, hidden, start, stop):
        """Logits `[B, stop-start]` of ids start..stop-1 (see `FullSoftmaxHead.logits_range`)."""
        return (ops.matmul(hidden, ops.transpose(self.kernel[start:stop]))
                + self.bias[start:stop])

    def logits_at(self, hidden, ids):
        """Logits `[B, K]` of the ids `[B, K]` for `hidden` `[B, C]`."""
        rows = ops.take(self.kernel, ids, axis=0)  # [B, K, C]
        return ops.einsum("bc,bkc->bk", hidden, rows) + ops.take(self.bias, ids)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size)
        return config


@keras.saving.register_keras_serializable(package="peterrec_tf")
class TiedHead(DotProductHead):
    """`logits = h @ E^T + b` with E `[V, C]` the backbone's input item embedding (tied
    input and output embeddings, as SASRec): the head owns only the bias, `kernel` reads
    the embedding, so everything that uses a `DotProductHead` (sampled and fused softmax,
    chunked ranking, the int8 index, export through the backbone's variables) uses the
    one table. `tie(embedding_layer)` must be called before the head is used."""

    def tie(self, embedding_layer):
        # not tracked as this layer's: the embedding is saved and exported by the backbone
        object.__setattr__(self, "_embedding", embedding_layer)

    @property
    def kernel(self):
        embedding = getattr(self, "_embedding", None)
        if embedding is None:
            raise ValueError("a tied head reads the item embedding: call tie() first")
        return embedding.embeddings

    def build(self, input_shape):
        if self.built:
            return
        self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")


HEADS = {"full": FullSoftmaxHead, "dot": DotProductHead, "tied": TiedHead}


def make_head(kind, vocab_size, name="head", item_embedding=None):
    """`full` or `dot` (the release's names) or `tied` (needs the backbone's
    `item_embedding` layer)."""
    if kind not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {kind!r}")
    head = HEADS[kind](vocab_size, name=name)
    if kind == "tied":
        if item_embedding is None:
            raise ValueError("head 'tied' needs the backbone's item embedding")
        head.tie(item_embedding)
    return head
