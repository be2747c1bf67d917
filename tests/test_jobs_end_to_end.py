"""Training jobs end to end on tiny synthetic data: pretrain -> finetune -> evaluate; clear errors."""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.jobs.evaluating import run_evaluate
from peterrec_tf.jobs.finetuning import run_finetune
from peterrec_tf.model_dir import load_model_dir
from peterrec_tf.jobs.pretraining import run_pretrain
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}
TINY = {"channels": 16, "dilations": (1, 2), "batch_size": 32, "log_every": 5,
        "checkpoint_every": 10}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data") / "syn")
    prepare("synthetic", out, max_len=20, seed=1, num_users=300, num_items=80, num_clusters=4,
            num_targets=30, **quiet)
    return out


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("runs") / "pre")
    run_pretrain(os.path.join(data, "pretrain"), model_dir, train_steps=40, seed=0, **TINY, **quiet)
    return model_dir


def test_pretrain_writes_a_complete_model_dir(pretrained):
    for name in ("model.keras", "config.json", "vocab.txt", "flags.json", "results.json"):
        assert os.path.exists(os.path.join(pretrained, name)), name
    assert os.listdir(os.path.join(pretrained, "tensorboard"))
    results = json.load(open(os.path.join(pretrained, "results.json")))
    assert results["training"]["steps"] == 40 and results["test"]["examples"] > 0
    assert 0.0 <= results["test"]["hr@10"] <= 1.0 and results["wall_seconds"] > 0


def tree_digest(directory):
    """{relative path: sha256} of every file under `directory`."""
    digests = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                digests[os.path.relpath(path, directory)] = hashlib.sha256(handle.read()).hexdigest()
    return digests


def test_finetune_then_evaluate_and_frozen_backbone(pretrained, data, tmp_path):
    model_dir = str(tmp_path / "ft")
    pretrained_files = tree_digest(pretrained)
    source, _, _ = load_model_dir(pretrained)
    frozen_before = {w.path: w.numpy() for w in source.backbone.weights}
    results = run_finetune(pretrained, os.path.join(data, "coldrec"), model_dir, method="peterrec",
                           train_steps=15, batch_size=32, log_every=5, checkpoint_every=10,
                           num_candidates=20, **quiet)
    assert results["parameters"]["trainable"] < results["parameters"]["total"] * 0.5
    tuned, config, vocabs = load_model_dir(model_dir)
    assert config["kind"] == "finetune" and len(vocabs["targets"]) == tuned.num_outputs
    changed = []
    for weight in tuned.backbone.backbone_weights():
        before = frozen_before[weight.path]
        if "layer_norm2" in weight.path:
            changed.append(not np.array_equal(weight.numpy(), before))
        else:
            np.testing.assert_array_equal(weight.numpy(), before, err_msg=weight.path)
    assert any(changed)  # the trainable layer norms did move
    # the pre-trained directory is untouched, file for file
    assert tree_digest(pretrained) == pretrained_files
    again, _, _ = load_model_dir(pretrained)
    for weight in again.backbone.weights:
        np.testing.assert_array_equal(weight.numpy(), frozen_before[weight.path])
    evaluated = run_evaluate(model_dir, os.path.join(data, "coldrec"), "test", "sampled",
                             num_candidates=20, **quiet)
    assert evaluated["hr@10"] == pytest.approx(results["test"]["hr@10"])


def test_classification_finetune_and_method_baselines(pretrained, data, tmp_path):
    for method, scratch in (("finecls", False), ("fineall", True)):
        results = run_finetune(pretrained, os.path.join(data, "attribute"), str(tmp_path / method),
                               method=method, from_scratch=scratch, train_steps=10, batch_size=32,
                               log_every=5, jit_compile=False, **quiet)
        assert 0.0 <= results["test"]["accuracy"] <= 1.0
        share = results["parameters"]["trainable_share"]
        assert share < 0.05 if method == "finecls" else share == 1.0


