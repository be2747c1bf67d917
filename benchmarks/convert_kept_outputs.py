"""One-off: the raw outputs kept before `benchmarks/raw_output.py` existed (or written by
scripts that then kept their own format), moved into `benchmarks/results/` in its format
(provenance from the outputs themselves, the original text or JSON kept whole under `raw`).
Already run; its sources were then removed or replaced (they are in git history), so
re-running it only reports the outputs that exist. `--in_place` converts the JSON files in
`benchmarks/results/` that are still in an older format (`OLD_FORMAT`), keeping each one's
provenance values (commit, dirty flag, command, machine, load averages).

    python benchmarks/convert_kept_outputs.py [--in_place]
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


def _load_by_path(name):
    """A benchmark script as a module, loaded by path (no `benchmarks` package import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"_converted_{name}", os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert_public_quality(found, tag):
    """A `public_quality.py` record (its own format before it wrote through raw_output)."""
    summary = _load_by_path("public_quality").summarise(found)
    return {"benchmark": "public_quality", "tag": tag,
            "provenance": {"commit": found["commit"], "dirty": found["dirty"],
                           "dirty_files": found["dirty_files"], "command": found["command"],
                           "machine": found["machine"], "started_utc": None,
                           "finished_utc": None,
                           "load": {"loadavg_before": found["load_average_start"],
                                    "loadavg_after": found.get("load_average_end"),
                                    "note": "load averages before/after each run in raw"},
                           "converted_from": "public_quality.py's own record (whole, under raw)"},
            "summary": summary, "raw": found}


def convert_train_throughput_short(found, tag):
    """A `train_throughput.py --history_len` record (its own format before raw_output)."""
    from benchmarks.train_throughput import short_history_summary

    after = found["rows"][-1].get("load_average_after") if found["rows"] else None
    return {"benchmark": "train_throughput_short", "tag": tag,
            "provenance": {"commit": found["commit"], "dirty": found["dirty"],
                           "dirty_files": found["dirty_files"],
                           "repository": found.get("repository"), "command": found["command"],
                           "machine": found["machine"], "versions": found["versions"],
                           "started_utc": found["started_utc"], "finished_utc": None,
                           "load": {"loadavg_before": found["load_average_before"],
                                    "loadavg_after": after,
                                    "note": "every plan alternates in one process; load "
                                            "average after each row in raw"},
                           "converted_from": "train_throughput.py's own record (whole, under "
                                             "raw; configuration = the arguments)"},
            "summary": short_history_summary(found["rows"]), "raw": found}


def convert_litert_recall(found, tag):
    """`litert_recall.py`'s record before it wrote through raw_output (the same figures the
    script's summary now holds; the per-history ids are its raw rows)."""
    keys = ("model", "items", "history_length", "k", "histories",
            "float32_same_ids_as_saved_model", f"int8_recall_at_{found['k']}_vs_float32",
            "int8_same_ids_and_order_as_float32", "bytes")
    return {"benchmark": "litert_recall", "tag": tag,
            "provenance": {"commit": found["commit"], "dirty": found["dirty"],
                           "command": found["command"],
                           "machine": {"description": found["machine"]},
                           "versions": {k: found[k] for k in ("python", "numpy", "tensorflow",
                                                              "keras")},
                           "started_utc": None,
                           "finished_utc": found["date"].replace(" UTC", "").replace(" ", "T"),
                           "load": {"note": "not recorded"},
                           "converted_from": "litert_recall.py's own record (its top-level "
                                             "fields are the summary, its rows the raw)"},
            "summary": {k: found[k] for k in keys}, "raw": found["rows"]}


def convert_recipe_timing(found, tag):
    """The recipe's timing runs (each a `python -m peterrec_tf.pretrain` run, its flags,
    figures and log gathered by hand into one file): provenance of the newest run; every
    run's own commit, dirty state and command stay in raw."""
    newest = found["runs"][-1]
    summary = {"runs": [{"run": r["run"], "commit": r["commit"], "dirty": r["dirty"],
                         "command": r["command"], "note": r.get("note"),
                         "jit_compile": r["flags"]["jit_compile"],
                         "num_sampled": r["flags"]["num_sampled"],
                         "train_steps": r["flags"]["train_steps"],
                         "examples_per_second": r["examples_per_second"],
                         "wall_seconds": r["wall_seconds"],
                         "load_start": r["log_lines"][0], "load_end": r["log_lines"][-1]}
                        for r in found["runs"]], "data": found["data"]}
    return {"benchmark": "recipe_timing", "tag": tag,
            "provenance": {"commit": newest["commit"], "dirty": newest["dirty"] is not False,
                           "command": "each run's command in summary.runs (python -m "
                                      "peterrec_tf.pretrain --flagfile=recipes/"
                                      "public_sequential.flags ...)",
                           "machine": found["machine"], "started_utc": None,
                           "finished_utc": None,
                           "load": {"note": found["machine"]["note"]},
                           "converted_from": "benchmarks/results/recipe_timing_amazon_shaped."
                                             "json (whole, under raw)"},
            "summary": summary, "raw": found}


#: The files converted in place (or renamed): old name, new name, converter, tag.
OLD_FORMAT = [
    ("public_quality_c4154ec_ml100k", "public_quality_c4154ec_ml100k", convert_public_quality,
     "ml100k"),
    ("public_quality_92e0627_ml100k_regularisation",
     "public_quality_92e0627_ml100k_regularisation", convert_public_quality,
     "ml100k_regularisation"),
    ("public_quality_92e0627_synthetic", "public_quality_92e0627_synthetic",
     convert_public_quality, "synthetic"),
    ("train_throughput_short_ac64af4_dirty", "train_throughput_short_ac64af4_dirty",
     convert_train_throughput_short, None),
    ("train_throughput_short_fcac0ac", "train_throughput_short_fcac0ac",
     convert_train_throughput_short, None),
    ("train_throughput_short_fcac0ac_dirty", "train_throughput_short_fcac0ac_dirty",
     convert_train_throughput_short, None),
    ("litert_recall_8d4893d", "litert_recall_8d4893d", convert_litert_recall, None),
    ("recipe_timing_e25b3f6_amazon_shaped_dirty", "recipe_timing_e25b3f6_amazon_shaped_dirty",
     convert_recipe_timing, "amazon_shaped"),
]


def convert_in_place():
    """Rewrite each OLD_FORMAT file still in its old format (renamed where its name was
    not raw_output's); the renaming is left to `git mv` by the caller when names differ."""
    for old, new, convert, tag in OLD_FORMAT:
        source = os.path.join(RESULTS_DIR, old + ".json")
        if not os.path.exists(source):
            print(f"{source}: not there (converted already?)")
            continue
        found = json.load(open(source, encoding="utf-8"))
        if "provenance" in found:
            print(f"{source}: already in raw_output's format")
            continue
        payload = convert(found, tag)
        target = os.path.join(RESULTS_DIR, new + ".json")
        with open(target + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True, default=str)
            handle.write("\n")
        os.replace(target + ".tmp", target)
        if target != source:
            os.remove(source)
        print(f"{source} -> {target}")


def main():
    if "--in_place" in sys.argv[1:]:
        return convert_in_place()
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
