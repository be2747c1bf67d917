"""A training job as an explicit object, and the one way every training job runs.

A job (`pretraining.PretrainingJob`, `finetuning.FinetuningJob`) holds its settings and says
what is its own: `check()` refuses every bad setting before anything is written,
`build_model(strategy, precision)` builds and compiles the model in the strategy's scope,
`build_inputs(strategy)` makes the repeated training dataset, `evaluate(split)` measures
the model on a split and `save()` writes the model directory. `run_training(job)` does
what every job shares, in this order: check, lock, settings record, seed, model, the
training loop with best-weights selection, validation and test, save, results.json.
"""

import contextlib
import dataclasses
import inspect
import time

#: Parameters of the jobs' `run_*` functions that are no settings (not flags, not recorded).
NOT_SETTINGS = ("log",)


def job_defaults(run):
    """{setting: default} of a job's `run_*` signature: what a run recorded before a
    setting existed used (`results.record_config` compares a resume against it)."""
    return {name: parameter.default for name, parameter in inspect.signature(run).parameters.items()
            if name not in NOT_SETTINGS and parameter.default is not inspect.Parameter.empty}


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
    time_budget_minutes: float

    @classmethod
    def of(cls, config):
        """The common part of a job's settings dict."""
        return cls(**{field.name: config[field.name] for field in dataclasses.fields(cls)})


class TrainingJob:
    """What `run_training` asks of a job. `config` is the job's settings dict (the `run_*`
    keywords): `check` completes it (the resolved selection metric, the data's fingerprint)
    and it is recorded as flags.json; `build_model` sets `model`, `steps` and
    `steps_per_epoch` (what --eval_every=-1, once per epoch, means); `task` and `framing`
    say how `evaluate` reads the data; `report` holds the job's own entries of results.json."""

    kind = None          # results.json's "job"; the command is `python -m peterrec_tf.<kind>`
    defaults = {}        # `job_defaults` of the job's run function
    test_label = "test"  # how the test line of the log names the split

    def __init__(self, config, log=print):
        self.config, self.log = dict(config), log
        self.model, self.steps, self.steps_per_epoch = None, 0, 1
        # a job class that knows its task (pre-training) keeps it; others set it in check()
        self.task, self.framing = getattr(type(self), "task", None), None
        self.report = {}
        self._evaluator = None

    def check(self):
        """Refuse every bad setting (ValueError) before anything is written."""
        raise NotImplementedError

    def build_model(self, strategy, precision):
        """Build and compile `self.model` inside `strategy.scope()`; set `self.steps`."""
        raise NotImplementedError

    def build_inputs(self, strategy):
        """The repeated training dataset of global batches, from its first batch."""
        raise NotImplementedError

    def save(self):
        """Write the model directory (chief only)."""
        raise NotImplementedError

    def evaluate(self, split):
        """{metric: value, "examples": n} of the model on `split`, checked to have scored
        every example; the scoring functions are traced once, reused by every periodic
        validation and the test."""
        if self._evaluator is None:
            c = self.config
            self._evaluator = split_evaluator(self.model, c["data_dir"], self.task, c["ks"],
                                              c["eval_batch_size"], c["eval_ranking"],
                                              c["num_candidates"], c["seed"], self.framing,
                                              self.log)
        return self._evaluator(split)

    def resolve_selection(self, choices):
        """--select_metric resolved against the metrics this job reports (`choices`) and
        checked with --eval_every, --strategy and --patience."""
        from peterrec_tf.training import best as selection

        c = self.config
        asked = c["select_metric"]
        c["select_metric"] = selection.resolve_metric(asked, c["eval_every"], c["strategy"],
                                                      choices)
        selection.check_selection(c["select_metric"], c["eval_every"], c["strategy"], choices,
                                  c["patience"], explicit=asked != "auto")
        if c.get("time_budget_minutes") and c["strategy"] == "multi_worker":
            # each worker would read its own clock and stop at its own step, leaving the
            # others waiting in a collective
            raise ValueError("--time_budget_minutes is not supported with "
                             "--strategy=multi_worker")


def ranking_metric_names(ks):
    """hr@k, mrr@k, ndcg@k for every cut-off k, as the ranking evaluation reports them."""
    return [f"{m}@{k}" for k in ks for m in ("hr", "mrr", "ndcg")]


def eval_cadence(eval_every, steps_per_epoch):
    """Steps between periodic validations: --eval_every, or once per epoch for -1."""
    return max(1, int(steps_per_epoch)) if eval_every == -1 else int(eval_every)


