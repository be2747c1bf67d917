"""Renderers of BUILD_NOTES' scale and speed tables (task bytes, paper-scale chain, prepare
memory and time, Beam throughput, training and input-pipeline throughput), each from the
newest kept raw output; `benchmarks.tables` registers them beside the others."""

import re

from benchmarks import raw_output


def source(payload):
    prov = payload["provenance"]
    dirty = " (dirty tree)" if prov.get("dirty") else ""
    load = prov.get("load") or {}
    return (f"Source: `{payload['path']}` (commit {str(prov.get('commit'))[:7]}{dirty}; "
            f"`{prov.get('command')}`; load average before/after "
            f"{load.get('loadavg_before')} / {load.get('loadavg_after')}).")


#: RecBole's models with a kept reference on MovieLens-100K, in table order.
RECBOLE_MODELS = ("NextItNet", "SASRec")


def _recbole_tag_prefix(model):
    # the NextItNet reference's tag predates the model's name in it
    return "seed" if model == "NextItNet" else f"{model.lower()}_seed"


def recbole_tag(model, seed):
    """The kept RecBole reference's tag for `model` and `seed`, which
    benchmarks/recbole_reference.py writes and `recbole_seed` parses."""
    return f"{_recbole_tag_prefix(model)}{seed}"


def recbole_seed(model, tag):
    """The seed `tag` names if it is `model`'s reference tag (`recbole_tag`'s form), else
    None: `seed2021` is NextItNet's, never SASRec's `sasrec_seed2021`."""
    match = re.fullmatch(re.escape(_recbole_tag_prefix(model)) + r"(\d+)", tag or "")
    return int(match.group(1)) if match else None


def recbole_references():
    """[(model, output)] for every kept RecBole reference, NextItNet first, each model's by
    seed: for each model and seed the newest output under that model's own tag (the newest
    output of any tag would be whichever model ran last, and its figures would be shown
    under another model's name)."""
    newest = {p.get("tag"): p for p in raw_output.find("recbole_reference")}  # oldest first
    references = []
    for model in RECBOLE_MODELS:
        seeds = sorted({recbole_seed(model, tag) for tag in newest} - {None})
        references += [(model, newest[recbole_tag(model, seed)]) for seed in seeds]
    return references


def render_task_artifact_bytes():
    found = raw_output.newest("task_artifact_bytes")
    if found is None:
        return None
    s, raw = found["summary"], found["raw"]
    lines = [f"{s['items']:,} items, {s['channels']} channels, {s['targets']:,} item-rec "
             f"targets: pre-trained model directory {s['pretrained_dir_bytes']:,} bytes, a "
             f"whole fine-tuned model directory {s['whole_model_dir_bytes']:,} bytes.", "",
             "| task | patch | trained parameters | task directory bytes | share of a whole "
             "fine-tuned model |", "|---|---|---|---|---|"]
    for t in raw["tasks"]:
        lines.append(f"| {t['task']} | {t['patch']} | {t['trained_parameters']:,} | "
                     f"{t['task_dir_bytes']:,} | {t['share_of_whole']:.2%} |")
    lines += ["", "A task loaded back over the backbone scores within "
              f"{raw['task_loaded_back_max_abs_difference']:.1e} of the model saved.",
              source(found)]
    return lines


