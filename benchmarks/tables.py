"""BUILD_NOTES' measured tables, generated from the kept raw outputs in benchmarks/results/.

    python -m benchmarks.tables --write    # rewrite every marked region of BUILD_NOTES.md
    python -m benchmarks.tables --check    # exit 1 if a region differs from what --write writes
    python -m benchmarks.tables --list     # which tables have a raw output, which still lack one

A region is `<!-- table:NAME -->` ... `<!-- /table:NAME -->`; its whole content is what
the renderer NAME makes from the files `benchmarks/raw_output.py` wrote (or converted),
followed by the file it came from, so no figure in it lacks a file. `PENDING` lists the
measured tables BUILD_NOTES still quotes without a kept raw output, each with the command
that would produce one; the `pending` region shows that list.
"""

import argparse
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks import quality_tables, raw_output, scale_tables  # noqa: E402

NOTES = os.path.join(REPO, "BUILD_NOTES.md")
REGION = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)",
                    re.S)

#: (BUILD_NOTES section, what it quotes, the command that would write its raw output).
PENDING = [
]


def _cell(text):
    return str(text).replace("|", "\\|")


def _source(payload):
    prov = payload["provenance"]
    dirty = " (dirty tree)" if prov.get("dirty") else ""
    return (f"Source: `{payload['path']}` (commit {str(prov.get('commit'))[:7]}{dirty}; "
            f"`{prov.get('command')}`).")


def _measured_table(payloads, first=None):
    """The MEASURED rows of multiworker_scale outputs, cells as the script printed them."""
    head = list(payloads[0]["summary"]["measured"][0])
    order = ["workers", "items", "batch/worker", "median step s", "loss", "|loss - 1w|",
             "max |w - 1w| (in)", "p99.99 |w - 1w|", "share > 1e-4", "peak RSS/worker",
             "sent/worker/step*"]
    head = [h for h in order if h in head] + [h for h in head if h not in order]
    columns = ([first[0]] if first else []) + head
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |",
             "|---" * len(columns) + "|"]
    for payload in payloads:
        for row in payload["summary"]["measured"]:
            cells = ([first[1](payload)] if first else []) + [row[h] for h in head]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines + [""] + [_source(p) for p in payloads]


def render_multiworker_default():
    found = [p for p in raw_output.find("multiworker_scale")
             if p["provenance"]["commit"].startswith("71639b1")]
    return None if not found else _measured_table(found[-1:])


def render_multiworker_own_update():
    found = [raw_output.newest("multiworker_scale", tag) for tag in ("adam", "lazy_adam")]
    if None in found:
        return None
    return _measured_table(found, first=("optimizer", lambda p: p["tag"]))


def render_recbole_reference():
    references = scale_tables.recbole_references()
    if not references:
        return None
    lines = ["| model | seed | best validation epoch | epochs run | stopped by | test HR@10 | "
             "test NDCG@10 | test MRR@10 |", "|---|---|---|---|---|---|---|---|"]
    for model, found in references:
        summary, test = found["summary"], found["summary"]["test"]
        stopped = found["raw"].get("training_stopped_by", "-").replace("_", " ")
        lines.append(f"| RecBole 1.2.1 {model} | {found['raw']['config']['seed']} | "
                     f"{summary['best_valid_epoch']} | {summary['epochs_run']} | {stopped} | "
                     f"{test['HR@10']:.4f} | {test['NDCG@10']:.4f} | "
                     f"{test['MRR@10']:.4f} |")
    return lines + [""] + [_source(found) for _, found in references]


def _settings(config):
    """A public_quality run's settings as the quality table names them."""
    if config["architecture"] == "dilated_cnn":
        shape = f"dil {len(config.get('dilations') or (1, 4) * 4)}"
    else:
        shape = f"blocks {config.get('num_blocks', 2)}"
    words = [config["architecture"], f"C{config['channels']}", shape, "head", config["head"]]
    words += ["sampled"] if config.get("num_sampled") else []
    words += [f"drop {config['dropout']}"] if config.get("dropout") else []
    words += [f"b{config['batch_size']}"] if config.get("batch_size", 32) != 32 else []
    return " ".join(words)


