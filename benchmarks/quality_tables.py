"""Renderers of BUILD_NOTES' quality tables for the recipe (`recipes/public_sequential.flags`
run as a user runs it, `public_quality.py --recipe`): per seed, the mean with its sample
standard deviation, beside popularity and the reference figures; `benchmarks.tables`
registers them beside the others."""

import statistics

from benchmarks import raw_output
from benchmarks.scale_tables import source

#: SASRec's published figures (Kang & McAuley, ICDM 2018, its results table) on the Amazon Video
#: Games log its repository releases (data/Video.txt), under its protocol: the test item
#: among 100 (99 drawn uniformly from items the user never rated). A paper's figure, not a
#: measurement of this project.
SASREC_PUBLISHED_VIDEO_GAMES = {"hr@10": 0.7410, "ndcg@10": 0.5360}


def _mean_std(values):
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _recipe_rows(payload, protocol_columns):
    """The recipe runs of a kept public_quality output, by seed, then their mean ± std."""
    runs = sorted((r for r in payload["summary"]["results"] if r["run"] == "recipe"),
                  key=lambda r: r["seed"])
    lines = []
    for r in runs:
        stopped = r.get("selected_step")
        cells = [f"recipe, seed {r['seed']}"]
        cells += [f"{r[protocol][metric]:.4f}" for protocol, metric in protocol_columns]
        cells += [str(stopped), f"{r['command_seconds'] / 60:.1f}",
                  f"{r['load_average_before'][0]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if len(runs) > 1:
        cells = ["**recipe, mean ± sample std (n-1)**"]
        cells += [_mean_std([r[protocol][metric] for r in runs])
                  for protocol, metric in protocol_columns]
        cells += ["", f"{max(r['command_seconds'] for r in runs) / 60:.1f} (longest)", ""]
        lines.append("| " + " | ".join(cells) + " |")
    popularity = [r for r in payload["summary"]["results"] if r["run"] == "popularity"]
    for r in popularity:
        lines.append("| popularity (training counts) | "
                     + " | ".join(f"{r[p][m]:.4f}" for p, m in protocol_columns)
                     + " | - | - | - |")
    return runs, lines


def render_recipe_video_games():
    """The recipe on SASRec's Amazon Video Games log, under SASRec's protocol and full
    ranking, against SASRec's published figures."""
    found = raw_output.newest("public_quality", "video_games_recipe_3seeds")
    if found is None:
        return None
    columns = [("sasrec", "hr@10"), ("sasrec", "ndcg@10"), ("full", "hr@10"), ("full", "ndcg@10")]
    lines = ["| run | SASRec-protocol HR@10 | SASRec-protocol NDCG@10 | full HR@10 | "
             "full NDCG@10 | selected step | minutes, launch to exit | load at start |",
             "|---" * 8 + "|"]
    runs, rows = _recipe_rows(found, columns)
    lines += rows
    published = SASREC_PUBLISHED_VIDEO_GAMES
    lines.append(f"| SASRec, published (not measured here) | {published['hr@10']:.4f} | "
                 f"{published['ndcg@10']:.4f} | - | - | - | - | - |")
    above = sum(all(r["sasrec"][m] > published[m] for m in published) for r in runs)
    lines += ["", f"Seeds above SASRec's published HR@10 and NDCG@10: {above} of {len(runs)}.",
              "", source(found)]
    return lines


def render_recipe_ml100k():
    """The recipe on MovieLens-100K (the RecBole reference's split, full ranking) against
    RecBole's kept SASRec and NextItNet figures on the same split."""
    found = raw_output.newest("public_quality", "ml100k_recipe_3seeds")
    if found is None:
        return None
    columns = [("full", "hr@10"), ("full", "ndcg@10"), ("full", "mrr@10"), ("sasrec", "hr@10"),
               ("sasrec", "ndcg@10")]
    lines = ["| run | full HR@10 | full NDCG@10 | full MRR@10 | SASRec-protocol HR@10 | "
             "SASRec-protocol NDCG@10 | selected step | minutes, launch to exit | "
             "load at start |", "|---" * 9 + "|"]
    runs, rows = _recipe_rows(found, columns)
    lines += rows
    sources = [source(found)]
    for model in ("SASRec", "NextItNet"):
        recbole = raw_output.newest("recbole_reference", recbole_tag(model))
        if recbole is None:
            lines.append(f"| RecBole {model} | (no kept output) | | | | | | | |")
            continue
        test = recbole["summary"]["test"]
        figures = [test["HR@10"], test["NDCG@10"], test["MRR@10"]]
        lines.append(f"| RecBole 1.2.1 {model} (seed 2020, its kept reference) | "
                     + " | ".join(f"{f:.4f}" for f in figures) + " | - | - | - | - | - |")
        above = sum(all(r["full"][m] > f for m, f in zip(("hr@10", "ndcg@10", "mrr@10"),
                                                          figures)) for r in runs)
        lines.append(f"| seeds above RecBole {model} on all three | {above} of {len(runs)} "
                     "| | | | | | | |")
        sources.append(source(recbole))
    return lines + [""] + sources


def recbole_tag(model):
    """The kept RecBole reference's tag for `model` (the NextItNet one predates the
    model in its tag)."""
    return "seed2020" if model == "NextItNet" else f"{model.lower()}_seed2020"


def render_video_games_dropout():
    """The two single-seed runs behind the recipe's dropout (0.2 against 0.5) on the Amazon
    Video Games log: settings, selected step, both protocols."""
    found = [raw_output.newest("public_quality", tag) for tag in ("explore1", "explore2")]
    if None in found:
        return None
    lines = ["| run | dropout (blocks, embedding) | epochs allowed | selected step (epoch) | "
             "SASRec-protocol HR@10 | NDCG@10 | full HR@10 | full NDCG@10 | wall s |",
             "|---" * 9 + "|"]
    for payload in found:
        for r in payload["summary"]["results"]:
            if "settings" not in r:
                continue
            c = r["settings"]
            per_epoch = c["eval_every"]
            lines.append(
                f"| {r['run']} | {c['dropout']}, {c['embedding_dropout']} | "
                f"{c['train_steps'] // per_epoch} | {r['selected_step']} "
                f"({r['selected_step'] // per_epoch}) | {r['sasrec']['hr@10']:.4f} | "
                f"{r['sasrec']['ndcg@10']:.4f} | {r['full']['hr@10']:.4f} | "
                f"{r['full']['ndcg@10']:.4f} | {r['wall_seconds']:.0f} |")
    return lines + [""] + [source(p) for p in found]
