"""Model selection on the validation split: keep the weights of the best evaluation.

With `--eval_every` and `--select_metric`, every periodic validation is offered to a
`BestWeights`; an improvement saves the model's weights under `model_dir/best/` (a
checkpoint plus `best.json` with the step and metrics), so a resumed run keeps what it had
selected. At the end the job offers the final validation too and restores the best weights
before the test evaluation and the saved model: the test split never chooses anything.
"""

import json
import os

import tensorflow as tf

from peterrec_tf.training.checkpointing import checkpoints_of, restore


class BestWeights:
    """The best validation so far by `metric` (higher is better) and its weights."""

    def __init__(self, model, model_dir, metric, chief=True):
        self.model, self.metric, self.chief = model, metric, chief
        self.directory = os.path.join(model_dir, "best")
        # a task's own weights, not its frozen backbone (older best/ holds the whole model)
        self.checkpoint, self.legacy = checkpoints_of(model)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=1)
        self.record = None
        path = os.path.join(self.directory, "best.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                self.record = json.load(handle)

    @property
    def value(self):
        return None if self.record is None else self.record["metrics"][self.metric]

    def offer(self, step, metrics):
        """Save the weights if `metrics[metric]` beats the best so far; True if it did."""
        if self.metric not in metrics:
            raise ValueError(f"--select_metric={self.metric} is not among the validation "
                             f"metrics {sorted(k for k in metrics if k != 'examples')}")
        value = float(metrics[self.metric])
        if self.record is not None and value <= self.value:
            return False
        self.record = {"step": int(step), "metric": self.metric,
                       "metrics": {k: float(v) for k, v in metrics.items()}}
        if self.chief:
            self.manager.save(checkpoint_number=int(step))
            with open(os.path.join(self.directory, "best.json"), "w", encoding="utf-8") as handle:
                json.dump(self.record, handle, indent=2)
        return True

    def restore(self):
        """Load the best weights into the model; returns the best record (or None)."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return None
        restore(self.checkpoint, self.legacy, latest).expect_partial()
        return self.record


def check_selection(metric, eval_every, strategy, choices):
    """Usage errors for `--select_metric`, raised before anything is trained."""
    if not metric:
        return
    if not eval_every:
        raise ValueError("--select_metric needs --eval_every > 0 (it chooses among the periodic "
                         "validations)")
    if metric not in choices:
        raise ValueError(f"--select_metric must be one of {list(choices)}, got {metric!r}")
    if strategy == "multi_worker":
        raise ValueError("--select_metric is not supported with --strategy=multi_worker")


def finish_selection(best, steps, validation, log=print):
    """Offer the final validation, load the best weights; returns (validation, record)."""
    best.offer(steps, validation)
    record = best.restore()
    log(f"selected the weights of step {record['step']} (validation {best.metric} "
        f"{best.value:.4f})")
    return record["metrics"], record
