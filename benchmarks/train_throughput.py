"""Training throughput: the release's TF1 approach vs this project's, side by side.

    python benchmarks/train_throughput.py [--quick] [--rows=...] [--repeats=3]

(1) "release": the original model re-created in TF1 style from
    ../shared/docs/original_tf1_model.md: a compat.v1 graph with placeholders, numpy
    batches sliced and fed through feed_dict each step, the release's conv formulation
    (input viewed as [B, 1, T, C], explicit left padding, atrous conv lowered to
    SpaceToBatchND + Conv2D + BatchToSpaceND, as the release's .meta graph records) and its
    hand-written layer norm; Adam. A first "fidelity" row runs the release's own .meta
    training graph (its demo model) beside the re-creation at the same size.
(2) "peterrec-tf": the same model and batch through this project's path: TFRecords ->
    tf.data input function -> the jobs' training driver (`training.loop.train`: Keras fit
    with compute_loss and the job callback).
The two sides run alternately in one process, repeated; medians of sequences/second and
their ratio are printed per row. No assertion: this prints figures.

`--history_len=9` measures something else: next-item pre-training on short histories (a
median of about 9 real items in `--seq_len`-wide windows), this project against itself:
`--nojit_compile` (TF's own ops), the fused softmax alone in XLA, the residual stack and
the fused softmax in XLA, and the step compiled whole (the head on the target rows only,
`SequencePretrainer._compact_loss_sum`), alternated in one process; the row names the one
the `pretrain` job chooses by default (the objective's `xla_plan` on the measured share of
target positions); raw samples, commit, load average and command go through
`benchmarks/raw_output.py` to `benchmarks/results/train_throughput_short_<commit>.json`.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.raw_output import Run  # noqa: E402

v1 = tf.compat.v1


# ---------------------------------------------------------------- the release, TF1 style
def tf1_layer_norm(x, scope):
    with v1.variable_scope(scope):
        channels = x.get_shape()[-1]
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        mean, variance = tf.nn.moments(x, [-1], keepdims=True)
        return (x - mean) / tf.sqrt(variance + 1e-8) * gamma + beta


def tf1_conv(x, channels, k, rate, causal, scope):
    with v1.variable_scope(scope):
        weight = v1.get_variable("weight", [1, k, channels, channels],
                                 initializer=v1.truncated_normal_initializer(stddev=0.02))
        bias = v1.get_variable("bias", [channels], initializer=v1.zeros_initializer())
        # the release's lowering, as its .meta graph records it: Pad (causal) -> ExpandDims
        # -> SpaceToBatchND -> Conv2D -> BatchToSpaceND (tf.nn.atrous_conv2d; TF 2.21
        # still lowers a dilated tf.nn.convolution this way) -> + bias -> Squeeze
        if causal:
            x = tf.pad(x, [[0, 0], [(k - 1) * rate, 0], [0, 0]])
        out = tf.nn.atrous_conv2d(tf.expand_dims(x, 1), weight, rate,
                                  padding="VALID" if causal else "SAME")
        return tf.squeeze(out + bias, 1)


def tf1_mp(x, channels, scope):
    with v1.variable_scope(scope):
        down = v1.get_variable("down", [channels, channels // 4])
        up = v1.get_variable("up", [channels // 4, channels], initializer=v1.zeros_initializer())
        h = tf.matmul(x, down)
        h = 0.5 * h * (1 + tf.tanh(0.7978845608 * (h + 0.044715 * h ** 3)))
        return x + tf.matmul(h, up)


def tf1_graph(kind, vocab, channels, dilations, k, seq_len, num_targets):
    """(graph, feeds builder, train op) for kind in next_full, next_sampled, masked, peterrec."""
    graph = tf.Graph()
    with graph.as_default():
        causal = kind != "masked"
        ids = v1.placeholder(tf.int32, [None, None], "ids")
        emb = v1.get_variable("allitem_embeddings", [vocab, channels],
                              initializer=v1.truncated_normal_initializer(stddev=0.02))
        h = tf.nn.embedding_lookup(emb, ids[:, :-1] if kind.startswith("next") else ids)
        for i, d in enumerate(dilations):
            with v1.variable_scope(f"block_{i}_{d}"):
                c1 = tf1_conv(h, channels, k, d, causal, "dilated_conv1")
                if kind == "peterrec":
                    c1 = tf1_mp(c1, channels, "mp_1")
                r = tf.nn.relu(tf1_layer_norm(c1, "layer_norm1"))
                c2 = tf1_conv(r, channels, k, 2 * d, causal, "dilated_conv2")
                if kind == "peterrec":
                    c2 = tf1_mp(c2, channels, "mp_2")
                h = h + tf.nn.relu(tf1_layer_norm(c2, "layer_norm2"))
        feeds = {"ids": ids}
        if kind == "next_full":
            w = v1.get_variable("logits/weight", [1, 1, channels, vocab])
            b = v1.get_variable("logits/bias", [vocab], initializer=v1.zeros_initializer())
            # the release's head is its 1x1 conv1d (ExpandDims, Conv2D SAME, bias, Squeeze;
            # as in its .meta graph), the logits reshaped to [-1, V] for the loss
            conv = tf.nn.conv2d(tf.expand_dims(tf.nn.relu(h), 1), w, [1, 1, 1, 1], "SAME")
            logits = tf.reshape(tf.squeeze(conv + b, [1]), [-1, vocab])
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.reshape(ids[:, 1:], [-1]), logits=logits))
            variables = None
        elif kind == "next_sampled":
            w = v1.get_variable("softmax_w", [vocab, channels])
            b = v1.get_variable("softmax_b", [vocab], initializer=v1.constant_initializer(0.1))
            loss = tf.reduce_mean(tf.nn.sampled_softmax_loss(
                w, b, tf.reshape(tf.cast(ids[:, 1:], tf.int64), [-1, 1]),
                tf.reshape(h, [-1, channels]), int(0.2 * vocab), vocab))
            variables = None
        elif kind == "masked":
            labels = v1.placeholder(tf.int32, [None, None], "labels")
            weights = v1.placeholder(tf.float32, [None, None], "weights")
            feeds.update(labels=labels, weights=weights)
            w = v1.get_variable("softmax_w", [vocab, channels])
            b = v1.get_variable("softmax_b", [vocab], initializer=v1.constant_initializer(0.1))
            losses = tf.nn.sampled_softmax_loss(
                w, b, tf.reshape(tf.cast(labels, tf.int64), [-1, 1]), tf.reshape(h, [-1, channels]),
                int(0.2 * vocab), vocab)
            flat_w = tf.reshape(weights, [-1])
            loss = tf.reduce_sum(losses * flat_w) / tf.maximum(tf.reduce_sum(flat_w), 1.0)
            variables = None
        else:  # peterrec fine-tuning: patches + ln2 + target embeddings train
            pos = v1.placeholder(tf.int32, [None], "pos")
            neg = v1.placeholder(tf.int32, [None], "neg")
            feeds.update(pos=pos, neg=neg)
            targets = v1.get_variable("target-item/allitem_embeddings_target", [num_targets, channels])
            user = h[:, -1, :]
            sp = tf.reduce_sum(user * tf.gather(targets, pos), -1)
            sn = tf.reduce_sum(user * tf.gather(targets, neg), -1)
            loss = tf.reduce_mean(tf.nn.softplus(-sp) + tf.nn.softplus(sn))
            variables = [v for v in v1.trainable_variables()
                         if "mp_" in v.name or "layer_norm2" in v.name or "target-item" in v.name]
        train = v1.train.AdamOptimizer(1e-3).minimize(loss, var_list=variables)
        init = v1.global_variables_initializer()
    return graph, feeds, train, init


def numpy_masking(batch, vocab, rng, rate=0.3):
    """The release's per-sequence Python masking loop (what feed_dict training does)."""
    masked, weights = batch.copy(), np.zeros(batch.shape, "float32")
    for row in range(len(batch)):
        n = max(1, int(round(rate * batch.shape[1])))
        for position in rng.choice(batch.shape[1], n, replace=False):
            weights[row, position] = 1
            draw = rng.rand()
            if draw < 0.8:
                masked[row, position] = 0
            elif draw >= 0.9:
                masked[row, position] = rng.randint(1, vocab)
    return masked, weights


