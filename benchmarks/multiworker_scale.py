"""multi_worker at the paper's model size: equality with one worker, cost per step, projection.

    python benchmarks/multiworker_scale.py [--quick] [--workers=1,2,4] [--steps=8]
        [--items=645000] [--channels=256] [--optimizer=adam|lazy_adam]
        [--bandwidth_gbit=10] [--gpu_tflops=100]

What it does
1. Prepares a synthetic pre-training set with the paper's item count (every item in the
   vocabulary; a few hundred users of ~100 items are enough for --steps batches).
2. A probe process (one process, the cluster's code path: no XLA, TF's sampled softmax)
   builds the model and MEASURES: which gradients are dense and which are `IndexedSlices`
   and how many rows they carry at each per-worker batch; the forward+backward time at
   per-worker batches 32, 16, ..., 1; and the time of the --optimizer's update on the
   gradients as they come (`FusedAdam`: the fused kernel on the densified gradients;
   `LazyAdam`: the rows of the IndexedSlices only), which is what each worker runs after
   the all-reduce under the strategy.
3. Runs `python -m peterrec_tf.pretrain --strategy=multi_worker` as 1, 2, 4 local worker
   processes (TF_CONFIG on 127.0.0.1 ports) for --steps steps from the same seed and data,
   and MEASURES per run: the median step time (chief's progress line per step; steps after
   the first, which traces), the peak RSS per worker (os.wait4), and the max |difference|
   of the final weights (the chief's last checkpoint) and of the loss against 1 worker.
   Before a run, N x (1 worker's peak RSS) is compared with 75% of MemAvailable; a run that
   would not fit is done at the largest item count items/2^k that fits (or --reduced_items),
   with its own 1-worker reference at that size, and says so.
4. Prints per-step FLOPs (ANALYTIC: the matmuls of the conv stack and of the sampled
   softmax, x3 for training) and collective bytes per worker (ANALYTIC from the measured
   gradient structure and what CollectiveAllReduce does: dense tensors are ring
   all-reduced, 2 (N-1)/N x bytes sent per worker; `IndexedSlices` are all-gathered,
   values and int64 indices padded to the longest worker's rows, (N-1) x that received),
   and a PROJECTED time per epoch of the paper's data (1.55M sequences) on N hosts and on
   one GPU, from the measured times and the stated bandwidth / GPU throughput.

On a 2-core machine the 2- and 4-worker timings are CPU-oversubscribed (the workers share
the cores): they are not speed-ups; the equality is what the local run proves.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAPER_SEQUENCES = 1_550_000
PROJECT_HOSTS = (1, 2, 4, 8, 16, 32)
GIB = 1024 ** 3
OPTIMIZER_UPDATE = {"adam": "dense Adam update (FusedAdam)",
                    "lazy_adam": "row-wise Adam update (LazyAdam)"}
SAME = {"max_abs_diff": 0.0, "max_in": "-", "p9999_abs_diff": 0.0, "share_above_1e-4": 0.0,
        "loss_diff": 0.0}


# ------------------------------------------------------------------ analytic figures
def conv_layers(dilations):
    return 2 * len(dilations)  # one residual block per value: convs at d and 2d


def train_flops(positions, kept, channels, kernel, dilations, num_sampled):
    """Matmul FLOPs of one training step (forward x3: forward, d/input, d/weights)."""
    conv = 2 * kernel * channels * channels * positions * conv_layers(dilations)
    softmax = 2 * kept * (num_sampled + 1) * channels
    return {"conv_stack": 3 * conv, "sampled_softmax": 3 * softmax, "total": 3 * (conv + softmax)}


def collective_bytes(structure, workers):
    """Bytes each worker sends per step (ring all-reduce of dense gradients; padded
    all-gather of IndexedSlices values + int64 indices). `structure` from the probe."""
    if workers == 1:
        return {"dense": 0, "sparse": 0, "total": 0}
    dense = sum(g["bytes"] for g in structure["dense"]) * 2 * (workers - 1) / workers
    sparse = 0
    for g in structure["sparse"]:
        rows = g["rows_by_workers"][str(workers)] if str(workers) in g["rows_by_workers"] \
            else g["rows_per_sequence"] * structure["batch_size"] / workers + g["fixed_rows"]
        sparse += (workers - 1) * rows * (g["row_bytes"] + 8)
    return {"dense": dense, "sparse": sparse, "total": dense + sparse}


# ------------------------------------------------------------------ the probe process
def probe(args):
    """Measured in one process: gradient structure, forward+backward times, the update."""
    import keras
    import numpy as np
    import tensorflow as tf

    from peterrec_tf.data import datasets
    from pipelines import inputs
    from peterrec_tf.jobs.pretraining import default_num_sampled
    from peterrec_tf.models import Backbone, NextItNet
    from peterrec_tf.training.optimizer import OPTIMIZERS

    data_dir = os.path.join(args.data, "pretrain")
    meta = inputs.read_metadata(data_dir)
    vocab = meta["num_items"]
    num_sampled = default_num_sampled(args.num_sampled, vocab)
    keras.utils.set_random_seed(0)
    model = NextItNet(Backbone(vocab, args.channels, args.dilations, args.kernel_size,
                               causal=True), head="dot", num_sampled=num_sampled)
    model.build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), xla_plan=())  # the cluster's path
    x, y, w = next(iter(datasets.pretrain_dataset(data_dir, "train", args.batch_size,
                                                  "next_item", repeat=True, shuffle=True,
                                                  windows="all", drop_remainder=True)))
    variables = model.trainable_variables

    @tf.function(reduce_retracing=True)
    def gradients(x, y, w):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x, y, model(x, training=True), w, training=True)
        return tape.gradient(loss, variables)

    structure = {"batch_size": args.batch_size, "positions": int(np.prod(x.shape)),
                 "kept": int(tf.reduce_sum(tf.cast(w > 0, tf.int32))), "num_sampled": num_sampled,
                 "vocab": vocab, "dense": [], "sparse": []}
    sparse_rows = {}
    batches = [b for b in (32, 16, 8, 4, 2, 1) if b <= args.batch_size]
    fwd_bwd = {}
    for b in batches:
        grads = gradients(x[:b], y[:b], w[:b])  # trace + warm up
        times = []
        for _ in range(args.probe_repeats):
            started = time.perf_counter()
            grads = gradients(x[:b], y[:b], w[:b])
            _ = [g.values.numpy()[:1] if isinstance(g, tf.IndexedSlices) else g.numpy().flat[:1]
                 for g in grads]
            times.append(time.perf_counter() - started)
        fwd_bwd[b] = statistics.median(times)
        for v, g in zip(variables, grads):
            if isinstance(g, tf.IndexedSlices):
                sparse_rows.setdefault(v.path, {})[b] = int(g.indices.shape[0])
                sparse_rows[v.path]["row_bytes"] = int(np.prod(g.values.shape[1:]) or 1) * 4
            elif b == batches[0]:
                structure["dense"].append({"name": v.path, "bytes": int(np.prod(v.shape)) * 4})
    for name, rows in sparse_rows.items():
        by_batch = {b: rows[b] for b in batches}
        # rows = a x sequences + fixed (the sampled candidates of the head do not shrink)
        per_sequence = (by_batch[batches[0]] - by_batch[batches[-1]]) / (batches[0] - batches[-1])
        structure["sparse"].append({
            "name": name, "row_bytes": rows["row_bytes"], "rows_per_sequence": per_sequence,
            "fixed_rows": by_batch[batches[-1]] - per_sequence * batches[-1],
            "rows_by_workers": {str(args.batch_size // b): r for b, r in by_batch.items()}})

    # the job's optimizer on the gradients as they come (IndexedSlices kept): what every
    # worker runs after the all-reduce under the strategy
    optimizer = OPTIMIZERS[args.optimizer](1e-3)
    optimizer.build(variables)

    @tf.function
    def update(grads):
        optimizer.apply(grads, variables)

    update(grads)
    times = []
    for _ in range(args.probe_repeats):
        started = time.perf_counter()
        update(grads)
        # a scalar to wait on: reading a weight here would time a copy of it (the item
        # embedding, 660 MB, once a gather has put it in copy-on-read mode)
        _ = optimizer.iterations.numpy()
        times.append(time.perf_counter() - started)
    params = sum(int(np.prod(v.shape)) for v in variables)
    print(json.dumps({"structure": structure, "fwd_bwd_seconds": fwd_bwd,
                      "update_seconds": statistics.median(times), "parameters": params}))


# ------------------------------------------------------------------ cluster runs
def prepare_data(root, items, users, seq_len):
    from pipelines.prepare import prepare

    out = os.path.join(root, f"data_{items}")
    prepare("synthetic", out, max_len=seq_len, seed=1, num_users=users, num_items=items,
            num_clusters=20, min_len=seq_len, max_len_generated=seq_len + 2, num_targets=20,
            log=lambda *_: None)
    return out


def mem_available():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def items_that_fit(args, workers, peak_one, base=1.0 * GIB):
    """The largest of items, items/2, items/4, ... whose estimated peak RSS (TensorFlow's
    `base` plus the rest of 1 worker's measured peak, scaled by the item count) times
    `workers` fits in 75% of MemAvailable now (or --reduced_items when given)."""
    if args.reduced_items and workers * peak_one > 0.75 * mem_available():
        return args.reduced_items
    items = args.items
    while items > 1000:
        estimate = base + max(0.0, peak_one - base) * items / args.items
        if workers * estimate <= 0.75 * mem_available():
            return items
        items //= 2
    raise SystemExit(f"error: {workers} workers do not fit in memory at any item count")


def run_cluster(args, data, workers, model_dir):
    from peterrec_tf.training.local_cluster import run_local_cluster

    shutil.rmtree(model_dir, ignore_errors=True)
    command = [sys.executable, "-m", "peterrec_tf.pretrain", f"--data_dir={data}/pretrain",
               f"--model_dir={model_dir}", "--strategy=multi_worker", "--head=dot",
               f"--num_sampled={args.num_sampled}", f"--channels={args.channels}",
               "--dilations=" + ",".join(map(str, args.dilations)),
               f"--kernel_size={args.kernel_size}", f"--batch_size={args.batch_size}",
               f"--train_steps={args.steps}", "--checkpoint_every=1000000", "--log_every=1",
               "--keep_checkpoints=1", "--eval_ranking=sampled", "--num_candidates=100",
               "--eval_batch_size=64", "--jit_compile=false", "--seed=0",
               "--learning_rate=0.001", f"--optimizer={args.optimizer}"]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    started = time.time()
    runs = run_local_cluster(command, workers, env=env, cwd=REPO, timeout=args.timeout)
    wall = time.time() - started
    for run in runs:
        if run.returncode != 0:
            raise RuntimeError(f"{workers} workers: worker {run.index} exited "
                               f"{run.returncode}:\n{run.output[-3000:]}")
    step_times = {}
    for seconds, line in runs[0].lines:
        if line.startswith("step ") and "/" in line.split()[1]:
            step_times[int(line.split()[1].split("/")[0])] = seconds
    steps = sorted(step_times)
    if len(steps) != args.steps:
        raise RuntimeError(f"expected {args.steps} progress lines from the chief, got {steps}")
    durations = [step_times[s] - step_times[s - 1] for s in steps[1:]]
    results = json.load(open(os.path.join(model_dir, "results.json")))
    return {"workers": workers, "median_step_seconds": statistics.median(durations),
            "step_seconds": durations, "first_step_seconds": step_times[steps[0]],
            "loss": results["training"]["last_loss"], "wall_seconds": wall,
            "peak_rss_bytes": [r.peak_rss_bytes for r in runs], "model_dir": model_dir}


def final_weights(model_dir):
    """{checkpoint key: array} of the model's variables in the chief's last checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
        os.path.join(model_dir, "checkpoints")))
    return reader, sorted(k for k in reader.get_variable_to_shape_map()
                          if k.startswith("model/") and k.endswith("VARIABLE_VALUE"))


