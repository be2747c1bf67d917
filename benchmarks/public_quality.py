"""Next-item quality on public logs: this project's pre-trained models against popularity
(and RecBole's figures on the same split), side by side by architecture, head, size and loss.

What it does
    1. Prepares MovieLens-100K (``../shared/data/ml-100k``, all of u.data: ``--target_genres=``)
       and the synthetic log with ``pipelines.prepare`` into ``--work_dir`` (OUTSIDE the
       repository: the MovieLens licence forbids copying derived data into git). The splits
       are the project's leave-one-out: train seq[:-2], validation seq[:-2] -> seq[-2],
       test seq[:-1] -> seq[-1] (the split RecBole's reference run was checked against).
    2. Trains each run of ``--runs`` (named in RUNS, or given as JSON by ``--extra_runs``) with
       ``peterrec_tf.jobs.pretraining.run_pretrain``: validation NDCG@10 (full ranking) every
       ``--eval_every`` steps, the best-validation weights kept; the test split selects nothing.
    3. Scores the saved model on test under two protocols, with ``metrics.true_ranks`` (ties
       count against the true item):
         full     the true item among every item (padding excluded, history not masked:
                  the protocol of benchmarks/RECBOLE_REFERENCE.md);
         sasrec   SASRec's: the true item and 100 negatives (``--candidates=101``: SASRec's
                  util.py draws 100) drawn uniformly (seeded by ``--eval_seed`` and the user)
                  from the items the user never rated (any split). Outputs written before
                  this default used 100 candidates (99 negatives); their "candidates" says so.
       Popularity (training-split counts) is scored the same way, on the same candidates.
    4. Keeps its progress in ``--output`` (default ``<work_dir>/public_quality_progress_<commit>.json``,
       rewritten after every run; a re-run at the same commit resumes from it), and at the end
       writes the kept raw output through ``benchmarks/raw_output.py``:
       ``benchmarks/results/public_quality_<commit>_<tag>.json`` (``--tag``, default the
       datasets joined by ``_``), provenance (commit, dirty flag, command, machine, load
       averages) plus, under ``raw``, the whole record: load average before/after each run,
       each run's settings, wall time, the validation curve with elapsed seconds (time to
       accuracy), the job's own test figures and both protocols' figures; ``summary`` holds
       each run's figures (``summarise``). No MovieLens rows are written.

Run (from the repository root; be polite on a shared machine)::

    nice -n 10 .venv/bin/python benchmarks/public_quality.py --work_dir=/tmp/quality \\
        --datasets=ml100k --runs=cnn_full,sa_full --seeds=0

``--smoke`` trains a few steps only (checks the script, not quality).
"""

import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ML100K = os.path.join(os.path.dirname(REPO), "shared", "data", "ml-100k")  # never copied
#: Shared by every run unless the run sets it (the RecBole comparison's settings).
BASE = {"objective": "next_item", "channels": 64, "batch_size": 32, "learning_rate": 1e-3,
        "head": "full", "num_sampled": 0}
