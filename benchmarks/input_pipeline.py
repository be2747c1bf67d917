"""Input pipeline throughput: the release's numpy + feed approach vs tf.data from TFRecords.

    python benchmarks/input_pipeline.py                       # default, a few minutes
    python benchmarks/input_pipeline.py --sequences=1000000   # the issue's 1M-sequence run
    python benchmarks/input_pipeline.py --movielens=DIR --repeats=5 --steps=100

Both sides build the same kind of batches from the same training sequences:
  release: the sequences held as one left-padded numpy array, sliced per step; next-item
           x/y/weights cut from the slice, masking done per sequence in Python (as the
           release's feed_dict training does), and each batch handed to TensorFlow
           through placeholders (`sess.run` with a feed_dict), so it reaches the runtime;
  tf.data: GZIP TFRecord shards -> peterrec_tf.data.datasets.pretrain_dataset (interleaved
           shards, one vectorised parse per batch, vectorised padding and masking,
           prefetch), batches pulled from the iterator.
It also times what training consumes (Keras steps of the project's NextItNet / GRec
models at the default size: 64 channels, dilations (1, 4) x 4, kernel 3, same batch and
length), so "headroom" says whether the input pipeline could ever be the bottleneck
(target: >= 10x). The two input sides alternate, each measured `--repeats` times;
medians are printed. Nothing here is imported by the library.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.raw_output import Run  # noqa: E402
from peterrec_tf.data import datasets  # noqa: E402
from peterrec_tf.data import framing as framing_ops  # noqa: E402
from pipelines import inputs  # noqa: E402
from pipelines.prepare import prepare  # noqa: E402

CONFIGS = (("next_item", 50), ("next_item", 100), ("masked_item", 50), ("masked_item", 100))


def release_mask(rows, vocab, rng, rate=0.3):
    """The release's way: a Python loop over sequences and chosen positions."""
    masked, weights = rows.copy(), np.zeros(rows.shape, "float32")
    for r in range(len(rows)):
        real = np.flatnonzero(rows[r])
        if not len(real):
            continue
        chosen = rng.choice(real, max(1, int(np.floor(rate * len(real) + 0.5))), replace=False)
        for p in chosen:
            weights[r, p] = 1.0
            draw = rng.rand()
            if draw < 0.8:
                masked[r, p] = 0
            elif draw >= 0.9:
                masked[r, p] = rng.randint(1, vocab)
    return masked, weights


