"""Model selection on the validation split: keep the weights of the best evaluation.

With `--eval_every` and `--select_metric`, every periodic validation is offered to a
`BestWeights`; an improvement saves the model's weights under `model_dir/best/` (a
checkpoint plus `best.json` with the step and metrics), so a resumed run keeps what it had
selected. At the end the job offers the final validation too and restores the best weights
before the test evaluation and the saved model: the test split never chooses anything.

`best.json` also keeps every validation offered (`history`, by step), so that early
stopping (`--patience`: stop after that many validations in a row without a new best)
counts across a resumption: a resumed run forgets the validations after its checkpoint
(it repeats them) and the final validation of a run stopped between two periodic ones, and
stops where the uninterrupted run would have.

Defaults: `--eval_every=-1` validates once per epoch and `--select_metric=auto` selects by
NDCG at the largest cut-off (accuracy for classification), so a run with default flags keeps
its best validation's weights rather than its last.
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
        self.history = {}  # step -> the metric's value at every validation offered
        path = os.path.join(self.directory, "best.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle)
            self.history = {int(step): float(value) for step, value in stored.pop("history", [])}
            self.record = stored

    def resume_at(self, step, cadence=0):
        """Forget the validations after `step` (a resumed run repeats them) and, given the
        periodic `cadence`, those off it: the final validation of a run stopped between
        two periodic ones (a time budget) would otherwise count towards `--patience`, which
        the uninterrupted run never offered. The best record stays whichever it was."""
        self.history = {s: v for s, v in self.history.items()
                        if s <= step and (not cadence or s % cadence == 0)}

    def since_best(self):
        """Validations offered after the best one (0 when the last one was the best)."""
        if self.record is None:
            return len(self.history)
        return sum(1 for step in self.history if step > self.record["step"])

    def exhausted(self, patience):
        """Whether `patience` (> 0) validations in a row brought no new best."""
        return bool(patience) and self.since_best() >= patience

    @property
    def value(self):
        return None if self.record is None else self.record["metrics"][self.metric]

    def offer(self, step, metrics):
        """Save the weights if `metrics[metric]` beats the best so far; True if it did."""
        if self.metric not in metrics:
            raise ValueError(f"--select_metric={self.metric} is not among the validation "
                             f"metrics {sorted(k for k in metrics if k != 'examples')}")
        value = float(metrics[self.metric])
        self.history[int(step)] = value
        improved = self.record is None or value > self.value
        if improved:
            self.record = {"step": int(step), "metric": self.metric,
                           "metrics": {k: float(v) for k, v in metrics.items()}}
        if self.chief:
            if improved:
                self.manager.save(checkpoint_number=int(step))
            os.makedirs(self.directory, exist_ok=True)
            with open(os.path.join(self.directory, "best.json"), "w", encoding="utf-8") as handle:
                json.dump({**self.record, "history": sorted(self.history.items())}, handle,
                          indent=2)
        return improved

    def restore(self):
        """Load the best weights into the model; returns the best record (or None)."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return None
        restore(self.checkpoint, self.legacy, latest).expect_partial()
        return self.record


def resolve_metric(metric, eval_every, strategy, choices):
    """`--select_metric` as recorded: "auto" is NDCG at the largest cut-off (the only
    choice, accuracy, for classification) when there are periodic validations, else ""
    (the last step's weights). The same whatever the strategy, so that a run resumed under
    another strategy has the same settings; `selects` says whether it is used."""
    if metric != "auto":
        return metric
    if not eval_every:
        return ""
    ndcg = [c for c in choices if c.startswith("ndcg@")]
    return max(ndcg, key=lambda c: int(c.split("@")[1])) if ndcg else list(choices)[0]


def selects(metric, strategy):
    """Whether a job keeps the best validation's weights: a metric, and not multi-worker
    (where the default "auto" quietly keeps the last step's)."""
    return bool(metric) and strategy != "multi_worker"


def check_selection(metric, eval_every, strategy, choices, patience=0, explicit=True):
    """Usage errors for `--select_metric` and `--patience`, raised before anything is
    trained (`metric` resolved by `resolve_metric`; `explicit`: given, not "auto")."""
    if patience and not selects(metric, strategy):
        raise ValueError("--patience needs periodic validations (--eval_every != 0), a "
                         "--select_metric to wait on, and no --strategy=multi_worker")
    if not metric:
        return
    if not eval_every:
        raise ValueError("--select_metric needs --eval_every != 0 (it chooses among the "
                         "periodic validations)")
    if metric not in choices:
        raise ValueError(f"--select_metric must be one of {list(choices)}, got {metric!r}")
    if strategy == "multi_worker" and explicit:
        raise ValueError("--select_metric is not supported with --strategy=multi_worker")


def finish_selection(best, steps, validation, log=print):
    """Offer the final validation, load the best weights; returns (validation, record)."""
    best.offer(steps, validation)
    record = best.restore()
    log(f"selected the weights of step {record['step']} (validation {best.metric} "
        f"{best.value:.4f})")
    return record["metrics"], record