#: Named runs: the settings that differ from BASE.
RUNS = {
    "cnn_full": {"architecture": "dilated_cnn", "dilations": [1, 4, 1, 4, 1, 4, 1, 4]},
    "cnn_dot": {"architecture": "dilated_cnn", "head": "dot"},
    "cnn_dot_sampled": {"architecture": "dilated_cnn", "head": "dot", "num_sampled": -1},
    "cnn_wide": {"architecture": "dilated_cnn", "channels": 128},
    "cnn_shallow": {"architecture": "dilated_cnn", "dilations": [1, 4, 1, 4]},
    "sa_full": {"architecture": "self_attention", "num_blocks": 2},
    "sa_dot": {"architecture": "self_attention", "num_blocks": 2, "head": "dot"},
    "sa_tied": {"architecture": "self_attention", "num_blocks": 2, "head": "tied"},
    "cnn_tied": {"architecture": "dilated_cnn", "head": "tied"},
    "sa_dot_sampled": {"architecture": "self_attention", "num_blocks": 2, "head": "dot",
                       "num_sampled": -1},
    "sa_deep": {"architecture": "self_attention", "num_blocks": 4},
    "sa_wide": {"architecture": "self_attention", "num_blocks": 2, "channels": 128,
                "heads": 2},
}
DATASETS = ("ml100k", "synthetic", "amazon_shaped", "sasrec_log")
#: The synthetic log shaped like a public Amazon category (about 31K users, 24K items,
#: sequences of 5-13 items: ~9 a user, ~280K events), for timing the recipe.
AMAZON_SHAPED = {"num_users": 31000, "num_items": 24000, "num_clusters": 600, "min_len": 5,
                 "max_len_generated": 13, "num_targets": 100}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ml100k", default=ML100K, help="The ml-100k folder (u.data, u.item).")
    p.add_argument("--sasrec_log", default=None,
                   help="For --datasets=sasrec_log: a log in SASRec's released form (one "
                        "'user item' pair per line, integer ids, each user's lines oldest "
                        "first), e.g. its Amazon Video Games file. Never copied into git.")
    p.add_argument("--work_dir", required=True, help="Prepared data and runs (outside the repo).")
    p.add_argument("--datasets", default="ml100k,synthetic", help=f"Any of {DATASETS}.")
    p.add_argument("--runs", default="cnn_full,sa_full", help=f"Names of {sorted(RUNS)}.")
    p.add_argument("--extra_runs", default="{}",
                   help='JSON {"name": {setting: value}} added to the runs (settings as '
                        "run_pretrain's, over BASE).")
    p.add_argument("--recipe", default=None,
                   help="A pretrain flagfile (e.g. recipes/public_sequential.flags) run as the "
                        "run named 'recipe': the user's command itself, `python -m "
                        "peterrec_tf.pretrain --flagfile=FILE --data_dir --model_dir --seed`, "
                        "timed from launch to exit.")
    p.add_argument("--recipe_flags", default="",
                   help="Flags appended after --flagfile (space separated), e.g. --epochs=40.")
    p.add_argument("--seeds", default="0")
    p.add_argument("--max_len", type=int, default=50)
    p.add_argument("--train_steps", type=int, default=1500)
    p.add_argument("--eval_every", type=int, default=75)
    p.add_argument("--candidates", type=int, default=101,
                   help="SASRec's protocol: the true item plus this many minus one negatives.")
    p.add_argument("--rescore", default=None,
                   help="A kept public_quality output: score its saved models (and popularity) "
                        "again with this --candidates/--eval_seed, without training; the full "
                        "ranking must come out as kept (the same models). Writes a new kept "
                        "output with the same tag.")
    p.add_argument("--eval_seed", type=int, default=0)
    p.add_argument("--popularity", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--output", default=None,
                   help="The progress file (resume); default in --work_dir.")
    p.add_argument("--tag", default=None,
                   help="The kept output's tag (default: the datasets joined by '_').")
    p.add_argument("--allow_dirty", action="store_true")
    p.add_argument("--smoke", action="store_true", help="A few steps per run (script check).")
    return p.parse_args(argv)


def sasrec_log_as_interactions(path, out_csv):
    """Writes SASRec's 'user item' lines as an interactions CSV (user,item,timestamp), the
    timestamp being the line number: SASRec's files keep each user's items oldest first and
    carry no time. Refuses a line that is not two integers (file and line named)."""
    with open(path, encoding="utf-8") as src, open(out_csv + ".tmp", "w", encoding="utf-8") as dst:
        dst.write("user,item,timestamp\n")
        for number, line in enumerate(src, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                raise SystemExit(f"error: {path}:{number}: expected 'user item' (two integer "
                                 f"ids), got {line.strip()!r}")
            dst.write(f"{fields[0]},{fields[1]},{number}\n")
    os.replace(out_csv + ".tmp", out_csv)


def prepare_dataset(name, work_dir, max_len, log, ml100k=ML100K, sasrec_log=None):
    from pipelines.prepare import prepare

    out = os.path.join(work_dir, "data", name)
    if name == "sasrec_log":
        if not sasrec_log:
            raise SystemExit("error: --datasets=sasrec_log needs --sasrec_log=FILE")
        csv = os.path.join(work_dir, "data", "sasrec_log.csv")
        os.makedirs(os.path.dirname(csv), exist_ok=True)
        sasrec_log_as_interactions(sasrec_log, csv)
        prepare("interactions", out, input=csv, max_len=max_len, log=log)
        return out  # one dataset: written at the top level
    if name == "ml100k":
        prepare("movielens_100k", out, input=ml100k, max_len=max_len, target_genres="", log=log)
    elif name == "synthetic":
        prepare("synthetic", out, max_len=max_len, seed=0, log=log)
    elif name == "amazon_shaped":
        prepare("synthetic", out, max_len=max_len, seed=0, log=log, **AMAZON_SHAPED)
    else:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    return os.path.join(out, "pretrain")


def read_split(data_dir, split):
    """[(user_id, item ids oldest first, target or None)] of a prepared split."""
    import tensorflow as tf

    from pipelines import inputs, schema

    spec = schema.feature_spec("pretrain", split)
    rows = []
    files = inputs.shard_files(data_dir, split)
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024):
        parsed = tf.io.parse_example(batch, spec)
        ids = parsed[schema.ITEM_IDS].to_list()
        users = parsed[schema.USER_ID].numpy()
        targets = parsed[schema.TARGET].numpy() if schema.TARGET in parsed else [None] * len(ids)
        rows += [(u.decode(), list(map(int, i)), None if t is None else int(t))
                 for u, i, t in zip(users, ids, targets)]
    inputs.check_count(data_dir, split, len(rows))
    return rows


