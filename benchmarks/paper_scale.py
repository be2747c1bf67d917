"""The whole chain at the paper's scale on this machine, measured stage by stage.

    python benchmarks/paper_scale.py --scale=0.002 --items=645000 --write_notes

A paper-shaped interaction log (Zipf popularity over the catalogue, ~100-event
histories, rows unordered: `pipelines.paper_log`) of `--scale` x the paper's 1.55M users
goes through the commands a user runs, each a child process measured with wait4 (wall
seconds, peak RSS) while its progress lines are timestamped here as they arrive, so
steady rates leave out start-up and the first step's tracing:

  prepare   `pipelines.prepare --format=interactions` against the catalogue's vocabulary
            (every one of `--items` ids exists in the model, seen in the log or not)
  pretrain  `peterrec_tf.pretrain`: dot head with the bounded sampled softmax, the paper's
            256 channels, blocks (1,4) x 4 (conv dilations 1,2,4,8 x 4: 16 layers),
            kernel 3, batch 32, `--train_steps` steps; then the masked-item (GRec)
            objective at the paper's batch 128 for `--masked_steps`
  evaluate  `peterrec_tf.evaluate --ranking=full`: every test user against the whole
            catalogue, in vocabulary slices (`training/chunked_ranking.py`)
  finetune  two PeterRec tasks (patches C/4 and C/8) on a ColdRec-shaped target set
            (release CSV format), batch 512, `--finetune_steps` steps; task-only
            directories over the one backbone
  export    the next-item model alone (float32 scan, and again with the int8 candidate
            index: `--next_item_index=int8`), and both tasks in one SavedModel
  serve     each export loaded with the TF1 session loader (what Serving does): latency
            of one user (p50/p99) and of batches of 256, in-process (`tf.saved_model.load`)
            and through the test gRPC server (`tests/serving_server.py`); then the two
            next-item exports called alternately on the same histories (latency side by
            side, ids compared on every call, how often the index's certificate held)

The table (stage, size, time, rate, peak RSS, projection to the paper's full data on
this machine) is printed, written as JSON with the run's provenance to `--output` and
as a kept raw output into benchmarks/results/; `--write_notes` then regenerates BUILD_NOTES'
tables from the kept outputs (`python -m benchmarks.tables --write`), this one among them.
Projections are labelled: they divide the paper's counts by rates measured here.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

PAPER_USERS = 1_550_000
PAPER_ITEMS = 645_000
PAPER_TARGET_INSTANCES = 3_800_000   # the paper's largest target set
PAPER_EVENTS = 155_000_000
STEP_LINE = re.compile(r"^step (\d+)/(\d+)\s")
EVAL_LINE = re.compile(r"^\s+\w+ \(\w+ ranking\): ([\d,]+) examples")


# ---- child processes -------------------------------------------------------------------
def run_stage(name, command, log, env=None):
    """Run `command` in a child; returns {"seconds", "peak_rss", "lines": [(t, line)]}.
    A failure raises with the child's last output."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO, **(env or {}))
    log(f"[{name}] {' '.join(command)}")
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in child.stdout:
        lines.append((time.monotonic() - started, line.rstrip("\n")))
        if STEP_LINE.match(line) or EVAL_LINE.match(line) or line.startswith(("  read", "prepared")):
            log(f"  {line.rstrip()}")
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.monotonic() - started
    if status:
        tail = "\n".join(text for _, text in lines[-40:])
        raise RuntimeError(f"stage {name} failed (status {status}):\n{tail}")
    return {"seconds": seconds, "peak_rss": usage.ru_maxrss * 1024, "lines": lines}


def steady_rate(lines, pattern, per_unit):
    """Units per second between the first and the last matching progress line (after the
    first one, so start-up and tracing are left out); None with fewer than two lines."""
    points = [(t, int(m.group(1).replace(",", ""))) for t, text in lines
              for m in [pattern.match(text)] if m]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) * per_unit / (t1 - t0)


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
               for f in files)


def python(*args):
    return [sys.executable, *args]


