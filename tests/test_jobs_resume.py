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