def split_evaluator(model, data_dir, task, ks, batch_size, ranking, num_candidates, seed,
                    framing, log=None):
    """split -> metrics of `model` on that split, checked to have scored every example
    (progress with the time left every 30 s through `log`)."""
    from pipelines import inputs
    from peterrec_tf.data.datasets import eval_dataset
    from peterrec_tf.training import scoring

    splits = inputs.read_metadata(data_dir)["splits"]
    scorer = scoring.score_function(model) if task == "classify" else None
    ranker = scoring.rank_function(model) if task != "classify" else None

    def evaluate_split(split):
        data = eval_dataset(data_dir, split, batch_size, ranking, num_candidates, seed=seed,
                            framing=framing)
        scores = scoring.evaluate(model, data, task, ks, scorer, ranker=ranker,
                                  total=splits.get(split), log=log,
                                  label=f"{split} ({ranking} ranking)")
        inputs.check_count(data_dir, split, scores["examples"], "scored")
        return scores
    return evaluate_split


def run_training(job):
    """Run `job` (see the module docstring): returns the results dict, also written to
    results.json. Nothing is written before every check passed, the lock is held and
    flags.json recorded; an interrupted run is neither evaluated nor saved."""
    from pipelines import inputs
    from pipelines.locking import exclusive_lock
    from peterrec_tf.filesystem import check_writable, write_faults_reported
    from peterrec_tf.jobs.checks import check_apart
    from peterrec_tf.training import reproducibility, results, strategy as dist

    launched = time.monotonic()  # the time budget counts from here
    job.check()
    settings = TrainingSettings.of(job.config)
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
        results.record_config(settings.model_dir, job.config, write=chief,
                              defaults=job.defaults)
        if chief:
            results.write_flagfile(settings.model_dir, job.config,
                                   f"python -m peterrec_tf.{job.kind}")
        # after the strategy: creating one may draw from Python's generator, which seeds
        # the initialisers (and the workers must initialise identically to a single process)
        reproducibility.set_seed(settings.seed, settings.deterministic)
        job.build_model(strategy, precision)
        started = time.time()
        deadline = (launched + 60.0 * settings.time_budget_minutes
                    if settings.time_budget_minutes else None)
        report = train_and_test(job, settings, strategy, chief, deadline)
        report["wall_seconds"] = time.time() - started
        if chief:
            results.write_results(settings.model_dir, report)
        return report


def train_and_test(job, settings, strategy, chief, deadline=None):
    """The training loop over `job.build_inputs`, then (unless interrupted) the final
    validation with best-weights selection, the test, TensorBoard's final values and the
    save: the results dict without its wall time."""
    from peterrec_tf.training import best as selection
    from peterrec_tf.training import loop, summaries

    best = (selection.BestWeights(job.model, settings.model_dir, settings.select_metric, chief)
            if selection.selects(settings.select_metric, settings.strategy) else None)
    trained = loop.train(
        job.model, lambda: job.build_inputs(strategy), job.steps, settings.model_dir,
        batch_size=settings.batch_size, checkpoint_every=settings.checkpoint_every,
        keep_checkpoints=settings.keep_checkpoints, log_every=settings.log_every,
        eval_every=eval_cadence(settings.eval_every, job.steps_per_epoch),
        evaluate=lambda: job.evaluate("validation"),
        log=job.log, chief=chief, strategy=strategy, best=best, patience=settings.patience,
        deadline=deadline)
    report = {"job": job.kind, "config": job.config, "training": trained, **job.report,
              "examples_per_second": trained["examples_per_second"],
              "stopped_by_time_budget": trained["stopped_by_time_budget"]}
    if trained["interrupted"]:
        return report
    report["validation"] = job.evaluate("validation")
    if best is not None:
        report["validation"], report["selected"] = selection.finish_selection(
            best, trained["steps"], report["validation"], job.log)
        report.update(stopped_early=trained["stopped_early"],
                      best_step=report["selected"]["step"], evaluations=len(best.history))
    report["test"] = job.evaluate("test")
    job.log(f"{job.test_label}: " + "  ".join(
        f"{k} {v:.4f}" for k, v in report["test"].items() if k != "examples"))
    if chief:
        summaries.write_final(settings.model_dir, job.config, report["validation"],
                              report["test"], trained["steps"], settings.select_metric)
        job.save()
    return report