def run_tf1(kind, data, vocab, channels, dilations, batch, steps, num_targets, rng):
    graph, feeds, train, init = tf1_graph(kind, vocab, channels, dilations, 3, data.shape[1], num_targets)
    with v1.Session(graph=graph) as session:
        session.run(init)

        def step(i):
            start = (i * batch) % (len(data) - batch)
            rows = data[start:start + batch]  # the release slices numpy arrays
            feed = {feeds["ids"]: rows}
            if kind == "masked":
                masked, weights = numpy_masking(rows, vocab, rng)
                feed = {feeds["ids"]: masked, feeds["labels"]: rows, feeds["weights"]: weights}
            if kind == "peterrec":
                feed[feeds["pos"]] = rng.randint(1, num_targets, batch)
                feed[feeds["neg"]] = rng.randint(1, num_targets, batch)
            session.run(train, feed)
        return time_steps(step, steps, batch)


def time_steps(step, steps, batch):
    """Sequences/second of `step(i)` for i = 1..steps, after one untimed warm-up step."""
    step(0)
    started = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return steps * batch / (time.perf_counter() - started)


def run_release_meta(meta_path, data, batch, steps):
    """The release's own pre-training graph (its .meta: placeholders, Adam train op)."""
    graph = tf.Graph()
    with graph.as_default():
        v1.train.import_meta_graph(meta_path)
        ids = graph.get_tensor_by_name("itemseq_input:0")
        train = graph.get_operation_by_name("Adam")
        init = graph.get_operation_by_name("init")
    with v1.Session(graph=graph) as session:
        session.run(init)

        def step(i):
            start = (i * batch) % (len(data) - batch)
            session.run(train, {ids: data[start:start + batch]})
        return time_steps(step, steps, batch)


