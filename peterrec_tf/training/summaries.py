"""TensorBoard, written by the chief only (other workers get no-op writers).

`model_dir/tensorboard/` is one TensorBoard session with one run per subdirectory:

- `train/`: `loss`, `learning_rate` and `examples_per_second` every --log_every steps;
- `validation/`: each periodic validation's metrics (`hr@10`, ...) at its step, and the
  final validation, of the weights the job keeps (the --select_metric choice), as
  `final/<metric>` at the last step;
- `test/`: the test metrics of those weights, `final/<metric>` at the last step;
- the session itself (`tensorboard/`): the job's settings as hparams (the HParams
  plugin), with the final validation --select_metric (else every final validation
  metric) and the test metrics as the session's metrics.

`tensorboard --logdir=runs` compares every job under `runs/`.
"""

import os

import tensorflow as tf

RUNS = ("train", "validation", "test")
#: Tag prefix of the metrics of the weights a job keeps (its final validation and test).
FINAL = "final"


def _scalars(writer, prefix, values, step):
    with writer.as_default(step=int(step)):
        for key, value in values.items():
            try:
                tf.summary.scalar(f"{prefix}{key}", float(value))
            except (TypeError, ValueError):
                continue


class Summaries:
    """`scalars(run, values, step)` into `model_dir/tensorboard/<run>` (chief) or nowhere."""

    def __init__(self, model_dir, enabled=True, runs=RUNS):
        self.root = os.path.join(model_dir, "tensorboard")
        self.writers = ({run: tf.summary.create_file_writer(os.path.join(self.root, run))
                         for run in runs} if enabled else {})

    def scalars(self, run, values, step, prefix=""):
        if run in self.writers:
            _scalars(self.writers[run], prefix, values, step)

    def flush(self):
        for writer in self.writers.values():
            writer.flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()


def metric_values(metrics):
    """The numeric metrics of an evaluation dict (without its example count)."""
    return {k: v for k, v in metrics.items()
            if k != "examples" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_final(model_dir, settings, validation, test, step, select_metric=""):
    """The final validation and test metrics (`final/<metric>` in the validation and test
    runs at `step`) and the hparams session: every setting with a scalar value (lists as
    text) and the metrics, --select_metric's final validation first."""
    from tensorboard.plugins.hparams import api as hp

    summaries = Summaries(model_dir, runs=("validation", "test"))
    validation, test = metric_values(validation), metric_values(test)
    summaries.scalars("validation", validation, step, prefix=f"{FINAL}/")
    summaries.scalars("test", test, step, prefix=f"{FINAL}/")
    summaries.close()
    chosen = [select_metric] if select_metric in validation else sorted(validation)
    metrics = ([hp.Metric(f"{FINAL}/{name}", group="validation",
                          display_name=f"validation {name}") for name in chosen]
               + [hp.Metric(f"{FINAL}/{name}", group="test", display_name=f"test {name}")
                  for name in sorted(test)])
    values = {}
    for key, value in settings.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if isinstance(value, (bool, int, float, str)):
            values[key] = value
    session = tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))
    with session.as_default():
        hp.hparams_config(hparams=[hp.HParam(key) for key in sorted(values)], metrics=metrics)
        hp.hparams(values, trial_id=os.path.basename(os.path.normpath(model_dir)))
    session.close()
