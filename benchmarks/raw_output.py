"""Every benchmark's kept raw output, one shared writer and reader.

A benchmark run writes `benchmarks/results/<benchmark>_<commit>[_<tag>][_dirty].json`:

    {"benchmark": NAME, "tag": TAG or null,
     "provenance": {commit, dirty, dirty_files, command, machine, versions,
                    started_utc, finished_utc, load: {loadavg before/after, note}},
     "summary": what the script prints (medians, ratios, ...),
     "raw": every timing or sample the summary was computed from}

`benchmarks/tables.py` renders BUILD_NOTES' measured tables from these files only, so a
figure without a file cannot appear there. A file is never overwritten: a second run at
the same commit and tag gets `_2`, `_3`, ... (the newest by `finished_utc` is the one a
table reads). The provenance comes from `peterrec_tf.experiments.provenance`, the same
record the transfer reports keep.
"""

import datetime
import glob
import json
import os
import platform
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

#: where outputs go (PETERREC_BENCHMARK_RESULTS overrides it, e.g. for a smoke run)
RESULTS_DIR = (os.environ.get("PETERREC_BENCHMARK_RESULTS")
               or os.path.join(REPO, "benchmarks", "results"))


def _provenance():
    """`peterrec_tf/experiments/provenance.py` loaded by path: importing the package would
    import TensorFlow, which a benchmark run in another environment (RecBole's) lacks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_benchmark_provenance", os.path.join(REPO, "peterrec_tf", "experiments", "provenance.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine():
    """CPU model and count, memory, platform: what a figure's speed depends on."""
    found = {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu_model": None,
             "mem_total_gib": None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            found["cpu_model"] = next((line.split(":", 1)[1].strip() for line in handle
                                       if line.startswith("model name")), None)
        with open("/proc/meminfo", encoding="utf-8") as handle:
            kib = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
        found["mem_total_gib"] = round(kib / 2 ** 20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return found


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class Run:
    """The provenance of one benchmark run: create it before measuring (it records the
    load average then), `write()` it after with the summary and the raw samples."""

    def __init__(self, benchmark, tag=None, note=None, command=None, repo_dir=REPO):
        provenance = _provenance()
        self.benchmark, self.tag = benchmark, tag
        state = provenance.git_state(repo_dir)
        self.provenance = dict(
            state, command=command or " ".join([os.path.relpath(sys.argv[0], REPO)
                                                if sys.argv and sys.argv[0] else ""]
                                               + sys.argv[1:]),
            machine=machine(), versions=provenance.package_versions(),
            started_utc=utc_now(), load={"loadavg_before": load_average(), "note": note})

    def file_name(self):
        commit = (self.provenance["commit"] or "nocommit")[:7]
        parts = [self.benchmark, commit] + ([self.tag] if self.tag else []) + \
            (["dirty"] if self.provenance["dirty"] else [])
        return "_".join(parts)

    def write(self, summary, raw, results_dir=RESULTS_DIR, note=None):
        """Write the file (never over another); returns its path."""
        self.provenance["finished_utc"] = utc_now()
        self.provenance["load"]["loadavg_after"] = load_average()
        if note:
            self.provenance["load"]["note"] = note
        os.makedirs(results_dir, exist_ok=True)
        base = os.path.join(results_dir, self.file_name())
        path, n = base + ".json", 1
        while os.path.exists(path):
            n += 1
            path = f"{base}_{n}.json"
        payload = {"benchmark": self.benchmark, "tag": self.tag, "provenance": self.provenance,
                   "summary": summary, "raw": raw}
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(tmp, path)
        return path


def find(benchmark, tag=None, results_dir=RESULTS_DIR):
    """Every kept output of `benchmark` (with `tag`; any tag if None), oldest first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(results_dir), f"{benchmark}_*.json")):
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        if (not isinstance(payload, dict) or payload.get("benchmark") != benchmark
                or "provenance" not in payload or (tag is not None and payload.get("tag") != tag)):
            continue  # another writer's file, or another tag
        payload["path"] = os.path.relpath(path, REPO)
        found.append(payload)
    return sorted(found, key=lambda p: (p["provenance"].get("finished_utc") or "", p["path"]))


def newest(benchmark, tag=None, results_dir=RESULTS_DIR):
    """The most recent kept output of `benchmark` (and `tag`), or None."""
    found = find(benchmark, tag, results_dir)
    return found[-1] if found else None


def percentile(samples, q):
    """The q-th percentile (0-100) of `samples`, linear between closest ranks (numpy's
    default), so every quoted percentile can be recomputed from the kept samples."""
    import numpy as np

    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))