def head_matmul_ceiling(vocab, channels, batch, seq_len, steps):
    """Sequences/second if a next-item step were nothing but the full-softmax head's three
    float32 matmuls (logits `x @ W`, `d @ W^T` and `x^T @ d` of the backward pass), timed
    with TF's own kernels (the fastest measured here).  Every float32 implementation of the
    release's model runs these, so no such implementation trains faster than this."""
    rows = batch * (seq_len - 1)
    rng = np.random.RandomState(0)
    x = tf.constant(rng.randn(rows, channels).astype("float32"))
    w = tf.constant(rng.randn(channels, vocab).astype("float32"))
    d = tf.constant(rng.randn(rows, vocab).astype("float32"))

    @tf.function
    def matmuls():  # one element of each product, so that no extra pass is timed
        return tf.stack([tf.matmul(x, w)[0, 0], tf.matmul(d, w, transpose_b=True)[0, 0],
                         tf.matmul(x, d, transpose_a=True)[0, 0]])
    return time_steps(lambda i: matmuls().numpy(), steps, batch)


def release_meta_path():
    shared = os.environ.get("PETERREC_SHARED") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")
    path = os.path.join(shared, "tf1_checkpoints", "nextitnet_causal",
                        "model_nextitnet_transfer_pretrain.ckpt.meta")
    return path if os.path.exists(path) else None


