"""The test suite's wall time as CI runs it, with every test's duration: a kept raw output.

    python benchmarks/suite_time.py                      # pytest.ini's options (CI's run)
    python benchmarks/suite_time.py --pytest_args="-n 0" --tag=serial

Runs `python -m pytest -q --durations=0` with `CI=true` (a missing ../shared fails, as in
CI) from the repository root, once per `--repeats`, and keeps each run's wall time, result
line and every test phase's duration (`raw`), plus each test file's summed duration, the
work a pytest-xdist worker receives in one piece under `--dist loadfile` (`summary`). The
file order in tests/conftest.py's LONGEST_FIRST is read from those sums. A failed run is
kept too, with its exit status, and says so in the table.
"""

import argparse
import collections
import os
import re
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import raw_output  # noqa: E402

DURATION = re.compile(r"^(?P<seconds>\d+(?:\.\d+)?)s (?P<phase>setup|call|teardown)\s+"
                      r"(?P<nodeid>\S.*)$")
RESULT = re.compile(r"^=*\s*(?P<line>\d+ [a-z]+\b.*? in [\d.]+s\b.*?)\s*=*$")


def parse(output):
    """(durations [(seconds, phase, nodeid)], the result line or None) of pytest's output."""
    durations, result = [], None
    for line in output.splitlines():
        line = line.strip()
        found = DURATION.match(line)
        if found:
            durations.append((float(found["seconds"]), found["phase"], found["nodeid"]))
            continue
        found = RESULT.match(line)
        if found:
            result = found["line"]
    return durations, result


def per_file(durations):
    """{test file: summed seconds of its tests' phases} (the kept JSON sorts its keys)."""
    totals = collections.Counter()
    for seconds, _, nodeid in durations:
        totals[nodeid.split("::", 1)[0]] += seconds
    return {name: round(total, 2) for name, total in totals.most_common()}


def run_once(pytest_args):
    command = [sys.executable, "-m", "pytest", "-q", "--color=no", "--durations=0",
               "--durations-min=0", *pytest_args]
    env = dict(os.environ, CI="true")
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    durations, result = parse(done.stdout)
    if not durations:
        raise SystemExit(f"error: pytest printed no durations (exit {done.returncode}); "
                         f"its output ends:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return {"command": command[1:], "returncode": done.returncode, "wall_s": round(wall, 1),
            "result": result, "durations": durations, "tail": done.stdout[-1500:]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pytest_args", default="",
                        help="added after pytest.ini's options, e.g. '-n 0' (one process)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tag", default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    run = raw_output.Run("suite_time", tag=args.tag)
    runs = []
    for repeat in range(args.repeats):
        print(f"suite run {repeat + 1}/{args.repeats} ...", flush=True)
        result = run_once(shlex.split(args.pytest_args))
        print(f"  {result['wall_s']:.0f} s, exit {result['returncode']}: {result['result']}",
              flush=True)
        runs.append(result)
    walls = sorted(r["wall_s"] for r in runs)
    summary = {"pytest_args": args.pytest_args, "cpus": os.cpu_count(),
               "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else None,
               "summed_test_s": [round(sum(d[0] for d in r["durations"]), 1) for r in runs],
               "wall_s": [r["wall_s"] for r in runs], "median_wall_s": walls[len(walls) // 2],
               "returncodes": [r["returncode"] for r in runs],
               "results": [r["result"] for r in runs],
               "per_file_s": per_file(runs[-1]["durations"])}
    path = run.write(summary, {"runs": runs})
    print(f"wrote {os.path.relpath(path, REPO)}; next: python -m benchmarks.tables --write")
    return 0 if all(r["returncode"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