def render_public_quality():
    found = [raw_output.newest("public_quality", tag)
             for tag in ("ml100k", "ml100k_regularisation", "synthetic")]
    if None in found:
        return None
    lines = ["| data | run | settings | full HR@10 | full NDCG@10 | SASRec-protocol HR@10 | "
             "NDCG@10 | best step | s to best | wall s | commit | load |",
             "|---" * 12 + "|"]
    for payload in found:
        commit = payload["provenance"]["commit"][:7]
        for r in payload["summary"]["results"]:
            figures = [f"{r['full']['hr@10']:.4f}", f"{r['full']['ndcg@10']:.4f}",
                       f"{r['sasrec']['hr@10']:.4f}", f"{r['sasrec']['ndcg@10']:.4f}"]
            if "settings" not in r:  # popularity
                rest = ["-", "-", "-", commit, "-"]
                settings = "popularity"
            else:
                config = r["settings"]
                steps = config.get("train_steps", payload["summary"]["train_steps"])
                best = (f"{r['seconds_to_selected']:.0f}" if r["seconds_to_selected"] is not None
                        else f"{r['wall_seconds']:.0f}")
                if r["selected_step"] == steps:
                    best += " (last)"
                rest = [r["selected_step"], best, f"{r['wall_seconds']:.0f}", commit,
                        f"{r['load_average_before'][0]:.1f}"]
                settings = _settings(config)
            cells = [r["dataset"], r["run"], settings] + figures + rest
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines + [""] + [_source(p) for p in found]


def render_short_history():
    found = raw_output.find("train_throughput_short")
    if not found:
        return None
    sides = ["nojit_compile", "softmax", "blocks+softmax", "whole_step"]
    lines = ["| run | repeats x timed steps | `--nojit_compile` | fused softmax in XLA | "
             "blocks + fused softmax | whole step (head on target rows) | the default | "
             "default / nojit |", "|---" * 8 + "|"]
    for payload in found:
        prov = payload["provenance"]
        arguments = payload["raw"].get("configuration") or payload["raw"].get("arguments")
        name = prov["commit"][:7] + (" (_dirty)" if prov["dirty"] else "")
        for row in payload["summary"]["rows"]:
            default = row.get("default_side") or "+".join(row["default_plan"])
            by_side = dict(row["medians"])
            if "default" in by_side:  # runs before the plans had their own columns
                by_side[default] = by_side.pop("default")
            medians = [f"{by_side[s]:.0f}" if s in by_side else "-" for s in sides]
            cells = [name, f"{arguments['repeats']} x {arguments['steps']}"] + medians + [
                default, f"{row['default_over_nojit']:.2f}"]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines + [""] + [_source(p) for p in found]


def render_suite_time():
    found = raw_output.find("suite_time")
    if not found:
        return None
    lines = ["| run | pytest options after pytest.ini's | cpus | wall s | summed test s | "
             "result | load at start | load at end | longest files (summed test seconds) |",
             "|---" * 9 + "|"]
    for payload in found:
        prov, summary = payload["provenance"], payload["summary"]
        name = prov["commit"][:7] + (" (_dirty)" if prov["dirty"] else "")
        longest = ", ".join(f"{path.rsplit('/', 1)[-1]} {seconds:.0f}"
                            for path, seconds in sorted(summary["per_file_s"].items(),
                                                        key=lambda kv: -kv[1])[:4])
        summed = summary.get("summed_test_s") or [sum(summary["per_file_s"].values())]
        for wall, work, code, result in zip(summary["wall_s"], summed, summary["returncodes"],
                                            summary["results"]):
            load = prov["load"]
            cells = [name, f"`{summary['pytest_args']}`" if summary["pytest_args"] else "-",
                     summary["cpus"], f"{wall:.0f}", f"{work:.0f}",
                     result if code == 0 else f"FAILED (exit {code}): {result}",
                     load.get("loadavg_before"), load.get("loadavg_after"), longest]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines + [""] + [_source(p) for p in found]


