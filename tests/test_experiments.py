"""The paper's transfer experiment on tiny data, and the statistics behind its report."""

import json
import os
import subprocess

import numpy as np
import pytest

from peterrec_tf.experiments import provenance, stats
from peterrec_tf.experiments.transfer.plan import METHODS, PATCH_PRESETS
from peterrec_tf.experiments.transfer.runner import parameter_shares, run
from pipelines.prepare import prepare


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    # The experiment's jobs are 8-channel models of a few steps: XLA's compilation of each
    # job's step costs more than the steps (the runner has no jit_compile setting to pass);
    # the jobs' XLA paths are tested where they are the subject (test_jobs_end_to_end,
    # test_objective_registry).
    from peterrec_tf.training import xla_policy
    monkeypatch.setattr(xla_policy, "use_xla", lambda *args, **kwargs: False)
    data = str(tmp_path / "data")
    prepare("synthetic", data, max_len=12, seed=0, num_users=120, num_items=40, num_clusters=4,
            num_targets=20, min_len=6, max_len_generated=12, log=lambda *_: None)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "c")
    return data, repo


SMALL = dict(seeds=1, objectives=("next_item",), channels=8, dilations=(1,), pretrain_steps=5,
             finetune_steps=4, batch_size=16, tasks=["attribute", "coldrec"], curve_points=2,
             limited_fractions=(0.5,), limited_methods=("popularity", "fineall"), bootstrap=20,
             methods=("labelcs", "popularity", "naivebayes", "fineall", "peterrec_b"),
             log=lambda *_: None)


def test_transfer_experiment_records_provenance_baselines_curves(tiny, tmp_path):
    data, repo = tiny
    out = str(tmp_path / "report")
    results = run(data, out, repo_dir=str(repo), **SMALL)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    prov = results["provenance"]
    assert prov["commit"] == head and prov["dirty"] is False and not prov["allow_dirty"]
    assert prov["versions"]["tensorflow"] and prov["versions"]["numpy"] == np.__version__
    config = prov["configuration"]
    assert config["finetune"]["patch_preset"] == "release" and config["evaluation"]["eval_seed"] == 0
    assert config["pretrain"]["steps"] == 5 and config["finetune"]["steps"] == 4
    pre = results["pretraining"]
    assert [(p["objective"], p["seed"]) for p in pre] == [("next_item", 0)]
    assert {"mrr@5", "hr@10", "ndcg@10"} <= set(pre[0]["test"]) and "full" in pre[0]["ranking"]
    main = {(r["task"], r["method"]) for r in results["runs"] if r["fraction"] == 1.0}
    assert main == {("attribute", m) for m in ("LabelCS", "NaiveBayes", "FineAll", "PeterRec (b)")} | \
        {("coldrec", m) for m in ("LabelCS", "Popularity", "FineAll", "PeterRec (b)")}
    limited = {(r["task"], r["method"]) for r in results["runs"] if r["fraction"] == 0.5}
    assert limited == {("attribute", "FineAll"), ("coldrec", "Popularity"), ("coldrec", "FineAll")}
    half = [r for r in results["runs"] if r["fraction"] == 0.5 and r["task"] == "coldrec"][0]
    full = [r for r in results["runs"] if r["fraction"] == 1.0 and r["task"] == "coldrec"][0]
    assert half["train_examples"] < full["train_examples"]
    for r in results["runs"]:
        if r["task"] == "coldrec":
            assert {"hr@5", "mrr@5", "full_hr@5", "full_mrr@5"} <= set(r["test"])
        else:
            assert {"accuracy", "balanced_accuracy", "macro_f1"} <= set(r["test"])
        if r["method"] in ("FineAll", "PeterRec (b)"):
            assert [p["step"] for p in r["curve"]] == [2, 4]
            # the last checkpoint is the saved model: its curve point is the run's result
            assert r["curve"][-1]["test"][r["metric"]] == pytest.approx(r["value"])
    entries = {(e["task"], e["method"]): e for e in results["summary"]["main"]}
    for e in entries.values():
        assert e["ci95"][0] <= e["mean"] + 1e-9 and e["mean"] <= e["ci95"][1] + 1e-9
        assert e["ci95_users"][0] <= e["mean"] + 1e-9 <= e["ci95_users"][1] + 2e-9
    assert entries[("coldrec", "PeterRec (b)")]["vs_fineall"]["reference"] == "FineAll"
    assert entries[("coldrec", "FineAll")]["vs_best_simple"]["reference"] == "Popularity"
    shares = results["parameter_shares"]["next_item"]
    assert set(shares) == {"attribute", "coldrec"} and set(shares["coldrec"]) == set(PATCH_PRESETS)
    table = open(os.path.join(out, "results.md")).read()
    assert head in table and "clean work tree" in table and "vs Popularity" in table
    assert "sample standard deviation" in table and "MRR@5 full" in table
    for name in ("results.svg", "learning_curves.svg", "limited_data.svg"):
        assert open(os.path.join(out, name)).read().startswith("<svg")
    assert "fine-tuning step" in open(os.path.join(out, "learning_curves.svg")).read()
    assert "95% interval over training seeds and test users" in open(
        os.path.join(out, "results.svg")).read()
    assert "two-level" in table and "users-only: 95% CI" in table
    again = run(data, out, repo_dir=str(repo), **SMALL)
    assert len(again["runs"]) == len(results["runs"]) and len(again["sessions"]) == 2  # resumed
    with pytest.raises(ValueError, match="another configuration"):
        run(data, out, repo_dir=str(repo), **dict(SMALL, finetune_steps=5))


