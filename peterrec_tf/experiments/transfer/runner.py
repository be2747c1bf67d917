"""The transfer comparison's runs: its recorded configuration, results.json (resumed, never
mixed with another configuration), pre-training per objective and seed, every planned
downstream run (simple baselines fitted here, neural methods fine-tuned by the jobs and
evaluated on their saved models), then the summary and the report."""

import json
import os
import time

import numpy as np

from peterrec_tf import transfer_methods
from peterrec_tf.experiments import provenance, stats
from peterrec_tf.experiments.transfer.data import (TaskData, baseline_scores, make_subset,
                                                   score_model, scorer)
from peterrec_tf.experiments.transfer.plan import (CURVE_METRICS, FORMAT, METHODS,
                                                   PATCH_ACTIVATION, PATCH_PRESETS, PRIMARY,
                                                   applies, labels_of, method_key, run_file)
from peterrec_tf.experiments.transfer.report import write_report
from peterrec_tf.experiments.transfer.summary import summarise
from pipelines.command import Interrupted


# ---------------------------------------------------------------- parameter shares

def parameter_shares(vocab_size, channels, dilations, objective, tasks):
    """{task: {preset: {method: fine-tuned params / FineAll params}}} (the paper's unit),
    plus the absolute counts, from models built (not trained) for each task."""
    from peterrec_tf import objectives
    from peterrec_tf.models import Backbone, build_finetuner, parameter_report

    backbone = Backbone(vocab_size, channels, tuple(dilations),
                        causal=objectives.get(objective).causal)
    backbone.build()
    shares = {}
    for task_name, task, outputs in tasks:
        counts = {}
        for preset, ratio in PATCH_PRESETS.items():
            counts[preset] = {}
            for label, spec in METHODS:
                if isinstance(spec, str):
                    continue
                kwargs = dict(spec)
                kwargs.pop("from_scratch", None)
                if transfer_methods.get(kwargs["method"]).grafts_patches:
                    kwargs["patch_config"] = {"bottleneck_ratio": ratio,
                                              "activation": PATCH_ACTIVATION}
                model = build_finetuner(backbone, task=task, num_outputs=outputs,
                                        loss="ce" if task == "classify" else "pairwise", **kwargs)
                report = parameter_report(model)
                counts[preset][label] = {"trainable": report["trainable"],
                                         "total": report["total"]}
        shares[task_name] = {
            preset: {label: {**c, "share_of_fineall": c["trainable"] / rows["FineAll"]["trainable"]}
                     for label, c in rows.items()} for preset, rows in counts.items()}
    return shares


# ---------------------------------------------------------------- results.json

def load_results(path):
    """results.json of a work directory (None when absent); another format is refused."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        found = json.load(handle)
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise ValueError(f"{path} was written by an older version of this experiment (no "
                         "provenance, other evaluation); use a new --output_dir")
    return found


def save_results(path, payload):
    """Write results.json by a rename, so a reader never sees it half-written."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True, default=str)
        os.replace(tmp, path)
    finally:  # a stop or a full disk leaves no temporary beside it
        if os.path.exists(tmp):
            os.remove(tmp)


def _open_results(path, output_dir, state, configuration):
    """The results to resume, or fresh ones; refused when the work directory holds models
    no recorded session made, or an experiment of another configuration."""
    results = load_results(path)
    models = os.path.join(output_dir, "models")
    if results is None and os.path.isdir(models) and os.listdir(models):
        # they would be resumed as if this run had made them, from code no session recorded
        raise ValueError(f"{models} holds trained models but {path} is missing: which commit "
                         "and configuration made them is unknown; use a new --output_dir or "
                         "remove it")
    if results is None:
        return {"format": FORMAT, "provenance": state, "sessions": [], "pretraining": [],
                "runs": [], "parameter_shares": {}}
    if results["provenance"]["configuration"] != json.loads(json.dumps(configuration)):
        old = results["provenance"]["configuration"]
        changed = sorted(k for k in set(old) | set(configuration)
                         if old.get(k) != json.loads(json.dumps(configuration.get(k))))
        raise ValueError(f"{output_dir} holds an experiment with another configuration "
                         f"({', '.join(changed)}); use a new --output_dir")
    return results


# ---------------------------------------------------------------- the experiment