def render_recipe_timing():
    found = raw_output.newest("recipe_timing", "amazon_shaped")
    if found is None:
        return None
    lines = ["| run | commit | steps | XLA | sampled | examples/s | wall s | load at start | "
             "load at end |", "|---" * 9 + "|"]
    for r in found["summary"]["runs"]:
        load = [" ".join(line.split(" load ", 1)[1].split()[:3])
                for line in (r["load_start"], r["load_end"])]
        cells = [r["run"], r["commit"], r["train_steps"], "yes" if r["jit_compile"] else "no",
                 r["num_sampled"] or "-", f"{r['examples_per_second']:.0f}",
                 f"{r['wall_seconds']:.0f}"] + load
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines + [""] + [_source(found)]


def render_litert_recall():
    found = raw_output.newest("litert_recall")
    if found is None:
        return None
    s = found["summary"]
    recall = s[f"int8_recall_at_{s['k']}_vs_float32"]
    return ["| model | items | history length | histories | float32 = SavedModel ids | "
            f"int8 recall@{s['k']} vs float32 | int8 same list and order | float32 bytes | "
            "int8 bytes |", "|---" * 9 + "|",
            f"| {s['model']} | {s['items']} | {s['history_length']} | {s['histories']} | "
            f"{s['float32_same_ids_as_saved_model']}/{s['histories']} | {recall:.3f} | "
            f"{s['int8_same_ids_and_order_as_float32']}/{s['histories']} | "
            f"{s['bytes']['none']:,} | {s['bytes']['dynamic_int8']:,} |", "", _source(found)]


