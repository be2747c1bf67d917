"""Offline batch recommendation (`peterrec_tf.recommend`): users per second over a catalogue
of 23.7K and of 645K items, with and without `--exclude_history`.

    python benchmarks/recommend_throughput.py [--items=23700,645000] [--users=5000] \
        [--channels=64] [--history=50] [--batch_size=256] [--repeats=3] [--output=RESULTS_DIR]

Per catalogue size: a paper-shaped log (`pipelines.paper_log`, Zipf popularity, about
`--history` events per user) prepared with `pipelines.prepare --format=interactions`
against the whole catalogue's vocabulary (every id exists in the model, reached or not), a
next-item model with random weights (the release's dilations, `full` head: the speed does
not depend on the weights' values) saved as a model directory, then `run_recommend` over
the test split, the two modes alternating `--repeats` times in one process (the first
call of each mode, which traces the function, is timed apart); users/s counts the ranking
and writing that `run_recommend` times itself, the whole call's time is kept beside it. A catalogue above
`chunked_ranking.DEFAULT_CHUNK` is ranked slice by slice, as `recommend` and the export
do. The JSON (`benchmarks/raw_output.py`) keeps every timing with the provenance.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))


def build(root, items, users, channels, history, log):
    """(model_dir, data_dir) of one catalogue size."""
    import keras

    from paper_scale import write_catalogue
    from peterrec_tf.model_dir import save_model_dir
    from peterrec_tf.models import Backbone, NextItNet
    from pipelines.paper_log import write_paper_log
    from pipelines.prepare import prepare
    from pipelines.vocab import read_tokens

    catalogue = os.path.join(root, "catalogue.txt")
    write_catalogue(catalogue, items - 1)  # <UNK> + items - 1 tokens: `items` ids in all
    log_path = os.path.join(root, "log.tsv")
    write_paper_log(log_path, users * history, num_items=items - 1, history=history, seed=0,
                    prefix="")
    data_dir = os.path.join(root, "data")
    prepare("interactions", data_dir, log_path, vocab=catalogue, max_len=history,
            user_col="user", item_col="item", time_col="timestamp", log=lambda *_: None)
    keras.utils.set_random_seed(0)
    model = NextItNet(Backbone(items, channels=channels, dilations=(1, 4) * 4, causal=True),
                      head="full")
    model.build()
    model_dir = os.path.join(root, "model")
    save_model_dir(model_dir, model, {"max_len": history},
                   {"items": read_tokens(os.path.join(data_dir, "vocab", "items.txt"))})
    log(f"{items:,} items: model and data in {root}")
    return model_dir, data_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="23700,645000",
                        help="Catalogue sizes (ids, <UNK> included), comma-separated.")
    parser.add_argument("--users", type=int, default=5000, help="Users in the log (about).")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=None, help="a results directory (default: "
                        "benchmarks/results/)")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.items.split(",") if v]
    if not sizes or min(sizes) < 100 or args.users < 10 or args.repeats < 1:
        parser.error("--items >= 100 each, --users >= 10, --repeats >= 1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from raw_output import Run
    from peterrec_tf.recommend import run_recommend

    run = Run("recommend_throughput")
    summary, raw = {}, {}
    for items in sizes:
        with tempfile.TemporaryDirectory(prefix="recommend-throughput-") as root:
            model_dir, data_dir = build(root, items, args.users, args.channels, args.history,
                                        print)
            times = {"plain": [], "exclude_history": []}  # ranking + writing, per call
            walls = {"plain": [], "exclude_history": []}  # the whole call, loading included
            first = {}
            users = None
            for repeat in range(args.repeats + 1):
                for mode in times:
                    started = time.perf_counter()
                    done = run_recommend(model_dir, data_dir, "test", 10,
                                         os.path.join(root, f"recs_{mode}.jsonl"),
                                         exclude_history=mode == "exclude_history",
                                         batch_size=args.batch_size, log=lambda *_: None)
                    wall = time.perf_counter() - started
                    users = done["users"]
                    if repeat == 0:
                        first[mode] = wall  # includes tracing the ranking function
                    else:
                        times[mode].append(done["seconds"])
                        walls[mode].append(wall)
            entry = {"users": users, "first_call_seconds": first}
            for mode, samples in times.items():
                median = statistics.median(samples)
                entry[mode] = {"median_seconds": median, "users_per_second": users / median,
                               "median_wall_seconds": statistics.median(walls[mode])}
                print(f"{items:>9,} items  {mode:16s} {users / median:8,.0f} users/s "
                      f"(median of {len(samples)}, {users} users, batch {args.batch_size})")
            summary[str(items)] = entry
            raw[str(items)] = {"ranking_seconds": times, "wall_seconds": walls}
    summary["setup"] = {"channels": args.channels, "history": args.history,
                        "batch_size": args.batch_size, "k": 10, "head": "full",
                        "repeats": args.repeats, "users_per_second": "over run_recommend's "
                        "own timing: ranking every test user and writing the JSON lines (the "
                        "model and data loading before it are in median_wall_seconds)"}
    path = run.write(summary, raw, **({"results_dir": args.output} if args.output else {}))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
