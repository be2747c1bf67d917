"""Bytes on disk of a fine-tuned task stored alone vs the whole model, at the paper's size.

    python benchmarks/task_artifact_bytes.py [--items=645000] [--channels=256] [--targets=1000]

Builds a pre-trained NextItNet of the paper's ColdRec-2 shape (645K items, 256 channels,
conv dilations {1,2,4,8} x 4 = blocks 1,4 x 4, full-softmax head; random weights: bytes do
not depend on values), saves it as a model directory, then fine-tunes nothing but builds
and saves, per task, a PeterRec model (release C/4 and paper C/8 patches) as the jobs do:
stored alone over the backbone (`task_artifact`) and, for comparison, whole
(`--save_full_model`). Prints a table of bytes and shares; also loads one task back over
the backbone and checks it scores like the saved model.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.raw_output import Run  # noqa: E402


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
               for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=645_000)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--targets", type=int, default=1_000, help="item-rec target vocabulary")
    parser.add_argument("--work_dir", default=None)
    args = parser.parse_args()

    import keras
    import numpy as np

    from peterrec_tf.model_dir import load_model_dir, save_model_dir
    from peterrec_tf.models import Backbone, NextItNet, build_finetuner

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}, keras {keras.__version__}; {args.items:,} items, "
          f"{args.channels} channels, blocks (1, 4) x 4")
    work = args.work_dir or tempfile.mkdtemp(prefix="task-bytes-")
    run = Run("task_artifact_bytes", note="bytes on disk do not depend on load")
    try:
        keras.utils.set_random_seed(0)
        started = time.time()
        pre = NextItNet(Backbone(args.items, args.channels, (1, 4) * 4, causal=True))
        pre.build()
        vocab = ["<UNK>"] + [f"i{n}" for n in range(1, args.items)]
        save_model_dir(os.path.join(work, "pre"), pre, {"max_len": 100}, {"items": vocab})
        print(f"pre-trained model directory: {directory_bytes(os.path.join(work, 'pre')):,} "
              f"bytes ({time.time() - started:.0f} s)")
        source, _, _ = load_model_dir(os.path.join(work, "pre"))
        rows = []
        for name, task, outputs in (("coldrec", "item_rec", args.targets),
                                    ("gender", "classify", 2)):
            for preset, ratio in (("release C/4", 0.25), ("paper C/8", 0.125)):
                model = build_finetuner(source.backbone, "peterrec", task, outputs,
                                        patch_config={"bottleneck_ratio": ratio},
                                        loss="ce" if task == "classify" else "pairwise")
                alone = os.path.join(work, f"{name}-{ratio}")
                save_model_dir(alone, model, {"max_len": 100}, {"items": vocab},
                               task_over=(os.path.join(work, "pre"), source.backbone))
                trained = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
                rows.append((name, preset, trained, directory_bytes(alone)))
                if not os.path.exists(os.path.join(work, "full")):
                    full = os.path.join(work, "full")
                    save_model_dir(full, model, {"max_len": 100}, {"items": vocab})
                    loaded, _, _ = load_model_dir(alone)
                    ids = np.random.RandomState(0).randint(1, args.items, (2, 20)).astype("int32")
                    difference = float(np.abs(loaded(ids).numpy() - model(ids).numpy()).max())
                    print(f"whole fine-tuned model directory ({name}, {preset}): "
                          f"{directory_bytes(full):,} bytes; task loaded back over the "
                          f"backbone scores within {difference:.1e} of the saved model")
                    full_bytes = directory_bytes(full)
        print(f"\n| task | patch | trained parameters | task directory bytes | share of a whole model |")
        print("|---|---|---|---|---|")
        for name, preset, trained, size in rows:
            print(f"| {name} | {preset} | {trained:,} | {size:,} | {100 * size / full_bytes:.2f}% |")
        path = run.write(
            {"items": args.items, "channels": args.channels, "targets": args.targets,
             "pretrained_dir_bytes": directory_bytes(os.path.join(work, "pre")),
             "whole_model_dir_bytes": full_bytes},
            {"tasks": [{"task": name, "patch": preset, "trained_parameters": trained,
                        "task_dir_bytes": size, "share_of_whole": size / full_bytes}
                       for name, preset, trained, size in rows],
             "task_loaded_back_max_abs_difference": difference})
        print(f"raw output: {path}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