def test_contradicting_settings_are_clear_errors(pretrained, data, tmp_path):
    with pytest.raises(ValueError, match="other settings"):
        run_pretrain(os.path.join(data, "pretrain"), pretrained, train_steps=40,
                     **dict(TINY, channels=32), **quiet)
    other = str(tmp_path / "other")
    prepare("synthetic", other, max_len=20, seed=1, num_users=100, num_items=60, num_clusters=4,
            num_targets=30, **quiet)
    with pytest.raises(ValueError, match="--vocab"):
        run_finetune(pretrained, os.path.join(other, "coldrec"), str(tmp_path / "x"),
                     train_steps=2, **quiet)
    with pytest.raises(ValueError, match="never modified"):
        run_finetune(pretrained, os.path.join(data, "coldrec"), pretrained, train_steps=2, **quiet)
    with pytest.raises(ValueError, match="pretrain dataset"):
        run_pretrain(os.path.join(data, "coldrec"), str(tmp_path / "y"), train_steps=2, **quiet)
    coldrec = os.path.join(data, "coldrec")
    for kwargs, message in (
            ({"task": "classify"}, "holds item_rec data"),
            ({"method": "fineall", "insertion": "c"}, "only apply to --method=peterrec"),
            ({"method": "finecls", "bottleneck_ratio": 0.125}, "only apply to --method=peterrec"),
            ({"method": "peterrec", "finelast_blocks": 2}, "only applies to --method=finelast"),
            ({"pooling": "first_last"}, "non-causal"),
            ({"method": "finelast", "finelast_blocks": 9}, "finelast_blocks must be in")):
        with pytest.raises(ValueError, match=message):
            run_finetune(pretrained, coldrec, str(tmp_path / "z"), train_steps=2, **kwargs, **quiet)
    with pytest.raises(ValueError, match="--loss=ce"):
        run_finetune(pretrained, os.path.join(data, "attribute"), str(tmp_path / "w"),
                     loss="bpr", train_steps=2, **quiet)
    assert not os.path.exists(str(tmp_path / "z"))  # refused before anything was written


def test_pretrain_keeps_the_best_validation_weights(data, tmp_path):
    """--select_metric: the saved model is the periodic validation with the best metric
    (checked by re-evaluating the saved model), and the test split chose nothing. A learning
    rate far too high makes the validations fall after the first ones, so the best step is
    not the last and a job that kept its last weights would fail here."""
    model_dir = str(tmp_path / "pre_best")
    lines = []
    # no XLA: the selection is the subject; the module's `pretrained` fixture compiles
    results = run_pretrain(os.path.join(data, "pretrain"), model_dir, train_steps=40, seed=0,
                           eval_every=5, select_metric="ndcg@10", learning_rate=3.0,
                           jit_compile=False, **TINY, log=lines.append)
    validations = [float(line.split("ndcg@10 ")[1].split()[0]) for line in lines
                   if " validation: " in line]
    assert len(validations) == 7  # steps 5, ..., 35 (+ the final one, offered by the job)
    with open(os.path.join(model_dir, "best", "best.json"), encoding="utf-8") as handle:
        offered = dict(json.load(handle)["history"])
    assert sorted(offered) == [5, 10, 15, 20, 25, 30, 35, 40]
    selected = results["selected"]
    assert selected["metrics"]["ndcg@10"] == max(offered.values())
    assert selected["metrics"]["ndcg@10"] >= max(validations) - 1e-4  # logged to 4 places
    # what makes this test decisive: the last weights are clearly worse than the best
    assert selected["step"] < 40 and offered[40] < selected["metrics"]["ndcg@10"] - 0.02
    again = run_evaluate(model_dir, os.path.join(data, "pretrain"), split="validation",
                         ranking="full", **quiet)
    assert abs(again["ndcg@10"] - selected["metrics"]["ndcg@10"]) < 1e-6
    with pytest.raises(ValueError, match="eval_every"):
        run_pretrain(os.path.join(data, "pretrain"), str(tmp_path / "x"), train_steps=5,
                     eval_every=0, select_metric="ndcg@10", **TINY, **quiet)
    with pytest.raises(ValueError, match="select_metric"):
        run_pretrain(os.path.join(data, "pretrain"), str(tmp_path / "y"), train_steps=5,
                     eval_every=5, select_metric="auc", **TINY, **quiet)


