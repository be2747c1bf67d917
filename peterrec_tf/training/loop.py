"""The resumable training driver: Keras `fit` plus one callback for the job's chores.

The models define their losses in `compute_loss`, so `fit` does the stepping; the
callback counts steps, prints progress, writes TensorBoard scalars, evaluates every
`eval_every` steps, checkpoints every `checkpoint_every` steps and stops cleanly on
SIGINT/SIGTERM.  Training data is one `repeat()`ed stream whose order and randomness
depend only on the seed and the global batch index, so resuming at step s is
`dataset.skip(s)` and an interrupted run ends with the weights of an uninterrupted one.
"""

import time

import keras

from peterrec_tf.training import multiworker_compat
from peterrec_tf.training.checkpointing import TrainingState
from peterrec_tf.training.finite import check_loss
from peterrec_tf.training.progress import Progress
from peterrec_tf.training.signals import StopRequest
from peterrec_tf.training.strategy import for_strategy
from peterrec_tf.training.summaries import Summaries, metric_values


def current_learning_rate(model):
    """The optimizer's learning rate at its current step (a schedule evaluated there)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class JobCallback(keras.callbacks.Callback):
    """Step counting, progress, TensorBoard, periodic evaluation and checkpoints, signals."""

    def __init__(self, state, progress, summaries, stop, checkpoint_every, eval_every=0,
                 evaluate=None, log=print, chief=True, best=None, last_saved=None, patience=0,
                 deadline=None):
        super().__init__()
        self.best, self.patience, self.stopped_early = best, int(patience or 0), False
        self.deadline, self.out_of_time = deadline, False
        self.state, self.progress, self.summaries, self.stop = state, progress, summaries, stop
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.eval_every, self.evaluate = int(eval_every or 0), evaluate
        self.log = log if chief else (lambda *_: None)
        self.last_saved = last_saved
        self.validation = {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.state.step.assign_add(1).numpy())
        logs = dict(logs or {})
        check_loss(logs, step, self.last_saved)  # before anything could save this step
        if self.progress.due(step):
            self.log(self.progress.line(step, logs))
            self.summaries.scalars("train", logs, step)
            self.summaries.scalars("train", {"examples_per_second": self.progress.rate(step),
                                             "learning_rate": current_learning_rate(self.model)},
                                   step)
        if (self.eval_every and self.evaluate is not None and step % self.eval_every == 0
                and step < self.progress.total_steps):
            self.validation = self.evaluate()
            self.log(f"step {step} validation: " + "  ".join(
                f"{k} {v:.4f}" for k, v in self.validation.items() if k != "examples"))
            self.summaries.scalars("validation", metric_values(self.validation), step)
            if self.best is not None and self.best.offer(step, self.validation):
                self.log(f"step {step}: best {self.best.metric} so far, weights kept")
            if self.best is not None and self.best.exhausted(self.patience):
                self.stopped_early = True
                self._save(step)
                self.log(f"step {step}: no better {self.best.metric} in {self.patience} "
                         f"validations (best at step {self.best.record['step']}): stopping early")
                self.model.stop_training = True
        if step % self.checkpoint_every == 0:
            self._save(step)
        if (self.deadline is not None and not self.model.stop_training
                and step < self.progress.total_steps and time.monotonic() >= self.deadline):
            self.out_of_time = True
            self._save(step)
            self.log(f"step {step}: the time budget is spent: stopping (the final validation "
                     "and the best weights decide what is kept; the same command continues)")
            self.model.stop_training = True
        if self.stop.requested:
            self._save(step)
            self.log(f"signal {self.stop.signal}: checkpoint at step {step}; run the same "
                     "command again to resume")
            self.model.stop_training = True

    def _save(self, step):
        if self.last_saved != step:
            self.state.save()
            self.last_saved = step


def train(model, make_dataset, total_steps, model_dir, *, batch_size, checkpoint_every=500,
          keep_checkpoints=3, log_every=50, eval_every=0, evaluate=None, log=print, chief=True,
          strategy=None, best=None, callbacks=(), patience=0, deadline=None):
    """Train the compiled `model` up to `total_steps`, resuming from model_dir's checkpoint.

    `make_dataset()` returns the repeated training dataset of global batches from its
    first batch.  Returns {"steps", "resumed_from", "interrupted", "train_seconds",
    "examples_per_second", "last_logs", "stopped_early", "stopped_by_time_budget"}. `best` (a `best.BestWeights`) is
    offered every periodic validation; with `patience` > 0 training stops once that many
    validations in a row brought no new best (also when a resumed run finds it so: it
    trains no further). `deadline` (a `time.monotonic()` value) stops training after the first
    step that ends past it ("stopped_by_time_budget"). `callbacks` are extra Keras
    callbacks run after the job's own.
    """
    state = TrainingState(model, model_dir, keep_checkpoints, strategy, chief)
    latest = state.restore(log if chief else (lambda *_: None))
    start = state.current_step
    if latest and chief:
        log(f"resuming from {latest} (step {start}): skipping {start} batches of data")
    result = {"steps": start, "resumed_from": start, "interrupted": False, "train_seconds": 0.0,
              "examples_per_second": 0.0, "last_logs": {}, "stopped_early": False,
              "stopped_by_time_budget": False}
    if best is not None:
        best.resume_at(start, eval_every)
    if start >= total_steps:
        log(f"already trained {start} >= {total_steps} steps")
        return result
    if best is not None and best.exhausted(patience):
        log(f"stopped early at step {start} (no better {best.metric} in {patience} validations)")
        result["stopped_early"] = True
        return result
    summaries = Summaries(model_dir, enabled=chief, runs=("train", "validation"))
    dataset = make_dataset().skip(start)
    if strategy is not None:
        dataset = for_strategy(dataset, strategy)
        multiworker_compat.prepare(model, strategy, dataset)
    with StopRequest() as stop:
        callback = JobCallback(state, Progress(total_steps, start, batch_size, log_every),
                               summaries, stop, checkpoint_every, eval_every, evaluate, log, chief,
                               best, start if latest else None, patience, deadline)
        started = time.time()
        history = model.fit(dataset, epochs=1, steps_per_epoch=total_steps - start, verbose=0,
                            shuffle=False, callbacks=[callback, *callbacks])
        seconds = time.time() - started
        steps = state.current_step
        callback._save(steps)  # the final (or interrupted) state, once
        last = {k: float(v[-1]) for k, v in history.history.items() if v}
        result.update(steps=steps, interrupted=stop.requested, train_seconds=seconds,
                      examples_per_second=(steps - start) * batch_size / max(seconds, 1e-9),
                      last_logs=last, last_loss=last.get("loss"),
                      stopped_early=callback.stopped_early,
                      stopped_by_time_budget=callback.out_of_time)
    summaries.flush()
    summaries.close()
    return result
