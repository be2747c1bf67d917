"""The paper's transfer comparison (Tables 2, 3, 7; Figures 4-6) as one command.

    python -m peterrec_tf.experiments.transfer --dataset=DIR --seeds=3 --output_dir=WORK

DIR is a multi-task preparation (`pipelines.prepare --format=synthetic|movielens_100k`)
with `datasets.json`. For each pre-training objective (causal next-item, masked-item) and
seed it pre-trains once (recording the next-item metrics over the whole item pool), then
for every downstream task runs the simple baselines (LabelCS; Popularity for item
recommendation; naive Bayes on a bag of items for classification, its smoothing chosen by
cross-validation on training users) and the neural methods: FineZero and PeterZero (no
pre-training), FineCLS, FineLast, FineAll, PeterRec with insertions b, c, d, e. Every
neural run has the same fixed budget (nothing is selected on any split) and records a
learning curve; a limited-data run repeats some methods on 10% / 30% of the training users.

Evaluation is the experiment's own, on saved models: sampled ranking against candidates
fixed by `--eval_seed` (the same for every method and training seed, so the std over
seeds is training noise only; the user's other held-out targets are never negatives),
full ranking over every target next to it, accuracy plus balanced accuracy and macro-F1
for classification, 95% bootstrap intervals over test users (paired for differences).

Writes into WORK: results.json (provenance: commit, dirty flag, configuration, versions;
pre-training per seed; every run; the summary with intervals), results.md, results.svg,
learning_curves.svg, limited_data.svg; models/, data subsets and per-example outputs stay
in WORK (never copy those into the repository: they derive from the data). A dirty work
tree is refused unless --allow_dirty.
"""

import collections
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from peterrec_tf.experiments import provenance, stats, svg

METHODS = [  # (label, finetune kwargs, or the name of a simple baseline)
    ("LabelCS", "majority"),
    ("Popularity", "popularity"),
    ("NaiveBayes", "naive_bayes"),
    ("FineZero", {"method": "fineall", "from_scratch": True}),
    ("PeterZero", {"method": "peterrec", "from_scratch": True}),
    ("FineCLS", {"method": "finecls"}),
    ("FineLast", {"method": "finelast", "finelast_blocks": 1}),
    ("FineAll", {"method": "fineall"}),
    ("PeterRec (b)", {"method": "peterrec", "insertion": "b"}),
    ("PeterRec (c)", {"method": "peterrec", "insertion": "c"}),
    ("PeterRec (d)", {"method": "peterrec", "insertion": "d"}),
    ("PeterRec (e)", {"method": "peterrec", "insertion": "e"}),
]
BASELINE_TASKS = {"majority": ("classify", "item_rec"), "popularity": ("item_rec",),
                  "naive_bayes": ("classify",)}
#: patch bottleneck as a share of C: the release's C/4 (the project's default), the paper's C/8
PATCH_PRESETS = {"release": 0.25, "paper": 0.125}
PATCH_ACTIVATION = "gelu_tanh"
PRIMARY = {"classify": "accuracy", "item_rec": "hr@5"}
CURVE_METRICS = {"classify": ("accuracy", "balanced_accuracy"),
                 "item_rec": ("hr@5", "mrr@5", "full_hr@5", "full_mrr@5")}
