"""benchmarks/public_quality.py's SASRec protocol: candidates are the true item plus items
the user never rated, distinct, reproducible per user; its ranking figures are the
project's metrics."""

import importlib.util
import os

import numpy as np
import pytest

from conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location(
    "public_quality", os.path.join(REPO_ROOT, "benchmarks", "public_quality.py"))
public_quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(public_quality)


def test_sasrec_candidates_are_unrated_distinct_and_keyed_by_user():
    rows = [("u1", [1, 2, 3, 4], 5), ("u2", [6, 7], 8), ("u3", list(range(1, 20)), 20)]
    candidates = public_quality.sasrec_candidates(rows, num_items=31, count=10, seed=3)
    assert candidates.shape == (3, 10)
    for (user, history, target), row in zip(rows, candidates):
        assert row[0] == target
        negatives = set(row[1:].tolist())
        assert len(negatives) == 9 and not negatives & (set(history) | {target, 0})
        assert all(1 <= i < 31 for i in negatives)
    # the same user gets the same candidates wherever it sits; another seed draws others
    again = public_quality.sasrec_candidates(rows[::-1], num_items=31, count=10, seed=3)
    np.testing.assert_array_equal(again[::-1], candidates)
    assert not np.array_equal(
        public_quality.sasrec_candidates(rows, num_items=31, count=10, seed=4), candidates)
    with pytest.raises(ValueError, match="rated all but"):
        public_quality.sasrec_candidates(rows[2:], num_items=25, count=10, seed=3)


def test_ranking_figures_count_ties_against_the_true_item():
    # 2 users, 5 ids (0 = padding): user 0's target ties with one item, user 1's is top
    scores = np.array([[0.0, 1.0, 3.0, 3.0, 2.0], [0.0, 9.0, 1.0, 1.0, 1.0]], "float32")
    targets = np.array([2, 1])
    candidates = np.array([[2, 3, 1], [1, 2, 4]])
    figures = public_quality.ranking_figures(lambda a, b: scores[a:b], targets, candidates,
                                             ks=(1, 2), batch_size=1)
    assert figures["full"]["hr@1"] == pytest.approx(0.5)  # user 0 ranks 1 (tie), user 1 ranks 0
    assert figures["full"]["hr@2"] == pytest.approx(1.0)
    assert figures["sasrec"]["mrr@2"] == pytest.approx((0.5 + 1.0) / 2)
