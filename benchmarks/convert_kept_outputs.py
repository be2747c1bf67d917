"""One-off: the raw outputs kept before `benchmarks/raw_output.py` existed, moved into
`benchmarks/results/` in its format (provenance from the outputs themselves, the original
text or JSON kept whole under `raw`). Already run; its sources were then removed (they are
in git history), so re-running it only reports the outputs that exist.

    python benchmarks/convert_kept_outputs.py
"""

import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.raw_output import RESULTS_DIR  # noqa: E402

HEADER = re.compile(r"multiworker_scale: commit (\w+)(?: \(dirty\))?, ([\d-]+ [\d:]+) UTC, "
                    r"(\d+) CPU cores, MemAvailable ([\d.]+) GiB")


def measured_rows(lines):
    """The MEASURED table of a multiworker_scale output as dicts (header cells as keys)."""
    start = next(i for i, line in enumerate(lines) if line.startswith("workers | items |"))
    head = [cell.strip() for cell in lines[start].split(" | ")]
    rows = []
    for line in lines[start + 1:]:
        if not re.match(r"^\d+ \|", line):
            break
        cells = [cell.strip() for cell in line.split(" | ")]
        if len(cells) != len(head):
            raise ValueError(f"{line!r}: {len(cells)} cells, the header has {len(head)}")
        rows.append(dict(zip(head, cells)))
    return rows


def convert_multiworker(name, tag):
    source = os.path.join(REPO, "benchmarks", name)
    lines = open(source, encoding="utf-8").read().splitlines()
    match = HEADER.match(lines[0])
    commit, when, cpus, available = match.groups()
    command = lines[1].split("command: ", 1)[1]
    return {"benchmark": "multiworker_scale", "tag": tag,
            "provenance": {"commit": commit, "dirty": "(dirty)" in lines[0], "command": command,
                           "machine": {"cpus": int(cpus), "mem_available_gib": float(available)},
                           "finished_utc": when.replace(" ", "T") + "Z",
                           "load": {"note": "2 cores shared with other jobs (the output's own "
                                            "words); no load average was recorded"},
                           "converted_from": f"benchmarks/{name} (the script's printed output; "
                                             "per-step samples were not kept, the medians are)"},
            "summary": {"measured": measured_rows(lines)}, "raw": {"lines": lines}}


def convert_recbole():
    source = os.path.join(REPO, "benchmarks", "recbole_reference_seed2020.json")
    found = json.load(open(source, encoding="utf-8"))
    return {"benchmark": "recbole_reference", "tag": "seed2020",
            "provenance": {"commit": found["repo_commit"], "dirty": None,
                           "command": found["command"], "versions": found["versions"],
                           "machine": {"threads": found["threads"]},
                           "finished_utc": None,
                           "load": {"note": "not recorded"},
                           "converted_from": "benchmarks/recbole_reference_seed2020.json "
                                             "(whole, under raw)"},
            "summary": {"test": found["test"], "best_valid_epoch": found["best_valid_epoch"],
                        "epochs_run": found["epochs_run"]},
            "raw": found}


def main():
    os.makedirs(RESULTS_DIR, exist_ok=True)
    outputs = [("multiworker_scale_71639b1", lambda: convert_multiworker(
                   "multiworker_scale_71639b1.txt", None)),
               ("multiworker_scale_5548c10_adam", lambda: convert_multiworker(
                   "multiworker_scale_5548c10_adam.txt", "adam")),
               ("multiworker_scale_5548c10_lazy_adam", lambda: convert_multiworker(
                   "multiworker_scale_5548c10_lazy_adam.txt", "lazy_adam")),
               ("recbole_reference_02f6d53_seed2020", convert_recbole)]
    for name, convert in outputs:
        path = os.path.join(RESULTS_DIR, name + ".json")
        if os.path.exists(path):
            print(f"{path} exists; left as it is")
            continue
        payload = convert()
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True)
            handle.write("\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