def weight_differences(dir_a, dir_b):
    """|a - b| over every model weight of two runs: max (and where), 99.99th percentile,
    share of elements above 1e-4."""
    import numpy as np

    a, keys_a = final_weights(dir_a)
    b, keys_b = final_weights(dir_b)
    if keys_a != keys_b:
        raise RuntimeError(f"checkpoints of {dir_a} and {dir_b} hold other variables")
    diffs, worst, worst_key = [], -1.0, None
    for key in keys_a:
        d = np.abs(a.get_tensor(key) - b.get_tensor(key)).ravel()
        diffs.append(d)
        if d.max() > worst:
            worst, worst_key = float(d.max()), key.split("/.ATTRIBUTES")[0][len("model/"):]
    d = np.concatenate(diffs)
    return {"max_abs_diff": worst, "max_in": worst_key,
            "p9999_abs_diff": float(np.quantile(d, 0.9999)),
            "share_above_1e-4": float((d > 1e-4).mean())}


# ------------------------------------------------------------------ report
def fmt_bytes(n):
    return f"{n / 1e6:,.1f} MB"


def fmt_duration(seconds):
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min"


def project(args, probe_result, measured_one, flops):
    """Rows of the projection (all PROJECTED) from the measured 1-worker step and probe."""
    structure = probe_result["structure"]
    fwd_bwd = {int(b): t for b, t in probe_result["fwd_bwd_seconds"].items()}
    # what does not shrink with the per-worker batch: the optimizer's update (every worker
    # applies the all-reduced gradient of the global batch: all parameters for adam, the
    # rows the global batch touches for lazy_adam). The measured 1-worker step is split in
    # the proportion the probe measured (its update vs its forward+backward at the full
    # batch, same process), and the scalable part follows the probe's forward+backward
    # time at the per-worker batch
    update = probe_result["update_seconds"]
    fixed = measured_one * update / (update + fwd_bwd[args.batch_size])
    scalable = measured_one - fixed
    bandwidth = args.bandwidth_gbit * 1e9 / 8
    collectives = 1 + 3 * len(structure["sparse"])  # dense packed in one; slices: 3 each
    rows = []
    for hosts in PROJECT_HOSTS:
        latency = args.latency_s * 2 * (hosts - 1) * collectives
        per_worker = args.batch_size // hosts
        if per_worker >= 1 and args.batch_size % hosts == 0 and per_worker in fwd_bwd:
            compute = scalable * fwd_bwd[per_worker] / fwd_bwd[args.batch_size]
            comm = collective_bytes(structure, hosts)["total"]
            step = fixed + compute + comm / bandwidth + latency
            epoch = math.ceil(PAPER_SEQUENCES / args.batch_size) * step
        else:
            step = epoch = None
        # weak scaling: each host keeps batch 32 (global 32 N; not the same optimisation)
        weak_step = measured_one + _weak_comm(structure, hosts, args.batch_size) / bandwidth \
            + latency
        weak_epoch = math.ceil(PAPER_SEQUENCES / (args.batch_size * hosts)) * weak_step
        rows.append((hosts, step, epoch, weak_step, weak_epoch))
    # one GPU: matmul FLOPs at the assumed sustained rate + the Adam update as a
    # memory-bound pass (read param, m, v, grad; write param, m, v: 28 bytes a parameter)
    # over the parameters it updates
    gpu_step = (flops["total"] / (args.gpu_tflops * 1e12)
                + 28 * updated_parameters(args, probe_result) / (args.gpu_bandwidth_tbs * 1e12))
    gpu_epoch = math.ceil(PAPER_SEQUENCES / args.batch_size) * gpu_step
    return rows, fixed, gpu_step, gpu_epoch