# ---- data ------------------------------------------------------------------------------
def write_catalogue(path, num_items):
    """items.txt of the whole catalogue: <UNK> then the log's tokens 1..N (integers: the
    release's CSV format, used for the target set, takes nothing else)."""
    from pipelines.vocab import UNK, write_tokens
    write_tokens(path, [UNK] + [str(i + 1) for i in range(num_items)])


def write_target_csv(path, users, num_items, num_targets, history, seed):
    """A ColdRec-shaped fine-tuning set in the release's CSV format: `history` source
    items (Zipf over the catalogue), an empty field, 1-3 target-domain items (Zipf over
    `num_targets`)."""
    import numpy as np
    from pipelines.paper_log import zipf_cdf
    rng = np.random.RandomState(seed)
    source, target = zipf_cdf(num_items), zipf_cdf(num_targets)
    item_of_rank = rng.permutation(num_items)
    with open(path, "w", encoding="utf-8") as handle:
        for first in range(0, users, 10_000):
            count = min(10_000, users - first)
            items = item_of_rank[np.minimum(np.searchsorted(source, rng.rand(count, history)),
                                            num_items - 1)]
            for row in items:
                chosen = np.minimum(np.searchsorted(target, rng.rand(rng.randint(1, 4))),
                                    num_targets - 1)
                handle.write(",".join(str(i + 1) for i in row) + ",,"
                             + ",".join(str(t + 1) for t in chosen) + "\n")
    return users