def test_finetune_keeps_the_best_validation_accuracy(pretrained, data, tmp_path):
    model_dir = str(tmp_path / "gender_best")
    lines = []
    # no XLA: the selection is the subject; test_finetune_then_evaluate_and_frozen_backbone
    # fine-tunes with it
    out = run_finetune(pretrained, os.path.join(data, "attribute"), model_dir, train_steps=12,
                       eval_every=4, select_metric="accuracy", seed=0, batch_size=32,
                       log_every=4, checkpoint_every=6, jit_compile=False, log=lines.append)
    validations = [float(line.split("accuracy ")[-1].split()[0]) for line in lines
                   if " validation: " in line]
    assert len(validations) == 2 and out["selected"]["step"] in (4, 8, 12)
    # the logged validations are rounded to 4 decimals
    assert out["validation"]["accuracy"] >= max(validations) - 5e-5
    again = run_evaluate(model_dir, os.path.join(data, "attribute"), split="validation", **quiet)
    assert abs(again["accuracy"] - out["selected"]["metrics"]["accuracy"]) < 1e-6
    with pytest.raises(ValueError, match="one of \\['accuracy'\\]"):
        run_finetune(pretrained, os.path.join(data, "attribute"), str(tmp_path / "x"),
                     train_steps=4, eval_every=2, select_metric="ndcg@10", **quiet)


def test_finetune_saves_the_weights_of_the_best_validation_not_the_last(
        pretrained, data, tmp_path, monkeypatch):
    """The validation accuracies are scripted (best at step 4 of 12) and the task's weights
    are recorded at each validation, so the check does not depend on what 9 validation
    users happen to score: the saved model holds step 4's weights, not step 12's."""
    from peterrec_tf.jobs.finetuning import FinetuningJob

    scripted = {2: 0.5, 4: 0.9, 6: 0.6, 8: 0.7, 10: 0.6, 12: 0.8}  # step 12: the final one
    seen = {}
    evaluate = FinetuningJob.evaluate

    def scripted_evaluate(job, split):
        scores = evaluate(job, split)
        if split != "validation":
            return scores
        step = 2 * (len(seen) + 1)
        seen[step] = {w.path: w.numpy() for w in job.model.trainable_weights}
        return dict(scores, accuracy=scripted[step])
    monkeypatch.setattr(FinetuningJob, "evaluate", scripted_evaluate)
    model_dir = str(tmp_path / "scripted")
    out = run_finetune(pretrained, os.path.join(data, "attribute"), model_dir, train_steps=12,
                       eval_every=2, select_metric="accuracy", seed=0, batch_size=32,
                       learning_rate=0.01, log_every=4, checkpoint_every=6, jit_compile=False,
                       **quiet)
    assert sorted(seen) == sorted(scripted) and out["selected"]["step"] == 4
    tuned, _, _ = load_model_dir(model_dir)
    saved = {w.path: w.numpy() for w in tuned.weights if w.path in seen[4]}
    assert sorted(saved) == sorted(seen[4])
    moved = [path for path in saved if not np.array_equal(seen[4][path], seen[12][path])]
    assert moved  # steps 4 and 12 differ, so the comparison below can tell them apart
    for path, value in saved.items():
        np.testing.assert_array_equal(value, seen[4][path], err_msg=path)


def test_sampled_softmax_pretraining_compiles_the_blocks_and_the_fused_loss(data, tmp_path):
    """The sampler has no XLA kernel: the job compiles the residual stack and the sampled
    softmax's dense part, and --jit_compile=false turns XLA off."""
    compiled, plain = [], []
    out = run_pretrain(os.path.join(data, "pretrain"), str(tmp_path / "dot"), head="dot",
                       num_sampled=10, train_steps=6, seed=0, **TINY, log=compiled.append)
    run_pretrain(os.path.join(data, "pretrain"), str(tmp_path / "dot_plain"), head="dot",
                 num_sampled=10, train_steps=6, seed=0, jit_compile=False, **TINY,
                 log=plain.append)
    assert "XLA: blocks + softmax" in compiled[0] and "XLA" not in plain[0]
    assert np.isfinite(out["training"]["last_loss"]) and out["test"]["examples"] > 0
    model, _, _ = load_model_dir(str(tmp_path / "dot"))  # saved without the runtime settings
    assert getattr(model.backbone, "_xla_blocks", None) is None
    assert not model.fused_softmax


def test_default_sampled_softmax_is_the_releases_rule_bounded():
    from peterrec_tf.jobs.pretraining import MAX_DEFAULT_SAMPLED, default_num_sampled
    assert default_num_sampled(-1, 1_683) == 336 == default_num_sampled(-2, 1_683)  # 20%
    assert default_num_sampled(-1, 645_000) == MAX_DEFAULT_SAMPLED == 8_192
    assert default_num_sampled(-2, 645_000) == 129_000  # the release's rule, for parity
    assert default_num_sampled(500, 645_000) == 500 and default_num_sampled(0, 10) == 0
