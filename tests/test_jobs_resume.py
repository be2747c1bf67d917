"""Resume: a run stopped by SIGTERM and re-run ends with the weights of an uninterrupted run."""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.jobs.finetuning import run_finetune
from peterrec_tf.model_dir import load_model_dir
from peterrec_tf.jobs.pretraining import run_pretrain
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}
TINY = {"channels": 16, "dilations": (1, 2), "batch_size": 32, "log_every": 5,
        "checkpoint_every": 10}


def weights_of(model_dir):
    model, _, _ = load_model_dir(model_dir)
    return [w.numpy() for w in model.weights]


def sigterm_at(step):
    """A `log` callback that sends this process SIGTERM when step `step` is reported."""
    def log(line):
        if line.startswith(f"step {step}/"):
            os.kill(os.getpid(), signal.SIGTERM)
    return log


@pytest.fixture
def op_determinism():
    """Op determinism for one test; process-wide, so switched off after it (later tests
    check the XLA paths, which the jobs skip in this mode)."""
    from tensorflow.python.framework import config

    tf.config.experimental.enable_op_determinism()
    yield
    config.disable_op_determinism()


def test_interrupted_runs_resume_to_the_same_weights(tmp_path, op_determinism):
    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=20, seed=1, num_users=150, num_items=60, num_clusters=4,
            num_targets=30, **quiet)
    args = dict(TINY, train_steps=20, seed=3)
    pre = os.path.join(data, "pretrain")
    full = str(tmp_path / "full")
    run_pretrain(pre, full, objective="masked_item", **args, **quiet)

    stopped = str(tmp_path / "stopped")
    first = run_pretrain(pre, stopped, objective="masked_item", **args, log=sigterm_at(10))
    assert first["training"]["interrupted"] and first["training"]["steps"] == 10
    assert not os.path.exists(os.path.join(stopped, "model.keras"))  # no final model yet
    assert os.path.exists(os.path.join(stopped, "checkpoints", "ckpt-10.index"))
    second = run_pretrain(pre, stopped, objective="masked_item", **args, **quiet)
    assert second["training"]["resumed_from"] == 10 and second["training"]["steps"] == 20
    for a, b in zip(weights_of(full), weights_of(stopped)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    # fine-tuning resumes too (sampled negatives depend on the batch index, not the run)
    ft_args = dict(train_steps=8, batch_size=32, log_every=2, checkpoint_every=100, seed=4,
                   num_candidates=20)
    coldrec = os.path.join(data, "coldrec")
    ft_full = str(tmp_path / "ft_full")
    run_finetune(full, coldrec, ft_full, **ft_args, **quiet)
    ft_stopped = str(tmp_path / "ft_stopped")
    assert run_finetune(full, coldrec, ft_stopped, **ft_args,
                        log=sigterm_at(4))["training"]["interrupted"]
    assert run_finetune(full, coldrec, ft_stopped, **ft_args,
                        **quiet)["training"]["resumed_from"] == 4
    for a, b in zip(weights_of(ft_full), weights_of(ft_stopped)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_task_checkpoints_leave_out_the_frozen_backbone_and_older_ones_still_resume(tmp_path):
    """A PeterRec run's checkpoints hold its patches, head, trained layer norms and their
    Adam slots, not the frozen backbone it rebuilds from --pretrained (at 645K items that
    was 670 MB a checkpoint beside a 3 MB task). A checkpoint of the older layout (the
    whole model) still restores."""
    from peterrec_tf.models import Backbone, build_finetuner
    from peterrec_tf.training.checkpointing import TrainingState
    from peterrec_tf.training.optimizer import FusedAdam
    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=120, num_items=300,
            num_clusters=4, num_targets=20, **quiet)
    pre = str(tmp_path / "pre")
    run_pretrain(os.path.join(data, "pretrain"), pre, train_steps=4, seed=0, **TINY, **quiet)
    task = str(tmp_path / "task")
    run_finetune(pre, os.path.join(data, "coldrec"), task, train_steps=4, seed=0,
                 batch_size=32, checkpoint_every=2, num_candidates=11, **quiet)
    latest = tf.train.latest_checkpoint(os.path.join(task, "checkpoints"))
    names = [name for name, _ in tf.train.list_variables(latest)]
    assert not any("item_embedding" in n or "dilated_conv" in n for n in names), names
    assert any("mp_" in n or "patch" in n for n in names) and any("target_emb" in n for n in names)
    # an older checkpoint (tf.train.Checkpoint(model=...)) of a run in progress resumes
    model, _, _ = load_model_dir(task)
    model.compile(optimizer=FusedAdam(1e-3))
    model.optimizer.build(model.trainable_variables)
    old = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                              step=tf.Variable(7, dtype=tf.int64))
    old_dir = tmp_path / "old" / "checkpoints"
    tf.train.CheckpointManager(old, str(old_dir), max_to_keep=1).save(checkpoint_number=7)
    expected = [w.numpy() for w in model.weights]
    for w in model.trainable_weights:
        w.assign(np.zeros(w.shape, "float32"))
    state = TrainingState(model, str(tmp_path / "old"))
    assert state.restore(log=lambda *_: None).endswith("ckpt-7") and state.current_step == 7
    for got, want in zip(model.weights, expected):
        np.testing.assert_array_equal(got.numpy(), want)