def release_side(array, batch, objective, length, vocab, steps, rng):
    """Examples/second of numpy slicing + per-step feed_dict into a TF1 session."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.int32, [None, None])
        y = tf.compat.v1.placeholder(tf.int32, [None, None])
        w = tf.compat.v1.placeholder(tf.float32, [None, None])
        touch = (tf.reduce_sum(x) + tf.reduce_sum(y), tf.reduce_sum(w))  # the batch reaches TF
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(touch, {x: array[:2, -length:], y: array[:2, -length:], w: np.ones((2, length))})
        started = time.perf_counter()
        for step in range(steps):
            start = (step * batch) % (len(array) - batch)
            rows = array[start:start + batch]
            if objective == "next_item":
                window = rows[:, -(length + 1):]
                feed = {x: window[:, :-1], y: window[:, 1:],
                        w: (window[:, 1:] > 0).astype("float32")}
            else:
                window = rows[:, -length:]
                masked, weights = release_mask(window, vocab, rng)
                feed = {x: masked, y: window, w: weights}
            session.run(touch, feed)
        return steps * batch / (time.perf_counter() - started)


def tfdata_side(data_dir, batch, objective, length, steps):
    """Examples/second pulled from the tf.data pipeline (warmed up first)."""
    dataset = datasets.pretrain_dataset(data_dir, "train", batch, objective, max_len=length,
                                        repeat=True, seed=0)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    started = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch / (time.perf_counter() - started)


def training_side(vocab, batch, objective, length, steps):
    """Examples/second one Keras training step consumes at the default model size."""
    import keras

    from peterrec_tf.models import Backbone, GRecPretrainer, NextItNet
    keras.utils.set_random_seed(0)
    causal = objective == "next_item"
    task = NextItNet if causal else GRecPretrainer
    model = task(Backbone(vocab, 64, (1, 4) * 4, 3, causal=causal))
    model.compile(optimizer="adam")
    rng = np.random.RandomState(0)
    ids = rng.randint(1, vocab, (batch * 4, length)).astype("int32")
    weights = (rng.rand(*ids.shape) < (1.0 if causal else 0.3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((ids, ids, weights)).batch(batch).repeat()
    model.fit(data, steps_per_epoch=2, verbose=0)  # build + trace outside the timing
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, verbose=0)
    return steps * batch / (time.perf_counter() - started)


def padded_array(data_dir, length):
    """The training sequences as the release holds them: one left-padded int32 array."""
    files = inputs.shard_files(data_dir, "train")
    spec = {"item_ids": tf.io.RaggedFeature(tf.int64)}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(8192).map(
        lambda s: framing_ops.left_pad(tf.io.parse_example(s, spec)["item_ids"], length))
    return np.concatenate([b.numpy() for b in dataset])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=100_000,
                        help="synthetic users/sequences (the issue's large run: 1000000)")
    parser.add_argument("--movielens", default=os.path.join(ROOT, "..", "shared", "data", "ml-100k"),
                        help="ml-100k directory (skipped if absent)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per side (median)")
    parser.add_argument("--steps", type=int, default=40, help="batches per measurement")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train_steps", type=int, default=3,
                        help="Keras training steps timed per objective/length, measured once "
                        "with the largest vocabulary (0: skip)")
    parser.add_argument("--workdir", default=None, help="keep the prepared data here")
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    run, rows = Run("input_pipeline", note="the two input sides alternate"), []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or scratch
        sources = []
        if os.path.exists(os.path.join(args.movielens, "u.data")):
            out = os.path.join(root, "ml")
            prepare("movielens_100k", out, args.movielens, max_len=100, target_genres="",
                    log=lambda *_: None)
            sources.append(("MovieLens-100K", os.path.join(out, "pretrain")))
        started = time.time()
        out = os.path.join(root, f"syn{args.sequences}")
        prepare("synthetic", out, max_len=100, num_users=args.sequences, num_items=5000,
                num_clusters=50, min_len=20, max_len_generated=120, log=lambda *_: None)
        print(f"prepared {args.sequences:,} synthetic sequences (20-120 items, 5,000 items) "
              f"in {time.time() - started:.0f}s", flush=True)
        sources.append((f"synthetic {args.sequences:,}", os.path.join(out, "pretrain")))
        print(f"{os.cpu_count()} CPUs; batch {args.batch}; medians of {args.repeats} alternated runs of "
              f"{args.steps} batches; examples (sequences) per second")
        print(f"{'data':<20}{'objective':<13}{'len':>4}{'release/s':>12}{'tf.data/s':>12}"
              f"{'ratio':>8}{'train/s':>10}{'headroom':>10}")
        consumed = {}
        if args.train_steps:  # training cost does not depend on the data; largest vocabulary
            vocab = max(inputs.read_metadata(d)["num_items"] for _, d in sources)
            for objective, length in CONFIGS:
                consumed[objective, length] = training_side(vocab, args.batch, objective, length,
                                                            args.train_steps)
        for name, data_dir in sources:
            vocab = inputs.read_metadata(data_dir)["num_items"]
            array = padded_array(data_dir, 101)
            for objective, length in CONFIGS:
                theirs, ours = [], []
                for _ in range(args.repeats):
                    theirs.append(release_side(array, args.batch, objective, length, vocab,
                                               args.steps, rng))
                    ours.append(tfdata_side(data_dir, args.batch, objective, length, args.steps))
                a, b = statistics.median(theirs), statistics.median(ours)
                line = f"{name:<20}{objective:<13}{length:>4}{a:>12,.0f}{b:>12,.0f}{b / a:>7.1f}x"
                if consumed:
                    train = consumed[objective, length]
                    line += f"{train:>10,.0f}{b / train:>9.0f}x"
                print(line, flush=True)
                rows.append({"data": name, "objective": objective, "length": length,
                             "release_per_s": theirs, "tfdata_per_s": ours,
                             "release_median": a, "tfdata_median": b,
                             "train_per_s": consumed.get((objective, length))})
    print("raw output: " + run.write(
        {"batch": args.batch, "repeats": args.repeats, "steps": args.steps,
         "rows": [{k: r[k] for k in ("data", "objective", "length", "release_median",
                                     "tfdata_median", "train_per_s")} for r in rows]},
        {"rows": rows}))


if __name__ == "__main__":
    main()
