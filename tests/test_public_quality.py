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
    ranks = []
    figures = public_quality.ranking_figures(lambda a, b: scores[a:b], targets, candidates,
                                             ks=(1, 2), batch_size=1, full_ranks=ranks)
    assert ranks == [2, 1]  # ranks from 1: user 0's tie counts against it
    assert figures["full"]["hr@1"] == pytest.approx(0.5)  # user 0 ranks 1 (tie), user 1 ranks 0
    assert figures["full"]["hr@2"] == pytest.approx(1.0)
    assert figures["sasrec"]["mrr@2"] == pytest.approx((0.5 + 1.0) / 2)


def test_summary_keeps_every_figure_and_leaves_the_curves_to_raw():
    report = {"train_steps": 6, "eval_every": 3, "datasets": {"d": {"num_items": 5}},
              "results": [{"dataset": "d", "run": "popularity", "seed": 0, "full": {"hr@10": 1}},
                          {"dataset": "d", "run": "r", "seed": 0, "full": {"hr@10": 0.5},
                           "sasrec": {"hr@10": 0.7}, "settings": {"head": "tied"},
                           "selected_step": 6, "wall_seconds": 2.0,
                           "load_average_before": [1, 2, 3], "model_dir": "/tmp/m",
                           "validation_curve": [{"step": 3}], "job_test_full": {},
                           "test_ranks": {"u1": 3}}]}
    summary = public_quality.summarise(report)
    assert summary["results"][0] == report["results"][0]
    kept = summary["results"][1]
    assert kept["full"] == {"hr@10": 0.5} and kept["sasrec"] == {"hr@10": 0.7}
    assert kept["load_average_before"] == [1, 2, 3] and kept["selected_step"] == 6
    assert not {"validation_curve", "model_dir", "job_test_full", "test_ranks"} & set(kept)
    assert summary["train_steps"] == 6 and summary["datasets"] == report["datasets"]


def test_a_refused_input_is_one_error_line_and_exit_2(tmp_path, capsys):
    """The benchmark's own refusals (here: a log line that is not 'user item') end like the
    project's jobs: one `error:` line naming the file and line, exit status 2."""
    log = tmp_path / "log.txt"
    log.write_text("1 10\n1 11\n2 x\n")
    with pytest.raises(SystemExit) as stopped:
        public_quality.cli([f"--work_dir={tmp_path / 'work'}", "--datasets=sasrec_log",
                            f"--sasrec_log={log}", "--runs=", "--no-popularity",
                            "--allow_dirty"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and f"{log}:3" in error