def test_dirty_tree_is_refused_before_anything_runs(tiny, tmp_path):
    data, repo = tiny
    (repo / "a.txt").write_text("changed\n")
    out = tmp_path / "report"
    with pytest.raises(provenance.DirtyTree, match="uncommitted changes.*a.txt"):
        run(data, str(out), repo_dir=str(repo), **SMALL)
    assert not out.exists()
    state = provenance.git_state(str(repo))
    assert state["dirty"] and state["dirty_files"] == ["a.txt"]
    provenance.check_clean(state, allow_dirty=True)  # told to: allowed (and recorded)


def test_an_uncommitted_benchmark_output_is_not_a_code_change(tmp_path):
    """A kept output waiting to be committed leaves the next run of a series clean; an
    untracked file anywhere else, or a modified one under results/, still marks it dirty."""
    import subprocess

    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    (repo / "benchmarks" / "results" / "kept.json").write_text("{}\n")
    for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t",
                                               "commit", "-qm", "x"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    (repo / "benchmarks" / "results" / "new_abc.json").write_text("{}\n")
    assert provenance.git_state(str(repo))["dirty"] is False
    (repo / "benchmarks" / "results" / "kept.json").write_text("{\"edited\": 1}\n")
    assert provenance.git_state(str(repo))["dirty_files"] == ["benchmarks/results/kept.json"]
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "--", "."], check=True)
    (repo / "b.py").write_text("x = 1\n")
    assert provenance.git_state(str(repo))["dirty_files"] == ["b.py"]


def test_old_results_format_is_not_resumed(tiny, tmp_path):
    data, repo = tiny
    out = tmp_path / "report"
    out.mkdir()
    (out / "results.json").write_text(json.dumps([{"method": "LabelCS"}]))
    with pytest.raises(ValueError, match="older version"):
        run(data, str(out), repo_dir=str(repo), **SMALL)


def test_models_without_a_results_file_are_not_resumed(tiny, tmp_path):
    """Trained models left in WORK with no results.json (deleted, or from before it was
    written) come from code no session recorded: refused, never resumed into a report."""
    data, repo = tiny
    out = tmp_path / "report"
    (out / "models" / "pre_next_item_0").mkdir(parents=True)
    with pytest.raises(ValueError, match="results.json is missing"):
        run(data, str(out), repo_dir=str(repo), **SMALL)
    assert not (out / "results.json").exists()


def test_popularity_baseline_matches_a_hand_computation():
    # targets 1..5; training counts: 3 -> 4 times, 1 -> 2, 5 -> 1, others 0
    train = [3, 3, 1, 3, 5, 1, 3]
    scores = stats.popularity_scores(train, 6, 3)
    assert scores[0].tolist() == [0, 2, 0, 4, 0, 1]
    truth = np.array([3, 1, 4])
    # full ranking: competitors 1..5 minus the truth; ties count against the true target
    assert stats.full_ranks(scores, truth).tolist() == [0, 1, 4]
    candidates = np.array([[3, 1, 2], [1, 5, 4], [4, 2, 5]])
    assert stats.sampled_ranks(scores, candidates).tolist() == [0, 0, 2]
    gains = stats.ranking_gains(np.array([0, 1, 4]), 2)
    assert gains["hr@2"].tolist() == [1, 1, 0] and gains["mrr@2"].tolist() == [1, 0.5, 0]


def test_candidates_are_fixed_by_the_evaluation_seed_and_skip_other_targets():
    truth = np.array([1, 2, 3, 7])
    users = ["u", "u", "u", "v"]
    a = stats.sample_candidates(truth, users, 12, 6, eval_seed=0)
    b = stats.sample_candidates(truth[::-1], users[::-1], 12, 6, eval_seed=0)[::-1]
    assert (a == b).all()  # a function of (eval seed, user, target) only, not of the order
    assert (a[:, 0] == truth).all() and all(len(set(row)) == 6 for row in a)
    assert not set(a[:3, 1:].ravel()) & {0, 1, 2, 3}  # u's other held-out targets excluded
    assert not (a == stats.sample_candidates(truth, users, 12, 6, eval_seed=1)).all()
    # filtered full ranking: u's other targets are not competitors
    scores = np.zeros([2, 12])
    scores[:, [2, 3]] = 5.0
    assert stats.full_ranks(scores, [1, 2], ["u", "u"], True).tolist() == [9, 1]
    assert stats.full_ranks(scores, [1, 2], ["u", "u"], False).tolist() == [10, 1]