def updated_parameters(args, probe_result):
    """Parameters the update reads and writes a step: all of them for adam; for lazy_adam
    the dense gradients' and the rows of the IndexedSlices at the global batch."""
    if args.optimizer != "lazy_adam":
        return probe_result["parameters"]
    structure = probe_result["structure"]
    return (sum(g["bytes"] for g in structure["dense"])
            + sum(g["rows_by_workers"]["1"] * g["row_bytes"] for g in structure["sparse"])) / 4


def _weak_comm(structure, hosts, batch):
    if hosts == 1:
        return 0
    dense = sum(g["bytes"] for g in structure["dense"]) * 2 * (hosts - 1) / hosts
    sparse = sum((hosts - 1) * (g["rows_per_sequence"] * batch + g["fixed_rows"])
                 * (g["row_bytes"] + 8) for g in structure["sparse"])
    return dense + sparse


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=645_000)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--dilations", default="1,4,1,4,1,4,1,4",
                        help="one residual block per value, convs at d and 2d: 1,2,4,8 x4")
    parser.add_argument("--kernel_size", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=100)
    parser.add_argument("--num_sampled", type=int, default=-1,
                        help="-1: the job's default, 20%% of the items capped at 8,192")
    parser.add_argument("--optimizer", default="adam", choices=("adam", "lazy_adam"),
                        help="the jobs' --optimizer: adam (the release's, every parameter "
                        "each step) or lazy_adam (the rows a batch touches)")
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--reduced_items", type=int, default=0,
                        help="item count for worker counts whose memory does not fit "
                        "(default: the largest of --items / 2^k that fits)")
    parser.add_argument("--bandwidth_gbit", type=float, default=10.0,
                        help="assumed network bandwidth per host for the projection")
    parser.add_argument("--latency_s", type=float, default=50e-6,
                        help="assumed latency per collective hop for the projection")
    parser.add_argument("--gpu_tflops", type=float, default=100.0,
                        help="assumed sustained matmul rate of one GPU (H200: ~495 TFLOP/s "
                        "dense TF32 peak; 100 is ~20%%)")
    parser.add_argument("--gpu_bandwidth_tbs", type=float, default=2.4,
                        help="assumed sustained memory bandwidth of the GPU (H200: 4.8 TB/s "
                        "peak) for the Adam update")
    parser.add_argument("--probe_repeats", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=1800, help="per cluster run, seconds")
    parser.add_argument("--workdir", default="/tmp/multiworker_scale")
    parser.add_argument("--output", default=None, help="also write the figures as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="20,000 items, 64 channels, 6 steps: a check of the script")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.items, args.channels, args.steps = 20_000, 64, 6
    args.dilations = [int(d) for d in str(args.dilations).split(",")]
    if args.probe:
        return probe(args)

    workers = [int(w) for w in args.workers.split(",")]
    if workers[0] != 1:
        raise SystemExit("error: --workers must start with 1 (the reference)")
    os.makedirs(args.workdir, exist_ok=True)
    from benchmarks.raw_output import Run
    raw_run = Run("multiworker_scale", tag=args.optimizer,
                  note="workers share this machine's cores: step times are no speed-up")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    print(f"multiworker_scale: commit {commit}{' (dirty)' if dirty else ''}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores, "
          f"MemAvailable {mem_available() / GIB:.1f} GiB")
    print("command: " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]))
    print(f"optimizer: --optimizer={args.optimizer}, the {OPTIMIZER_UPDATE[args.optimizer]}, "
          "run by every worker under the strategy")

    def data_for(items):
        started = time.time()
        path = prepare_data(args.workdir, items, args.users, args.seq_len)
        print(f"data: {items:,} items, {args.users} users of ~{args.seq_len} items "
              f"({time.time() - started:.0f} s)", flush=True)
        return path

    data = data_for(args.items)
    probe_out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--probe", f"--data={data}",
         f"--channels={args.channels}", "--dilations=" + ",".join(map(str, args.dilations)),
         f"--kernel_size={args.kernel_size}", f"--batch_size={args.batch_size}",
         f"--num_sampled={args.num_sampled}", f"--probe_repeats={args.probe_repeats}",
         f"--optimizer={args.optimizer}"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    if probe_out.returncode != 0:
        raise SystemExit(f"probe failed:\n{probe_out.stderr[-3000:]}")
    probe_result = json.loads(probe_out.stdout.strip().splitlines()[-1])
    structure = probe_result["structure"]
    print(f"probe: {probe_result['parameters']:,} parameters; forward+backward (measured) "
          + ", ".join(f"batch {b}: {t:.3f} s" for b, t in probe_result["fwd_bwd_seconds"].items())
          + f"; {OPTIMIZER_UPDATE[args.optimizer]} (measured) "
          f"{probe_result['update_seconds']:.3f} s",
          flush=True)

    runs, references = [], {}
    peak_one = None
    for count in workers:
        items, run_data = args.items, data
        if peak_one is not None:
            items = items_that_fit(args, count, peak_one)
            if items != args.items:
                print(f"{count} workers x {peak_one / GIB:.1f} GiB (1 worker's peak RSS at "
                      f"{args.items:,} items) do not fit in 75% of the "
                      f"{mem_available() / GIB:.1f} GiB available: run at {items:,} items "
                      "instead, with a 1-worker reference at that size", flush=True)
                run_data = data_for(items)
                if items not in references:
                    references[items] = run_cluster(args, run_data, 1, os.path.join(
                        args.workdir, f"run_{items}_1"))
                    runs.append(dict(references[items], items=items, **SAME))
        result = run_cluster(args, run_data, count,
                             os.path.join(args.workdir, f"run_{items}_{count}"))
        if count == 1 and items == args.items:
            peak_one = max(result["peak_rss_bytes"])
            references[items] = result
            result.update(SAME)
        else:
            reference = references[items]
            result.update(weight_differences(reference["model_dir"], result["model_dir"]),
                          loss_diff=abs(result["loss"] - reference["loss"]))
        result["items"] = items
        runs.append(result)
        print(f"  {count} worker(s), {items:,} items: median step "
              f"{result['median_step_seconds']:.2f} s, max |dw| {result['max_abs_diff']:.2e}, "
              f"peak RSS {max(result['peak_rss_bytes']) / GIB:.1f} GiB, "
              f"wall {result['wall_seconds']:.0f} s", flush=True)

    from peterrec_tf.jobs.pretraining import default_num_sampled

    positions = args.batch_size * args.seq_len
    flops = train_flops(positions, structure["kept"], args.channels, args.kernel_size,
                        args.dilations, structure["num_sampled"])
    print()
    print(f"Model: {args.items:,} items, {args.channels} channels, kernel {args.kernel_size}, "
          f"dilations {args.dilations} ({conv_layers(args.dilations)} conv layers), sampled "
          f"softmax {structure['num_sampled']:,}, global batch {args.batch_size} x "
          f"{args.seq_len} positions ({structure['kept']} with a label in the probe's batch)")
    print(f"Per-step FLOPs (ANALYTIC, matmuls x3): conv stack {flops['conv_stack'] / 1e9:.1f} G, "
          f"sampled softmax {flops['sampled_softmax'] / 1e9:.1f} G, total "
          f"{flops['total'] / 1e9:.1f} GFLOP; the {OPTIMIZER_UPDATE[args.optimizer]} adds ~"
          f"{10 * updated_parameters(args, probe_result) / 1e9:.2f} GFLOP over "
          f"{updated_parameters(args, probe_result):,.0f} of the "
          f"{probe_result['parameters']:,} parameters (memory-bound)")
    print("Gradients (MEASURED in the probe): dense "
          f"{fmt_bytes(sum(g['bytes'] for g in structure['dense']))} in "
          f"{len(structure['dense'])} tensors; IndexedSlices: " + "; ".join(
              f"{g['name']} {g['rows_by_workers'].get('1', 0):,} rows x {g['row_bytes']} B at "
              f"batch {args.batch_size}" for g in structure["sparse"]))
    print()
    print("MEASURED on this machine (2 cores shared with other jobs: 2 and 4 workers are "
          "CPU-oversubscribed, their step times are no speed-up)")
    header = ("workers", "items", "batch/worker", "median step s", "loss", "|loss - 1w|",
              "max |w - 1w| (in)", "p99.99 |w - 1w|", "share > 1e-4", "peak RSS/worker",
              "sent/worker/step*")
    print(" | ".join(header))
    measured = []
    for r in runs:
        # the collective bytes do not depend on the item count while the sampled softmax
        # draws as many candidates (rows = positions + candidates, not items)
        same_rows = default_num_sampled(args.num_sampled, r["items"] + 1) == \
            structure["num_sampled"]
        comm = collective_bytes(structure, r["workers"])["total"] if same_rows \
            else float("nan")
        cells = [str(r["workers"]), f"{r['items']:,}", str(args.batch_size // r["workers"]),
                 f"{r['median_step_seconds']:.2f}", f"{r['loss']:.5f}", f"{r['loss_diff']:.1e}",
                 f"{r['max_abs_diff']:.1e} ({r['max_in']})", f"{r['p9999_abs_diff']:.1e}",
                 f"{r['share_above_1e-4']:.1e}", f"{max(r['peak_rss_bytes']) / GIB:.2f} GiB",
                 fmt_bytes(comm) if comm == comm else "n/a"]
        measured.append(dict(zip(header, cells)))
        print(" | ".join(cells))
    print("Differences against 1 worker come from float summation order (other reduction "
          "trees over the workers), which Adam magnifies where a gradient is near its "
          "epsilon: such a weight moves by up to the learning rate (1e-3) a step whatever "
          "the gradient's size, so its sign decides; the p99.99 column shows how few weights "
          "that touches.")
    print("* ANALYTIC from the measured gradient structure (ring all-reduce of dense, padded "
          "all-gather of IndexedSlices); not a network capture")

    rows, fixed, gpu_step, gpu_epoch = project(args, probe_result,
                                               references[args.items]["median_step_seconds"],
                                               flops)
    steps_epoch = math.ceil(PAPER_SEQUENCES / args.batch_size)
    print()
    print(f"PROJECTED time per epoch of the paper's data ({PAPER_SEQUENCES:,} sequences of "
          f"{args.seq_len}): one host = one worker like this machine's 1-worker run "
          f"(measured step {references[args.items]['median_step_seconds']:.2f} s, of which "
          f"{fixed:.2f} s, the {OPTIMIZER_UPDATE[args.optimizer]}'s share in the probe, does "
          "not shrink with the "
          "per-worker batch; the rest scales as the probe's forward+backward), network "
          f"{args.bandwidth_gbit:g} Gbit/s per host and {args.latency_s * 1e6:.0f} "
          "us per collective hop (ASSUMED)")
    print("hosts | global batch 32 (same results as 1 worker): step s | epoch || "
          "batch 32 per host (global 32N, other optimisation): step s | epoch")
    for hosts, step, epoch, weak_step, weak_epoch in rows:
        same = f"{step:.2f} | {fmt_duration(epoch)}" if step is not None else "- | -"
        print(f"{hosts} | {same} || {weak_step:.2f} | {fmt_duration(weak_epoch)}")
    print(f"one GPU (PROJECTED, ASSUMED {args.gpu_tflops:g} TFLOP/s sustained matmul and "
          f"{args.gpu_bandwidth_tbs:g} TB/s for the {OPTIMIZER_UPDATE[args.optimizer]}; "
          "sampler, input and "
          f"launch overheads ignored, so a lower bound): {gpu_step * 1e3:.1f} ms a step, "
          f"{fmt_duration(gpu_epoch)} an epoch ({steps_epoch:,} steps of {args.batch_size})")

    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"commit": commit, "dirty": dirty, "args": vars(args), "probe": probe_result,
                       "flops": flops, "runs": runs,
                       "projection": {"fixed_seconds": fixed, "rows": rows,
                                      "gpu_step_seconds": gpu_step,
                                      "gpu_epoch_seconds": gpu_epoch}}, handle, indent=1)
    print("raw output: " + raw_run.write(
        {"measured": measured},
        {"args": vars(args), "probe": probe_result, "flops": flops, "runs": runs,
         "projection": {"fixed_seconds": fixed, "rows": rows, "gpu_step_seconds": gpu_step,
                        "gpu_epoch_seconds": gpu_epoch}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
