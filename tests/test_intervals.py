"""The transfer report's uncertainty: sample std over seeds, intervals over seeds and users."""

import os
import shutil

import numpy as np
import pytest

from peterrec_tf.experiments import reinterval, stats
from peterrec_tf.experiments.transfer.plan import run_file
from peterrec_tf.experiments.transfer.summary import summarise

REPORTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reports")


def test_two_level_resamples_draw_seeds_then_whole_users():
    groups = np.array([0, 0, 1, 2, 2, 2, 3])
    draws = stats.two_level_resamples(3, groups, resamples=200, seed=5)
    users_only = stats.user_resamples(groups, 200, seed=5)
    assert len(draws) == 200
    for (seeds, examples), same_users in zip(draws, users_only):
        assert seeds.shape == (3,) and seeds.min() >= 0 and seeds.max() < 3
        assert (examples == same_users).all()  # the user level is the user-only bootstrap's
        counts = np.bincount(examples, minlength=7)
        assert counts[0] == counts[1] and counts[3] == counts[4] == counts[5]  # users whole
    seed_draws = np.stack([s for s, _ in draws])
    assert len({tuple(s) for s in seed_draws}) > 5  # seeds drawn with replacement, varied
    assert (seed_draws != np.arange(3)).any(axis=1).mean() > 0.5


def test_two_level_interval_equals_the_user_interval_when_seeds_agree():
    """Identical seeds add no noise: the interval is exactly the user-only one (a
    resampling that dropped or mangled the user level would not be)."""
    rng = np.random.default_rng(3)
    row = (rng.random(300) < 0.4).astype(float)
    groups = np.repeat(np.arange(150), 2)
    outcomes = np.stack([row, row, row])
    point, low, high = stats.two_level_bootstrap_ci(outcomes, groups, 300, seed=1)
    user_point, user_low, user_high = stats.bootstrap_ci(lambda idx: row[idx].mean(), groups,
                                                         300, seed=1)
    assert (point, low, high) == pytest.approx((user_point, user_low, user_high), abs=1e-12)
    assert high - low > 0.05


def test_two_level_interval_covers_seed_variance_where_users_agree():
    """Seeds far apart, every user the same within a seed: an interval over users only
    has width 0; the two-level one must span the seeds' spread."""
    groups = np.arange(200)
    outcomes = np.stack([np.full(200, 0.2), np.full(200, 0.5), np.full(200, 0.8)])
    point, low, high = stats.two_level_bootstrap_ci(outcomes, groups, 1000, seed=0)
    assert point == pytest.approx(0.5)
    assert low <= 0.3 and high >= 0.7
    _, user_low, user_high = stats.bootstrap_ci(lambda idx: outcomes.mean(axis=0)[idx].mean(),
                                                groups, 200, seed=0)
    assert user_high - user_low < 1e-12  # what the older interval claimed


def test_normal_combination_uses_the_sample_std_of_the_seeds():
    # users agree (zero-width user interval); seeds 0.2, 0.5, 0.8: sample std 0.3
    low, high, details = stats.seed_user_normal_ci(0.5, [0.5, 0.5], [0.2, 0.5, 0.8])
    half = 1.959964 * 0.3 / np.sqrt(3)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-5)
    assert details["seed_se"] == pytest.approx(0.3 / np.sqrt(3))
    # both terms add in quadrature: user half-width 0.1 -> se 0.1 / 1.96
    low, high, _ = stats.seed_user_normal_ci(0.0, [-0.1, 0.1], [1.0, 1.0 + np.sqrt(2)])
    assert high == pytest.approx(1.959964 * np.hypot(0.1 / 1.959964, 1.0 / np.sqrt(2)), abs=1e-5)
    assert stats.seed_user_normal_ci(0.5, [0.4, 0.6], [0.5]) is None  # one seed: unknown


def _fake_experiment(tmp_path, seed_accuracy):
    """A results dict and per-example files: one classification task, 40 users, methods
    FineAll and PeterRec (b); `seed_accuracy[method][seed]` of the users are right, the
    same users for every method (so only seeds differ)."""
    out = tmp_path / "work"
    (out / "per_example").mkdir(parents=True)
    truth = np.zeros(40, dtype=np.int64)
    np.savez(out / "per_example" / "truth_gender.npz", truth=truth, groups=np.arange(40))
    runs = []
    for method, per_seed in seed_accuracy.items():
        for seed, share in enumerate(per_seed):
            pred = np.where(np.arange(40) < round(share * 40), 0, 1)
            record = {"objective": "next_item", "seed": seed, "task": "gender",
                      "method": method, "fraction": 1.0, "metric": "accuracy",
                      "value": float((pred == truth).mean()), "train_examples": 10,
                      "test": {"accuracy": float((pred == truth).mean())}}
            np.savez(out / "per_example" / run_file(record), pred=pred)
            runs.append(record)
    results = {"runs": runs, "provenance": {"configuration": {"limited_methods": []}}}
    return results, str(out)


