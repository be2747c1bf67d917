"""Ranking metrics (HR@k, MRR@k, NDCG@k) and accuracy, as Keras metrics.

`y_pred` holds scores over the whole id space `[B, N]` (logits of the next item, or
target-item scores). `y_true` is either the true ids `[B]` (full ranking against every
id but 0, the padding/<UNK> id) or candidate ids `[B, K]` with the true id in column 0
(sampled ranking: the paper's true target + 99 sampled negatives).

Rank of the true item = the number of competing candidates whose score is >= its score
(ties count against it: a model that scores everything equally gets no credit). A hit
at k means rank < k; MRR@k adds 1/(rank+1) and NDCG@k adds 1/log2(rank+2) for hits.
Non-finite scores never earn anything: a NaN competitor counts as beating the true item,
and a true item scored NaN or +-inf is a miss at every k (a diverged model scores 0).

Accuracy (classification) follows the same rule: right only when the true class scores
strictly above every other class (`y_pred` `[B, classes]`, every class a competitor,
class 0 included). An argmax accuracy breaks ties and NaN rows towards class 0, so a
constant or diverged classifier scored the share of class 0.
"""

import keras
import tensorflow as tf


#: The rank given to a true item whose score is not finite: a miss at every k.
MISS_RANK = 2 ** 30


def true_ranks(y_true, y_pred):
    """0-based rank of the true item among its competitors, `[B]` int32 (`MISS_RANK` when
    the true score is not finite; NaN competitors rank above the true item)."""
    scores = tf.cast(y_pred, tf.float32)
    y_true = tf.cast(y_true, tf.int32)
    if y_true.shape.rank == 2 and y_true.shape[-1] == 1:
        y_true = y_true[:, 0]
    if y_true.shape.rank == 1:  # full ranking over ids 1..N-1
        truth = tf.gather(scores, y_true[:, None], batch_dims=1)
        competitors = tf.concat([tf.fill([tf.shape(scores)[0], 1], -float("inf")),
                                 scores[:, 1:]], axis=1)
        beaten = beats(competitors, truth)
        beaten = beaten & ~tf.one_hot(y_true, tf.shape(scores)[1], on_value=True, off_value=False)
    else:
        candidate_scores = tf.gather(scores, y_true, batch_dims=1)
        truth = candidate_scores[:, :1]
        beaten = beats(candidate_scores[:, 1:], truth)
    ranks = tf.reduce_sum(tf.cast(beaten, tf.int32), axis=1)
    return tf.where(tf.math.is_finite(truth[:, 0]), ranks, MISS_RANK)


def beats(competitors, truth):
    """Competitors ranked above the true item: score >= it (ties against it), or NaN."""
    return (competitors >= truth) | tf.math.is_nan(competitors)


def ranking_gains(ranks, k, kind):
    ranks = tf.cast(ranks, tf.float32)
    hit = tf.cast(ranks < k, tf.float32)
    if kind == "hr":
        return hit
    if kind == "mrr":
        return hit / (ranks + 1.0)
    if kind == "ndcg":
        return hit * tf.math.log(2.0) / tf.math.log(ranks + 2.0)
    raise ValueError(f"unknown ranking metric {kind!r}")


class RankingMetric(keras.metrics.Mean):
    """Mean of a per-example ranking gain; usable in `compile(metrics=...)` and by hand."""

    kind = None

    def __init__(self, k=10, name=None, **kwargs):
        super().__init__(name=name or f"{self.kind}@{k}", **kwargs)
        self.k = int(k)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return self.update_ranks(true_ranks(y_true, y_pred), sample_weight=sample_weight)

    def update_ranks(self, ranks, sample_weight=None):
        """Add examples by the 0-based ranks of their true items (`true_ranks`, or the
        chunked ranking of a large catalogue)."""
        gains = ranking_gains(ranks, self.k, self.kind)
        return super().update_state(gains, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k)
        return config


@keras.saving.register_keras_serializable(package="peterrec_tf")
class HitRate(RankingMetric):
    kind = "hr"


@keras.saving.register_keras_serializable(package="peterrec_tf")
class MRR(RankingMetric):
    kind = "mrr"


@keras.saving.register_keras_serializable(package="peterrec_tf")
class NDCG(RankingMetric):
    kind = "ndcg"


def ranking_metrics(ks=(5, 10)):
    return [cls(k) for k in ks for cls in (HitRate, MRR, NDCG)]


def class_ranks(y_true, y_pred):
    """0-based rank `[B]` of the true class among all classes of `y_pred` `[B, classes]`
    (ties and NaN competitors against it; `MISS_RANK` when its score is not finite)."""
    scores = tf.cast(y_pred, tf.float32)
    y_true = tf.reshape(tf.cast(y_true, tf.int32), [-1])
    truth = tf.gather(scores, y_true[:, None], batch_dims=1)
    beaten = beats(scores, truth) & ~tf.one_hot(y_true, tf.shape(scores)[1], on_value=True,
                                                off_value=False)
    ranks = tf.reduce_sum(tf.cast(beaten, tf.int32), axis=1)
    return tf.where(tf.math.is_finite(truth[:, 0]), ranks, MISS_RANK)


@keras.saving.register_keras_serializable(package="peterrec_tf")
class Accuracy(keras.metrics.Mean):
    """Share of examples whose true class scores strictly highest (see the module
    docstring: ties and non-finite scores count against it)."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        hits = tf.cast(class_ranks(y_true, y_pred) == 0, tf.float32)
        return super().update_state(hits, sample_weight=sample_weight)


def classification_metrics():
    return [Accuracy()]