FORMAT = 2


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped a run (checkpointed); re-running the command resumes."""


def method_key(label):
    """`PeterRec (b)` -> `peterrec_b`: the names the flags use."""
    return label.lower().replace(" (", "_").replace(")", "")


def applies(spec, task):
    return not isinstance(spec, str) or task in BASELINE_TASKS[spec]


def _methods(keys):
    known = {method_key(label): label for label, _ in METHODS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(known)}")
    return [known[k] for k in keys]


# ---------------------------------------------------------------- data

def read_split(data_dir, split):
    """{"users", "items", "truth"} of one split, in file order (item ids as int arrays)."""
    import tensorflow as tf

    from pipelines import inputs, schema

    meta = inputs.read_metadata(data_dir)
    key = schema.LABEL if meta["task"] == "classify" else schema.TARGET
    users, items, truth = [], [], []
    for path in inputs.shard_files(data_dir, split):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            users.append(feature[schema.USER_ID].bytes_list.value[0].decode("utf-8"))
            items.append(np.array(feature[schema.ITEM_IDS].int64_list.value, dtype=np.int64))
            truth.append(feature[key].int64_list.value[0])
    return {"users": users, "items": items, "truth": np.array(truth, dtype=np.int64)}


class TaskData:
    """One downstream dataset read once: splits, candidates fixed by the evaluation seed."""

    def __init__(self, data_dir, eval_seed, num_candidates, exclude_other_targets):
        from pipelines import inputs

        self.data_dir = data_dir
        self.meta = inputs.read_metadata(data_dir)
        self.task = self.meta["task"]
        self.splits = {s: read_split(data_dir, s) for s in ("train", "validation", "test")}
        self.eval_seed, self.exclude = eval_seed, exclude_other_targets
        self.num_outputs = (self.meta["num_targets"] if self.task == "item_rec"
                            else self.meta["num_classes"])
        # every example needs num_candidates - 1 negatives after its exclusions
        most = max([max(collections.Counter(self.splits[s]["users"]).values(), default=1)
                    for s in ("validation", "test")])
        self.num_candidates = max(2, min(num_candidates, self.num_outputs - 1 - (
            most if exclude_other_targets else 1) + 1))
        self._candidates, self._batches = {}, {}

    def candidates(self, split):
        if split not in self._candidates:
            data = self.splits[split]
            self._candidates[split] = stats.sample_candidates(
                data["truth"], data["users"], self.num_outputs, self.num_candidates,
                self.eval_seed, self.exclude)
        return self._candidates[split]

    def batches(self, split, framing):
        """A split's histories framed by `framing` (the model's own), built once."""
        key = (split, json.dumps(framing.get_config(), sort_keys=True))
        if key not in self._batches:
            self._batches[key] = frame_batches(self.splits[split]["items"], framing)
        return self._batches[key]

    def groups(self, split):
        """Per example: the index of its user (bootstrap resamples users)."""
        return np.unique(self.splits[split]["users"], return_inverse=True)[1]

    def evaluate(self, split, scores):
        """(metrics, per-example arrays) of `[n, outputs]` scores on a split."""
        data = self.splits[split]
        if self.task == "classify":
            pred = np.argmax(scores, axis=1)
            return stats.classification_metrics(data["truth"], pred), {"pred": pred}
        sampled = stats.sampled_ranks(scores, self.candidates(split))
        full = stats.full_ranks(scores, data["truth"], data["users"], self.exclude)
        metrics = {}
        for k in stats.KS:
            for name, gains in stats.ranking_gains(sampled, k).items():
                metrics[name] = float(gains.mean())
            for name, gains in stats.ranking_gains(full, k).items():
                metrics["full_" + name] = float(gains.mean())
        return metrics, {"sampled_ranks": sampled, "full_ranks": full}


def baseline_scores(spec, data, split):
    """(`[n, outputs]` scores, details) of a simple baseline fitted on the train split."""
    train, n = data.splits["train"], len(data.splits[split]["truth"])
    if spec == "majority":
        top = int(np.bincount(train["truth"], minlength=data.num_outputs).argmax())
        scores = np.zeros([n, data.num_outputs])
        scores[:, top] = 1.0
        return scores, {"most_frequent": top}
    if spec == "popularity":
        return stats.popularity_scores(train["truth"], data.num_outputs, n), {
            "ranks": "target count in the training split; ties count against the true target"}
    bags = stats.bag_of_items(train["items"], data.meta["num_items"])
    alpha, cv = stats.choose_alpha(bags, train["truth"], data.num_outputs, seed=data.eval_seed)
    model = stats.NaiveBayes(alpha).fit(bags, train["truth"], data.num_outputs)
    scores = model.scores(stats.bag_of_items(data.splits[split]["items"], data.meta["num_items"]))
    return scores, {"alpha": alpha, "cv_accuracy": {str(a): v for a, v in cv.items()},
                    "cv": "5-fold on training users"}


def scorer(model):
    """One traced scoring function per model (a new tf.function per call would retrace)."""
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def frame_batches(items, framing, batch_size=256):
    """Unpadded histories framed as the model reads them (`peterrec_tf.data.framing`), in batches."""
    import tensorflow as tf

    return [framing.frame(tf.ragged.constant(
        [list(i) for i in items[start:start + batch_size]], dtype=tf.int64))
        for start in range(0, len(items), batch_size)]


def score_model(model, batches, call=None):
    """`[n, outputs]` scores of a fine-tuned model on framed batches."""
    call = call or scorer(model)
    out = [call(x).numpy() for x in batches]
    return np.concatenate(out) if out else np.zeros([0, 1])


def make_subset(data_dir, out_dir, fraction, seed):
    """A copy of a downstream dataset whose train split keeps `fraction` of its users
    (chosen by `seed`, all of a chosen user's instances); validation/test unchanged."""
    import tensorflow as tf

    from pipelines import inputs, metadata_checksum, schema
    from pipelines.writer import shard_name, shard_record

    if os.path.exists(os.path.join(out_dir, "metadata.json")):
        return out_dir
    records = []
    for path in inputs.shard_files(data_dir, "train"):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            raw = record.numpy()
            user = tf.train.Example.FromString(raw).features.feature[schema.USER_ID]
            records.append((user.bytes_list.value[0].decode("utf-8"), raw))
    users = sorted({u for u, _ in records})
    keep = set(np.random.default_rng([seed, 7]).permutation(users)[
        :max(1, int(math.ceil(fraction * len(users))))].tolist())
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(os.path.join(data_dir, "vocab"), os.path.join(tmp, "vocab"))
    for split in ("validation", "test"):
        for path in inputs.shard_files(data_dir, split):
            shutil.copy(path, tmp)
    kept = [raw for u, raw in records if u in keep]
    with tf.io.TFRecordWriter(os.path.join(tmp, shard_name("train", 0, 1)), "GZIP") as writer:
        for raw in kept:
            writer.write(raw)
    meta = inputs.read_metadata(data_dir)
    meta["splits"] = dict(meta["splits"], train=len(kept))
    if "shards" in meta:  # what readers verify: the new train shard, the copied others
        meta["shards"] = {name: entry for name, entry in meta["shards"].items()
                          if not name.startswith("train-")}
        meta["shards"][shard_name("train", 0, 1)] = shard_record(
            os.path.join(tmp, shard_name("train", 0, 1)), len(kept))
    meta["fingerprint"] = f"{meta.get('fingerprint')}-users{fraction}-seed{seed}"
    meta["subset"] = {"of": os.path.abspath(data_dir), "fraction_of_train_users": fraction,
                      "users": len(keep), "of_users": len(users), "seed": seed}
    meta = metadata_checksum.sealed(tmp, meta)  # its content changed: checksummed anew
    with open(os.path.join(tmp, "metadata.json"), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, sort_keys=True)
    os.replace(tmp, out_dir)
    return out_dir


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
                if kwargs["method"] == "peterrec":
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


# ---------------------------------------------------------------- the experiment

def _curve(model_dir, data):
    """Test and validation metrics of every checkpoint a run kept (its learning curve)."""
    import tensorflow as tf

    from peterrec_tf.model_dir import load_model_dir

    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    if state is None:
        return []
    model, config, _ = load_model_dir(model_dir)
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


def _load_results(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        found = json.load(handle)
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise ValueError(f"{path} was written by an older version of this experiment (no "
                         "provenance, other evaluation); use a new --output_dir")
    return found


def _save(path, payload):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


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
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain

    if patch_preset not in PATCH_PRESETS:
        raise ValueError(f"--patch_preset must be one of {sorted(PATCH_PRESETS)}, got {patch_preset!r}")
    limited = _methods(list(limited_methods))
    chosen = _methods(list(methods)) if methods else [label for label, _ in METHODS]
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

    with open(os.path.join(dataset, "datasets.json"), encoding="utf-8") as handle:
        index = json.load(handle)["datasets"]
    downstream = [(name, entry["task"]) for name, entry in sorted(index.items())
                  if entry["task"] != "pretrain" and (not tasks or name in tasks)]
    os.makedirs(os.path.join(output_dir, "per_example"), exist_ok=True)
    path = os.path.join(output_dir, "results.json")
    results = _load_results(path)
    models = os.path.join(output_dir, "models")
    if results is None and os.path.isdir(models) and os.listdir(models):
        # they would be resumed as if this run had made them, from code no session recorded
        raise ValueError(f"{models} holds trained models but {path} is missing: which commit "
                         "and configuration made them is unknown; use a new --output_dir or "
                         "remove it")
    if results is None:
        results = {"format": FORMAT, "provenance": state, "sessions": [], "pretraining": [],
                   "runs": [], "parameter_shares": {}}
    elif results["provenance"]["configuration"] != json.loads(json.dumps(configuration)):
        old = results["provenance"]["configuration"]
        changed = sorted(k for k in set(old) | set(configuration)
                         if old.get(k) != json.loads(json.dumps(configuration.get(k))))
        raise ValueError(f"{output_dir} holds an experiment with another configuration "
                         f"({', '.join(changed)}); use a new --output_dir")
    session = len(results["sessions"])
    results["sessions"].append({k: state[k] for k in ("commit", "dirty", "dirty_files",
                                                      "started_utc", "versions", "allow_dirty")})
    done = {(r["objective"], r["seed"], r["task"], r["method"], r["fraction"])
            for r in results["runs"]}
    quiet = lambda *_: None  # noqa: E731
    datas = {name: TaskData(os.path.join(dataset, name), eval_seed, num_candidates,
                            exclude_other_targets) for name, _ in downstream}
    for name, data in datas.items():  # what the summary needs (never stored in the repo)
        np.savez(os.path.join(output_dir, "per_example", f"truth_{name}.npz"),
                 truth=data.splits["test"]["truth"], groups=data.groups("test"))
    results["evaluation"] = {name: {
        "task": data.task, "test_examples": len(data.splits["test"]["truth"]),
        "test_users": len(set(data.splits["test"]["users"])),
        "train_examples": len(data.splits["train"]["truth"]), "outputs": data.num_outputs,
        **({"num_candidates": data.num_candidates,
            "candidates": f"true target + {data.num_candidates - 1} of the other "
                          f"{data.num_outputs - 2} targets"} if data.task == "item_rec" else {})}
        for name, data in datas.items()}
    pre_meta = json.load(open(os.path.join(dataset, "pretrain", "metadata.json")))
    for objective in objectives:
        results["parameter_shares"][objective] = parameter_shares(
            pre_meta["num_items"], channels, dilations, objective,
            [(n, t, datas[n].num_outputs) for n, t in downstream])
    plan = [(name, task, label, spec, 1.0) for name, task in downstream
            for label, spec in METHODS if label in chosen and applies(spec, task)]
    plan += [(name, task, label, spec, f) for f in fractions for name, task in downstream
             for label, spec in METHODS if label in limited and applies(spec, task)]
    recorded = {(p["objective"], p["seed"]) for p in results["pretraining"]}
    for objective in objectives:
        for seed in range(seeds):
            todo = [p for p in plan if (objective, seed, p[0], p[2], p[4]) not in done]
            if not todo and (objective, seed) in recorded:
                continue
            pre_dir = os.path.join(output_dir, "models", f"pre_{objective}_{seed}")
            selection = ({"eval_every": max(1, pretrain_steps // 8), "select_metric": "ndcg@10"}
                         if select_pretrained else {})
            pre = run_pretrain(os.path.join(dataset, "pretrain"), pre_dir, objective=objective,
                               channels=channels, dilations=dilations, train_steps=pretrain_steps,
                               batch_size=64, learning_rate=2e-3, seed=seed, head="full",
                               log_every=10 ** 9, checkpoint_every=pretrain_steps, log=quiet,
                               ks=(5, 10), eval_ranking="full", **selection)
            if pre["training"]["interrupted"]:
                raise Interrupted(pre_dir)
            step = pre["selected"]["step"] if "selected" in pre else pre["training"]["steps"]
            if (objective, seed) not in recorded:
                results["pretraining"].append({
                    "objective": objective, "seed": seed, "selected_step": step,
                    "ranking": "full: the true next item against all "
                               f"{pre_meta['num_items'] - 1} items",
                    "validation": pre["validation"], "test": pre["test"], "session": session,
                    "train_seconds": pre["training"]["train_seconds"]})
                recorded.add((objective, seed))
            log(f"{objective} seed {seed} pre-trained: weights of step {step}, test (full "
                f"ranking) hr@10 {pre['test']['hr@10']:.4f} mrr@5 {pre['test']['mrr@5']:.4f}")
            for task_name, task, label, spec, fraction in todo:
                started = time.time()
                data = datas[task_name]
                data_dir = data.data_dir
                if fraction < 1:
                    if (task_name, fraction) not in datas:
                        datas[(task_name, fraction)] = TaskData(make_subset(
                            data.data_dir,
                            os.path.join(output_dir, "data", f"{task_name}_{fraction:g}"),
                            fraction, eval_seed), eval_seed, num_candidates, exclude_other_targets)
                    data = datas[(task_name, fraction)]
                    data_dir = data.data_dir
                record = {"objective": objective, "seed": seed, "task": task_name,
                          "method": label, "fraction": fraction, "metric": PRIMARY[task],
                          "train_examples": len(data.splits["train"]["truth"]),
                          "session": session}
                if isinstance(spec, str):
                    outputs = {}
                    for split in ("validation", "test"):
                        scores, details = baseline_scores(spec, data, split)
                        outputs[split] = data.evaluate(split, scores)
                    record.update(baseline=details, trainable=0)
                else:
                    kwargs = dict(spec)
                    if kwargs["method"] == "peterrec":
                        kwargs["bottleneck_ratio"] = PATCH_PRESETS[patch_preset]
                        kwargs["patch_activation"] = PATCH_ACTIVATION
                    every = max(1, finetune_steps // max(1, curve_points))
                    suffix = f"_{fraction:g}" if fraction < 1 else ""
                    run_dir = os.path.join(output_dir, "models", f"{objective}_{seed}_{task_name}_"
                                           f"{method_key(label)}{suffix}")
                    out = run_finetune(pre_dir, data_dir, run_dir, batch_size=batch_size,
                                       train_steps=finetune_steps, learning_rate=learning_rate,
                                       seed=seed, log_every=10 ** 9, checkpoint_every=every,
                                       keep_checkpoints=finetune_steps // every + 2, log=quiet,
                                       eval_ranking="full",  # its own figures are not used
                                       **kwargs)
                    if out["training"]["interrupted"]:
                        raise Interrupted(run_dir)
                    from peterrec_tf.model_dir import load_model_dir

                    model, _, _ = load_model_dir(run_dir)
                    framing = model.framing  # as finetune trained it
                    call = scorer(model)
                    outputs = {split: data.evaluate(split, score_model(
                        model, data.batches(split, framing), call))
                        for split in ("validation", "test")}
                    record.update(trainable=out["parameters"]["trainable"],
                                  total=out["parameters"]["total"],
                                  curve=_curve(run_dir, data) if curve_points else [],
                                  train_seconds=out["training"]["train_seconds"])
                record.update(validation=outputs["validation"][0], test=outputs["test"][0],
                              value=outputs["test"][0][PRIMARY[task]],
                              seconds=time.time() - started)
                np.savez(os.path.join(output_dir, "per_example", _run_file(record)),
                         **outputs["test"][1])
                results["runs"].append(record)
                log(f"{objective} seed {seed} {task_name:<10} {label:<13} "
                    + (f"{fraction:.0%} " if fraction < 1 else "")
                    + f"{PRIMARY[task]} {record['value']:.4f} ({record['seconds']:.1f}s)")
                _save(path, results)
    results["summary"] = summarise(results, output_dir, bootstrap, eval_seed)
    _save(path, results)
    write_report(results, output_dir)
    return results


def _run_file(record):
    return (f"{record['objective']}_{record['seed']}_{record['task']}_{method_key(record['method'])}"
            f"_{record['fraction']:g}.npz")


# ---------------------------------------------------------------- summary

def _ranking_outcomes(files, metric):
    """`[seeds, examples]` per-example gains of a ranking metric, one row per seed's run."""
    kind, k = metric.split("@")
    column = "full_ranks" if kind.startswith("full_") else "sampled_ranks"
    name = kind.replace("full_", "") + "@" + k
    return np.stack([stats.ranking_gains(np.load(f)[column], int(k))[name] for f in files])


#: the from-scratch counterpart of each method that starts from the pre-trained backbone
SCRATCH = {"FineCLS": "FineZero", "FineLast": "FineZero", "FineAll": "FineZero",
           "PeterRec (b)": "PeterZero", "PeterRec (c)": "PeterZero",
           "PeterRec (d)": "PeterZero", "PeterRec (e)": "PeterZero"}
#: the paired comparisons every main entry records: (summary key, reference or None for
#: the best simple baseline)
COMPARISONS = (("vs_fineall", "FineAll"), ("vs_best_simple", None), ("vs_scratch", SCRATCH))
INTERVALS = ("95% two-level percentile bootstrap: training seeds drawn with replacement, then "
             "test users with replacement (a user's instances stay together), {n} resamples; "
             "it covers training noise and the choice of test users")
USER_INTERVALS = ("95% percentile bootstrap over test users only ({n} resamples) of the mean "
                  "over seeds, the trained models held fixed (the older interval)")


def summarise(results, output_dir, resamples=1000, seed=0):
    """Means, sample stds over seeds and paired 95% intervals of every (objective, task,
    method) at full data (differences vs FineAll, vs the best simple baseline and vs the
    method's from-scratch counterpart): `ci95` the two-level bootstrap over seeds and users,
    `ci95_users` the user-only one beside it; means +- std of the limited-data and curve
    runs."""
    groups = collections.defaultdict(list)
    for r in results["runs"]:
        groups[(r["objective"], r["task"], r["method"], r["fraction"])].append(r)
    summary = {"main": [], "limited": [], "curves": [],
               "intervals": INTERVALS.format(n=resamples),
               "intervals_users": USER_INTERVALS.format(n=resamples),
               "std": "sample standard deviation (n-1) over training seeds"}
    tasks = sorted({r["task"] for r in results["runs"]})
    objectives = sorted({r["objective"] for r in results["runs"]})
    for task in tasks:
        truth_file = os.path.join(output_dir, "per_example", f"truth_{task}.npz")
        saved = np.load(truth_file)
        truth, user_groups = saved["truth"], saved["groups"]
        kind = "item_rec" if any(r["metric"] == "hr@5" for r in results["runs"]
                                 if r["task"] == task) else "classify"
        primary = PRIMARY[kind]

        def outcomes(runs):
            """{seed: per-example outcomes `[examples]`} of one method's runs."""
            runs = sorted(runs, key=lambda r: r["seed"])
            files = [os.path.join(output_dir, "per_example", _run_file(r)) for r in runs]
            if kind == "item_rec":
                rows = _ranking_outcomes(files, primary)
            else:
                rows = np.stack([(np.load(f)["pred"] == truth).astype(np.float64) for f in files])
            return {r["seed"]: row for r, row in zip(runs, rows)}

        def intervals(matrix):
            """(two-level interval, user-only interval) of a `[seeds, examples]` matrix."""
            _, low, high = stats.two_level_bootstrap_ci(matrix, user_groups, resamples, seed)
            _, u_low, u_high = stats.bootstrap_ci(lambda idx: matrix.mean(axis=0)[idx].mean(),
                                                  user_groups, resamples, seed)
            return [low, high], [u_low, u_high]

        for objective in objectives:
            rows = {label: groups.get((objective, task, label, 1.0), []) for label, _ in METHODS}
            rows = {k: v for k, v in rows.items() if v}
            per_seed = {label: outcomes(runs) for label, runs in rows.items()}
            simple = [label for label, spec in METHODS if isinstance(spec, str) and label in rows]
            best_simple = max(simple, key=lambda m: np.mean(list(per_seed[m].values()))) \
                if simple else None
            for label, runs in rows.items():
                values = [r["value"] for r in runs]
                matrix = np.stack(list(per_seed[label].values()))
                ci, ci_users = intervals(matrix)
                entry = {"objective": objective, "task": task, "method": label,
                         "metric": primary, "seeds": len(runs), "mean": float(np.mean(values)),
                         "std": stats.sample_std(values), "ci95": ci, "ci95_users": ci_users,
                         "means": {m: float(np.mean([r["test"][m] for r in runs]))
                                   for m in runs[0]["test"]}}
                for name, reference in COMPARISONS:
                    reference = (best_simple if reference is None else
                                 reference.get(label) if isinstance(reference, dict) else reference)
                    if not reference or reference not in per_seed or reference == label:
                        continue
                    common = sorted(set(per_seed[label]) & set(per_seed[reference]))
                    diff = np.stack([per_seed[label][s] - per_seed[reference][s] for s in common])
                    ci, ci_users = intervals(diff)
                    entry[name] = {"reference": reference, "difference": float(diff.mean()),
                                   "ci95": ci, "ci95_users": ci_users, "seeds": common,
                                   "seed_differences": diff.mean(axis=1).tolist()}
                summary["main"].append(entry)
            for label, _ in METHODS:
                for fraction in sorted({r["fraction"] for r in results["runs"]}):
                    runs = groups.get((objective, task, label, fraction), [])
                    if runs and (fraction < 1 or label in results["provenance"]["configuration"]
                                 ["limited_methods"]):
                        values = [r["value"] for r in runs]
                        summary["limited"].append({
                            "objective": objective, "task": task, "method": label,
                            "fraction": fraction, "train_examples": runs[0]["train_examples"],
                            "mean": float(np.mean(values)), "std": stats.sample_std(values),
                            "seeds": len(runs)})
                runs = groups.get((objective, task, label, 1.0), [])
                if runs and runs[0].get("curve"):
                    steps = [p["step"] for p in runs[0]["curve"]]
                    for split in ("validation", "test"):
                        per_step = [[p[split][primary] for p in r["curve"]] for r in runs
                                    if [p["step"] for p in r["curve"]] == steps]
                        summary["curves"].append({
                            "objective": objective, "task": task, "method": label,
                            "steps": steps, "split": split, "metric": primary,
                            "mean": np.mean(per_step, axis=0).tolist(),
                            "std": ([stats.sample_std(c) for c in np.array(per_step).T]
                                    if len(per_step) > 1 else None)})
    return summary


# ---------------------------------------------------------------- report

def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value, digits=3):
    return f"{value:+.{digits}f}"


def _interval(ci, signed=False):
    """`[low, high]`, or `[n/a]` where an interval could not be computed (one seed)."""
    if not ci:
        return "[n/a]"
    show = _signed if signed else (lambda v: f"{v:.3f}")
    return f"[{show(ci[0])}, {show(ci[1])}]"


def write_report(results, output_dir):
    """results.md and the three SVG charts from results.json's summary."""
    summary, config = results["summary"], results["provenance"]["configuration"]
    prov = results["provenance"]
    main = summary["main"]
    objectives = sorted({e["objective"] for e in main})
    tasks = sorted({e["task"] for e in main})
    kinds = {e["task"]: ("item_rec" if e["metric"] == "hr@5" else "classify") for e in main}
    order = ["python", *provenance.PACKAGES]  # stable however results.json sorted its keys
    versions = ", ".join(f"{k} {prov['versions'][k]}" for k in sorted(
        prov["versions"], key=lambda k: (order.index(k) if k in order else len(order), k)))
    commits = sorted({s["commit"] or "unknown" for s in results["sessions"]})
    dirty = any(s["dirty"] for s in results["sessions"])
    lines = ["# Transfer results", "",
             f"Code: commit {', '.join(commits)}" + (" (DIRTY work tree, --allow_dirty)" if dirty
                                                       else " (clean work tree)")
             + f"; {versions}. Configuration: results.json `provenance.configuration`.", "",
             f"Cells: mean over {config['seeds']} training seeds +- {summary['std']}; "
             f"[{summary['intervals']}]. Differences are paired (the same seeds and test "
             "users); \"vs from scratch\" compares a method with its counterpart trained without "
             "pre-training (FineCLS/FineLast/FineAll vs FineZero, PeterRec vs PeterZero). "
             + (f"Columns marked users-only: {summary['intervals_users']}. "
                if summary.get("intervals_users") else "")
             + (f"{summary['rewritten']['note']} " if summary.get("rewritten") else "")
             + "Sampled ranking: the true target among " + ", ".join(
                 f"{e['num_candidates']} ({name}: {e['candidates']})"
                 for name, e in sorted(results.get("evaluation", {}).items()) if "candidates" in e)
             + f" candidates fixed by evaluation seed {config['evaluation']['eval_seed']} (the same "
             "for every method and training seed)"
             + (", the user's other held-out targets never negatives" if config["evaluation"]
                ["exclude_other_targets"] else "")
             + "; full ranking: against every target (the user's other held-out targets "
             "excluded). Ties count against the true item.", ""]
    # pre-training
    lines += ["## Test sets", "", "| task | kind | test examples | test users | train examples |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} | {e['task']} | {e['test_examples']} | {e['test_users']} | "
              f"{e['train_examples']} |" for name, e in sorted(results.get("evaluation", {}).items())]
    lines.append("")
    lines += ["## Pre-training (next item, full ranking over the whole item pool, test split)", "",
              "| objective | seed | weights of step | validation NDCG@10 | test HR@10 | "
              "test NDCG@10 | test MRR@5 |",
              "|---|---|---|---|---|---|---|"]
    for p in sorted(results["pretraining"], key=lambda p: (p["objective"], p["seed"])):
        lines.append(f"| {p['objective']} | {p['seed']} | {p['selected_step']} | "
                     f"{_fmt(p['validation'].get('ndcg@10'), 4)} | {_fmt(p['test']['hr@10'], 4)} | "
                     f"{_fmt(p['test']['ndcg@10'], 4)} | {_fmt(p['test']['mrr@5'], 4)} |")
    lines.append("")
    # shares
    lines += ["## Fine-tuned parameters per task, relative to FineAll (the paper's unit)", "",
              f"Runs used the `{config['finetune']['patch_preset']}` patch (bottleneck "
              f"{config['finetune']['bottleneck_ratio']:g} C); both presets are listed: release "
              "C/4, paper C/8.", ""]
    for objective in objectives:
        shares = results["parameter_shares"][objective]
        lines += [f"### {objective}", "",
                  "| method | " + " | ".join(f"{t} C/4 | {t} C/8" for t in tasks) + " |",
                  "|---" * (2 * len(tasks) + 1) + "|"]
        for label, spec in METHODS:
            if isinstance(spec, str):
                continue
            cells = [f"{100 * shares[t][p][label]['share_of_fineall']:.1f}%"
                     for t in tasks for p in ("release", "paper")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    # main tables
    for objective in objectives:
        lines += [f"## Transfer after {objective} pre-training", ""]
        for task in tasks:
            rows = [e for e in main if e["objective"] == objective and e["task"] == task]
            if kinds[task] == "item_rec":
                extra = ["mrr@5", "full_hr@5", "full_mrr@5"]
                head = ["HR@5 sampled", "MRR@5 sampled", "HR@5 full", "MRR@5 full"]
            else:
                extra = ["balanced_accuracy", "macro_f1"]
                head = ["accuracy", "balanced acc.", "macro-F1"]
            reference = next((e["vs_best_simple"]["reference"] for e in rows
                              if "vs_best_simple" in e), "best simple")
            users_only = any("ci95_users" in e for e in rows)
            lines += [f"### {task}", "",
                      f"| method | {head[0]} mean +- std | 95% CI | vs FineAll [95% CI] | "
                      f"vs {reference} [95% CI] | vs from scratch [95% CI] | "
                      + " | ".join(head[1:]) + " |"
                      + (" users-only: 95% CI | vs FineAll | vs " + reference + " |"
                         if users_only else ""),
                      "|---" * (6 + len(extra) + 3 * users_only) + "|"]
            for e in rows:
                cells = [f"{e['mean']:.3f} +- {_fmt(e['std'])}", _interval(e.get("ci95"))]
                for name in ("vs_fineall", "vs_best_simple", "vs_scratch"):
                    d = e.get(name)
                    cells.append(f"{_signed(d['difference'])} {_interval(d.get('ci95'), True)}"
                                 + (f" vs {d['reference']}" if name == "vs_scratch" else "")
                                 + (" (bound)" if d.get("user_se") == "bound" else "")
                                 if d else "-")
                cells += [_fmt(e["means"].get(m)) for m in extra]
                if users_only:
                    cells.append(_interval(e.get("ci95_users")))
                    for name in ("vs_fineall", "vs_best_simple"):
                        d = e.get(name)
                        cells.append(_interval(d.get("ci95_users"), True) if d else "-")
                lines.append(f"| {e['method']} | " + " | ".join(cells) + " |")
            lines.append("")
    # limited data
    if summary["limited"]:
        fractions = sorted({e["fraction"] for e in summary["limited"]})
        lines += ["## Limited data (share of the training users; mean +- sample std over seeds)", "",
                  "| objective | task | method | " + " | ".join(f"{f:.0%}" for f in fractions) + " |",
                  "|---" * (3 + len(fractions)) + "|"]
        cell = {(e["objective"], e["task"], e["method"], e["fraction"]): e for e in summary["limited"]}
        for objective in objectives:
            for task in tasks:
                for label in [m for m, _ in METHODS if any(k[2] == m for k in cell)]:
                    found = [cell.get((objective, task, label, f)) for f in fractions]
                    if any(found):
                        lines.append(f"| {objective} | {task} | {label} | " + " | ".join(
                            f"{e['mean']:.3f} +- {_fmt(e['std'])} (n={e['train_examples']})"
                            if e else "-" for e in found) + " |")
        lines.append("")
    # does better pre-training mean better transfer?
    lines += ["## Better pre-training vs better transfer", "",
              "| objective | pre-training test MRR@5 (mean over seeds) | "
              + " | ".join(f"{t}: FineAll / PeterRec (b) / (d)" for t in tasks) + " |",
              "|---" * (2 + len(tasks)) + "|"]
    for objective in objectives:
        mrr = [p["test"]["mrr@5"] for p in results["pretraining"] if p["objective"] == objective]
        cells = []
        for task in tasks:
            rows = {e["method"]: e["mean"] for e in main if e["objective"] == objective
                    and e["task"] == task}
            cells.append(" / ".join(_fmt(rows.get(m)) for m in ("FineAll", "PeterRec (b)",
                                                                "PeterRec (d)")))
        lines.append(f"| {objective} | {_fmt(float(np.mean(mrr)) if mrr else None, 4)} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Charts: results.svg (bars: mean over seeds, whiskers: the 95% CI above), "
              "learning_curves.svg (validation and test metric of every checkpoint, nothing "
              "selected on them; "
              "whiskers +- sample std over seeds), limited_data.svg.", ""]
    with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    _charts(summary, objectives, tasks, output_dir)


def _label_of(metric):
    return {"hr@5": "HR@5 (sampled candidates)", "accuracy": "accuracy"}.get(metric, metric)


def _charts(summary, objectives, tasks, output_dir):
    panels = []
    for objective in objectives:
        for task in tasks:
            rows = [e for e in summary["main"] if e["objective"] == objective and e["task"] == task]
            if rows:
                panels.append({"title": f"{task} ({objective})", "ylabel": _label_of(rows[0]["metric"]),
                               "xlabel": "method",
                               "bars": [(e["method"], e["mean"], *(e["ci95"] or [e["mean"]] * 2))
                                        for e in rows]})
    svg.bar_chart(os.path.join(output_dir, "results.svg"), "Test metric by method", panels,
                  len(tasks), note="bars: mean over training seeds; whiskers: 95% interval over "
                  "training seeds and test users")
    panels = []
    for objective in objectives:
        for split in ("validation", "test"):
            for task in tasks:
                rows = [c for c in summary["curves"] if c["objective"] == objective
                        and c["task"] == task and c.get("split", "test") == split]
                if rows:
                    panels.append({"title": f"{task} ({objective}, {split})",
                                   "xlabel": "fine-tuning step",
                                   "ylabel": f"{split} " + _label_of(rows[0]["metric"]),
                                   "series": [(c["method"], c["steps"], c["mean"], c["std"])
                                              for c in rows]})
    if panels:
        svg.line_chart(os.path.join(output_dir, "learning_curves.svg"), "Learning curves",
                       panels, len(tasks), note="mean over training seeds +- sample std; one "
                       "row per objective and split; nothing is chosen on either split")
    panels = []
    for objective in objectives:
        for task in tasks:
            rows = [e for e in summary["limited"] if e["objective"] == objective and e["task"] == task]
            methods = [m for m, _ in METHODS if any(e["method"] == m for e in rows)]
            if rows:
                metric = next(e["metric"] for e in summary["main"] if e["task"] == task)
                series = []
                for m in methods:
                    points = sorted((e["fraction"], e["mean"], e["std"]) for e in rows
                                    if e["method"] == m)
                    series.append((m, [100 * p[0] for p in points], [p[1] for p in points],
                                   [p[2] for p in points]))
                panels.append({"title": f"{task} ({objective})", "ylabel": "test " + _label_of(metric),
                               "xlabel": "% of training users (log scale)", "series": series})
    if panels:
        svg.line_chart(os.path.join(output_dir, "limited_data.svg"), "Limited training data",
                       panels, len(tasks), note="mean over training seeds +- sample std",
                       log_x=True)


# ---------------------------------------------------------------- command line

def define_flags():
    """The command's absl flags."""
    from absl import flags

    flags.DEFINE_string("dataset", None, "A multi-task prepared directory (with datasets.json): "
                        "python -m pipelines.prepare --format=synthetic|movielens_100k.")
    flags.DEFINE_string("output_dir", None, "Work directory: models/, data subsets, per-example "
                        "outputs and results.json/.md/.svg; re-running skips the runs already "
                        "recorded (resumable). Copy only results.* and *.svg into a report.")
    flags.DEFINE_integer("seeds", 3, "Training seeds per configuration (0..seeds-1); tables "
                         "show mean +- sample std over them.")
    flags.DEFINE_list("objectives", ["next_item", "masked_item"], "Pre-training objectives to "
                      "compare: next_item (causal NextItNet), masked_item (GRec).")
    flags.DEFINE_list("tasks", [], "Downstream tasks to run (names in datasets.json); default "
                      "all of them.")
    flags.DEFINE_integer("channels", 32, "Backbone width C of every pre-trained model.")
    flags.DEFINE_list("dilations", ["1", "4", "1", "4"], "Backbone dilation list (one residual "
                      "block per value).")
    flags.DEFINE_integer("pretrain_steps", 800, "Pre-training steps per objective and seed "
                         "(batch 64, learning rate 2e-3).")
    flags.DEFINE_bool("select_pretrained", True, "Keep the pre-trained weights of the best of "
                      "8 periodic validations (next-item NDCG@10 on the validation split, full "
                      "ranking); false: the last step's weights. Both current reports used true.")
    flags.DEFINE_integer("finetune_steps", 300, "Fine-tuning steps per run: one fixed budget "
                         "for every method (nothing is selected on any split).")
    flags.DEFINE_integer("batch_size", 128, "Fine-tuning batch size of every run.")
    flags.DEFINE_float("learning_rate", 5e-3, "Fine-tuning Adam learning rate of every run.")
    flags.DEFINE_enum("patch_preset", "release", sorted(PATCH_PRESETS), "PeterRec patch width: "
                      "release = C/4 (the original code's, the project default), paper = C/8 "
                      "(the paper's text). The share table lists both either way.")
    flags.DEFINE_integer("eval_seed", 0, "Seed of the sampled-ranking candidates, the limited-"
                         "data subsets, naive Bayes' CV folds and the bootstrap; independent of "
                         "the training seeds.")
    flags.DEFINE_integer("num_candidates", 100, "Sampled ranking: the true target + this many "
                         "minus one negatives.")
    flags.DEFINE_bool("exclude_other_targets", True, "Never draw a user's other held-out "
                      "targets as negatives (nor rank against them in full ranking).")
    flags.DEFINE_integer("curve_points", 10, "Learning-curve points per run (checkpoints "
                         "evaluated on validation and test); 0: none.")
    flags.DEFINE_list("limited_fractions", ["0.1", "0.3"], "Shares of the training users for "
                      "the limited-data runs (the main runs are 100%); empty: none.")
    flags.DEFINE_list("limited_methods", ["popularity", "naivebayes", "finezero", "fineall",
                                          "peterrec_b"], "Methods of the limited-data runs "
                      "(keys: " + ", ".join(method_key(m) for m, _ in METHODS) + ").")
    flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples of the test users.")
    flags.DEFINE_list("methods", [], "Main-run methods (keys as --limited_methods); default "
                      "all.")
    flags.DEFINE_bool("allow_dirty", False, "Write a report from a work tree with uncommitted "
                      "changes (recorded in results.json); refused otherwise.")
    flags.mark_flags_as_required(["dataset", "output_dir"])


def main(argv):
    from absl import flags

    del argv
    v = flags.FLAGS
    try:
        _run_from_flags(v)
    except Interrupted as stopped:
        print(f"interrupted at {stopped}; run the same command again to resume", file=sys.stderr)
        return 130
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(open(os.path.join(v.output_dir, "results.md")).read())
    return 0


def _run_from_flags(v):
    run(v.dataset, v.output_dir, v.seeds, tuple(v.objectives), v.channels,
        tuple(int(d) for d in v.dilations), v.pretrain_steps, v.finetune_steps, v.batch_size,
        v.learning_rate, v.tasks or None, select_pretrained=v.select_pretrained,
        eval_seed=v.eval_seed, num_candidates=v.num_candidates,
        exclude_other_targets=v.exclude_other_targets, patch_preset=v.patch_preset,
        curve_points=v.curve_points, limited_fractions=[float(f) for f in v.limited_fractions],
        limited_methods=v.limited_methods, bootstrap=v.bootstrap, allow_dirty=v.allow_dirty,
        methods=v.methods or None)


if __name__ == "__main__":
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__)
