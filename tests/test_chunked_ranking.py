"""Ranking a large catalogue in vocabulary slices: the same ranks, metrics and top-k lists
as scoring whole rows, non-finite scores handled the same way."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.metrics import MISS_RANK, true_ranks
from peterrec_tf.models import Backbone, GRecPretrainer, NextItNet
from peterrec_tf.training import chunked_ranking, scoring

VOCAB = 53  # not a multiple of the chunk sizes below: the last slice is short


def pretrainer(head, causal=True):
    keras.utils.set_random_seed(3)
    cls = NextItNet if causal else GRecPretrainer
    model = cls(Backbone(VOCAB, channels=8, dilations=(1, 2), causal=causal), head=head)
    model.build()
    return model


@pytest.mark.parametrize("head,causal", [("full", True), ("dot", True), ("full", False)])
@pytest.mark.parametrize("chunk", [1, 7, 16, 53, 1000])
def test_chunked_ranks_equal_whole_row_ranks(head, causal, chunk, rng):
    model = pretrainer(head, causal)
    x = rng.randint(0, VOCAB, (9, 6)).astype("int32")
    y = rng.randint(1, VOCAB, 9).astype("int32")
    logits = model.next_item_logits(x)
    np.testing.assert_array_equal(
        chunked_ranking.next_item_ranks(model, x, y, chunk).numpy(),
        true_ranks(y, logits).numpy())
    candidates = np.stack([y, *rng.randint(1, VOCAB, (20, 9))], axis=1).astype("int32")
    np.testing.assert_array_equal(
        chunked_ranking.next_item_ranks(model, x, candidates, chunk).numpy(),
        true_ranks(candidates, logits).numpy())


def test_non_finite_logits_rank_as_in_whole_rows(rng):
    model = pretrainer("dot")
    bias = model.head.bias.numpy()
    bias[5], bias[40] = np.nan, np.inf  # a NaN competitor, a +inf one
    model.head.bias.assign(bias)
    x = rng.randint(1, VOCAB, (4, 6)).astype("int32")
    y = np.array([2, 5, 40, 11], "int32")  # rows 1 and 2: the true item's score is not finite
    ranks = chunked_ranking.next_item_ranks(model, x, y, 8).numpy()
    np.testing.assert_array_equal(ranks, true_ranks(y, model.next_item_logits(x)).numpy())
    assert ranks[1] == ranks[2] == MISS_RANK and ranks[0] >= 2 and ranks[3] >= 2


def test_evaluate_in_slices_gives_the_same_metrics(rng):
    model = pretrainer("full")
    x = rng.randint(0, VOCAB, (50, 6)).astype("int32")
    y = rng.randint(1, VOCAB, 50).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    whole = scoring.evaluate(model, data, "pretrain", ks=(1, 5, 10))
    sliced = scoring.evaluate(model, data, "pretrain", ks=(1, 5, 10), chunk_size=10)
    assert sliced == pytest.approx(whole, abs=1e-7) and whole["examples"] == 50
    assert 0 < whole["hr@10"] < 1  # not a degenerate comparison


@pytest.mark.parametrize("head", ["full", "dot"])
def test_top_k_merged_from_slices_equals_top_k_of_the_row(head, rng):
    model = pretrainer(head)
    # ties across slices: ids 3, 20 and 44 score exactly alike (equal weights)
    kernel = model.head.kernel.numpy()
    if head == "full":
        kernel[:, 20] = kernel[:, 44] = kernel[:, 3]
    else:
        kernel[20] = kernel[44] = kernel[3]
    model.head.kernel.assign(kernel)
    bias = model.head.bias.numpy()
    bias[20] = bias[44] = bias[3] = 5.0  # and they lead every row
    model.head.bias.assign(bias)
    hidden = model.user_embedding(rng.randint(1, VOCAB, (6, 5)).astype("int32"))
    blocked = (0, 20, 31)
    logits = model.head(hidden[:, None, :])[:, 0, :].numpy()
    logits[:, list(blocked)] = -np.inf
    for k in (1, 2, 5, 12):
        expected_scores, expected_ids = tf.math.top_k(logits, k)
        for chunk in (4, 11, 53):
            scores, ids = chunked_ranking.top_k_in_chunks(model.head, hidden, tf.constant(k),
                                                          blocked, chunk)
            np.testing.assert_array_equal(ids.numpy(), expected_ids.numpy())
            np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), rtol=1e-6)
    assert (expected_ids.numpy()[:, :2] == [3, 44]).all()  # the tie, lower id first, 20 blocked


def hand_masked_ranks(logits, x, y):
    """Ranks with every history item of a row (ids in x but 0) scored -inf, except the
    row's true item (in column 0 of sampled candidates)."""
    logits = np.array(logits, np.float64)
    truth = y[:, 0] if y.ndim == 2 else y
    for row in range(len(logits)):
        history = {int(i) for i in x[row] if i > 0} - {int(truth[row])}
        logits[row, sorted(history)] = -np.inf
    return true_ranks(y, tf.constant(logits, tf.float32)).numpy()


