"""results.md and the SVG charts of a transfer comparison, from results.json alone (its
provenance, pre-training records and summary), so a stored report can be rewritten
without its work directory (`reinterval`)."""

import os

import numpy as np

from peterrec_tf.experiments import provenance, svg
from peterrec_tf.experiments.transfer.plan import METHODS


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value, digits=3):
    return f"{value:+.{digits}f}"


def _interval(ci, signed=False):
    """`[low, high]`, or `[n/a]` where an interval could not be computed (one seed)."""
    if not ci:
        return "[n/a]"
    show = _signed if signed else (lambda v: f"{v:.3f}")
    return f"[{show(ci[0])}, {show(ci[1])}]"


def write_report(results, output_dir):
    """results.md and the three SVG charts from results.json's summary."""
    summary = results["summary"]
    main = summary["main"]
    objectives = sorted({e["objective"] for e in main})
    tasks = sorted({e["task"] for e in main})
    kinds = {e["task"]: ("item_rec" if e["metric"] == "hr@5" else "classify") for e in main}
    lines = _header(results)
    lines += _test_sets_and_pretraining(results)
    lines += _shares(results, objectives, tasks)
    for objective in objectives:
        lines += [f"## Transfer after {objective} pre-training", ""]
        for task in tasks:
            lines += _transfer_table(
                [e for e in main if e["objective"] == objective and e["task"] == task],
                task, kinds[task])
    lines += _limited(summary, objectives, tasks)
    lines += _pretraining_vs_transfer(results, objectives, tasks)
    lines += ["", "Charts: results.svg (bars: mean over seeds, whiskers: the 95% CI above), "
              "learning_curves.svg (validation and test metric of every checkpoint, nothing "
              "selected on them; "
              "whiskers +- sample std over seeds), limited_data.svg.", ""]
    with open(os.path.join(output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    _charts(summary, objectives, tasks, output_dir)


def _header(results):
    """The title and the paragraph saying which code made the report and how to read it."""
    summary, config = results["summary"], results["provenance"]["configuration"]
    prov = results["provenance"]
    order = ["python", *provenance.PACKAGES]  # stable however results.json sorted its keys
    versions = ", ".join(f"{k} {prov['versions'][k]}" for k in sorted(
        prov["versions"], key=lambda k: (order.index(k) if k in order else len(order), k)))
    commits = sorted({s["commit"] or "unknown" for s in results["sessions"]})
    dirty = any(s["dirty"] for s in results["sessions"])
    return ["# Transfer results", "",
            f"Code: commit {', '.join(commits)}" + (" (DIRTY work tree, --allow_dirty)" if dirty
                                                      else " (clean work tree)")
            + f"; {versions}. Configuration: results.json `provenance.configuration`.", "",
            f"Cells: mean over {config['seeds']} training seeds +- {summary['std']}; "
            f"[{summary['intervals']}]. Differences are paired (the same seeds and test "
            "users); \"vs from scratch\" compares a method with its counterpart trained without "
            "pre-training (FineCLS/FineLast/FineAll vs FineZero, PeterRec vs PeterZero). "
            + (f"Columns marked users-only: {summary['intervals_users']}. "
               if summary.get("intervals_users") else "")
            + (f"{summary['rewritten']['note']} " if summary.get("rewritten") else "")
            + "Sampled ranking: the true target among " + ", ".join(
                f"{e['num_candidates']} ({name}: {e['candidates']})"
                for name, e in sorted(results.get("evaluation", {}).items()) if "candidates" in e)
            + f" candidates fixed by evaluation seed {config['evaluation']['eval_seed']} (the same "
            "for every method and training seed)"
            + (", the user's other held-out targets never negatives" if config["evaluation"]
               ["exclude_other_targets"] else "")
            + "; full ranking: against every target (the user's other held-out targets "
            "excluded). Ties count against the true item.", ""]


def _test_sets_and_pretraining(results):
    """The test sets' sizes and the pre-trained models' next-item metrics."""
    lines = ["## Test sets", "", "| task | kind | test examples | test users | train examples |",
             "|---|---|---|---|---|"]
    lines += [f"| {name} | {e['task']} | {e['test_examples']} | {e['test_users']} | "
              f"{e['train_examples']} |" for name, e in sorted(results.get("evaluation", {}).items())]
    lines.append("")
    lines += ["## Pre-training (next item, full ranking over the whole item pool, test split)", "",
              "| objective | seed | weights of step | validation NDCG@10 | test HR@10 | "
              "test NDCG@10 | test MRR@5 |",
              "|---|---|---|---|---|---|---|"]
    for p in sorted(results["pretraining"], key=lambda p: (p["objective"], p["seed"])):
        lines.append(f"| {p['objective']} | {p['seed']} | {p['selected_step']} | "
                     f"{_fmt(p['validation'].get('ndcg@10'), 4)} | {_fmt(p['test']['hr@10'], 4)} | "
                     f"{_fmt(p['test']['ndcg@10'], 4)} | {_fmt(p['test']['mrr@5'], 4)} |")
    lines.append("")
    return lines


def _shares(results, objectives, tasks):
    """Each method's fine-tuned parameters relative to FineAll, per objective and task."""
    config = results["provenance"]["configuration"]
    lines = ["## Fine-tuned parameters per task, relative to FineAll (the paper's unit)", "",
             f"Runs used the `{config['finetune']['patch_preset']}` patch (bottleneck "
             f"{config['finetune']['bottleneck_ratio']:g} C); both presets are listed: release "
             "C/4, paper C/8.", ""]
    for objective in objectives:
        shares = results["parameter_shares"][objective]
        lines += [f"### {objective}", "",
                  "| method | " + " | ".join(f"{t} C/4 | {t} C/8" for t in tasks) + " |",
                  "|---" * (2 * len(tasks) + 1) + "|"]
        for label, spec in METHODS:
            if isinstance(spec, str):
                continue
            cells = [f"{100 * shares[t][p][label]['share_of_fineall']:.1f}%"
                     for t in tasks for p in ("release", "paper")]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _transfer_table(rows, task, kind):
    """One task's table after one objective's pre-training: every method's mean +- std,
    its interval and its paired differences."""
    lines = []
    if kind == "item_rec":
        extra = ["mrr@5", "full_hr@5", "full_mrr@5"]
        head = ["HR@5 sampled", "MRR@5 sampled", "HR@5 full", "MRR@5 full"]
    else:
        extra = ["balanced_accuracy", "macro_f1"]
        head = ["accuracy", "balanced acc.", "macro-F1"]
    reference = next((e["vs_best_simple"]["reference"] for e in rows
                      if "vs_best_simple" in e), "best simple")
    users_only = any("ci95_users" in e for e in rows)
    lines += [f"### {task}", "",
              f"| method | {head[0]} mean +- std | 95% CI | vs FineAll [95% CI] | "
              f"vs {reference} [95% CI] | vs from scratch [95% CI] | "
              + " | ".join(head[1:]) + " |"
              + (" users-only: 95% CI | vs FineAll | vs " + reference + " |"
                 if users_only else ""),
              "|---" * (6 + len(extra) + 3 * users_only) + "|"]
    for e in rows:
        cells = [f"{e['mean']:.3f} +- {_fmt(e['std'])}", _interval(e.get("ci95"))]
        for name in ("vs_fineall", "vs_best_simple", "vs_scratch"):
            d = e.get(name)
            cells.append(f"{_signed(d['difference'])} {_interval(d.get('ci95'), True)}"
                         + (f" vs {d['reference']}" if name == "vs_scratch" else "")
                         + (" (bound)" if d.get("user_se") == "bound" else "")
                         if d else "-")
        cells += [_fmt(e["means"].get(m)) for m in extra]
        if users_only:
            cells.append(_interval(e.get("ci95_users")))
            for name in ("vs_fineall", "vs_best_simple"):
                d = e.get(name)
                cells.append(_interval(d.get("ci95_users"), True) if d else "-")
        lines.append(f"| {e['method']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _limited(summary, objectives, tasks):
    """The limited-data runs' mean +- std by share of the training users."""
    if not summary["limited"]:
        return []
    fractions = sorted({e["fraction"] for e in summary["limited"]})
    lines = ["## Limited data (share of the training users; mean +- sample std over seeds)", "",
             "| objective | task | method | " + " | ".join(f"{f:.0%}" for f in fractions) + " |",
             "|---" * (3 + len(fractions)) + "|"]
    cell = {(e["objective"], e["task"], e["method"], e["fraction"]): e for e in summary["limited"]}
    for objective in objectives:
        for task in tasks:
            for label in [m for m, _ in METHODS if any(k[2] == m for k in cell)]:
                found = [cell.get((objective, task, label, f)) for f in fractions]
                if any(found):
                    lines.append(f"| {objective} | {task} | {label} | " + " | ".join(
                        f"{e['mean']:.3f} +- {_fmt(e['std'])} (n={e['train_examples']})"
                        if e else "-" for e in found) + " |")
    lines.append("")
    return lines


def _pretraining_vs_transfer(results, objectives, tasks):
    """Does better pre-training mean better transfer? Pre-training MRR@5 beside transfer."""
    main = results["summary"]["main"]
    lines = ["## Better pre-training vs better transfer", "",
             "| objective | pre-training test MRR@5 (mean over seeds) | "
             + " | ".join(f"{t}: FineAll / PeterRec (b) / (d)" for t in tasks) + " |",
             "|---" * (2 + len(tasks)) + "|"]
    for objective in objectives:
        mrr = [p["test"]["mrr@5"] for p in results["pretraining"] if p["objective"] == objective]
        cells = []
        for task in tasks:
            rows = {e["method"]: e["mean"] for e in main if e["objective"] == objective
                    and e["task"] == task}
            cells.append(" / ".join(_fmt(rows.get(m)) for m in ("FineAll", "PeterRec (b)",
                                                                "PeterRec (d)")))
        lines.append(f"| {objective} | {_fmt(float(np.mean(mrr)) if mrr else None, 4)} | "
                     + " | ".join(cells) + " |")
    return lines


def _label_of(metric):
    return {"hr@5": "HR@5 (sampled candidates)", "accuracy": "accuracy"}.get(metric, metric)


def _charts(summary, objectives, tasks, output_dir):
    """results.svg, learning_curves.svg and limited_data.svg (the last two when there is
    something to draw)."""
    _results_chart(summary, objectives, tasks, output_dir)
    _curves_chart(summary, objectives, tasks, output_dir)
    _limited_chart(summary, objectives, tasks, output_dir)


def _results_chart(summary, objectives, tasks, output_dir):
    """Bars: each method's test metric, mean over seeds with its 95% interval."""
    panels = []
    for objective in objectives:
        for task in tasks:
            rows = [e for e in summary["main"] if e["objective"] == objective and e["task"] == task]
            if rows:
                panels.append({"title": f"{task} ({objective})", "ylabel": _label_of(rows[0]["metric"]),
                               "xlabel": "method",
                               "bars": [(e["method"], e["mean"], *(e["ci95"] or [e["mean"]] * 2))
                                        for e in rows]})
    svg.bar_chart(os.path.join(output_dir, "results.svg"), "Test metric by method", panels,
                  len(tasks), note="bars: mean over training seeds; whiskers: 95% interval over "
                  "training seeds and test users")


def _curves_chart(summary, objectives, tasks, output_dir):
    """Each method's validation and test metric at every kept checkpoint."""
    panels = []
    for objective in objectives:
        for split in ("validation", "test"):
            for task in tasks:
                rows = [c for c in summary["curves"] if c["objective"] == objective
                        and c["task"] == task and c.get("split", "test") == split]
                if rows:
                    panels.append({"title": f"{task} ({objective}, {split})",
                                   "xlabel": "fine-tuning step",
                                   "ylabel": f"{split} " + _label_of(rows[0]["metric"]),
                                   "series": [(c["method"], c["steps"], c["mean"], c["std"])
                                              for c in rows]})
    if panels:
        svg.line_chart(os.path.join(output_dir, "learning_curves.svg"), "Learning curves",
                       panels, len(tasks), note="mean over training seeds +- sample std; one "
                       "row per objective and split; nothing is chosen on either split")


def _limited_chart(summary, objectives, tasks, output_dir):
    """Each limited-data method's test metric by share of the training users."""
    panels = []
    for objective in objectives:
        for task in tasks:
            rows = [e for e in summary["limited"] if e["objective"] == objective and e["task"] == task]
            methods = [m for m, _ in METHODS if any(e["method"] == m for e in rows)]
            if rows:
                metric = next(e["metric"] for e in summary["main"] if e["task"] == task)
                series = []
                for m in methods:
                    points = sorted((e["fraction"], e["mean"], e["std"]) for e in rows
                                    if e["method"] == m)
                    series.append((m, [100 * p[0] for p in points], [p[1] for p in points],
                                   [p[2] for p in points]))
                panels.append({"title": f"{task} ({objective})", "ylabel": "test " + _label_of(metric),
                               "xlabel": "% of training users (log scale)", "series": series})
    if panels:
        svg.line_chart(os.path.join(output_dir, "limited_data.svg"), "Limited training data",
                       panels, len(tasks), note="mean over training seeds +- sample std",
                       log_x=True)
