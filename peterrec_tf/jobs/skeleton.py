"""What every training job shares once its model is built: lock, settings record, seed,
the training loop, best-weights selection, validation and test, saving, results.json.

A job (`pretraining`, `finetuning`) checks everything first, then calls `train_job` with
its settings and a `prepare(strategy, precision)` that builds the model inside the
strategy's scope and returns a `Built`.
"""

import contextlib
import dataclasses
import inspect
import time
from typing import Callable

#: Parameters of the jobs' `run_*` functions that are no settings (not flags, not recorded).
NOT_SETTINGS = ("log",)


def job_settings(run):
    """The setting names of a job, read off its `run_*` signature: the one list that the
    flags, flags.json and the resume comparison follow (a test checks the flags)."""
    return tuple(name for name in inspect.signature(run).parameters if name not in NOT_SETTINGS)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """The settings every training job has (`training.flags.COMMON`), typed."""
    data_dir: str
    model_dir: str
    batch_size: int
    epochs: float
    train_steps: int
    learning_rate: float
    seed: int
    deterministic: bool
    strategy: str
    mixed_precision: bool
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int
    eval_every: int
    eval_batch_size: int
    ks: tuple
    max_len: int
    select_metric: str
    jit_compile: bool
    patience: int

    @classmethod
    def of(cls, config):
        """The common part of a job's settings dict."""
        return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


@dataclasses.dataclass
class Built:
    """What a job hands the shared loop: the compiled model and its own parts."""
    model: object
    steps: int
    make_dataset: Callable      # () -> the repeated training dataset of global batches
    evaluate_split: Callable    # split name -> {metric: value, "examples": n}
    save: Callable              # () -> None: the model directory (chief only)
    test_label: str = "test"
    report: dict = dataclasses.field(default_factory=dict)
    steps_per_epoch: int = 1    # what --eval_every=-1 (once per epoch) means


def eval_cadence(eval_every, steps_per_epoch):
    """Steps between periodic validations: --eval_every, or once per epoch for -1."""
    return max(1, int(steps_per_epoch)) if eval_every == -1 else int(eval_every)


def split_evaluator(model, data_dir, task, ks, batch_size, ranking, num_candidates, seed,
                    framing, log=None):
    """split -> metrics of `model` on that split, checked to have scored every example
    (progress with the time left every 30 s through `log`)."""
    from pipelines import inputs
    from peterrec_tf.data.datasets import eval_dataset
    from peterrec_tf.training import evaluation

    splits = inputs.read_metadata(data_dir)["splits"]
    # traced once, reused by every periodic validation and the test
    scorer = evaluation.score_function(model) if task == "classify" else None
    ranker = evaluation.rank_function(model) if task != "classify" else None

    def evaluate_split(split):
        data = eval_dataset(data_dir, split, batch_size, ranking, num_candidates, seed=seed,
                            framing=framing)
        scores = evaluation.evaluate(model, data, task, ks, scorer, ranker=ranker,
                                     total=splits.get(split), log=log,
                                     label=f"{split} ({ranking} ranking)")
        inputs.check_count(data_dir, split, scores["examples"], "scored")
        return scores
    return evaluate_split


def train_job(kind, config, settings, prepare, log=print):
    """Run a job whose settings were all checked: returns the results dict, also written
    to results.json. Nothing is written before the lock is held and flags.json recorded."""
    from pipelines import inputs
    from pipelines.locking import exclusive_lock
    from peterrec_tf.filesystem import check_writable, write_faults_reported
    from peterrec_tf.jobs.checks import check_apart
    from peterrec_tf.training import best as selection
    from peterrec_tf.training import loop, reproducibility, results, strategy as dist, summaries

    chief = dist.is_chief()
    precision = dist.set_precision(settings.mixed_precision)
    strategy = dist.make_strategy(settings.strategy)
    dist.check_batch_size(settings.batch_size, strategy)
    check_apart(settings.model_dir, settings.data_dir)
    inputs.check_vocabularies(settings.data_dir)  # found before training, not at the save
    if chief:  # a read-only or missing place is found before any work
        check_writable(settings.model_dir, "--model_dir")
    with write_faults_reported(settings.model_dir), \
            (exclusive_lock(settings.model_dir) if chief else contextlib.nullcontext()), \
            inputs.reading(settings.data_dir):
        results.record_config(settings.model_dir, config, write=chief)
        if chief:
            results.write_flagfile(settings.model_dir, config, f"python -m peterrec_tf.{kind}")
        # after the strategy: creating one may draw from Python's generator, which seeds
        # the initialisers (and the workers must initialise identically to a single process)
        reproducibility.set_seed(settings.seed, settings.deterministic)
        job = prepare(strategy, precision)
        started = time.time()
        best = (selection.BestWeights(job.model, settings.model_dir, settings.select_metric,
                                      chief)
                if selection.selects(settings.select_metric, settings.strategy) else None)
        trained = loop.train(
            job.model, job.make_dataset, job.steps, settings.model_dir,
            batch_size=settings.batch_size, checkpoint_every=settings.checkpoint_every,
            keep_checkpoints=settings.keep_checkpoints, log_every=settings.log_every,
            eval_every=eval_cadence(settings.eval_every, job.steps_per_epoch),
            evaluate=lambda: job.evaluate_split("validation"),
            log=log, chief=chief, strategy=strategy, best=best, patience=settings.patience)
        report = {"job": kind, "config": config, "training": trained, **job.report,
                  "examples_per_second": trained["examples_per_second"]}
        if not trained["interrupted"]:
            report["validation"] = job.evaluate_split("validation")
            if best is not None:
                report["validation"], report["selected"] = selection.finish_selection(
                    best, trained["steps"], report["validation"], log)
                report.update(stopped_early=trained["stopped_early"],
                              best_step=report["selected"]["step"],
                              evaluations=len(best.history))
            report["test"] = job.evaluate_split("test")
            log(f"{job.test_label}: " + "  ".join(
                f"{k} {v:.4f}" for k, v in report["test"].items() if k != "examples"))
            if chief:
                summaries.write_final(settings.model_dir, config, report["validation"],
                                      report["test"], trained["steps"], settings.select_metric)
            if chief:
                job.save()
        report["wall_seconds"] = time.time() - started
        if chief:
            results.write_results(settings.model_dir, report)
        return report