@pytest.mark.parametrize("chunk", [7, 1000])
def test_excluding_the_history_ranks_as_hand_masked_logits(chunk, rng):
    """evaluate --exclude_history: history items are no competitors, the true item counts
    even when the user had it before; full and sampled ranking, whole rows and slices."""
    model = pretrainer("dot")
    x = rng.randint(0, VOCAB, (12, 20)).astype("int32")
    y = rng.randint(1, VOCAB, 12).astype("int32")
    y[:4] = x[:4, -1]  # the true item is in the history
    x[4, :] = 0  # no history at all
    logits = model.next_item_logits(x).numpy()
    exclude = scoring.history_exclusion(None)
    candidates = np.stack([y, *rng.randint(1, VOCAB, (30, 12))], axis=1).astype("int32")
    for truth in (y, candidates):
        expected = hand_masked_ranks(logits, x, truth)
        plain = true_ranks(truth, logits).numpy()
        assert (expected <= plain).all() and (expected < plain).any()  # exclusion matters
        ranked = scoring.rank_function(model, chunk, exclude=exclude)(x, truth)
        np.testing.assert_array_equal(np.asarray(ranked), expected)
        sliced = chunked_ranking.next_item_ranks(model, x, truth, chunk, exclude(x))
        np.testing.assert_array_equal(sliced.numpy(), expected)


def test_item_to_output_ids_maps_history_items_to_target_ids_by_token():
    items = ["<UNK>", "a", "b", "c", "d"]
    assert scoring.item_to_output_ids(items, list(items)) is None
    table = scoring.item_to_output_ids(items, ["<UNK>", "c", "z", "a"])
    np.testing.assert_array_equal(table, [-1, 3, -1, 1, -1])
    excluded = scoring.history_exclusion(table)(tf.constant([[0, 1, 2, 3, 9]]))
    np.testing.assert_array_equal(excluded.numpy(), [[-1, 3, -1, 1, -1]])


def test_sampled_candidates_under_exclude_history_keep_every_negative_a_competitor():
    """Red team: --exclude_history with sampled ranking drew the negatives from every item
    and then dropped those in the history, so an example had fewer competitors than
    --num_candidates said: a random model scored HR@5 0.38 with 20 candidates (chance
    0.25), rc 0. Negatives are now drawn outside the history: chance again."""
    from peterrec_tf.data.candidates import example_seeds, sample_candidates

    items, rows, count = 41, 2000, 20
    rng = np.random.default_rng(0)
    x = np.stack([rng.choice(np.arange(1, items), 15, replace=False) for _ in range(rows)])
    x = tf.constant(x.astype("int32"))
    truth = tf.constant(rng.integers(1, items, rows).astype("int32"))
    exclude = scoring.history_exclusion(None)
    seeds = example_seeds(tf.constant([f"u{i}" for i in range(rows)]), truth, 0)
    candidates = sample_candidates(truth, count, items, seeds, exclude(x)).numpy()

    class Random:
        task = "pretrain"

    def scorer(batch):
        return tf.random.stateless_uniform([tf.shape(batch)[0], items], [1, 2])
    ranks = scoring.rank_function(Random(), scorer=scorer, exclude=exclude)(x, candidates)
    assert abs(float(np.mean(np.asarray(ranks) < 5)) - 5 / count) < 0.04
    for row, history in zip(candidates, x.numpy()):
        assert len(set(row)) == count and not set(row[1:]) & set(history)