def render_serving_latency():
    found = raw_output.newest("serving_latency")
    if found is None:
        return None
    s = found["summary"]
    setup, targets = s["setup"], s["targets_p99_ms"]
    lines = [f"One user's next item ({setup['channels']} channels, {setup['items']:,} items, "
             f"{setup['history']}-item history, k {setup['k']}, {setup['head']} head), "
             f"{setup['requests']:,} requests a row after {setup['warmup']} warm-up calls:", "",
             "| export | path | p50 ms | p90 ms | p99 ms | max ms | target p99 | met |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, ways in s["results"].items():
        for way, e in ways.items():
            lines.append(f"| {mode} | {way} | {e['p50_ms']:.2f} | {e['p90_ms']:.2f} | "
                         f"{e['p99_ms']:.2f} | {e['max_ms']:.2f} | {targets[way]} ms | "
                         f"{'yes' if e['p99_ms'] <= targets[way] else 'no'} |")
    for part, e in s.get("breakdown_in_process", {}).items():
        lines.append(f"| breakdown: {part} alone | in_process | {e['p50_ms']:.2f} | "
                     f"{e['p90_ms']:.2f} | {e['p99_ms']:.2f} | {e['max_ms']:.2f} | - | - |")
    load = found["provenance"]["load"]
    lines += ["", f"Load average before / after: {load.get('loadavg_before')} / "
              f"{load.get('loadavg_after')}.", _source(found)]
    return lines


def render_recommend_throughput():
    found = raw_output.newest("recommend_throughput")
    if found is None:
        return None
    s = found["summary"]
    setup = s["setup"]
    lines = [f"`peterrec_tf.recommend` over the test split ({setup['channels']} channels, "
             f"{setup['history']}-item histories, k {setup['k']}, batch {setup['batch_size']}, "
             f"median of {setup['repeats']}; users/s over the ranking and writing "
             "`run_recommend` times, the whole call with loading beside it):", "",
             "| items | users | users/s | users/s, --exclude_history | whole call s | "
             "whole call s, --exclude_history |", "|---|---|---|---|---|---|"]
    for items, e in s.items():
        if items == "setup":
            continue
        lines.append(f"| {int(items):,} | {e['users']:,} | {e['plain']['users_per_second']:,.0f} | "
                     f"{e['exclude_history']['users_per_second']:,.0f} | "
                     f"{e['plain']['median_wall_seconds']:.1f} | "
                     f"{e['exclude_history']['median_wall_seconds']:.1f} |")
    return lines + ["", _source(found)]


def render_pending():
    if not PENDING:
        return ["None: every measured table in this file is generated from a kept raw output."]
    lines = ["| BUILD_NOTES section | measured figures without a kept raw output | command "
             "that would write one |", "|---|---|---|"]
    lines += [f"| {_cell(a)} | {_cell(b)} | `{c}` |" for a, b, c in PENDING]
    return lines


TABLES = {
    "multiworker-default": (render_multiworker_default,
                            "python benchmarks/multiworker_scale.py"),
    "multiworker-own-update": (render_multiworker_own_update,
                               "python benchmarks/multiworker_scale.py --optimizer=adam "
                               "--workers=1,2 --steps=6 (and --optimizer=lazy_adam)"),
    "recbole-reference": (render_recbole_reference,
                          "python benchmarks/recbole_reference.py --seed 2020 --epochs 50 "
                          "--threads 1 (in RecBole's own venv)"),
    "public-quality": (render_public_quality,
                       "python benchmarks/public_quality.py (the commands in BUILD_NOTES' "
                       "quality section)"),
    "short-history": (render_short_history,
                      "python benchmarks/train_throughput.py --history_len=9 --channels=64 "
                      "--vocabs=24000 --repeats=3 --steps=30"),
    "recipe-timing": (render_recipe_timing,
                      "python -m peterrec_tf.pretrain --flagfile=recipes/public_sequential.flags "
                      "... (no script gathers these runs; see BUILD_NOTES' recipe section)"),
    "litert-recall": (render_litert_recall, "python benchmarks/litert_recall.py"),
    "serving-latency": (render_serving_latency, "python benchmarks/serving_latency.py"),
    "recommend-throughput": (render_recommend_throughput,
                             "python benchmarks/recommend_throughput.py --items=23700,645000 "
                             "--users=5000 --repeats=3"),
    "task-artifact-bytes": (scale_tables.render_task_artifact_bytes,
                            "python benchmarks/task_artifact_bytes.py"),
    "input-pipeline": (scale_tables.render_input_pipeline, "python benchmarks/input_pipeline.py"),
    "prepare-scale": (scale_tables.render_prepare_scale,
                      "python benchmarks/prepare_scale.py --sizes=5000000,15000000 "
                      "--beam_events=200000 (and --sizes=155000000 --beam_events=0)"),
    "beam-throughput": (scale_tables.render_beam_throughput,
                        "python benchmarks/prepare_scale.py --sizes=5000000,15000000 "
                        "--beam_events=200000"),
    "paper-scale": (scale_tables.render_paper_scale,
                    "python benchmarks/paper_scale.py --scale=0.002 --items=645000 "
                    "--serve_repeats=2000"),
    "train-throughput": (scale_tables.render_train_throughput,
                         "python benchmarks/train_throughput.py --vocabs=1683 --repeats=3 && "
                         "python benchmarks/train_throughput.py --vocabs=100000 --steps=10 "
                         "--skip_fidelity --repeats=3"),
    "recbole-split-seeds": (scale_tables.render_recbole_split_seeds,
                            "python benchmarks/public_quality.py --datasets=ml100k --runs=cnn_full "
                            "--seeds=0,1,2 --train_steps=1500 --eval_every=75 "
                            "--tag=ml100k_recbole_split_3seeds --work_dir=/tmp/pq3"),
    "recipe-video-games": (quality_tables.render_recipe_video_games,
                           "python benchmarks/public_quality.py --datasets=sasrec_log "
                           "--sasrec_log=Video.txt --runs= --recipe=recipes/public_sequential.flags "
                           "--seeds=0,1,2 --tag=video_games_recipe_3seeds --work_dir=/tmp/pqv"),
    "video-games-dropout": (quality_tables.render_video_games_dropout,
                            "python benchmarks/public_quality.py --datasets=sasrec_log "
                            "--sasrec_log=Video.txt --runs= --extra_runs=... --tag=explore1 "
                            "(and explore2; the settings are in each output)"),
    "recipe-ml100k": (quality_tables.render_recipe_ml100k,
                      "python benchmarks/public_quality.py --datasets=ml100k --runs= "
                      "--recipe=recipes/public_sequential.flags --seeds=0,1,2 "
                      "--tag=ml100k_recipe_3seeds --work_dir=/tmp/pqm"),
    "ml100k-window-stride": (quality_tables.render_ml100k_window_stride,
                             "python benchmarks/public_quality.py --datasets=ml100k --runs= "
                             "--recipe=recipes/public_sequential.flags --recipe_flags="
                             "'--epochs=60 --patience=10 --window_stride=10' --seeds=0 "
                             "--tag=ml100k_stride10_seed0 --work_dir=/tmp/pq/a"),
    "ml100k-paired-recbole": (quality_tables.render_ml100k_paired_recbole,
                              "python benchmarks/public_quality.py --datasets=ml100k --runs= "
                              "--recipe=recipes/public_sequential.flags --recipe_flags="
                              "'--epochs=60 --patience=10' --seeds=0,1,2 --no-popularity "
                              "--tag=ml100k_small_log_ranks_3seeds --work_dir=/tmp/pq/small3 "
                              "and /tmp/recbole-venv/bin/python benchmarks/recbole_reference.py "
                              "--model=SASRec --work_dir=/work/recbole_state/sasrec_seed2020 "
                              "--epochs=200 --threads=2 (--resume to continue it)"),
    "suite-time": (render_suite_time, "python benchmarks/suite_time.py"),
    "pending": (render_pending, None),
}


def render(name):
    """A region's content: the table and its source, or the command that would make it."""
    if name not in TABLES:
        raise KeyError(f"no table renderer named {name!r}; known: {sorted(TABLES)}")
    renderer, command = TABLES[name]
    lines = renderer()
    if lines is None:
        lines = [f"(No kept raw output yet: `{command}` writes one into benchmarks/results/; "
                 "then `python -m benchmarks.tables --write`.)"]
    return "\n".join(lines) + "\n"


def regenerate(text):
    """`text` with every marked region's content rewritten; (new text, region names)."""
    names = []

    def replace(match):
        names.append(match["name"])
        return match.group(1) + render(match["name"]) + match.group(4)
    return REGION.sub(replace, text), names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    mode.add_argument("--list", action="store_true")
    parser.add_argument("--notes", default=NOTES, help="the Markdown file with the regions")
    args = parser.parse_args(argv)
    if args.list:
        for name, (renderer, command) in sorted(TABLES.items()):
            found = renderer() is not None
            print(f"{name}: {'has a raw output' if found else 'MISSING: ' + command}")
        for section, what, command in PENDING:
            print(f"not yet generated ({section}): {what}\n    {command}")
        return 0
    with open(args.notes, encoding="utf-8") as handle:
        text = handle.read()
    new, names = regenerate(text)
    if args.check:
        if new != text:
            print(f"{args.notes}: a generated table differs from its raw output; run "
                  "python -m benchmarks.tables --write", file=sys.stderr)
            return 1
        print(f"{args.notes}: {len(names)} generated tables match their raw outputs")
        return 0
    if new != text:
        with open(args.notes + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(new)
        os.replace(args.notes + ".tmp", args.notes)
    print(f"{args.notes}: wrote {len(names)} tables ({', '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
