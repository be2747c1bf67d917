"""Data preparation at paper scale: time and peak memory of `pipelines.prepare` on
paper-shaped interaction logs (Zipf popularity over 645K items, ~100-event histories,
unordered rows; `pipelines.paper_log`), generated here.

    python benchmarks/prepare_scale.py --sizes=5000000,15000000 --beam_events=200000

Each preparation runs as its own process (`python -m pipelines.prepare`), measured with
wait4: wall time and peak RSS. A 1,000-event run gives the fixed part (Python +
TensorFlow); the slope between the two largest sizes gives bytes and seconds per event,
and the 155M-event figures are extrapolated from them (labelled as such).
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.raw_output import Run  # noqa: E402
from pipelines.paper_log import write_paper_log  # noqa: E402

PAPER_EVENTS = 155_000_000


def run_prepare(log, out, runner, extra=()):
    """(wall seconds, peak RSS bytes) of one preparation in a child process."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "pipelines.prepare", "--format=interactions",
               f"--input={log}", f"--output_dir={out}", f"--runner={runner}", *extra]
    started = time.time()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - started
    if status:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output}")
    return wall, usage.ru_maxrss * 1024, output


def versions():
    found = {"python": platform.python_version()}
    for name in ("numpy", "tensorflow", "apache_beam", "google.protobuf"):
        try:
            module = __import__(name, fromlist=["__version__"])
            found[name] = module.__version__
        except ImportError:
            found[name] = None
    try:
        found["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                         capture_output=True, text=True).stdout.strip()
    except OSError:
        found["commit"] = None
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000000,15000000",
                        help="events of the logs prepared by the local path")
    parser.add_argument("--beam_events", type=int, default=200_000,
                        help="events of the log prepared on the DirectRunner (0: skip)")
    parser.add_argument("--workdir", default="/tmp/prepare_scale")
    parser.add_argument("--output", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    raw_run = Run("prepare_scale", note="each preparation its own process, wait4")
    result = {"config": vars(args), "versions": versions(), "runs": []}

    def measure(events, runner, extra=()):
        log = os.path.join(args.workdir, f"log_{events}.tsv")
        started = time.time()
        written = write_paper_log(log, events)
        generated = time.time() - started
        wall, rss, output = run_prepare(log, os.path.join(args.workdir, "out"), runner, extra)
        run = {"events": written, "runner": runner, "seconds": round(wall, 1),
               "peak_rss_mb": round(rss / 2**20), "generate_seconds": round(generated, 1),
               "log_mb": round(os.path.getsize(log) / 2**20),
               "events_per_second": round(written / wall),
               "phases": [line.strip() for line in output.splitlines()
                          if "peak RSS" in line]}
        os.remove(log)
        print(json.dumps(run), flush=True)
        result["runs"].append(run)
        return run

    base = measure(1000, "local")
    local = [measure(int(n), "local") for n in args.sizes.split(",") if n]
    if args.beam_events:
        measure(args.beam_events, "DirectRunner", ["--direct_num_workers=1"])
    if len(local) >= 2:
        a, b = local[-2], local[-1]
        slope_bytes = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 2**20 / (b["events"] - a["events"])
        slope_seconds = (b["seconds"] - a["seconds"]) / (b["events"] - a["events"])
        result["extrapolated_155M"] = {
            "rss_bytes_per_event": round(slope_bytes, 1),
            "seconds_per_million_events": round(slope_seconds * 1e6, 2),
            "peak_rss_gb": round((b["peak_rss_mb"] * 2**20
                                  + slope_bytes * (PAPER_EVENTS - b["events"])) / 2**30, 1),
            "minutes": round((b["seconds"] + slope_seconds * (PAPER_EVENTS - b["events"])) / 60,
                             1),
            "fixed_rss_mb": base["peak_rss_mb"],
            "note": "linear extrapolation from the two largest measured sizes, not a run",
        }
        print(json.dumps(result["extrapolated_155M"]), flush=True)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=2)
    print("raw output: " + raw_run.write(result.get("extrapolated_155M"), result), flush=True)


if __name__ == "__main__":
    main()