def test_summary_std_is_the_sample_std_and_intervals_include_the_seeds(tmp_path):
    results, out = _fake_experiment(tmp_path, {"FineAll": [0.5, 0.5, 0.5],
                                               "PeterRec (b)": [0.3, 0.6, 0.9]})
    summary = summarise(results, out, resamples=400, seed=0)
    entries = {e["method"]: e for e in summary["main"]}
    peter = entries["PeterRec (b)"]
    assert peter["std"] == pytest.approx(np.std([0.3, 0.6, 0.9], ddof=1))
    assert entries["FineAll"]["std"] == 0.0
    # users agree within a seed, so the user-only interval of the mean is narrow while the
    # seeds span 0.3..0.9: the reported interval must reach both sides of the spread
    assert peter["ci95"][0] <= 0.45 and peter["ci95"][1] >= 0.75
    diff = peter["vs_fineall"]
    assert diff["seeds"] == [0, 1, 2]
    assert diff["seed_differences"] == pytest.approx([-0.2, 0.1, 0.4])
    assert diff["ci95"][0] < 0 < diff["ci95"][1]  # seeds disagree on the sign: unresolved
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(diff["ci95_users"]) < width(diff["ci95"]) / 2  # the older one: users only
    assert "two-level" in summary["intervals"] and "users only" in summary["intervals_users"]


def _fake_stored(values, user_ci, diff_ci):
    runs = [{"objective": "o", "task": "t", "method": m, "fraction": 1.0, "seed": s, "value": v}
            for m, per in values.items() for s, v in enumerate(per)]
    main = [{"objective": "o", "task": "t", "method": m, "mean": float(np.mean(per)),
             "ci95": list(user_ci[m])} for m, per in values.items()]
    main[1]["vs_fineall"] = {"reference": "FineAll", "ci95": list(diff_ci),
                             "difference": main[1]["mean"] - main[0]["mean"]}
    return {"runs": runs, "summary": {"main": main}, "provenance": {"configuration": {
        "evaluation": {"bootstrap_resamples": 10}}}}


def test_stored_reports_get_seed_aware_intervals_and_keep_the_user_only_ones():
    results = _fake_stored({"FineAll": [0.5, 0.5, 0.5], "PeterRec (b)": [0.55, 0.75, 0.95]},
                           {"FineAll": [0.45, 0.55], "PeterRec (b)": [0.7, 0.8]},
                           [0.2, 0.3])
    summary = reinterval.reinterval(results)
    fine, peter = summary["main"]
    assert fine["ci95"] == fine["ci95_users"] == [0.45, 0.55]  # no seed noise: unchanged
    d = peter["vs_fineall"]
    assert d["ci95_users"] == [0.2, 0.3] and d["seed_differences"] == pytest.approx(
        [0.05, 0.25, 0.45])
    half = 1.959964 * np.hypot(0.05 / 1.959964, 0.2 / np.sqrt(3))
    assert d["ci95"] == pytest.approx([0.25 - half, 0.25 + half], abs=1e-5)
    scratch = peter["vs_scratch"] if "vs_scratch" in peter else None
    assert scratch is None  # PeterZero is not in this report
    again = reinterval.reinterval(results)  # idempotent: reads ci95_users
    assert again["main"][1]["vs_fineall"]["ci95"] == pytest.approx(d["ci95"])


def test_unstored_paired_difference_takes_a_bounded_user_term():
    results = _fake_stored({"PeterZero": [0.5, 0.52, 0.54], "PeterRec (b)": [0.6, 0.7, 0.8]},
                           {"PeterZero": [0.46, 0.58], "PeterRec (b)": [0.64, 0.76]},
                           [0.0, 0.0])
    del results["summary"]["main"][1]["vs_fineall"]
    peter = reinterval.reinterval(results)["main"][1]
    d = peter["vs_scratch"]
    assert d["reference"] == "PeterZero" and d["user_se"] == "bound"
    user_se = (0.12 + 0.12) / (2 * 1.959964)
    seed_se = np.std([0.1, 0.18, 0.26], ddof=1) / np.sqrt(3)
    assert d["ci95"][1] - d["difference"] == pytest.approx(1.959964 * np.hypot(user_se, seed_se),
                                                           abs=1e-5)
    first = list(d["ci95"])
    assert reinterval.reinterval(results)["main"][1]["vs_scratch"]["ci95"] == first  # idempotent


@pytest.mark.parametrize("report", ["transfer_synthetic", "transfer_ml100k"])
def test_committed_reports_are_what_the_reinterval_command_writes(report):
    """Every interval in results.json's summary and every table in results.md is what
    `python -m peterrec_tf.experiments.reinterval` computes from the stored runs now."""
    assert reinterval.differences(os.path.join(REPORTS, report)) == []


def test_the_check_finds_a_report_edited_by_hand(tmp_path):
    """`--check`'s comparison names the file that no longer matches a recomputation."""
    copy = tmp_path / "report"
    shutil.copytree(os.path.join(REPORTS, "transfer_synthetic"), copy)
    with open(copy / "results.md", "a", encoding="utf-8") as handle:
        handle.write("| a row typed in |\n")
    assert reinterval.differences(str(copy)) == [
        f"{copy / 'results.md'} differs from what the command writes"]
