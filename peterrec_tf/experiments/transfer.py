"""The paper's transfer comparison (Tables 2, 3, 7) as one command.

    python -m peterrec_tf.experiments.transfer --dataset=DIR --seeds=3 --output_dir=reports/x

DIR is a multi-task preparation (`pipelines.prepare --format=synthetic|movielens_100k`)
with `datasets.json`. For each pre-training objective (causal next-item, masked-item) and
seed it pre-trains once, then for every downstream task runs: LabelCS (majority class /
most popular target), FineZero and PeterZero (no pre-training), FineCLS, FineLast,
FineAll, PeterRec with insertions b, c, d, e. Model selection never looks at the test
split: every run uses the same fixed budget. Writes results.json (every run),
results.md (mean +- std of the task metric, trained-parameter share) and results.png.
"""

import collections
import json
import os
import statistics
import sys
import time

METHODS = [  # (label, finetune kwargs)
    ("LabelCS", None),
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


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped a run (checkpointed); re-running the command resumes."""


def majority_baseline(data_dir, task):
    """LabelCS: the most frequent train label (classify) / target (item_rec) for everyone."""
    import numpy as np
    import tensorflow as tf

    from pipelines import inputs

    meta = inputs.read_metadata(data_dir)
    key = "label" if task == "classify" else "target"
    counts = collections.Counter()
    for path in inputs.shard_files(data_dir, "train"):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            counts[tf.train.Example.FromString(record.numpy()).features.feature[key].int64_list.value[0]] += 1
    top = counts.most_common(1)[0][0]
    truth = []
    for path in inputs.shard_files(data_dir, "test"):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            truth.append(tf.train.Example.FromString(record.numpy()).features.feature[key].int64_list.value[0])
    truth = np.array(truth)
    if task == "classify":
        return {"accuracy": float((truth == top).mean())}
    # item_rec with sampled ranking: the popular target is ranked first among the candidates
    # when it is among them; its hit rate is the share of test targets equal to it
    return {"hr@5": float((truth == top).mean()), "mrr@5": float((truth == top).mean()),
            "note": f"most popular of {meta['num_targets'] - 1} targets"}


def run(dataset, output_dir, seeds=3, objectives=("next_item", "masked_item"), channels=32,
        dilations=(1, 4, 1, 4), pretrain_steps=800, finetune_steps=300, batch_size=128,
        learning_rate=5e-3, tasks=None, log=print, select_pretrained=True):
    from peterrec_tf.finetune import run_finetune
    from peterrec_tf.pretrain import run_pretrain

    with open(os.path.join(dataset, "datasets.json"), encoding="utf-8") as handle:
        index = json.load(handle)["datasets"]
    downstream = [(name, entry["task"]) for name, entry in sorted(index.items())
                  if entry["task"] != "pretrain" and (not tasks or name in tasks)]
    os.makedirs(output_dir, exist_ok=True)
    runs_path = os.path.join(output_dir, "results.json")
    runs = json.load(open(runs_path)) if os.path.exists(runs_path) else []
    done = {(r["objective"], r["seed"], r["task"], r["method"]) for r in runs}
    quiet = lambda *_: None  # noqa: E731
    for objective in objectives:
        for seed in range(seeds):
            if all((objective, seed, name, label) in done for name, _ in downstream
                   for label, _ in METHODS):
                continue  # every run of this pre-training is recorded already
            pre_dir = os.path.join(output_dir, "models", f"pre_{objective}_{seed}")
            # with select_pretrained the pre-trained weights are those of the best of 8
            # periodic validations (next-item NDCG@10 on the validation split), never
            # chosen by a test figure; without it, the last step's
            selection = ({"eval_every": max(1, pretrain_steps // 8), "select_metric": "ndcg@10"}
                         if select_pretrained else {})
            pre = run_pretrain(os.path.join(dataset, "pretrain"), pre_dir, objective=objective,
                               channels=channels, dilations=dilations, train_steps=pretrain_steps,
                               batch_size=64, learning_rate=2e-3, seed=seed, head="full",
                               log_every=10 ** 9, checkpoint_every=pretrain_steps, log=quiet,
                               **selection)
            if pre["training"]["interrupted"]:
                raise Interrupted(pre_dir)
            step = pre["selected"]["step"] if "selected" in pre else pre["training"]["steps"]
            log(f"{objective} seed {seed} pre-trained: weights of step {step}, test hr@10 "
                f"{pre['test']['hr@10']:.4f} ndcg@10 {pre['test']['ndcg@10']:.4f}")
            for task_name, task in downstream:
                metric = "accuracy" if task == "classify" else "hr@5"
                for label, kwargs in METHODS:
                    key = (objective, seed, task_name, label)
                    if key in done:
                        continue
                    started = time.time()
                    data_dir = os.path.join(dataset, task_name)
                    if kwargs is None:
                        test, share = majority_baseline(data_dir, task), 0.0
                    else:
                        out = run_finetune(pre_dir, data_dir, os.path.join(
                            output_dir, "models", f"{objective}_{seed}_{task_name}_{label}".replace(" ", "")
                            .replace("(", "").replace(")", "")),
                            batch_size=batch_size, train_steps=finetune_steps,
                            learning_rate=learning_rate, seed=seed, log_every=10 ** 9,
                            checkpoint_every=finetune_steps, log=quiet, **kwargs)
                        if out["training"]["interrupted"]:
                            raise Interrupted(key)
                        test, share = out["test"], out["parameters"]["trainable_share"]
                    runs.append({"objective": objective, "seed": seed, "task": task_name,
                                 "method": label, "metric": metric, "value": test[metric],
                                 "test": test, "trainable_share": share,
                                 "seconds": time.time() - started})
                    log(f"{objective} seed {seed} {task_name:<10} {label:<13} {metric} {test[metric]:.4f}")
                    with open(runs_path, "w", encoding="utf-8") as handle:
                        json.dump(runs, handle, indent=2)
    write_table(runs, output_dir)
    return runs


def summarise(runs):
    groups = collections.defaultdict(list)
    shares = collections.defaultdict(list)
    for r in runs:
        groups[(r["objective"], r["task"], r["method"])].append(r["value"])
        shares[(r["objective"], r["task"], r["method"])].append(r["trainable_share"])
    return groups, shares


def write_table(runs, output_dir):
    groups, shares = summarise(runs)
    objectives = sorted({k[0] for k in groups})
    tasks = sorted({k[1] for k in groups})
    metric = {r["task"]: r["metric"] for r in runs}
    lines = ["# Transfer results", "",
             "Mean +- std over seeds of the test metric; share = trained parameters / model parameters.",
             "results.png: one row of panels per objective (" + ", ".join(objectives) + "), one column per task ("
             + ", ".join(tasks) + "); bars in the table's method order, heights relative to the panel's best.", ""]
    for objective in objectives:
        lines += [f"## Pre-training: {objective}", "",
                  "| method | " + " | ".join(f"{t} ({metric[t]})" for t in tasks) + " | trained share |",
                  "|---" * (len(tasks) + 2) + "|"]
        for label, _ in METHODS:
            cells, share = [], []
            for task in tasks:
                values = groups.get((objective, task, label), [])
                share += shares.get((objective, task, label), [])
                cells.append(f"{statistics.mean(values):.4f} +- {statistics.pstdev(values):.4f}"
                             if values else "-")
            lines.append(f"| {label} | " + " | ".join(cells) +
                         f" | {100 * statistics.mean(share):.1f}% |" if share else " | - |")
        lines.append("")
    with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    write_chart(groups, objectives, tasks, os.path.join(output_dir, "results.png"))


def write_chart(groups, objectives, tasks, path):
    """A bar chart PNG without plotting dependencies: one panel per objective x task."""
    import struct
    import zlib

    labels = [label for label, _ in METHODS]
    panel_w, panel_h, bar = 12 * len(labels) + 20, 120, 10
    width, height = panel_w * len(tasks), panel_h * len(objectives)
    pixels = [[(255, 255, 255)] * width for _ in range(height)]
    palette = [(120, 120, 120), (200, 80, 80), (230, 150, 80), (80, 160, 200), (60, 120, 200),
               (40, 60, 160), (60, 170, 90), (90, 190, 110), (120, 210, 130), (160, 220, 160)]
    for row, objective in enumerate(objectives):
        for col, task in enumerate(tasks):
            values = [statistics.mean(groups.get((objective, task, m), [0.0])) for m in labels]
            top = max(values + [1e-9])
            for i, value in enumerate(values):
                h = int((panel_h - 20) * value / top)
                for y in range(panel_h - 10 - h, panel_h - 10):
                    for x in range(col * panel_w + 10 + 12 * i, col * panel_w + 10 + 12 * i + bar):
                        pixels[row * panel_h + y][x] = palette[i]
    raw = b"".join(b"\x00" + bytes(c for p in line for c in p) for line in pixels)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def define_flags():
    """The command's absl flags."""
    from absl import flags

    flags.DEFINE_string("dataset", None, "A multi-task prepared directory (with datasets.json): "
                        "python -m pipelines.prepare --format=synthetic|movielens_100k.")
    flags.DEFINE_string("output_dir", None, "Where models/ and results.json/.md/.png go; "
                        "re-running skips the runs already recorded (resumable).")
    flags.DEFINE_integer("seeds", 3, "Seeds per configuration (0..seeds-1); the table shows "
                         "mean +- std over them.")
    flags.DEFINE_list("objectives", ["next_item", "masked_item"], "Pre-training objectives to "
                      "compare: next_item (causal NextItNet), masked_item (GRec).")
    flags.DEFINE_list("tasks", [], "Downstream tasks to run (names in datasets.json); default "
                      "all of them.")
    flags.DEFINE_integer("channels", 32, "Backbone width C of every pre-trained model.")
    flags.DEFINE_list("dilations", ["1", "4", "1", "4"], "Backbone dilation list (one residual "
                      "block per value).")
    flags.DEFINE_integer("pretrain_steps", 800, "Pre-training steps per objective and seed "
                         "(batch 64, learning rate 2e-3); the weights kept are those of the best "
                         "of 8 periodic validations (NDCG@10).")
    flags.DEFINE_bool("select_pretrained", True, "Keep the pre-trained weights of the best of "
                      "8 periodic validations (NDCG@10 on the validation split); false: the "
                      "last step's weights (how reports/transfer_synthetic was made).")
    flags.DEFINE_integer("finetune_steps", 300, "Fine-tuning steps per run: one fixed budget "
                         "for every method (no model selection on the test split).")
    flags.DEFINE_integer("batch_size", 128, "Fine-tuning batch size of every run.")
    flags.DEFINE_float("learning_rate", 5e-3, "Fine-tuning Adam learning rate of every run.")
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
    print(open(os.path.join(v.output_dir, "results.md")).read())
    return 0


def _run_from_flags(v):
    run(v.dataset, v.output_dir, v.seeds, tuple(v.objectives), v.channels,
        tuple(int(d) for d in v.dilations), v.pretrain_steps, v.finetune_steps, v.batch_size,
        v.learning_rate, v.tasks or None, select_pretrained=v.select_pretrained)


if __name__ == "__main__":
    from absl import app

    define_flags()
    sys.exit(app.run(main))