# ---------------------------------------------------------------- this project
def run_keras(kind, prepared, vocab, channels, dilations, batch, steps, seq_len, plan=None):
    import keras

    from peterrec_tf.data import datasets
    from pipelines import inputs
    from peterrec_tf.models import Backbone, GRecPretrainer, NextItNet, build_finetuner

    keras.utils.set_random_seed(0)
    if kind == "peterrec":
        backbone = Backbone(vocab, channels, dilations, 3, causal=True)
        model = build_finetuner(backbone, "peterrec", "item_rec", inputs.read_metadata(
            os.path.join(prepared, "coldrec"))["num_targets"])
        data = datasets.finetune_dataset(os.path.join(prepared, "coldrec"), "train", batch,
                                         max_len=seq_len - 2, repeat=True, drop_remainder=True)
    else:
        causal = kind != "masked"
        backbone = Backbone(vocab, channels, dilations, 3, causal=causal)
        head, sampled = ("full", 0) if kind == "next_full" else ("dot", int(0.2 * vocab))
        model = (NextItNet if causal else GRecPretrainer)(backbone, head=head, num_sampled=sampled)
        objective = "masked_item" if kind == "masked" else "next_item"
        data = datasets.pretrain_dataset(os.path.join(prepared, "pretrain"), "train", batch, objective,
                                         max_len=seq_len - (1 if causal else 0), repeat=True,
                                         drop_remainder=True)
    if not model.built:
        model.build()
    # XLA as the jobs use it: the whole fine-tuning step; in pre-training what
    # the objective's xla_plan says (the whole step, or the residual blocks, plus the fused softmax)
    from peterrec_tf.training.optimizer import FusedAdam
    from peterrec_tf import objectives
    if kind == "peterrec":
        model.compile(optimizer=FusedAdam(1e-3), jit_compile=True)
    else:
        model.compile(optimizer=FusedAdam(1e-3), xla_plan=objectives.get(objective).xla_plan(
                          sampled, channels) if plan is None else plan)
    warm_up = 3
    clock = StepClock(warm_up)
    # the jobs' own training driver (fit + the job callback: step counting, progress,
    # TensorBoard, checkpoint at the end), in one run: the first steps trace the function
    # and fill tf.data's shuffle buffer (a start-up cost, like the release's graph building
    # and data loading, which the TF1 side does not time either); the clock runs from the
    # end of the last warm-up step to the end of the last step
    from peterrec_tf.training import loop
    with tempfile.TemporaryDirectory() as model_dir:
        loop.train(model, lambda: data, warm_up + steps, model_dir, batch_size=batch,
                   checkpoint_every=10 ** 9, log_every=10 ** 9, log=lambda *_: None,
                   callbacks=[clock])
    return steps * batch / (clock.stopped - clock.started)


def _step_clock_class():
    import keras

    class StepClock(keras.callbacks.Callback):
        """Wall time between the end of step `warm_up` and the end of the last step."""

        def __init__(self, warm_up):
            super().__init__()
            self.warm_up, self.started, self.stopped = warm_up, None, None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if batch + 1 == self.warm_up:
                self.started = now
            self.stopped = now
    return StepClock


def StepClock(warm_up):  # noqa: N802 (a factory, so keras is imported lazily)
    return _step_clock_class()(warm_up)


def prepare_data(root, num_items, num_users, seq_len, history_len=None):
    """Synthetic data of `num_items` items: histories of `seq_len` (+2 held out) items, or
    with `history_len`, of `history_len` +- 6 training items (the median real positions of
    a window is then about `history_len`)."""
    from pipelines.prepare import prepare
    out = os.path.join(root, f"syn_{num_items}_{history_len or seq_len}")
    low, high = ((seq_len, seq_len + 2) if history_len is None
                 else (max(3, history_len - 4), history_len + 8))
    prepare("synthetic", out, max_len=seq_len, num_users=num_users, num_items=num_items,
            num_clusters=20, min_len=low, max_len_generated=high, num_targets=200,
            log=lambda *_: None)
    return out


