"""One user's next item, served: latency in-process (SavedModel) and through the gRPC test
server (`tests/serving_server.py`: the TF1 session loader behind a real localhost gRPC
PredictionService), with and without `--exclude_history`.

    python benchmarks/serving_latency.py [--requests=2000] [--items=23700] [--channels=64] \
        [--history=50] [--output=RESULTS_DIR]

A next-item model (the release's dilations, `full` head, random weights: latency does not
depend on their values) is exported twice (plain, --exclude_history); each export answers
`--requests` single-user requests (50-item histories of random item tokens, a new one per
request, the same sequence for every mode) after 20 warm-up calls; the gRPC answers are
checked equal to the in-process ones on the first histories. The JSON keeps every timing
(ms) with the commit, dirty flag, command, machine and load average before and after, so
a figure quoted from it can be re-read; targets: p99 <= 2.5 ms in-process, <= 5 ms gRPC.
A breakdown times the model's two parts alone (next-item state; scores + top-k) on the
same kind of histories, so what is left of a request is the signature's own work
(string lookup, framing, exclusion, output tokens).
Measure on a quiet machine: a loaded one measures the load.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

TARGETS_MS = {"in_process": 2.5, "grpc": 5.0}
WARMUP = 20


def percentiles(times):
    from raw_output import percentile

    return {"p50_ms": statistics.median(times), "p90_ms": percentile(times, 90),
            "p99_ms": percentile(times, 99), "max_ms": max(times), "calls": len(times)}


def build_exports(root, items, channels, history, log):
    """{mode: SavedModel version path} of one random next-item model."""
    import keras
    from peterrec_tf.model_dir import save_model_dir
    from peterrec_tf.models import Backbone, NextItNet
    from peterrec_tf.serving.saved_model import export

    keras.utils.set_random_seed(0)
    model = NextItNet(Backbone(items, channels=channels, causal=True))
    model.build()
    vocab = ["<UNK>"] + [f"i{i}" for i in range(1, items)]
    save_model_dir(os.path.join(root, "model"), model, {"max_len": history}, {"items": vocab})
    paths = {}
    for mode, exclude in (("plain", False), ("exclude_history", True)):
        paths[mode] = export([("next", os.path.join(root, "model"))], os.path.join(root, "sm"),
                             mode, k=10, exclude_history=exclude, log=lambda *_: None)["path"]
        log(f"exported {mode}: {paths[mode]}")
    return paths, vocab


def breakdown(model_dir, vocab, requests, history, seed, log):
    """Where one in-process request's time goes: the model's own parts as tf.functions
    (framed ids -> next-item state; state -> scores over the catalogue + top-k), each
    timed alone over the same histories, beside the whole signature."""
    import numpy as np
    import tensorflow as tf
    from peterrec_tf.model_dir import load_model_dir

    model, _, _ = load_model_dir(model_dir)
    rng = np.random.RandomState(seed)
    ids = tf.constant(rng.randint(1, len(vocab), (WARMUP + requests, 1, history)), tf.int32)
    state = tf.function(lambda x: model.user_embedding(x))
    rank = tf.function(lambda h: tf.math.top_k(model.head(h), 10))
    hidden = state(ids[0])
    parts = {"backbone_state": lambda i: state(ids[i]), "head_scores_top_k": lambda i: rank(hidden)}
    found = {}
    for name, call in parts.items():
        times = []
        for i in range(WARMUP + requests):
            started = time.perf_counter()
            out = call(i)
            tf.nest.map_structure(lambda t: t.numpy(), out)
            if i >= WARMUP:
                times.append((time.perf_counter() - started) * 1000)
        found[name] = times
        log(f"breakdown {name:18s} p50 {statistics.median(times):.2f} ms")
    return found


def measure(paths, vocab, requests, history, seed, log):
    import numpy as np
    import tensorflow as tf
    from serving_server import SessionModel, start_server
    from peterrec_tf.serving import GrpcClient

    rng = np.random.RandomState(seed)
    tokens = np.array(vocab[1:], dtype=object)
    histories = tokens[rng.randint(0, len(tokens), (WARMUP + requests, 1, history))].astype(bytes)
    results = {}
    for mode, path in paths.items():
        signature = tf.saved_model.load(path).signatures["serving_default"]
        session = SessionModel(path)
        server, port = start_server({mode: {1: session}})
        entry = {}
        try:
            with GrpcClient(f"127.0.0.1:{port}", mode, timeout=60) as client:
                for i in range(5):  # the same answers both ways
                    one = histories[i]
                    local = signature(items=tf.constant(one))["top_k_ids"].numpy()
                    remote = client.predict([[t.decode() for t in one[0]]])["top_k_ids"]
                    if not np.array_equal(local, remote):
                        raise RuntimeError(f"{mode}: gRPC answered {remote}, in-process {local}")
                calls = {"in_process": lambda one: signature(items=tf.constant(one))["top_k_ids"].numpy(),
                         "grpc": lambda one, c=client: c.call({"items": one})["top_k_ids"]}
                for way, call in calls.items():
                    times = []
                    for i, one in enumerate(histories):
                        started = time.perf_counter()
                        call(one)
                        if i >= WARMUP:
                            times.append((time.perf_counter() - started) * 1000)
                    entry[way] = {**percentiles(times), "target_p99_ms": TARGETS_MS[way],
                                  "meets_target": percentiles(times)["p99_ms"] <= TARGETS_MS[way],
                                  "times_ms": times}
                    log(f"{mode:16s} {way:10s} p50 {entry[way]['p50_ms']:.2f}  p90 "
                        f"{entry[way]['p90_ms']:.2f}  p99 {entry[way]['p99_ms']:.2f} ms "
                        f"(target {TARGETS_MS[way]} ms)")
        finally:
            server.stop(0)
        results[mode] = entry
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--items", type=int, default=23_700)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="a results directory (default: "
                        "benchmarks/results/, file serving_latency_<commit>.json)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.items < 12 or args.history < 1:
        parser.error("--requests and --history must be at least 1, --items at least 12")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from raw_output import Run

    run = Run("serving_latency", note="measure on a quiet machine: a loaded one measures "
              "the load")
    with tempfile.TemporaryDirectory(prefix="serving-latency-") as root:
        paths, vocab = build_exports(root, args.items, args.channels, args.history, print)
        results = measure(paths, vocab, args.requests, args.history, args.seed, print)
        parts = breakdown(os.path.join(root, "model"), vocab, args.requests, args.history,
                          args.seed, print)
    setup = {"items": args.items, "channels": args.channels, "history": args.history,
             "requests": args.requests, "warmup": WARMUP, "k": 10, "head": "full",
             "signature": "serving_default", "batch": 1}
    summary = {"setup": setup, "targets_p99_ms": TARGETS_MS,
               "results": {mode: {way: {k: v for k, v in entry.items() if k != "times_ms"}
                                  for way, entry in ways.items()}
                           for mode, ways in results.items()}}
    summary["breakdown_in_process"] = {name: percentiles(times) for name, times in parts.items()}
    raw = {mode: {way: entry["times_ms"] for way, entry in ways.items()}
           for mode, ways in results.items()}
    raw["breakdown_in_process"] = parts
    path = run.write(summary, raw, **({"results_dir": args.output} if args.output else {}))
    load = run.provenance["load"]
    print(f"wrote {path} (load average {load['loadavg_before']} before, "
          f"{load['loadavg_after']} after: quote it only from a quiet machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