def test_naive_bayes_learns_a_planted_item_label_association():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=300)
    histories = []
    for label in labels:  # class c favours items 10c+1..10c+5; everything else is noise
        planted = rng.integers(10 * label + 1, 10 * label + 6, size=3)
        histories.append(np.concatenate([planted, rng.integers(1, 40, size=6)]))
    bags = stats.bag_of_items(histories, 40)
    assert bags[0].sum() == 9 and bags[:, 0].sum() == 0
    alpha, cv = stats.choose_alpha(bags[:200], labels[:200], 3, seed=0)
    assert alpha in cv and cv[alpha] == max(cv.values())
    model = stats.NaiveBayes(alpha).fit(bags[:200], labels[:200], 3)
    assert (model.predict(bags[200:]) == labels[200:]).mean() > 0.9


def test_imbalanced_classification_metrics():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    majority = np.zeros(8, dtype=int)
    m = stats.classification_metrics(truth, majority)
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == pytest.approx(1 / 3)
    assert m["macro_f1"] == pytest.approx((2 * 4 / (8 + 4)) / 3)
    assert stats.classification_metrics(truth, truth)["macro_f1"] == 1.0
    assert stats.sample_std([1.0, 3.0]) == pytest.approx(np.sqrt(2)) and stats.sample_std([1]) is None


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_users():
    rng = np.random.default_rng(1)
    widths = []
    for users in (50, 800):
        hits = (rng.random(users * 2) < 0.4).astype(float)
        groups = np.repeat(np.arange(users), 2)  # two instances per user stay together
        point, low, high = stats.bootstrap_ci(lambda idx: hits[idx].mean(), groups, 400, seed=0)
        assert low <= point <= high and point == pytest.approx(hits.mean())
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # ~ 1/sqrt(users): 4x narrower for 16x the users
    resample = stats.user_resamples(np.array([0, 0, 1, 2]), 5, seed=0)
    for idx in resample:  # instances 0 and 1 (user 0) are drawn together
        assert list(idx).count(0) == list(idx).count(1)


def test_parameter_shares_per_task_in_the_papers_unit():
    shares = parameter_shares(30, 8, (1, 2), "next_item",
                              [("gender", "classify", 2), ("coldrec", "item_rec", 20)])
    for task in ("gender", "coldrec"):
        release, paper = shares[task]["release"], shares[task]["paper"]
        assert release["FineAll"]["share_of_fineall"] == 1.0
        assert release["FineZero"]["share_of_fineall"] == 1.0
        assert (release["FineCLS"]["share_of_fineall"] < paper["PeterRec (b)"]["share_of_fineall"]
                < release["PeterRec (b)"]["share_of_fineall"] < 1.0)
        assert release["FineCLS"]["trainable"] == paper["FineCLS"]["trainable"]
        for label, entry in release.items():
            assert entry["share_of_fineall"] == entry["trainable"] / release["FineAll"]["trainable"]
    # a task with a bigger head trains a bigger share: shares are per task, not averaged
    assert (shares["coldrec"]["release"]["PeterRec (b)"]["share_of_fineall"]
            > shares["gender"]["release"]["PeterRec (b)"]["share_of_fineall"])
    assert [label for label, _ in METHODS][:3] == ["LabelCS", "Popularity", "NaiveBayes"]


def test_paper_patch_preset_on_a_masked_backbone(tiny, tmp_path):
    data, repo = tiny
    results = run(data, str(tmp_path / "report"), repo_dir=str(repo), **dict(
        SMALL, objectives=("masked_item",), tasks=["attribute"], methods=("peterrec_d",),
        limited_fractions=(), curve_points=0, patch_preset="paper"))
    (peter,) = results["runs"]
    shares = results["parameter_shares"]["masked_item"]["attribute"]
    assert peter["trainable"] == shares["paper"]["PeterRec (d)"]["trainable"]
    assert peter["trainable"] < shares["release"]["PeterRec (d)"]["trainable"]
    assert results["provenance"]["configuration"]["finetune"]["bottleneck_ratio"] == 0.125
    assert peter["curve"] == [] and "mrr@5" in results["pretraining"][0]["test"]
    with pytest.raises(ValueError, match="patch_preset"):
        run(data, str(tmp_path / "other"), repo_dir=str(repo), **dict(SMALL, patch_preset="c8"))
