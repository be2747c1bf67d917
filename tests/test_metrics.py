"""Ranking metrics against hand-computed values."""

import math

import keras
import numpy as np
import pytest

from peterrec_tf.metrics import MRR, NDCG, HitRate, classification_metrics, true_ranks

SCORES = np.array([
    [9.0, 0.1, 0.5, 0.3, 0.9],   # id 0 (padding) has the top score: must be ignored
    [0.0, 0.2, 0.2, 0.2, 0.1],   # ties with the true item count against it
    [0.0, 0.9, 0.8, 0.7, 0.6],
], dtype="float32")


def test_full_ranking_ranks():
    # row 0: true 2 (0.5) is beaten by id 4 (0.9) -> rank 1
    # row 1: true 1 (0.2) ties ids 2 and 3 -> rank 2
    # row 2: true 4 (0.6) is last of 4 real ids -> rank 3
    np.testing.assert_array_equal(true_ranks(np.array([2, 1, 4]), SCORES).numpy(), [1, 2, 3])


def test_sampled_ranking_ranks():
    candidates = np.array([[2, 1, 3], [3, 4, 1], [4, 3, 2]])
    np.testing.assert_array_equal(true_ranks(candidates, SCORES).numpy(), [0, 1, 2])


@pytest.mark.parametrize("k,hr,mrr,ndcg", [
    (1, 0 / 3, 0 / 3, 0 / 3),
    (2, 1 / 3, (1 / 2) / 3, (1 / math.log2(3)) / 3),
    (3, 2 / 3, (1 / 2 + 1 / 3) / 3, (1 / math.log2(3) + 1 / math.log2(4)) / 3),
    (10, 3 / 3, (1 / 2 + 1 / 3 + 1 / 4) / 3, (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / 3),
])
def test_metric_values(k, hr, mrr, ndcg):
    truth = np.array([2, 1, 4])
    for cls, expected in ((HitRate, hr), (MRR, mrr), (NDCG, ndcg)):
        metric = cls(k)
        metric.update_state(truth, SCORES)
        assert float(metric.result()) == pytest.approx(expected, abs=1e-6), (cls.__name__, k)


def test_metrics_accumulate_and_work_inside_fit():
    metric = HitRate(1)
    metric.update_state(np.array([4]), SCORES[:1])  # hit
    metric.update_state(np.array([1, 1]), SCORES[1:])  # miss, hit
    assert float(metric.result()) == pytest.approx(2 / 3)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(5)(inputs))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[HitRate(3), NDCG(3)])
    x = np.random.RandomState(0).randn(16, 4).astype("float32")
    logs = model.fit(x, np.arange(16) % 4 + 1, epochs=1, verbose=0).history
    assert "hr@3" in logs and "ndcg@3" in logs
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(MRR(7))).k == 7


def test_ties_count_against_the_true_item():
    """The documented rule: every competitor scoring >= the true item ranks above it."""
    constant = np.zeros((2, 6), "float32")
    # full ranking over ids 1..5: 4 competitors tie with the truth -> rank 4, no hit below k=5
    np.testing.assert_array_equal(true_ranks(np.array([1, 5]), constant).numpy(), [4, 4])
    for k, expected in ((4, 0.0), (5, 1.0)):
        metric = HitRate(k)
        metric.update_state(np.array([1, 5]), constant)
        assert float(metric.result()) == expected
    # sampled: candidates [true, 3 negatives], one negative ties -> rank 1, MRR@5 = 1/2
    scores = np.array([[0.0, 0.3, 0.5, 0.5, 0.1, 0.0]], "float32")
    metric = MRR(5)
    metric.update_state(np.array([[2, 1, 3, 4]]), scores)
    assert float(metric.result()) == pytest.approx(1 / 2)
    # NDCG@k of a hit at rank r is 1/log2(r + 2): rank 1 -> 1/log2(3)
    metric = NDCG(5)
    metric.update_state(np.array([[2, 1, 3, 4]]), scores)
    assert float(metric.result()) == pytest.approx(1 / math.log2(3))


def test_sample_weights_and_accuracy():
    metric = HitRate(1)  # row 0 misses (rank 1), row 2 hits (rank 0) for k = 1
    metric.update_state(np.array([2, 1, 1]), SCORES, sample_weight=np.array([1.0, 0.0, 3.0]))
    assert float(metric.result()) == pytest.approx(3 / 4)
    [accuracy] = classification_metrics()
    accuracy.update_state(np.array([1, 0, 2]), np.array([[0.1, 0.9, 0], [0.2, 0.1, 0.7],
                                                          [0, 0.3, 0.6]], "float32"))
    assert float(accuracy.result()) == pytest.approx(2 / 3)


def test_long_evaluations_report_progress_with_the_time_left():
    import tensorflow as tf
    from peterrec_tf.training.scoring import evaluate

    class Scores:
        task = "pretrain"

    data = tf.data.Dataset.from_tensor_slices(
        (tf.zeros((40, 3), tf.int32), tf.ones(40, tf.int32))).batch(8)
    lines = []
    results = evaluate(Scores(), data, "pretrain", (5,), scorer=lambda x: tf.random.uniform(
        (tf.shape(x)[0], 20)), total=40, log=lines.append, every_seconds=0.0, label="test")
    assert results["examples"] == 40 and len(lines) == 5
    assert lines[0].startswith("  test: 8 examples of 40, ") and "s left" in lines[0]


def test_accuracy_gives_no_credit_to_ties_or_non_finite_scores():
    """Red team: accuracy was Keras' argmax accuracy, which breaks ties and NaN rows towards
    class 0: a classifier with constant, NaN or inf logits scored the share of class 0
    (0.7 here, rc 0) where ranking metrics give such a model 0. Now the true class must
    score strictly highest, as HR@1 does."""
    labels = np.array([0] * 7 + [1] * 3)
    for value in (0.0, float("nan"), float("inf")):
        [accuracy] = classification_metrics()
        accuracy.update_state(labels, np.full((10, 2), value, "float32"))
        assert float(accuracy.result()) == 0.0, value
    [accuracy] = classification_metrics()  # a NaN competitor beats the true class too
    accuracy.update_state(np.array([0, 1, 2]), np.array(
        [[0.9, float("nan"), 0.0], [0.0, 0.5, 0.4], [0.1, 0.2, 0.2]], "float32"))
    assert float(accuracy.result()) == pytest.approx(1 / 3)
