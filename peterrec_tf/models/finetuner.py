"""Downstream task over a (patched) backbone: user-vector pooling plus a task head."""

import keras
import tensorflow as tf
from keras import ops

from peterrec_tf.data.framing import Framing

from peterrec_tf import transfer_methods
from peterrec_tf.layers.fused_softmax import smoothed_cross_entropy
from peterrec_tf.models.backbone import WrapsBackbone
from peterrec_tf.models.replica_losses import scale_for_replicas

POOLINGS = ("last", "first_last", "sum", "mean")
TASKS = ("item_rec", "classify")
LOSSES = ("pairwise", "bpr", "ce")


def default_pooling(causal):
    """The release's user vector: last [TCL] (causal) or first + last (non-causal)."""
    return "last" if causal else "first_last"


def pool_hidden(hidden, pooling):
    """`[B, T, C]` -> `[B, C]` by one of POOLINGS."""
    if pooling == "last":
        return hidden[:, -1, :]
    if pooling == "first_last":
        return hidden[:, 0, :] + hidden[:, -1, :]
    if pooling == "sum":
        return ops.sum(hidden, axis=1)
    if pooling == "mean":
        return ops.mean(hidden, axis=1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


@keras.saving.register_keras_serializable(package="peterrec_tf")
class FineTuner(WrapsBackbone, keras.Model):
    """Backbone -> user vector -> scores `[B, num_outputs]`.

    Input: ids `[B, L]` framed as `self.framing` says (`data.framing`): by default
    `tcl`, the release's non-causal fine-tuning form `[0, s1..sn, 0]` (left-padded); a
    converted release model records its family's framing. Every path that feeds the model
    (input functions, evaluation, export) frames with it.
    `task="item_rec"`: scores are `user @ E_target^T` (target-item embeddings, no bias),
    trained with `loss="pairwise"` (the release's `-log s(pos) - log(1 - s(neg))`), `bpr`
    or `ce` (softmax over all targets); labels `y` are `[B]` positives (one negative is
    then drawn uniformly in the graph) or `[B, 1 + n]` = positive then negatives.
    `task="classify"`: logits of a dense layer, softmax cross-entropy on labels `[B]`.
    `method` (a name of `peterrec_tf.transfer_methods`) says which weights train; it is
    part of the config so a saved and re-loaded model keeps its frozen backbone. `label_smoothing` applies to the
    softmax losses (`ce`, classification) only.
    """

    def __init__(
        self,
        backbone,
        task="item_rec",
        num_outputs=2,
        pooling=None,
        loss="pairwise",
        l2_reg=0.02,
        method="fineall",
        finelast_blocks=1,
        train_layer_norm=True,
        framing=None,
        label_smoothing=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if label_smoothing and not (task == "classify" or loss == "ce"):
            raise ValueError(f"label smoothing applies to softmax losses (loss='ce'), not "
                             f"loss={loss!r}")
        self.label_smoothing = float(label_smoothing)
        transfer_methods.get(method).check_settings(len(backbone.blocks),
                                                    finelast_blocks=finelast_blocks)
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if task == "classify" and loss != "ce":
            raise ValueError("classification trains with loss='ce'")
        if task == "item_rec" and num_outputs < 3 and loss != "ce":
            raise ValueError("item_rec with sampled negatives needs at least 2 real targets")
        self.backbone = backbone
        self.task = task
        self.num_outputs = int(num_outputs)
        self.pooling = pooling or default_pooling(backbone.causal)
        pool_hidden(ops.zeros((1, 1, 1)), self.pooling)  # validates the name early
        self.loss_name = loss
        self.l2_reg = float(l2_reg)
        self.method = method
        self.finelast_blocks = int(finelast_blocks)
        self.train_layer_norm = bool(train_layer_norm)
        self.framing = Framing.from_config(framing or Framing(backbone.FINE_TUNING_FRAMING))
        if task == "item_rec":
            self.head = keras.layers.Embedding(
                self.num_outputs, backbone.channels,
                embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                name="target_embeddings")
        else:
            self.head = keras.layers.Dense(self.num_outputs, name="classifier")

    def build(self, input_shape=None):
        if self.built:
            return
        self.backbone.build()
        if not self.head.built:
            self.head.build((None,) if self.task == "item_rec" else (None, self.backbone.channels))
        transfer_methods.get(self.method).mark_trainable(self)
        self.built = True

    def user_embedding(self, item_ids, training=None):
        """The pooled user vector `[B, C]`."""
        return pool_hidden(self.backbone(item_ids, training=training), self.pooling)

    def score_users(self, users):
        if self.task == "item_rec":
            return ops.matmul(users, ops.transpose(self.head.embeddings))
        return self.head(users)

    def call(self, item_ids, training=None):
        return self.score_users(self.user_embedding(item_ids, training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        scores = ops.cast(y_pred, "float32")
        labels = ops.cast(y, "int32")
        if self.task == "classify" or self.loss_name == "ce":
            if len(labels.shape) == 2:
                labels = labels[:, 0]
            per_example = smoothed_cross_entropy(labels, scores, self.label_smoothing)
            penalty = 0.0
        else:
            if len(labels.shape) == 1:
                labels = ops.stack([labels, self._sample_negatives(labels)], axis=1)
            picked = tf.gather(scores, labels, batch_dims=1)
            positive, negatives = picked[:, :1], picked[:, 1:]
            if self.loss_name == "pairwise":
                per_example = ops.softplus(-positive[:, 0]) + ops.mean(
                    ops.softplus(negatives), axis=1)
            else:
                per_example = ops.mean(ops.softplus(negatives - positive), axis=1)
            rows = ops.take(self.head.embeddings, labels, axis=0)
            penalty = self.l2_reg * 0.5 * ops.mean(ops.sum(ops.square(rows), axis=(1, 2)))
        if sample_weight is not None:
            weights = ops.cast(sample_weight, "float32")
            loss = ops.sum(per_example * weights) / ops.maximum(ops.sum(weights), 1.0)
        else:
            loss = ops.mean(per_example)
        loss = loss + penalty
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return scale_for_replicas(loss)

    def _sample_negatives(self, positives):
        """One uniform target id in [1, N) per row, never the positive."""
        draw = tf.random.uniform(
            tf.shape(positives), minval=1, maxval=self.num_outputs - 1, dtype="int32")
        return draw + tf.cast(draw >= positives, "int32")

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "task": self.task,
            "num_outputs": self.num_outputs,
            "pooling": self.pooling,
            "loss": self.loss_name,
            "l2_reg": self.l2_reg,
            "method": self.method,
            "finelast_blocks": self.finelast_blocks,
            "train_layer_norm": self.train_layer_norm,
            "framing": self.framing.get_config(),
            "label_smoothing": self.label_smoothing,
        }