def run(dataset, output_dir, seeds=3, objectives=("next_item", "masked_item"), channels=32,
        dilations=(1, 4, 1, 4), pretrain_steps=800, finetune_steps=300, batch_size=128,
        learning_rate=5e-3, tasks=None, log=print, select_pretrained=True, eval_seed=0,
        num_candidates=100, exclude_other_targets=True, patch_preset="release",
        curve_points=10, limited_fractions=(0.1, 0.3),
        limited_methods=("popularity", "naivebayes", "finezero", "fineall", "peterrec_b"),
        bootstrap=1000, allow_dirty=False, repo_dir=None, methods=None):
    """Run (or resume) the experiment; returns the results dict written to results.json.

    `methods` (keys such as `fineall`, `peterrec_b`; default all) restricts the main runs.
    """
    if patch_preset not in PATCH_PRESETS:
        raise ValueError(f"--patch_preset must be one of {sorted(PATCH_PRESETS)}, got {patch_preset!r}")
    limited = labels_of(list(limited_methods))
    chosen = labels_of(list(methods)) if methods else [label for label, _ in METHODS]
    fractions = sorted(float(f) for f in limited_fractions)
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"--limited_fractions must lie in (0, 1) (1 is the main run), got {fractions}")
    configuration = {
        "dataset": os.path.abspath(dataset), "seeds": seeds, "objectives": list(objectives),
        "channels": channels, "dilations": [int(d) for d in dilations],
        "pretrain": {"steps": pretrain_steps, "batch_size": 64, "learning_rate": 2e-3,
                     "head": "full", "select_pretrained": select_pretrained,
                     "selection": "best of 8 validations by next-item NDCG@10 (full ranking)"
                     if select_pretrained else "last step"},
        "finetune": {"steps": finetune_steps, "batch_size": batch_size,
                     "learning_rate": learning_rate, "optimizer": "FusedAdam",
                     "patch_preset": patch_preset,
                     "bottleneck_ratio": PATCH_PRESETS[patch_preset],
                     "patch_activation": PATCH_ACTIVATION, "selection": "none (last step)"},
        "tasks": sorted(tasks) if tasks else None,
        "evaluation": {"eval_seed": eval_seed, "num_candidates": num_candidates,
                       "exclude_other_targets": exclude_other_targets,
                       "bootstrap_resamples": bootstrap, "ks": list(stats.KS)},
        "curve_points": curve_points, "limited_fractions": fractions,
        "limited_methods": limited, "methods": chosen}
    state = provenance.collect(configuration, repo_dir)
    provenance.check_clean(state, allow_dirty)
    state["allow_dirty"] = bool(allow_dirty)
    experiment = _Experiment(dataset, output_dir, configuration, state, log)
    experiment.run_all()
    return experiment.finish()


def _quiet(*_):
    """The jobs' log while the experiment runs them (it logs each run's result itself)."""