def sasrec_candidates(test_rows, num_items, count, seed):
    """`[N, count]` int32: the true item, then count-1 distinct items drawn uniformly from
    those the user never rated (history and target), seeded by (seed, user)."""
    import zlib

    import numpy as np

    out = np.zeros((len(test_rows), count), np.int32)
    for row, (user, history, target) in enumerate(test_rows):
        rated = set(history) | {target, 0}
        if num_items - len(rated) < count - 1:
            raise ValueError(f"user {user} rated all but {num_items - len(rated)} items: "
                             f"cannot draw {count - 1} unrated ones")
        rng = np.random.RandomState([seed, zlib.crc32(user.encode())])
        chosen = []
        while len(chosen) < count - 1:
            for item in rng.randint(1, num_items, size=2 * count):
                if item not in rated:
                    rated.add(int(item))
                    chosen.append(int(item))
                    if len(chosen) == count - 1:
                        break
        out[row] = [target] + chosen
    return out


def ranking_figures(score_rows, targets, candidates, ks=(5, 10), batch_size=256,
                    full_ranks=None):
    """{protocol: {hr@k, ndcg@k, mrr@k, examples}}; `score_rows(start, stop)` gives the
    scores `[stop - start, V]` of those test rows (in batches: a catalogue of 24K items
    times 31K users would not fit whole). `full_ranks`, a list, receives each row's
    full-ranking rank of its target, counted from 1 (for paired comparisons on the same
    users)."""
    import numpy as np
    import tensorflow as tf

    from peterrec_tf.metrics import ranking_gains, true_ranks

    ranks = {"full": [], "sasrec": []}
    for start in range(0, len(targets), batch_size):
        stop = min(start + batch_size, len(targets))
        scores = tf.constant(score_rows(start, stop))
        ranks["full"].append(true_ranks(tf.constant(targets[start:stop]), scores).numpy())
        ranks["sasrec"].append(true_ranks(tf.constant(candidates[start:stop]), scores).numpy())
    if full_ranks is not None:
        # from 1 (1 = top), as RecBole's per-user ranks in recbole_reference.py
        full_ranks.extend(int(r) + 1 for r in np.concatenate(ranks["full"]))
    out = {}
    for protocol, parts in ranks.items():
        ranked = tf.constant(np.concatenate(parts))
        figures = {"examples": int(len(targets))}
        for k in ks:
            for kind in ("hr", "ndcg", "mrr"):
                figures[f"{kind}@{k}"] = float(np.mean(ranking_gains(ranked, k, kind).numpy()))
        out[protocol] = figures
    return out


def model_scorer(model_dir, test_rows):
    """`score_rows` of the saved model: next-item logits for each test history, framed as
    the model was trained (its own `framing`)."""
    import tensorflow as tf

    from peterrec_tf.model_dir import load_model_dir

    model, config, _ = load_model_dir(model_dir)
    framing = model.framing
    logits = tf.function(model.next_item_logits)

    def score_rows(start, stop):
        histories = [h for _, h, _ in test_rows[start:stop]]
        return logits(framing.frame(tf.ragged.constant(histories, dtype=tf.int32))).numpy()

    return score_rows


def popularity_scorer(train_rows, num_items):
    """`score_rows` of popularity: each item's count in the training split (the same row
    for every user; padding never ranked)."""
    import numpy as np

    counts = np.zeros(num_items, np.float32)
    for _, history, _ in train_rows:
        np.add.at(counts, history, 1.0)
    counts[0] = -np.inf
    return lambda start, stop: np.tile(counts, (stop - start, 1))