def short_history_rows(args):
    """Default `pretrain` vs `--nojit_compile` vs the whole step compiled, on short
    histories; prints medians and writes the raw samples (see the module docstring)."""
    from peterrec_tf.data import datasets
    from pipelines import inputs
    from peterrec_tf import objectives
    from peterrec_tf.training.xla_policy import target_fill

    dilations = (1, 4, 1, 4, 1, 4, 1, 4)
    sides = {"nojit_compile": (), "softmax": ("softmax",), "blocks+softmax": ("blocks", "softmax"),
             "whole_step": ("step", "softmax")}
    run, rows = Run("train_throughput_short", note="every plan alternates in one process; "
                    "load average after each row in raw"), []
    with tempfile.TemporaryDirectory() as root:
        for vocab in [int(v) for v in args.vocabs.split(",")]:
            prepared = prepare_data(root, vocab - 1, 4000, args.seq_len, args.history_len)
            data = datasets.pretrain_dataset(os.path.join(prepared, "pretrain"), "train", 32,
                                             max_len=args.seq_len - 1, shuffle=False,
                                             windows="all")
            fill = target_fill(data)
            real = [int(w) for _, _, weights in data.take(32)
                    for w in weights.numpy().sum(axis=1)]
            for channels in [int(c) for c in args.channels.split(",")]:
                default = objectives.get("next_item").xla_plan(0, channels, fill=fill)
                default_side = next(k for k, v in sides.items() if v == default)
                samples = {side: [] for side in sides}
                for _ in range(args.repeats):  # alternate the sides
                    for side, plan in sides.items():
                        samples[side].append(run_keras("next_full", prepared, vocab, channels,
                                                       dilations, 32, args.steps, args.seq_len,
                                                       plan=plan))
                medians = {side: statistics.median(v) for side, v in samples.items()}
                row = {"vocab": vocab, "channels": channels, "batch": 32,
                       "seq_len": args.seq_len, "median_real_items": statistics.median(real),
                       "fill": fill, "default_plan": list(default), "default_side": default_side,
                       "samples_seq_per_s": samples, "medians": medians,
                       "default_over_nojit": medians[default_side] / medians["nojit_compile"],
                       "load_average_after": os.getloadavg()}
                rows.append(row)
                print(f"short histories (median {row['median_real_items']} of {args.seq_len}, "
                      f"fill {fill:.2f}) V={vocab} C={channels}: "
                      + ", ".join(f"{side} {m:,.0f}" for side, m in medians.items())
                      + f" seq/s; the default ({default_side}) / nojit "
                      f"{row['default_over_nojit']:.2f}", flush=True)
    print("raw samples: " + run.write(short_history_summary(rows),
                                      {"rows": rows, "arguments": vars(args)}))


def short_history_summary(rows):
    """The kept output's `summary` of the short-history rows: each row's medians and the
    default plan's ratio to `--nojit_compile` (the samples stay in `raw`)."""
    keep = ("vocab", "channels", "batch", "seq_len", "median_real_items", "fill",
            "default_plan", "default_side", "medians", "default_over_nojit")
    return {"rows": [{k: row.get(k) for k in keep} for row in rows]}