def test_regularised_scheduled_runs_resume_to_the_same_weights(tmp_path, op_determinism):
    """Dropout's random state, the decayed weights and the learning-rate schedule (a function
    of the optimizer's step) all continue where the interrupted run stopped."""
    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=12, seed=2, num_users=100, num_items=40, num_clusters=4,
            num_targets=10, **quiet)
    pre = os.path.join(data, "pretrain")
    args = dict(TINY, train_steps=12, seed=5, eval_every=0, dropout=0.3, embedding_dropout=0.1,
                weight_decay=0.05, lr_schedule="cosine", warmup_steps=3)
    full = str(tmp_path / "full")
    run_pretrain(pre, full, **args, **quiet)
    stopped = str(tmp_path / "stopped")
    assert run_pretrain(pre, stopped, **args, log=sigterm_at(5))["training"]["interrupted"]
    assert run_pretrain(pre, stopped, **args, **quiet)["training"]["resumed_from"] == 5
    for a, b in zip(weights_of(full), weights_of(stopped)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_a_resume_over_a_backbone_pre_trained_further_meanwhile_is_refused(tmp_path):
    """The checkpoints of a fine-tuning leave out the frozen backbone and a resume rebuilds
    it from --pretrained: pre-trained further in between, that is another backbone, and the
    patches trained on the first went on over the second (exit 0, a model neither run
    would give). The run records the backbone's fingerprint, and a resume compares it."""
    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=120, num_items=60,
            num_clusters=4, num_targets=10, **quiet)
    pre, task = str(tmp_path / "pre"), str(tmp_path / "task")
    pre_args = dict(TINY, eval_every=0, jit_compile=False)
    run_pretrain(os.path.join(data, "pretrain"), pre, train_steps=4, **pre_args, **quiet)
    ft_args = dict(train_steps=6, batch_size=16, log_every=1, checkpoint_every=100, eval_every=0,
                   jit_compile=False)
    attribute = os.path.join(data, "attribute")
    assert run_finetune(pre, attribute, task, **ft_args,
                        log=sigterm_at(3))["training"]["interrupted"]
    run_pretrain(os.path.join(data, "pretrain"), pre, train_steps=8, **pre_args, **quiet)
    with pytest.raises(ValueError, match="the backbone of --pretrained"):
        run_finetune(pre, attribute, task, **ft_args, **quiet)
    with open(os.path.join(task, "flags.txt")) as flags:  # derived: no flag of its own
        assert "backbone_fingerprint" not in flags.read()