class _Experiment:
    """One invocation over a work directory: results.json (resumed), the downstream tasks'
    data read once, and the pre-training and downstream runs not yet recorded. What it
    runs comes from the recorded configuration alone."""

    def __init__(self, dataset, output_dir, configuration, state, log):
        self.dataset, self.output_dir, self.config, self.log = (dataset, output_dir,
                                                                configuration, log)
        with open(os.path.join(dataset, "datasets.json"), encoding="utf-8") as handle:
            index = json.load(handle)["datasets"]
        tasks = configuration["tasks"]
        self.downstream = [(name, entry["task"]) for name, entry in sorted(index.items())
                           if entry["task"] != "pretrain" and (not tasks or name in tasks)]
        os.makedirs(os.path.join(output_dir, "per_example"), exist_ok=True)
        self.path = os.path.join(output_dir, "results.json")
        self.results = _open_results(self.path, output_dir, state, configuration)
        self.session = len(self.results["sessions"])
        self.results["sessions"].append({k: state[k] for k in (
            "commit", "dirty", "dirty_files", "started_utc", "versions", "allow_dirty")})
        self.datas = {name: self._read_task(os.path.join(dataset, name))
                      for name, _ in self.downstream}
        self._record_evaluation()
        with open(os.path.join(dataset, "pretrain", "metadata.json"), encoding="utf-8") as handle:
            self.pre_meta = json.load(handle)
        for objective in configuration["objectives"]:
            self.results["parameter_shares"][objective] = parameter_shares(
                self.pre_meta["num_items"], configuration["channels"],
                configuration["dilations"], objective,
                [(n, t, self.datas[n].num_outputs) for n, t in self.downstream])

    def _read_task(self, data_dir):
        evaluation = self.config["evaluation"]
        return TaskData(data_dir, evaluation["eval_seed"], evaluation["num_candidates"],
                        evaluation["exclude_other_targets"])

    def _record_evaluation(self):
        """The test truth the summary needs (never stored in the repo) and each task's
        evaluation record."""
        for name, data in self.datas.items():
            np.savez(os.path.join(self.output_dir, "per_example", f"truth_{name}.npz"),
                     truth=data.splits["test"]["truth"], groups=data.groups("test"))
        self.results["evaluation"] = {name: {
            "task": data.task, "test_examples": len(data.splits["test"]["truth"]),
            "test_users": len(set(data.splits["test"]["users"])),
            "train_examples": len(data.splits["train"]["truth"]), "outputs": data.num_outputs,
            **({"num_candidates": data.num_candidates,
                "candidates": f"true target + {data.num_candidates - 1} of the other "
                              f"{data.num_outputs - 2} targets"} if data.task == "item_rec" else {})}
            for name, data in self.datas.items()}

    def run_all(self):
        """Every (objective, seed): pre-train (once), then its downstream runs not yet
        recorded, results.json saved after each."""
        config = self.config
        done = {(r["objective"], r["seed"], r["task"], r["method"], r["fraction"])
                for r in self.results["runs"]}
        plan = [(name, task, label, spec, 1.0) for name, task in self.downstream
                for label, spec in METHODS if label in config["methods"] and applies(spec, task)]
        plan += [(name, task, label, spec, f) for f in config["limited_fractions"]
                 for name, task in self.downstream for label, spec in METHODS
                 if label in config["limited_methods"] and applies(spec, task)]
        recorded = {(p["objective"], p["seed"]) for p in self.results["pretraining"]}
        for objective in config["objectives"]:
            for seed in range(config["seeds"]):
                todo = [p for p in plan if (objective, seed, p[0], p[2], p[4]) not in done]
                if not todo and (objective, seed) in recorded:
                    continue
                pre_dir = self._pretrain(objective, seed, recorded)
                for task_name, task, label, spec, fraction in todo:
                    self._run_one(pre_dir, objective, seed, task_name, task, label, spec,
                                  fraction)

    def _pretrain(self, objective, seed, recorded):
        """Pre-train (or find pre-trained) one objective and seed; returns its directory."""
        from peterrec_tf.jobs.pretraining import run_pretrain

        settings = self.config["pretrain"]
        steps = settings["steps"]
        pre_dir = os.path.join(self.output_dir, "models", f"pre_{objective}_{seed}")
        selection = ({"eval_every": max(1, steps // 8), "select_metric": "ndcg@10"}
                     if settings["select_pretrained"] else {})
        pre = run_pretrain(os.path.join(self.dataset, "pretrain"), pre_dir, objective=objective,
                           channels=self.config["channels"],
                           dilations=tuple(self.config["dilations"]), train_steps=steps,
                           batch_size=settings["batch_size"],
                           learning_rate=settings["learning_rate"], seed=seed,
                           head=settings["head"], log_every=10 ** 9, checkpoint_every=steps,
                           log=_quiet, ks=(5, 10), eval_ranking="full", **selection)
        if pre["training"]["interrupted"]:
            raise Interrupted(pre_dir)
        step = pre["selected"]["step"] if "selected" in pre else pre["training"]["steps"]
        if (objective, seed) not in recorded:
            self.results["pretraining"].append({
                "objective": objective, "seed": seed, "selected_step": step,
                "ranking": "full: the true next item against all "
                           f"{self.pre_meta['num_items'] - 1} items",
                "validation": pre["validation"], "test": pre["test"], "session": self.session,
                "train_seconds": pre["training"]["train_seconds"]})
            recorded.add((objective, seed))
        self.log(f"{objective} seed {seed} pre-trained: weights of step {step}, test (full "
                 f"ranking) hr@10 {pre['test']['hr@10']:.4f} mrr@5 {pre['test']['mrr@5']:.4f}")
        return pre_dir

    def _task_data(self, task_name, fraction):
        """A task's data; below fraction 1 its limited-data subset (made once)."""
        data = self.datas[task_name]
        if fraction < 1:
            if (task_name, fraction) not in self.datas:
                self.datas[(task_name, fraction)] = self._read_task(make_subset(
                    data.data_dir,
                    os.path.join(self.output_dir, "data", f"{task_name}_{fraction:g}"),
                    fraction, self.config["evaluation"]["eval_seed"]))
            data = self.datas[(task_name, fraction)]
        return data

    def _run_one(self, pre_dir, objective, seed, task_name, task, label, spec, fraction):
        """One downstream run: fitted or fine-tuned, evaluated, recorded and saved."""
        started = time.time()
        data = self._task_data(task_name, fraction)
        record = {"objective": objective, "seed": seed, "task": task_name,
                  "method": label, "fraction": fraction, "metric": PRIMARY[task],
                  "train_examples": len(data.splits["train"]["truth"]),
                  "session": self.session}
        if isinstance(spec, str):
            outputs = {}
            for split in ("validation", "test"):
                scores, details = baseline_scores(spec, data, split)
                outputs[split] = data.evaluate(split, scores)
            record.update(baseline=details, trainable=0)
        else:
            outputs = self._finetune(pre_dir, record, spec, data)
        record.update(validation=outputs["validation"][0], test=outputs["test"][0],
                      value=outputs["test"][0][PRIMARY[task]],
                      seconds=time.time() - started)
        np.savez(os.path.join(self.output_dir, "per_example", run_file(record)),
                 **outputs["test"][1])
        self.results["runs"].append(record)
        self.log(f"{objective} seed {seed} {task_name:<10} {label:<13} "
                 + (f"{fraction:.0%} " if fraction < 1 else "")
                 + f"{PRIMARY[task]} {record['value']:.4f} ({record['seconds']:.1f}s)")
        save_results(self.path, self.results)

    def _finetune(self, pre_dir, record, spec, data):
        """Fine-tune one neural run from `pre_dir` and evaluate its saved model; fills
        `record`'s parameter counts and learning curve, returns {split: outputs}."""
        from peterrec_tf.jobs.finetuning import run_finetune
        from peterrec_tf.model_dir import load_model_dir

        settings, curve_points = self.config["finetune"], self.config["curve_points"]
        steps, fraction = settings["steps"], record["fraction"]
        kwargs = dict(spec)
        if transfer_methods.get(kwargs["method"]).grafts_patches:
            kwargs["bottleneck_ratio"] = settings["bottleneck_ratio"]
            kwargs["patch_activation"] = settings["patch_activation"]
        every = max(1, steps // max(1, curve_points))
        suffix = f"_{fraction:g}" if fraction < 1 else ""
        run_dir = os.path.join(self.output_dir, "models",
                               f"{record['objective']}_{record['seed']}_{record['task']}_"
                               f"{method_key(record['method'])}{suffix}")
        out = run_finetune(pre_dir, data.data_dir, run_dir, batch_size=settings["batch_size"],
                           train_steps=steps, learning_rate=settings["learning_rate"],
                           seed=record["seed"], log_every=10 ** 9, checkpoint_every=every,
                           keep_checkpoints=steps // every + 2, log=_quiet,
                           eval_ranking="full",  # its own figures are not used
                           **kwargs)
        if out["training"]["interrupted"]:
            raise Interrupted(run_dir)
        model, _, _ = load_model_dir(run_dir)
        framing = model.framing  # as finetune trained it
        call = scorer(model)
        outputs = {split: data.evaluate(split, score_model(model, data.batches(split, framing),
                                                           call))
                   for split in ("validation", "test")}
        record.update(trainable=out["parameters"]["trainable"],
                      total=out["parameters"]["total"],
                      curve=_curve(run_dir, data) if curve_points else [],
                      train_seconds=out["training"]["train_seconds"])
        return outputs

    def finish(self):
        """The summary, results.json and the report; returns the results."""
        evaluation = self.config["evaluation"]
        self.results["summary"] = summarise(self.results, self.output_dir,
                                            evaluation["bootstrap_resamples"],
                                            evaluation["eval_seed"])
        save_results(self.path, self.results)
        write_report(self.results, self.output_dir)
        return self.results


def _curve(model_dir, data):
    """Test and validation metrics of every checkpoint a run kept (its learning curve)."""
    import tensorflow as tf

    from peterrec_tf.model_dir import load_model_dir

    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    if state is None:
        return []
    model, _, _ = load_model_dir(model_dir)
    framing = model.framing
    checkpoint = tf.train.Checkpoint(model=model)
    call = scorer(model)
    points = []
    for path in state.all_model_checkpoint_paths:
        checkpoint.restore(path).expect_partial()
        point = {"step": int(path.rsplit("-", 1)[1])}
        for split in ("validation", "test"):
            scores = score_model(model, data.batches(split, framing), call)
            metrics = data.evaluate(split, scores)[0]
            point[split] = {k: metrics[k] for k in CURVE_METRICS[data.task]}
        points.append(point)
    return sorted(points, key=lambda p: p["step"])