def run_recipe(flagfile, extra_flags, data_dir, model_dir, seed, log):
    """Runs the pretrain command with a flagfile as a user would; its output lines go to
    `log` (a TimedLog: the validation curve). Returns (results.json, settings from
    flags.json, seconds from launch to exit)."""
    import subprocess

    command = [sys.executable, "-m", "peterrec_tf.pretrain", f"--flagfile={flagfile}",
               *extra_flags, f"--data_dir={data_dir}", f"--model_dir={model_dir}",
               f"--seed={seed}"]
    log("$ " + " ".join(command[1:]))
    started = time.time()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        log(line.rstrip())
    if process.wait():
        raise SystemExit(f"error: the recipe run exited with {process.returncode}: "
                         f"{' '.join(command)}")
    seconds = time.time() - started
    with open(os.path.join(model_dir, "results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    with open(os.path.join(model_dir, "flags.json"), encoding="utf-8") as handle:
        settings = json.load(handle)
    return results, settings, seconds


class TimedLog:
    """The job's log lines with seconds since the run started; the validation curve
    (time to accuracy) is read back from them."""

    def __init__(self, echo):
        self.started, self.lines, self.echo = time.time(), [], echo

    def __call__(self, line):
        elapsed = time.time() - self.started
        self.lines.append((round(elapsed, 2), str(line)))
        self.echo(f"  [{elapsed:7.1f}s] {line}")

    def curve(self):
        points = []
        for elapsed, line in self.lines:
            if " validation: " in line and line.startswith("step "):
                step = int(line.split()[1])
                fields = line.split(": ", 1)[1].split()
                points.append({"step": step, "seconds": elapsed,
                               **{fields[i]: float(fields[i + 1])
                                  for i in range(0, len(fields) - 1, 2)}})
        return points


def load_average():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


#: A result's keys that `summarise` leaves to `raw` (the curve, paths, the job's own copy).
RAW_ONLY = ("validation_curve", "model_dir", "job_test_full", "test_ranks")


def summarise(report):
    """The kept output's `summary`: every run's figures, settings, selected step, times and
    load averages, without the validation curves (those stay in `raw`)."""
    return {"train_steps": report["train_steps"], "eval_every": report["eval_every"],
            "datasets": report["datasets"],
            "results": [{k: v for k, v in r.items() if k not in RAW_ONLY}
                        for r in report["results"]]}


def rescore(args, work_dir):
    """`--rescore`: the kept output's saved models and popularity scored again under
    SASRec's protocol with `--candidates`/`--eval_seed`, on the data prepared again into
    `work_dir` (its fingerprint must be the kept one). Each result keeps its earlier
    figures under "before_rescoring"; a full ranking that differs from the kept one means
    other models or data, and is refused."""
    import copy

    from benchmarks.raw_output import Run
    from pipelines import inputs

    with open(args.rescore, encoding="utf-8") as handle:
        kept = json.load(handle)
    tag = kept.get("tag")
    run = Run("public_quality", tag=tag, note="rescored: no training in this run")
    report = copy.deepcopy(kept["raw"])
    report.update(rescored_from=os.path.relpath(os.path.abspath(args.rescore), REPO),
                  candidates=args.candidates, eval_seed=args.eval_seed,
                  command=" ".join(sys.argv))
    for dataset, recorded in report["datasets"].items():
        data_dir = prepare_dataset(dataset, work_dir, report["max_len"], lambda *_: None,
                                   args.ml100k, args.sasrec_log)
        meta = inputs.read_metadata(data_dir)
        if meta.get("fingerprint") != recorded.get("fingerprint"):
            raise SystemExit(f"error: {data_dir}: fingerprint {meta.get('fingerprint')} is not "
                             f"the kept output's {recorded.get('fingerprint')}")
        test_rows = read_split(data_dir, "test")
        targets = [t for _, _, t in test_rows]
        candidates = sasrec_candidates(test_rows, meta["num_items"], args.candidates,
                                       args.eval_seed)
        for result in (r for r in report["results"] if r["dataset"] == dataset):
            scorer = (popularity_scorer(read_split(data_dir, "train"), meta["num_items"])
                      if result["run"] == "popularity"
                      else model_scorer(result["model_dir"], test_rows))
            figures = ranking_figures(scorer, targets, candidates)
            for metric, value in result["full"].items():
                if abs(figures["full"][metric] - value) > 1e-6:
                    raise SystemExit(f"error: {result.get('model_dir', 'popularity')}: full "
                                     f"{metric} {figures['full'][metric]} is not the kept "
                                     f"{value}: not the models or data that output scored")
            result["before_rescoring"] = {"candidates": kept["raw"]["candidates"],
                                          "full": result["full"], "sasrec": result["sasrec"]}
            result.update(figures)
            print(f"{dataset} {result['run']} seed {result['seed']}: sasrec "
                  f"{result['before_rescoring']['sasrec']['hr@10']:.4f} -> "
                  f"{figures['sasrec']['hr@10']:.4f}", flush=True)
    print(f"wrote {run.write(summarise(report), report)}")


def main(argv=None):
    args = parse_args(argv)
    from benchmarks.raw_output import Run
    from peterrec_tf.experiments.provenance import check_clean, git_state

    work_dir = os.path.abspath(args.work_dir)
    if work_dir == REPO or work_dir.startswith(REPO + os.sep):
        raise SystemExit(f"error: --work_dir {work_dir} is inside the repository: MovieLens "
                         "data may not be copied into git")
    state = git_state(REPO)
    check_clean(state, args.allow_dirty)
    if args.rescore:
        return rescore(args, work_dir)
    runs = {name: RUNS[name] for name in args.runs.split(",") if name}
    extra = json.loads(args.extra_runs)
    if "recipe" in extra:
        raise SystemExit("error: --extra_runs: 'recipe' is reserved for --recipe")
    runs.update(extra)
    unknown = [n for n in args.runs.split(",") if n and n not in RUNS]
    if unknown:
        raise SystemExit(f"error: unknown runs {unknown}; expected names of {sorted(RUNS)}")
    if args.recipe:
        runs["recipe"] = {"flagfile": os.path.relpath(os.path.abspath(args.recipe), REPO),
                          "flags": args.recipe_flags.split()}
    seeds = [int(s) for s in args.seeds.split(",")]
    steps = 6 if args.smoke else args.train_steps
    eval_every = 3 if args.smoke else args.eval_every
    tag = (args.tag or args.datasets.replace(",", "_") + ("_recipe" if args.recipe else "")) + \
        ("_smoke" if args.smoke else "")
    run = Run("public_quality", tag=tag, note="load averages before/after each run in raw")
    output = args.output or os.path.join(
        work_dir, f"public_quality_progress_{(state['commit'] or 'unknown')[:10]}_{tag}.json")
    report = {"benchmark": "public_quality", "commit": state["commit"], "dirty": state["dirty"],
              "dirty_files": state.get("dirty_files"), "command": " ".join(sys.argv),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "load_average_start": load_average(), "base": BASE, "runs_settings": runs,
              "train_steps": steps, "eval_every": eval_every, "max_len": args.max_len,
              "candidates": args.candidates, "eval_seed": args.eval_seed, "datasets": {},
              "results": []}
    if os.path.exists(output):  # resume: keep what finished, skip it below
        with open(output, encoding="utf-8") as handle:
            previous = json.load(handle)
        same = ("commit", "dirty", "dirty_files", "runs_settings", "candidates", "eval_seed",
                "max_len", "train_steps", "eval_every")
        if all(previous.get(key) == report.get(key) for key in same):
            report["results"] = previous.get("results", [])
        else:
            print(f"{output}: made with other settings; starting over", flush=True)
    done = {(r["dataset"], r["run"], r["seed"]) for r in report["results"]}

    def save():
        os.makedirs(os.path.dirname(output), exist_ok=True)
        tmp = output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
        os.replace(tmp, output)

    from pipelines import inputs
    from peterrec_tf.jobs.pretraining import run_pretrain

    for dataset in args.datasets.split(","):
        data_dir = prepare_dataset(dataset, work_dir, args.max_len, lambda *_: None, args.ml100k,
                                   args.sasrec_log)
        meta = inputs.read_metadata(data_dir)
        num_items = meta["num_items"]
        test_rows = read_split(data_dir, "test")
        targets = [t for _, _, t in test_rows]
        candidates = sasrec_candidates(test_rows, num_items, args.candidates, args.eval_seed)
        report["datasets"][dataset] = {"num_items": num_items, "splits": meta["splits"],
                                       "fingerprint": meta.get("fingerprint")}
        print(f"{dataset}: {num_items - 1} items, {len(test_rows)} test users", flush=True)
        if args.popularity and (dataset, "popularity", 0) not in done:
            figures = ranking_figures(popularity_scorer(read_split(data_dir, "train"), num_items),
                                      targets, candidates)
            report["results"].append({"dataset": dataset, "run": "popularity", "seed": 0,
                                      **figures})
            print(f"  popularity: {json.dumps(figures)}", flush=True)
            save()
        for name, settings in runs.items():
            for seed in seeds:
                if (dataset, name, seed) in done:
                    continue
                model_dir = os.path.join(work_dir, "runs", report["commit"][:10] if
                                         report["commit"] else "unknown", dataset,
                                         f"{name}_s{seed}{'_smoke' if args.smoke else ''}")
                log = TimedLog(lambda line: print(line, flush=True))
                load_before = load_average()
                command_seconds = None
                if name == "recipe":
                    flags = settings["flags"] + (["--train_steps=6"] if args.smoke else [])
                    job, config, command_seconds = run_recipe(
                        os.path.join(REPO, settings["flagfile"]), flags, data_dir, model_dir,
                        seed, log)
                    config = dict(config, recipe=settings)
                else:
                    config = dict(BASE, **settings)
                    # a run may set its own length (e.g. larger batches, fewer steps)
                    config.setdefault("train_steps", steps)
                    config.setdefault("eval_every", eval_every)
                    if args.smoke:
                        config.update(train_steps=steps, eval_every=eval_every)
                    print(f"{dataset} {name} seed {seed}: {config}", flush=True)
                    job = run_pretrain(data_dir, model_dir, select_metric="ndcg@10", seed=seed,
                                       max_len=args.max_len, checkpoint_every=10 ** 6,
                                       log_every=max(config["eval_every"], 50), log=log,
                                       **config)
                if job["training"]["resumed_from"]:
                    raise SystemExit(f"error: {model_dir} held an earlier run (resumed from step "
                                     f"{job['training']['resumed_from']}): its times and figures "
                                     "would not be this run's; use a new --work_dir")
                scored = time.time()
                ranks = []
                figures = ranking_figures(model_scorer(model_dir, test_rows), targets, candidates,
                                          full_ranks=ranks)
                job_test = {k: v for k, v in job["test"].items()}
                if abs(job_test["ndcg@10"] - figures["full"]["ndcg@10"]) > 1e-4:
                    raise SystemExit(f"error: {model_dir}: this script's full ranking "
                                     f"({figures['full']['ndcg@10']}) differs from the job's "
                                     f"({job_test['ndcg@10']})")
                curve = log.curve()
                selected = job.get("selected") or {}
                best = next((p for p in curve if p["step"] == selected.get("step")), None)
                report["results"].append({
                    "dataset": dataset, "run": name, "seed": seed, "settings": config,
                    "model_dir": model_dir, "wall_seconds": job["wall_seconds"],
                    "command_seconds": command_seconds,
                    "scoring_seconds": time.time() - scored,
                    "examples_per_second": job["examples_per_second"],
                    "selected_step": selected.get("step"),
                    "stopped_early": job.get("stopped_early"),
                    "stopped_by_time_budget": job.get("stopped_by_time_budget"),
                    "seconds_to_selected": best["seconds"] if best else None,
                    "validation_curve": curve, "job_test_full": job_test,
                    # {user: full-ranking rank of the test item}: pairs with RecBole's
                    # `test_ranks` (benchmarks/recbole_reference.py) user by user
                    "test_ranks": {user: rank for (user, _, _), rank in zip(test_rows, ranks)},
                    "load_average_before": load_before, "load_average_after": load_average(),
                    **figures})
                print(f"  -> full {figures['full']}  sasrec {figures['sasrec']}", flush=True)
                save()
    report["load_average_end"] = load_average()
    save()
    print(f"wrote {run.write(summarise(report), report)}")


def cli(argv=None):
    """`main` as a command: a refused input or run (`SystemExit("error: ...")`) prints its
    one line and exits 2, as the project's jobs do; argparse's own usage errors already do."""
    try:
        main(argv)
    except SystemExit as error:
        if isinstance(error.code, str):
            print(error.code, file=sys.stderr)
            raise SystemExit(2) from None
        raise


if __name__ == "__main__":
    cli()
