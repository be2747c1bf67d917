"""Self-supervised pre-training tasks: NextItNet (next item) and GRec (masked item)."""

import keras
import tensorflow as tf
from keras import ops

from peterrec_tf.data.framing import Framing

from peterrec_tf.models.backbone import WrapsBackbone
from peterrec_tf.models.replica_losses import scale_for_replicas, weighted_mean

from peterrec_tf.layers.heads import DotProductHead, make_head
from peterrec_tf.layers.fused_softmax import (
    draw_candidates, fused_sampled_softmax_sum, fused_softmax_sum, smoothed_cross_entropy)

# with the fused softmax losses the kept positions are padded to a multiple of this, so
# that XLA compiles a few row counts instead of one per batch
FUSED_ROWS_MULTIPLE = 64


#: at most this many static row counts for the head in an XLA-compiled step
COMPACT_BUCKETS = 8


def compact_sizes(rows):
    """The static row counts the head may run on in an XLA-compiled step of `rows`
    positions: multiples of a step (at least FUSED_ROWS_MULTIPLE, about `rows` /
    COMPACT_BUCKETS) below `rows`, then `rows`; just `(rows,)` when `rows` is unknown
    or small."""
    if rows is None:
        return ()
    step = -(-rows // COMPACT_BUCKETS)
    step = -(-step // FUSED_ROWS_MULTIPLE) * FUSED_ROWS_MULTIPLE
    return tuple(range(step, rows, step)) + (rows,)


def pad_rows(multiple, *tensors):
    """Each tensor with zero rows appended up to a row count that is a multiple of
    `multiple` (the zero rows carry weight 0, so they change nothing)."""
    n = tf.shape(tensors[0])[0]
    extra = (multiple - n % multiple) % multiple
    return [tf.pad(t, [[0, extra]] + [[0, 0]] * (t.shape.rank - 1)) for t in tensors]


class SequencePretrainer(WrapsBackbone, keras.Model):
    """A backbone plus an item head; `call(ids)` gives item logits `[B, T, V]`.

    The loss is the cross-entropy of the label item at every position, weighted by
    `sample_weight` (padding / unmasked positions get weight 0) and averaged over the
    weight.  In training `call` returns the hidden states and `compute_loss` applies the
    head only at positions with weight > 0; with the `dot` head and `num_sampled > 0`
    that is a sampled softmax (log-uniform candidates, like the release), so the full
    `[B, T, V]` logits are never formed in training. `label_smoothing` e > 0 (full softmax
    only) trains towards `1 - e` on the label and `e / V` on every item.
    """

    requires_causal = None
    #: What the model answers, as FineTuner.task ("item_rec" | "classify"): the one
    #: notion of model kind that evaluation, export and the model directory dispatch on.
    task = "pretrain"

    def __init__(self, backbone, head="full", num_sampled=0, framing=None, label_smoothing=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if label_smoothing and num_sampled:
            raise ValueError("label smoothing needs the full softmax (num_sampled=0): a sampled "
                             "softmax has no distribution over every item to smooth towards")
        if self.requires_causal is not None and backbone.causal != self.requires_causal:
            kind = "causal" if self.requires_causal else "non-causal"
            raise ValueError(f"{type(self).__name__} needs a {kind} backbone")
        if num_sampled and head not in ("dot", "tied"):
            raise ValueError("a sampled softmax (num_sampled > 0) needs head='dot' or 'tied'")
        if num_sampled >= backbone.vocab_size:
            raise ValueError(
                f"num_sampled={num_sampled} must be below the vocabulary size "
                f"{backbone.vocab_size}")
        self.backbone = backbone
        self.head_kind = head
        self.num_sampled = int(num_sampled)
        self.label_smoothing = float(label_smoothing)
        # histories as `next_item_logits` reads them: the last items, left-padded
        self.framing = Framing.from_config(framing or Framing("history"))
        self.head = make_head(head, backbone.vocab_size, name="head",
                              item_embedding=backbone.item_embedding)

    def build(self, input_shape=None):
        if self.built:
            return
        self.backbone.build()
        self.head.build((None, None, self.backbone.channels))
        self.built = True

    def compile(self, *args, xla_plan=None, **kwargs):
        """Keras' `compile`, plus, when `xla_plan` is given (an objective's `xla_plan`, `objectives`),
        what XLA compiles: "step" the whole train step (it sets `jit_compile`), "blocks" the
        residual stack alone (`Backbone.compile_blocks_with_xla`), "softmax" the fused
        softmax losses (`fuse_softmax_with_xla`). `xla_plan=()`: none of them, TF's ops."""
        if xla_plan is not None:
            unknown = set(xla_plan) - {"step", "blocks", "softmax"}
            if unknown:
                raise ValueError(f"unknown XLA plan parts {sorted(unknown)}")
            self.backbone.compile_blocks_with_xla("blocks" in xla_plan)
            self.fuse_softmax_with_xla("softmax" in xla_plan)
            kwargs["jit_compile"] = "step" in xla_plan
        super().compile(*args, **kwargs)

    def call(self, item_ids, training=None):
        hidden = self.backbone(item_ids, training=training)
        if training:
            return hidden  # compute_loss applies the head where the loss needs it
        return self.head(hidden)

    def user_embedding(self, item_ids):
        """The hidden state `[B, C]` from which the next item after `item_ids` `[B, T]` is
        predicted. Causal: the last position.  Non-causal (GRec): a [MASK] (id 0) is
        appended and its position read, the encoder's way of asking for the next item.

        `item_ids` must be framed ids, as `self.framing.frame` makes them from histories
        (`[[oldest, ..., newest], ...]`): the most recent items, left-padded with 0, the
        newest last. Nothing here re-frames them. With `Backbone(padding="masked")` (new
        causal models) the width of the left padding does not change the answer; with
        `padding="learned"` (converted release models) it does, as in the release.
        """
        if not self.backbone.causal:
            item_ids = ops.concatenate(
                [item_ids, ops.zeros_like(item_ids[:, :1])], axis=1)
        return self.backbone.last_position(item_ids)

    def next_item_logits(self, item_ids):
        """Logits `[B, V]` of the item after each framed history `item_ids` `[B, T]` (see
        `user_embedding`: frame with `self.framing.frame(tf.ragged.constant(histories))`)."""
        return self.head(self.user_embedding(item_ids)[:, None, :])[:, 0, :]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Weighted mean cross-entropy over positions with weight > 0.

        In training `y_pred` is the hidden states and the head runs only at the weighted
        positions (not at padding, nor at unmasked positions of the masked objective,
        which the release computes and then discards).  Outside XLA they are gathered (and
        padded to a multiple of FUSED_ROWS_MULTIPLE for the fused losses); in an
        XLA-compiled step (`jit_compile`), where a gather needs a static size, they are
        moved to the front and the head runs on the smallest of a few static row counts
        that holds them all (`compact_sizes`, one branch of a `tf.switch_case` each), so
        short histories in long windows cost what they contain there too.
        With `fuse_softmax_with_xla` the loss is `layers.fused_softmax`'s, in all cases.
        """
        labels = tf.reshape(tf.cast(y, "int32"), [-1])
        if sample_weight is None:
            weights = tf.ones_like(labels, dtype="float32")
        else:
            weights = tf.reshape(tf.cast(sample_weight, "float32"), [-1])
        if not training:
            logits = tf.reshape(tf.cast(y_pred, "float32"), [-1, self.backbone.vocab_size])
            per_position = smoothed_cross_entropy(labels, logits, self.label_smoothing)
            return self._finish_loss(ops.sum(per_position * weights), ops.sum(weights))
        hidden = tf.reshape(tf.cast(y_pred, "float32"), [-1, self.backbone.channels])
        if self.jit_compile:
            if self.num_sampled:
                raise ValueError("the sampled softmax cannot run under XLA (its candidate "
                                 "sampler has no XLA kernel): compile with "
                                 "jit_compile=False")
            return self._finish_loss(self._compact_loss_sum(hidden, labels, weights),
                                     ops.sum(weights))
        keep = tf.where(weights > 0)[:, 0]
        hidden = tf.gather(hidden, keep)
        labels, weights = tf.gather(labels, keep), tf.gather(weights, keep)
        if self.fused_softmax:
            hidden, labels, weights = pad_rows(FUSED_ROWS_MULTIPLE, hidden, labels, weights)
        return self._finish_loss(self._loss_sum(hidden, labels, weights), ops.sum(weights))

    def _loss_sum(self, hidden, labels, weights):
        """`sum_i weights[i] * loss_i` of the head at the rows `hidden` `[N, C]`."""
        if self.fused_softmax:
            return self._fused_loss(hidden, labels, weights)
        if self.num_sampled:
            per_position = self._sampled_softmax(labels, hidden)
        else:
            logits = tf.cast(self.head(hidden), "float32")
            per_position = smoothed_cross_entropy(labels, logits, self.label_smoothing)
        return ops.sum(per_position * weights)

    def _compact_loss_sum(self, hidden, labels, weights):
        """`_loss_sum` over the rows with weight > 0, at static row counts (for XLA): the
        kept rows first, then the head on the first `size` rows, `size` the smallest of
        `compact_sizes` that holds them (rows past the kept ones carry weight 0)."""
        sizes = compact_sizes(hidden.shape[0])
        if len(sizes) < 2:
            return self._loss_sum(hidden, labels, weights)
        kept = tf.cast(weights > 0, "int32")
        order = tf.argsort(kept, direction="DESCENDING", stable=True)
        branch = tf.reduce_sum(tf.cast(tf.reduce_sum(kept) > tf.constant(sizes[:-1]), "int32"))

        # permuted outside the branches: inside, a gather's gradient would need the row
        # count as a compile-time constant across the branch boundary; a slice's does not
        hidden, labels, weights = (tf.gather(t, order) for t in (hidden, labels, weights))

        def head_on_first(size):
            return self._loss_sum(hidden[:size], labels[:size], weights[:size])
        return tf.switch_case(branch, [lambda size=size: head_on_first(size) for size in sizes])

    def _finish_loss(self, weighted_sum, weight_sum):
        loss = weighted_mean(weighted_sum, weight_sum)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return scale_for_replicas(loss)

    def _fused_loss(self, hidden, labels, weights):
        kernel, bias = (tf.convert_to_tensor(v) for v in (self.head.kernel, self.head.bias))
        if self.num_sampled:
            return fused_sampled_softmax_sum(
                hidden, labels, weights, kernel, bias,
                draw_candidates(labels, self.num_sampled, self.backbone.vocab_size))
        if isinstance(self.head, DotProductHead):
            return fused_softmax_sum(hidden, labels, weights, kernel, bias, vocab_major=True,
                                     label_smoothing=self.label_smoothing)
        return fused_softmax_sum(tf.nn.relu(hidden), labels, weights, kernel, bias,
                                 label_smoothing=self.label_smoothing)

    @property
    def fused_softmax(self):
        return getattr(self, "_fused_softmax", False)

    def fuse_softmax_with_xla(self, enabled=True):
        """Train with `layers.fused_softmax`'s losses (the softmax's loss and gradient
        formed in one XLA function between the matmuls; same loss and gradients, faster on
        CPU) instead of TF's softmax cross-entropy / `tf.nn.sampled_softmax_loss`.

        A runtime setting, not part of the config.  In a train step compiled whole
        (`jit_compile`) the loss is inlined into the step's XLA computation, where it
        still saves the passes XLA's own softmax cross-entropy makes over the logits.
        Off, training uses TF's ops, the reference.
        """
        object.__setattr__(self, "_fused_softmax", bool(enabled))

    def _sampled_softmax(self, labels, hidden):
        head = self.head
        assert isinstance(head, DotProductHead)
        return tf.nn.sampled_softmax_loss(
            weights=head.kernel, biases=head.bias, labels=tf.cast(labels, "int64")[:, None],
            inputs=hidden, num_sampled=self.num_sampled, num_classes=self.backbone.vocab_size)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "head": self.head_kind,
            "num_sampled": self.num_sampled,
            "framing": self.framing.get_config(),
            "label_smoothing": self.label_smoothing,
        }


@keras.saving.register_keras_serializable(package="peterrec_tf")
class NextItNet(SequencePretrainer):
    """Causal next-item pre-training: inputs `ids[:, :-1]`, labels `ids[:, 1:]`."""

    requires_causal = True


@keras.saving.register_keras_serializable(package="peterrec_tf")
class GRecPretrainer(SequencePretrainer):
    """Masked-item pre-training on a non-causal backbone: labels are the original ids,
    weights mark the masked positions."""

    requires_causal = False


@keras.saving.register_keras_serializable(package="peterrec_tf")
class GRecEncoder(GRecPretrainer):
    """GRecPretrainer's former name (it is a pre-training task, not an encoder), kept so that
    model files saved under it still load."""


def pretrainer_for(backbone, **kwargs):
    """NextItNet for a causal backbone, GRecPretrainer otherwise."""
    cls = NextItNet if backbone.causal else GRecPretrainer
    return cls(backbone, **kwargs)