# ---- serving (run as a child: --serve) ---------------------------------------------------
def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def serve_measurements(exports, history, repeats, batch_repeats, seed=0):
    """{export: latencies} for one user and batches of 256: in-process SavedModel and the
    test gRPC server over the TF1 session loader."""
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from serving_server import SessionModel, start_server
    from peterrec_tf.serving import GrpcClient

    def timed(function, count):
        function()  # warm-up (the first call traces / allocates)
        function()
        times = []
        for _ in range(count):
            started = time.perf_counter()
            function()
            times.append((time.perf_counter() - started) * 1000)
        return {"p50_ms": statistics.median(times), "p99_ms": percentile(times, 0.99),
                "calls": count, "samples_ms": times}

    rng = np.random.RandomState(seed)
    results = {}
    for name, (path, signature, vocab_path) in exports.items():
        from pipelines.vocab import read_tokens
        tokens = np.array(read_tokens(vocab_path)[1:], dtype=object)
        one = tokens[rng.randint(0, len(tokens), (1, history))].astype(bytes)
        batch = tokens[rng.randint(0, len(tokens), (256, history))].astype(bytes)
        started = time.monotonic()
        session = SessionModel(path)
        load_seconds = time.monotonic() - started
        loaded = tf.saved_model.load(path).signatures[signature]
        entry = {"session_load_seconds": load_seconds,
                 "in_process_1": timed(lambda: loaded(items=tf.constant(one)), repeats),
                 "in_process_256": timed(lambda: loaded(items=tf.constant(batch)), batch_repeats)}
        server, port = start_server({name: {1: session}})
        try:
            with GrpcClient(f"127.0.0.1:{port}", name, signature=signature, timeout=60) as client:
                items = [[t.decode() for t in one[0]]]
                many = [[t.decode() for t in row] for row in batch]
                direct = session.run(signature, {"items": one})["top_k_ids"]
                answered = client.predict(items)["top_k_ids"]
                if not np.array_equal(direct, answered):
                    raise RuntimeError(f"{name}: the gRPC answer differs from the session's")
                entry["grpc_1"] = timed(lambda: client.predict(items), repeats)
                entry["grpc_256"] = timed(lambda: client.predict(many), batch_repeats)
        finally:
            server.stop(0)
        entry["answer"] = [int(i) for i in answered[0][:5]]
        results[name] = entry
    import resource
    results["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return results


def compare_next_item(plain_path, indexed_path, pretrained, vocab_path, history, repeats,
                      seed=1):
    """The float32 and the int8-index next-item exports called alternately (which goes
    first alternates too) on the same one-user histories, in-process: p50/p99 of each, the
    ids compared on every call, and on how many histories the index's certificate held
    (the rest were scored over the whole catalogue, inside the measured calls)."""
    import numpy as np
    import tensorflow as tf
    from pipelines.vocab import read_tokens
    from peterrec_tf.model_dir import load_model_dir
    from peterrec_tf.serving.candidate_index import Int8CandidateIndex

    rng = np.random.RandomState(seed)
    tokens = np.array(read_tokens(vocab_path)[1:], dtype=object)
    histories = tokens[rng.randint(0, len(tokens), (repeats, 1, history))].astype(bytes)
    loaded = tf.saved_model.load(plain_path)
    plain = loaded.signatures["serving_default"]
    embed = loaded.signatures["next_user_embedding"]
    indexed = tf.saved_model.load(indexed_path).signatures["serving_default"]
    for function in (plain, indexed) * 3:
        function(items=tf.constant(histories[0]))
    times = {"plain": [], "int8": []}
    same = 0
    for i, one in enumerate(histories):
        answers = {}
        for name in (("plain", "int8") if i % 2 == 0 else ("int8", "plain")):
            function = plain if name == "plain" else indexed
            started = time.perf_counter()
            answers[name] = function(items=tf.constant(one))["top_k_ids"].numpy()
            times[name].append((time.perf_counter() - started) * 1000)
        same += int(np.array_equal(answers["plain"], answers["int8"]))
    model, _, _ = load_model_dir(pretrained)
    bias = tf.Variable(model.head.bias.numpy())
    index = Int8CandidateIndex(model.head, bias, [0])
    k = tf.constant(10)
    proven = sum(bool(index.candidate_top_k(model.head, embed(items=tf.constant(one))[
        "user_embedding"], k)[2]) for one in histories)
    return {name: {"p50_ms": statistics.median(values), "p99_ms": percentile(values, 0.99),
                   "calls": len(values), "samples_ms": values}
            for name, values in times.items()} | {
        "same_ids": same, "certified": proven, "histories": len(histories),
        "histories_are": "uniformly random item tokens"}


# ---- the chain ---------------------------------------------------------------------------
def provenance():
    found = {"python": platform.python_version(), "machine": f"{os.cpu_count()} cores, "
             f"{platform.machine()}", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name in ("numpy", "tensorflow", "keras"):
        module = __import__(name)
        found[name] = module.__version__
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout
    found["commit"] = git("rev-parse", "--short", "HEAD").strip() or None
    found["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.002,
                        help="Share of the paper's 1.55M users in the log (and the target set).")
    parser.add_argument("--items", type=int, default=PAPER_ITEMS,
                        help="Catalogue size: the model's item vocabulary.")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--dilations", default="1,4,1,4,1,4,1,4",
                        help="Residual blocks' listed dilations (convs use d and 2d).")
    parser.add_argument("--history", type=int, default=100, help="Events per user (mean).")
    parser.add_argument("--batch_size", type=int, default=32, help="Pre-training batch.")
    parser.add_argument("--train_steps", type=int, default=40)
    parser.add_argument("--lazy_steps", type=int, default=40,
                        help="Steps of the same pre-training with --optimizer=lazy_adam; 0 skips.")
    parser.add_argument("--masked_steps", type=int, default=10,
                        help="Steps of masked-item (GRec) pre-training; 0 skips the stage.")
    parser.add_argument("--masked_batch_size", type=int, default=128)
    parser.add_argument("--finetune_batch_size", type=int, default=512)
    parser.add_argument("--finetune_steps", type=int, default=12)
    parser.add_argument("--num_targets", type=int, default=20_000,
                        help="Target-domain items of the fine-tuning task.")
    parser.add_argument("--serve_repeats", type=int, default=2000,
                        help="one-user requests timed per export and path (p99 needs >= 2,000)")
    parser.add_argument("--batch_repeats", type=int, default=10)
    parser.add_argument("--work_dir", default="/tmp/peterrec_paper_scale")
    parser.add_argument("--output", default=None, help="JSON of the run (default WORK/paper_scale.json).")
    parser.add_argument("--write_notes", action="store_true",
                        help="Regenerate BUILD_NOTES.md's tables from the kept raw outputs "
                        "afterwards (python -m benchmarks.tables --write).")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.serve:
        spec = json.loads(args.serve)
        measured = serve_measurements(spec["exports"], spec["history"], spec["repeats"],
                                      spec["batch_repeats"])
        if spec.get("compare"):
            measured["compare"] = compare_next_item(**spec["compare"], history=spec["history"],
                                                    repeats=spec["repeats"])
        print("SERVE " + json.dumps(measured), flush=True)
        # gRPC's and TensorFlow's threads can abort the interpreter's teardown ("terminate
        # called ... exception not rethrown", seen once): the measurement is out, leave now
        sys.stderr.flush()
        os._exit(0)
    if not 0 < args.scale <= 1:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")
    return run_chain(args)


#: The prepare row is not projected: the paper-size preparation is measured whole.
PREPARE_PROJECTION = ("not projected: the paper-size preparation is measured whole by "
                      "benchmarks/prepare_scale.py (table prepare-scale, Data preparation)")


def run_chain(args, log=print):
    from pipelines.paper_log import write_paper_log
    found = provenance()  # the code the stages run, taken before they start
    from benchmarks.raw_output import Run
    raw_run = Run("paper_scale", note="each stage a child process measured with wait4")
    work = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    users = max(50, int(round(PAPER_USERS * args.scale)))
    rows, stages = [], {}

    def row(stage, size, measured, rate=None, unit="", projection=None):
        rows.append({"stage": stage, "size": size, "seconds": measured["seconds"],
                     "peak_rss_gb": measured["peak_rss"] / 1e9, "rate": rate, "unit": unit,
                     "projection": projection})

    # log + catalogue
    started = time.monotonic()
    log_path = os.path.join(work, "events.tsv")
    events = write_paper_log(log_path, users * args.history, num_items=args.items,
                             history=args.history, seed=0, prefix="")
    catalogue = os.path.join(work, "catalogue.txt")
    write_catalogue(catalogue, args.items)
    log(f"[log] {events:,} events of {users:,} users over {args.items:,} items "
        f"({time.monotonic() - started:.0f} s)")

    # prepare
    pre_data = os.path.join(work, "data", "pretrain")
    stage = run_stage("prepare", python("-m", "pipelines.prepare", "--format=interactions",
                                        f"--input={log_path}", f"--output_dir={pre_data}",
                                        f"--vocab={catalogue}", f"--max_len={args.history}"), log)
    meta = json.load(open(os.path.join(pre_data, "metadata.json")))
    if meta["num_items"] != args.items + 1:
        raise RuntimeError(f"prepared {meta['num_items']} ids, expected the catalogue's "
                           f"{args.items + 1}")
    row("prepare (local streaming path)", f"{events:,} events", stage,
        events / stage["seconds"], "events/s (incl. start-up)",
        PREPARE_PROJECTION)

    # pre-train
    pre_dir = os.path.join(work, "models", "pretrained")
    log_every = max(1, args.train_steps // 8)
    stage = run_stage("pretrain", python(
        "-m", "peterrec_tf.pretrain", f"--data_dir={pre_data}", f"--model_dir={pre_dir}",
        "--head=dot", f"--channels={args.channels}", f"--dilations={args.dilations}",
        "--kernel_size=3", f"--batch_size={args.batch_size}", f"--train_steps={args.train_steps}",
        f"--log_every={log_every}", f"--checkpoint_every={args.train_steps}",
        "--eval_ranking=sampled", "--seed=0"), log)
    seqs = steady_rate(stage["lines"], STEP_LINE, args.batch_size)
    results = json.load(open(os.path.join(pre_dir, "results.json")))
    from peterrec_tf.jobs.pretraining import default_num_sampled
    sampled = default_num_sampled(results["config"]["num_sampled"], args.items + 1)
    row(f"pre-train (causal, sampled softmax of {sampled:,})",
        f"{args.items:,} items x {args.channels} ch, {args.train_steps} steps of "
        f"{args.batch_size}", stage, seqs, "seq/s",
        f"{PAPER_USERS / seqs / 3600:.1f} h per epoch of 1.55M users" if seqs else None)
    stages["pretrain"] = {"results": results, "seq_per_s": seqs}
    if args.lazy_steps:  # the same job with --optimizer=lazy_adam, side by side
        lazy_dir = os.path.join(work, "models", "pretrained_lazy")
        stage = run_stage("pretrain lazy_adam", python(
            "-m", "peterrec_tf.pretrain", f"--data_dir={pre_data}", f"--model_dir={lazy_dir}",
            "--head=dot", f"--channels={args.channels}", f"--dilations={args.dilations}",
            "--kernel_size=3", f"--batch_size={args.batch_size}",
            f"--train_steps={args.lazy_steps}", f"--log_every={max(1, args.lazy_steps // 8)}",
            f"--checkpoint_every={args.lazy_steps}", "--eval_ranking=sampled", "--seed=0",
            "--optimizer=lazy_adam"), log)
        lazy = steady_rate(stage["lines"], STEP_LINE, args.batch_size)
        row(f"pre-train (causal, --optimizer=lazy_adam; {lazy / seqs:.2f}x adam)"
            if lazy and seqs else "pre-train (causal, --optimizer=lazy_adam)",
            f"{args.items:,} items x {args.channels} ch, {args.lazy_steps} steps of "
            f"{args.batch_size}", stage, lazy, "seq/s",
            f"{PAPER_USERS / lazy / 3600:.1f} h per epoch of 1.55M users" if lazy else None)
        stages["pretrain_lazy"] = {"seq_per_s": lazy}
    if args.masked_steps:  # GRec's masked-item pre-training, the paper's batch 128
        masked_dir = os.path.join(work, "models", "pretrained_masked")
        stage = run_stage("pretrain masked", python(
            "-m", "peterrec_tf.pretrain", f"--data_dir={pre_data}", f"--model_dir={masked_dir}",
            "--objective=masked_item", "--head=dot", f"--channels={args.channels}",
            f"--dilations={args.dilations}", "--kernel_size=3",
            f"--batch_size={args.masked_batch_size}", f"--train_steps={args.masked_steps}",
            f"--log_every={max(1, args.masked_steps // 5)}",
            f"--checkpoint_every={args.masked_steps}", "--eval_ranking=sampled", "--seed=0"), log)
        masked = steady_rate(stage["lines"], STEP_LINE, args.masked_batch_size)
        row(f"pre-train (masked, GRec, sampled softmax of {sampled:,})",
            f"{args.items:,} items x {args.channels} ch, {args.masked_steps} steps of "
            f"{args.masked_batch_size}", stage, masked, "seq/s",
            f"{PAPER_USERS / masked / 3600:.1f} h per epoch of 1.55M users" if masked else None)
        stages["pretrain_masked"] = {"seq_per_s": masked}

    # evaluate (full ranking over the catalogue, in slices)
    stage = run_stage("evaluate", python(
        "-m", "peterrec_tf.evaluate", f"--model_dir={pre_dir}", f"--data_dir={pre_data}",
        "--split=test", "--ranking=full", "--batch_size=256",
        f"--output={os.path.join(work, 'evaluate.json')}"), log)
    evaluated = json.load(open(os.path.join(work, "evaluate.json")))
    tested = evaluated["examples"]
    users_per_s = evaluated["examples_per_second"]  # the scoring loop's own rate
    row(f"evaluate (full ranking, slices of 65,536; test HR@10 {evaluated['hr@10']:.4f})",
        f"{tested:,} users x {args.items:,} items", stage, users_per_s, "users/s",
        f"{PAPER_USERS / users_per_s / 3600:.1f} h for 1.55M users")
    stages["evaluate"] = evaluated

    # fine-tune two tasks
    ft_users = max(50, int(round(PAPER_TARGET_INSTANCES / 2 * args.scale)))
    csv = os.path.join(work, "coldrec.csv")
    write_target_csv(csv, ft_users, args.items, min(args.num_targets, ft_users), args.history, 1)
    ft_data = os.path.join(work, "data", "coldrec")
    run_stage("prepare-target", python("-m", "pipelines.prepare", "--format=peterrec_finetune_csv",
                                       f"--input={csv}", f"--output_dir={ft_data}",
                                       f"--vocab={os.path.join(pre_data, 'vocab', 'items.txt')}",
                                       f"--max_len={args.history}"), log)
    ft_data = os.path.join(ft_data, "coldrec") if os.path.isdir(
        os.path.join(ft_data, "coldrec")) else ft_data
    ft_meta = json.load(open(os.path.join(ft_data, "metadata.json")))
    tasks = {}
    for name, ratio in (("coldrec_c4", 0.25), ("coldrec_c8", 0.125)):
        task_dir = os.path.join(work, "models", name)
        every = max(1, args.finetune_steps // 4)
        stage = run_stage(f"finetune {name}", python(
            "-m", "peterrec_tf.finetune", f"--pretrained={pre_dir}", f"--data_dir={ft_data}",
            f"--model_dir={task_dir}", "--method=peterrec", f"--bottleneck_ratio={ratio}",
            f"--batch_size={args.finetune_batch_size}", f"--train_steps={args.finetune_steps}",
            f"--log_every={every}", f"--checkpoint_every={args.finetune_steps}", "--seed=0",
            f"--num_candidates={min(100, ft_meta['num_targets'] - 1)}"), log)
        rate = steady_rate(stage["lines"], STEP_LINE, args.finetune_batch_size)
        size = directory_bytes(task_dir)  # with checkpoints/ (patches, head, Adam slots)
        files = sum(os.path.getsize(os.path.join(task_dir, f)) for f in os.listdir(task_dir)
                    if os.path.isfile(os.path.join(task_dir, f)))
        row(f"fine-tune PeterRec patch C*{ratio:g} (task files {files / 1e6:.1f} MB, "
            f"whole directory with checkpoints {size / 1e6:.1f} MB)",
            f"{ft_meta['num_targets']:,} targets, {args.finetune_steps} steps of "
            f"{args.finetune_batch_size}", stage, rate, "examples/s",
            f"{PAPER_TARGET_INSTANCES / rate / 3600:.1f} h per epoch of 3.8M instances"
            if rate else None)
        tasks[name] = {"dir": task_dir, "bytes": size, "file_bytes": files, "examples_per_s": rate,
                       "results": json.load(open(os.path.join(task_dir, "results.json")))}
    stages["finetune"] = tasks

    # export
    base = os.path.join(work, "saved_models")
    exports = {}
    for name, command in (
            ("next", ["--model_dir=" + pre_dir, "--task_name=next", "--model_name=next"]),
            ("next_int8", ["--model_dir=" + pre_dir, "--task_name=next",
                           "--model_name=next_int8", "--next_item_index=int8"]),
            ("tasks", ["--tasks=" + ",".join(f"{n}={t['dir']}" for n, t in tasks.items()),
                       f"--backbone_dir={pre_dir}", "--model_name=tasks"])):
        stage = run_stage(f"export {name}", python(
            "-m", "peterrec_tf.export", *command, f"--export_base={base}",
            f"--max_len={args.history}", "--version=1"), log)
        path = os.path.join(base, name, "1")
        report = json.load(open(os.path.join(path, "assets.extra", "export_report.json")))
        ratio = report["variables_to_weights_ratio"]
        index = report.get("next_item_index")
        row(f"export {name} ({report['variables_bytes'] / 1e6:,.0f} MB variables, "
            f"{ratio:.3f}x weights"
            + (f"; of which int8 index {index['bytes'] / 1e6:,.0f} MB" if index else "") + ")",
            ", ".join(report["tasks"]), stage)
        exports[name] = {"path": path, "report": report}
    stages["export"] = exports

    # serve
    vocab_of = {"next": os.path.join(pre_data, "vocab", "items.txt"),
                "next_int8": os.path.join(pre_data, "vocab", "items.txt"),
                "tasks": os.path.join(ft_data, "vocab", "items.txt")}
    spec = {"exports": {name: (e["path"], "serving_default", vocab_of[name])
                        for name, e in exports.items()},
            "history": args.history, "repeats": args.serve_repeats,
            "batch_repeats": args.batch_repeats,
            "compare": {"plain_path": exports["next"]["path"],
                        "indexed_path": exports["next_int8"]["path"], "pretrained": pre_dir,
                        "vocab_path": vocab_of["next"]}}
    stage = run_stage("serve", python(os.path.abspath(__file__), "--serve", json.dumps(spec)), log)
    served = json.loads(next(text for _, text in stage["lines"] if text.startswith("SERVE "))[6:])
    for name in exports:
        entry = served[name]
        row(f"serve {name}: TF1 session load {entry['session_load_seconds']:.1f} s; "
            f"1 user p50/p99 {entry['in_process_1']['p50_ms']:.1f}/"
            f"{entry['in_process_1']['p99_ms']:.1f} ms in-process, "
            f"{entry['grpc_1']['p50_ms']:.1f}/{entry['grpc_1']['p99_ms']:.1f} ms gRPC; "
            f"256 users p50 {entry['in_process_256']['p50_ms']:.0f} ms in-process, "
            f"{entry['grpc_256']['p50_ms']:.0f} ms gRPC",
            f"top-{exports[name]['report']['default_k']} of "
            f"{'%d items' % args.items if name.startswith('next') else 'the targets'}", stage)
    both = served["compare"]
    row(f"next item, float32 vs --next_item_index=int8 called alternately in-process: 1 user "
        f"p50/p99 {both['plain']['p50_ms']:.1f}/{both['plain']['p99_ms']:.1f} vs "
        f"{both['int8']['p50_ms']:.1f}/{both['int8']['p99_ms']:.1f} ms "
        f"({both['plain']['p50_ms'] / both['int8']['p50_ms']:.2f}x at p50); same ids on "
        f"{both['same_ids']}/{both['histories']} requests; certificate held on "
        f"{both['certified']}/{both['histories']} ({both['histories_are']}; the rest scored "
        "exactly over the whole catalogue)", f"top-10 of {args.items} items", stage)
    stages["serve"] = served

    table = render(rows, args, found)
    print(table)
    output = args.output or os.path.join(work, "paper_scale.json")
    with open(output, "w", encoding="utf-8") as handle:
        json.dump({"provenance": found, "arguments": vars(args), "rows": rows,
                   "stages": stages}, handle, indent=2, default=str)
    log(f"wrote {output}")
    log("raw output: " + raw_run.write(
        {"rows": rows, "table": table},
        {"provenance_at_start": found, "arguments": vars(args), "stages": stages}))
    if args.write_notes:
        write_notes()
    return 0


def render(rows, args, found):
    lines = [f"Measured on {found['machine']} ({found['date']}, commit {found['commit']}"
             f"{' + uncommitted changes' if found['dirty'] else ''}; TensorFlow "
             f"{found['tensorflow']}, Keras {found['keras']}); command: `python "
             f"benchmarks/paper_scale.py --scale={args.scale:g} --items={args.items} "
             f"--channels={args.channels} --train_steps={args.train_steps} "
             f"--finetune_steps={args.finetune_steps}`. Time and peak RSS are measured per "
             "child process; the last column is **projected** (the paper's counts divided by "
             "the rate measured here, same machine).", "",
             "| stage | size | time (s) | rate | peak RSS (GB) | projection to the paper (this machine) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        rate = f"{r['rate']:,.1f} {r['unit']}" if r["rate"] else ""
        lines.append(f"| {r['stage']} | {r['size']} | {r['seconds']:.0f} | {rate} | "
                     f"{r['peak_rss_gb']:.2f} | {r['projection'] or ''} |")
    return "\n".join(lines)


def write_notes():
    """Regenerate BUILD_NOTES' tables (this run's among them) from the kept raw outputs."""
    from benchmarks import tables
    tables.main(["--write"])

if __name__ == "__main__":
    sys.exit(main())