def render_input_pipeline():
    found = raw_output.newest("input_pipeline")
    if found is None:
        return None
    s = found["summary"]
    lines = [f"Batch {s['batch']}, medians of {s['repeats']} alternated runs of {s['steps']} "
             "batches; sequences per second (\"headroom\": tf.data over what a training step "
             "of the default model consumes; the input pipeline must never be the "
             "bottleneck, target >= 10x):", "",
             "| data | objective | length | release feed /s | tf.data /s | tf.data / release | "
             "training /s | headroom |", "|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        train = r.get("train_per_s")
        lines.append(f"| {r['data']} | {r['objective']} | {r['length']} | "
                     f"{r['release_median']:,.0f} | {r['tfdata_median']:,.0f} | "
                     f"{r['tfdata_median'] / r['release_median']:.2f}x | "
                     + (f"{train:,.0f} | {r['tfdata_median'] / train:,.0f}x |" if train
                        else "- | - |"))
    return lines + ["", source(found)]


def _prepare_runs(runner):
    """(run, payload) for every kept prepare_scale run of `runner`, oldest file first."""
    return [(run, payload) for payload in raw_output.find("prepare_scale")
            for run in payload["raw"]["runs"] if run["runner"] == runner]


def render_prepare_scale():
    runs = _prepare_runs("local")
    if not runs:
        return None
    lines = ["| events | log | wall time | events/s | peak RSS | file (its phases and their "
             "peaks too) |", "|---:|---:|---:|---:|---:|---|"]
    for run, payload in runs:
        lines.append(f"| {run['events']:,} | {run['log_mb']:,} MB | {run['seconds']:,.1f} s | "
                     f"{run['events_per_second']:,} | {run['peak_rss_mb']:,} MB | "
                     f"`{payload['path']}` |")
    extrapolated = [p for p in raw_output.find("prepare_scale") if p["summary"]]
    if extrapolated:
        e, payload = extrapolated[-1]["summary"], extrapolated[-1]
        lines += ["", f"Linear extrapolation to 155M events from the two largest sizes of "
                  f"`{payload['path']}` (not a run): {e['minutes']} min, {e['peak_rss_gb']} GB "
                  f"peak ({e['rss_bytes_per_event']} bytes and "
                  f"{e['seconds_per_million_events']} s per million events between them)."]
    lines.append("")
    lines += sorted({source(payload) for _, payload in runs})
    return lines


def render_beam_throughput():
    runs = _prepare_runs("DirectRunner")
    if not runs:
        return None
    lines = ["| runner | events | wall time | events/s | peak RSS | file |",
             "|---|---:|---:|---:|---:|---|"]
    for run, payload in runs:
        lines.append(f"| DirectRunner, one worker | {run['events']:,} | {run['seconds']:,.1f} s | "
                     f"{run['events_per_second']:,} | {run['peak_rss_mb']:,} MB | "
                     f"`{payload['path']}` |")
    return lines + [""] + sorted({source(payload) for _, payload in runs})


def render_paper_scale():
    """The table of the newest kept `benchmarks/paper_scale.py` output, rendered again from
    its rows by the script's own `render` (its percentiles are nearest-rank over the kept
    samples, `serve_measurements`). The prepare row's last cell is the script's current
    pointer: older runs quoted a paper-size preparation there that they did not measure."""
    import argparse

    from benchmarks import paper_scale

    found = raw_output.newest("paper_scale")
    if found is None:
        return None
    rows = [dict(r, projection=paper_scale.PREPARE_PROJECTION)
            if r["stage"].startswith("prepare") else r for r in found["summary"]["rows"]]
    table = paper_scale.render(rows, argparse.Namespace(**found["raw"]["arguments"]),
                               found["raw"]["provenance_at_start"])
    return [table, "", source(found)]


def render_train_throughput():
    """Release approach vs this project, one row per (row, channels, vocabulary), from the
    newest kept output of each vocabulary tag; the fidelity row from the run that has it."""
    found = [raw_output.newest("train_throughput", tag)
             for tag in ("vocab1683", "vocab100000")]
    found = [f for f in found if f is not None]
    if not found:
        return None
    lines = []
    for payload in found:
        medians = payload["summary"].get("fidelity_medians")
        if medians:
            meta, copy, ours = medians
            lines += [f"Fidelity (the release's demo model: 175 items, 64 channels, full "
                      f"softmax, batch 32): release `.meta` graph {meta:,.0f} seq/s, TF1 "
                      f"re-creation {copy:,.0f} ({copy / meta:.2f}x), this project "
                      f"{ours:,.0f} ({ours / meta:.2f}x of the graph).", ""]
    lines += ["| row | C | items | batch | release seq/s | peterrec-tf seq/s | ratio | "
              "head matmuls alone (ceiling) seq/s |", "|---|---|---|---|---|---|---|---|"]
    for payload in found:
        for r in payload["raw"]["rows"]:
            ceiling = r.get("ceiling_per_s") or []
            ceiling_text = f"{sorted(ceiling)[len(ceiling) // 2]:,.0f}" if ceiling else "-"
            ratio = r["ratio"]
            lines.append(f"| {r['row']} | {r['channels']} | {r['vocab']:,} | {r['batch']} | "
                         f"{r['release_median']:,.0f} | {r['peterrec_tf_median']:,.0f} | "
                         + (f"**{ratio:.2f}**" if ratio >= 2 else f"{ratio:.2f}")
                         + f" | {ceiling_text} |")
    return lines + ["", "Ratios of 2x and above are in bold."] + [
        source(payload) for payload in found]


def render_recbole_split_seeds():
    """This project's dilated CNN on the RecBole reference's split and protocol (full
    ranking of every item, best-validation weights, test once), one row per seed and the
    mean with its sample standard deviation (n - 1), beside RecBole's kept figure."""
    import statistics

    found = raw_output.newest("public_quality", "ml100k_recbole_split_3seeds")
    if found is None:
        return None
    runs = sorted((r for r in found["summary"]["results"] if r["run"] == "cnn_full"),
                  key=lambda r: r["seed"])
    metrics = ("hr@10", "ndcg@10", "mrr@10")
    lines = ["| seed | selected step | test HR@10 | test NDCG@10 | test MRR@10 |",
             "|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['seed']} | {r['selected_step']} | "
                     + " | ".join(f"{r['full'][m]:.4f}" for m in metrics) + " |")
    if len(runs) > 1:
        cells = [f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
                 for values in ([r["full"][m] for r in runs] for m in metrics)]
        lines.append(f"| **mean ± sample std (n-1)** | | " + " | ".join(cells) + " |")
    references = recbole_references()
    counts = []
    for model, recbole in references:
        test = recbole["summary"].get("test") or {}
        figures = [test.get(key) for key in ("HR@10", "NDCG@10", "MRR@10")]
        if all(isinstance(f, (int, float)) for f in figures):
            lines.append(f"| RecBole {model} (seed {recbole['raw']['config']['seed']}, its "
                         "kept reference) | | "
                         + " | ".join(f"{f:.4f}" for f in figures) + " |")
            above = sum(all(r["full"][m] > f for m, f in zip(metrics, figures)) for r in runs)
            counts.append(f"Seeds above RecBole's {model} figure (seed "
                          f"{recbole['raw']['config']['seed']}) on every metric: "
                          f"{above} of {len(runs)}.")
    return (lines + ([""] + counts if counts else []) + [""] + [source(found)]
            + [source(recbole) for _, recbole in references])