ROWS = {  # name: (kind, batch)
    "next_full": ("next_full", 32), "next_sampled": ("next_sampled", 32),
    "masked": ("masked", 128), "peterrec": ("peterrec", 512),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="next_full,next_sampled,masked,peterrec")
    parser.add_argument("--channels", default="64,256")
    parser.add_argument("--vocabs", default="1683,100000",
                        help="item vocabulary sizes incl. id 0 (1683 = MovieLens-100K's 1682 movies + <UNK>)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side and repeat")
    parser.add_argument("--seq_len", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="64 channels, vocab 1683, 2 repeats")
    parser.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                        help="for next_full rows, also time the head's three matmuls alone: the "
                             "bound on any float32 implementation")
    parser.add_argument("--skip_fidelity", action="store_true",
                        help="skip the release .meta graph vs re-creation row")
    parser.add_argument("--history_len", type=int, default=None,
                        help="short histories: about this many real items per window (see "
                             "the module docstring); runs only those rows")
    args = parser.parse_args()
    if args.history_len:
        return short_history_rows(args)
    if args.quick:
        args.channels, args.vocabs, args.repeats = "64", "1683", 2
    dilations = (1, 4, 1, 4, 1, 4, 1, 4)
    rng = np.random.RandomState(0)
    run = Run("train_throughput", tag="vocab" + args.vocabs.replace(",", "-"),
              note="the two sides alternate in one process")
    rows, fidelity = [], None
    print(f"{'row':<14}{'C':>5}{'vocab':>8}{'batch':>7}{'release seq/s':>15}{'peterrec-tf seq/s':>19}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as root:
        meta = release_meta_path()
        if meta and not args.skip_fidelity:
            # fidelity of the re-creation: the release's own training graph (its demo model:
            # 175 items, 64 channels, full softmax) against the re-creation at that size
            vocab, batch = 175, 32
            prepared = prepare_data(root, vocab - 1, 4000, args.seq_len)
            data = rng.randint(1, vocab, (4000, args.seq_len)).astype("int32")
            real, copy, ours = [], [], []
            for _ in range(args.repeats):
                real.append(run_release_meta(meta, data, batch, args.steps))
                copy.append(run_tf1("next_full", data, vocab, 64, dilations, batch, args.steps, 200, rng))
                ours.append(run_keras("next_full", prepared, vocab, 64, dilations, batch, args.steps,
                                      args.seq_len))
            a, b, c = (statistics.median(x) for x in (real, copy, ours))
            fidelity = {"release_meta_per_s": real, "recreation_per_s": copy,
                        "peterrec_tf_per_s": ours, "medians": [a, b, c]}
            print(f"fidelity (release demo model, V=175, C=64, batch 32): release .meta graph "
                  f"{a:,.0f} seq/s, TF1 re-creation {b:,.0f} ({b / a:.2f}x), peterrec-tf "
                  f"{c:,.0f} ({c / a:.2f}x of the .meta graph)", flush=True)
        for vocab in [int(v) for v in args.vocabs.split(",")]:
            prepared = prepare_data(root, vocab - 1, 4000, args.seq_len)  # + id 0 = vocab ids
            data = rng.randint(1, vocab, (4000, args.seq_len)).astype("int32")
            for channels in [int(c) for c in args.channels.split(",")]:
                for name in args.rows.split(","):
                    kind, batch = ROWS[name]
                    # the same number of sequences per row, but at least 10 steps: the old
                    # floor of 3 timed steps at batch 512 left the PeterRec ratio unstable
                    steps = max(10, args.steps * 32 // batch) if batch > 32 else args.steps
                    ours, theirs = [], []
                    for _ in range(args.repeats):  # alternate the sides
                        theirs.append(run_tf1(kind, data, vocab, channels, dilations, batch, steps, 200, rng))
                        ours.append(run_keras(kind, prepared, vocab, channels, dilations, batch, steps,
                                              args.seq_len))
                    ceiling = []
                    if name == "next_full" and args.ceiling:
                        for _ in range(args.repeats):
                            ceiling.append(head_matmul_ceiling(vocab, channels, batch, args.seq_len,
                                                               steps))
                    a, b = statistics.median(theirs), statistics.median(ours)
                    print(f"{name:<14}{channels:>5}{vocab:>8}{batch:>7}{a:>15,.0f}{b:>19,.0f}{b / a:>8.2f}",
                          flush=True)
                    if ceiling:
                        c = statistics.median(ceiling)
                        print(f"  ceiling: the head's 3 float32 matmuls alone run at {c:,.0f} seq/s, "
                              f"{c / a:.2f}x the release (peterrec-tf reaches {b / c:.0%} of it)",
                              flush=True)
                    rows.append({"row": name, "channels": channels, "vocab": vocab,
                                 "batch": batch, "steps": steps, "release_per_s": theirs,
                                 "peterrec_tf_per_s": ours, "ceiling_per_s": ceiling,
                                 "release_median": a, "peterrec_tf_median": b,
                                 "ratio": b / a})
    print("raw output: " + run.write(
        {"fidelity_medians": fidelity and fidelity["medians"],
         "rows": [{k: r[k] for k in ("row", "channels", "vocab", "batch", "release_median",
                                     "peterrec_tf_median", "ratio")} for r in rows]},
        {"fidelity": fidelity, "rows": rows, "arguments": vars(args)}))


if __name__ == "__main__":
    main()
