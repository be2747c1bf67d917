"""Renderers of BUILD_NOTES' quality tables for the recipe (`recipes/public_sequential.flags`
run as a user runs it, `public_quality.py --recipe`): per seed, the mean with its sample
standard deviation, beside popularity and the reference figures; `benchmarks.tables`
registers them beside the others."""

import json
import statistics
from pathlib import Path

from benchmarks import raw_output, scale_tables
from benchmarks.scale_tables import source

#: The recipe a run is labelled "recipe" for; a run of another flagfile is labelled with the
#: file's name, so a row says which recipe its flags were added to.
DEFAULT_RECIPE = "recipes/public_sequential.flags"
#: SASRec's published figures (Kang & McAuley, ICDM 2018, its results table) on the Amazon Video
#: Games log its repository releases (data/Video.txt), under its protocol: the test item
#: among 100 (99 drawn uniformly from items the user never rated). A paper's figure, not a
#: measurement of this project.
SASREC_PUBLISHED_VIDEO_GAMES = {"hr@10": 0.7410, "ndcg@10": 0.5360}
#: Item ids of that log as prepared (23,715 items and the padding id).
VIDEO_GAMES_IDS = 23716


def _mean_std(values):
    if len(values) < 2:
        return f"{values[0]:.4f}" if values else "-"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _recipe_rows(payload, protocol_columns, dataset, label="recipe", with_popularity=True):
    """The recipe runs on `dataset` of a kept public_quality output (or of several, e.g. one
    per seed run side by side), by seed, then their mean ± std (every run must have run the
    same flags, each seed once), then popularity's row (the first output's) if asked."""
    payloads = payload if isinstance(payload, list) else [payload]
    runs = sorted((r for p in payloads for r in p["summary"]["results"]
                   if r["run"] == "recipe" and r["dataset"] == dataset), key=lambda r: r["seed"])
    paths = ", ".join(p["path"] for p in payloads)
    if len({json.dumps(r["settings"].get("recipe"), sort_keys=True) for r in runs}) > 1:
        raise ValueError(f"{paths}: the recipe runs on {dataset} ran different flags")
    if len({r["seed"] for r in runs}) < len(runs):
        raise ValueError(f"{paths}: a seed of the recipe on {dataset} appears twice")
    payload = payloads[0]
    lines = []
    for r in runs:
        cells = [f"{label}, seed {r['seed']}"]
        cells += [f"{r[protocol][metric]:.4f}" for protocol, metric in protocol_columns]
        cells += [str(r.get("selected_step")), f"{r['command_seconds'] / 60:.1f}",
                  f"{r['load_average_before'][0]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if len(runs) > 1:
        cells = [f"**{label}, mean ± sample std (n-1)**"]
        cells += [_mean_std([r[protocol][metric] for r in runs])
                  for protocol, metric in protocol_columns]
        cells += ["", f"{max(r['command_seconds'] for r in runs) / 60:.1f} (longest)", ""]
        lines.append("| " + " | ".join(cells) + " |")
    popularity = [r for r in payload["summary"]["results"]
                  if r["run"] == "popularity" and r["dataset"] == dataset]
    for r in popularity[:1] if with_popularity else ():
        lines.append("| popularity (training counts) | "
                     + " | ".join(f"{r[p][m]:.4f}" for p, m in protocol_columns)
                     + " | - | - | - |")
    return runs, lines


def _recipe_label(payload, dataset):
    """"recipe", or the recipe with the flags its runs gave after it (from the runs' own
    recorded settings; `payload` may be a list of outputs of the same flags)."""
    payloads = payload if isinstance(payload, list) else [payload]
    for r in (r for p in payloads for r in p["summary"]["results"]):
        if r["run"] == "recipe" and r["dataset"] == dataset:
            recipe = r["settings"]["recipe"]
            stem = Path(recipe.get("flagfile") or DEFAULT_RECIPE).stem
            name = "recipe" if stem == Path(DEFAULT_RECIPE).stem else f"recipe {stem}"
            return " ".join([name] + list(recipe.get("flags") or []))
    return "recipe"


def _protocol_note(payloads):
    """What "SASRec protocol" meant in these outputs (negatives drawn per user)."""
    counts = sorted({p["raw"]["candidates"] - 1 for p in payloads})
    return (f"SASRec protocol here: the true item and {' or '.join(map(str, counts))} "
            "negatives drawn uniformly from items the user never rated.")


def render_recipe_video_games():
    """The recipe on SASRec's Amazon Video Games log, under SASRec's protocol and full
    ranking, against SASRec's published figures."""
    found = raw_output.newest("public_quality", "video_games_recipe_3seeds")
    if found is None:
        return None
    video = found["raw"]["datasets"].get("sasrec_log", {})
    if video.get("num_items") != VIDEO_GAMES_IDS:
        raise ValueError(f"{found['path']}: {video.get('num_items')} item ids, not the "
                         f"{VIDEO_GAMES_IDS} of SASRec's Video Games log")
    columns = [("sasrec", "hr@10"), ("sasrec", "ndcg@10"), ("full", "hr@10"), ("full", "ndcg@10")]
    lines = ["| run | SASRec-protocol HR@10 | SASRec-protocol NDCG@10 | full HR@10 | "
             "full NDCG@10 | selected step | minutes, launch to exit | load at start |",
             "|---" * 8 + "|"]
    runs, rows = _recipe_rows(found, columns, "sasrec_log")
    lines += rows
    published = SASREC_PUBLISHED_VIDEO_GAMES
    lines.append(f"| SASRec, published (not measured here) | {published['hr@10']:.4f} | "
                 f"{published['ndcg@10']:.4f} | - | - | - | - | - |")
    above = sum(all(r["sasrec"][m] > published[m] for m in published) for r in runs)
    lines += ["", f"Seeds above SASRec's published HR@10 and NDCG@10: {above} of {len(runs)}. "
              + _protocol_note([found]), "", source(found)]
    return lines


#: The ML-100K runs that kept each test user's rank (`test_ranks`), by row group: paired with
#: RecBole's references user by user (ML100K_PAIRED_GROUPS) and listed with the rest.
ML100K_RANKED_GROUPS = (("ml100k_small_log_ranks_3seeds",),
                        ("ml100k_post_gelu_h2_ff256_e200_3seeds",),
                        ("ml100k_post_gelu_h2_ff256_b48_3seeds",),
                        ("ml100k_post_gelu_h2_ff256_e200_oldest_3seeds",),
                        ("ml100k_post_gelu_h2_ff256_p25_newest_3seeds",),
                        ("ml100k_post_gelu_h2_ff256_p25_oldest_3seeds",),
                        ("ml100k_post_gelu_h2_ff256_p25_oldest_stride10_seed0",),
                        ("ml100k_post_gelu_h2_ff256_p25_oldest_len100_seed0",),
                        ("ml100k_post_gelu_h2_c128_ff512_p25_oldest_seed0",),
                        ("ml100k_post_gelu_h2_ff256_oldest_cos100_seed0",),
                        ("ml100k_post_gelu_h2_ff256_p25_oldest_ls01_seed0",),
                        ("ml100k_long_wd01_seed0",),
                        ("ml100k_long_lr002_3seeds",),
                        ("ml100k_long_lr003_seed0", "ml100k_long_lr003_seeds12"),
                        ("ml100k_long_drop03_seed0",),
                        ("ml100k_long_drop06_seed0", "ml100k_long_drop06_seeds12"),
                        ("ml100k_long_lr003_drop06_3seeds",))
#: The ML-100K recipe runs, by row group: the kept outputs (tags) whose seeds form one group
#: (several when the seeds ran side by side, one output each).
ML100K_RECIPE_GROUPS = (("ml100k_recipe_3seeds",), ("ml100k_recipe_small_log_3seeds",),
                        ("ml100k_long_d",),
                        ("ml100k_long_d_b32_seed0", "ml100k_long_d_b32_seed1",
                         "ml100k_long_d_b32_seed2"),
                        ("ml100k_h2_ff256_3seeds",), ("ml100k_e150_p15_3seeds",),
                        ) + ML100K_RANKED_GROUPS


def render_recipe_ml100k():
    """The recipe on MovieLens-100K (the RecBole reference's split, full ranking), as it is
    and with the flags for a small log, against RecBole's kept SASRec and NextItNet
    figures on the same split."""
    groups = [[raw_output.newest("public_quality", tag) for tag in tags]
              for tags in ML100K_RECIPE_GROUPS]
    found = [[p for p in group if p is not None] for group in groups]
    found = [group for group in found if group]
    if not found:
        return None
    columns = [("full", "hr@10"), ("full", "ndcg@10"), ("full", "mrr@10"), ("sasrec", "hr@10"),
               ("sasrec", "ndcg@10")]
    lines = ["| run | full HR@10 | full NDCG@10 | full MRR@10 | SASRec-protocol HR@10 | "
             "SASRec-protocol NDCG@10 | selected step | minutes, launch to exit | "
             "load at start |", "|---" * 9 + "|"]
    ours = []
    for payload in found:
        label = _recipe_label(payload, "ml100k")
        if label in [known for known, _ in ours]:  # the same flags run again, later
            label += f" (again, commit {payload[0]['provenance']['commit'][:7]})"
        runs, rows = _recipe_rows(payload, columns, "ml100k", label,
                                  with_popularity=payload is found[0])
        ours.append((label, runs))
        lines += rows
    sources = [source(p) for group in found for p in group]
    references = scale_tables.recbole_references()
    for model in ("SASRec", "NextItNet"):
        kept = [recbole for name, recbole in references if name == model]
        if not kept:
            lines.append(f"| RecBole {model}: no kept output |" + " |" * 8)
        for recbole in kept:
            seed = recbole["raw"]["config"]["seed"]
            test = recbole["summary"]["test"]
            figures = [test["HR@10"], test["NDCG@10"], test["MRR@10"]]
            stop = recbole["raw"].get("training_stopped_by")
            caveat = ("" if stop in (None, "early_stopping")
                      else f", not converged: stopped by {stop.replace('_', ' ')}")
            lines.append(f"| RecBole 1.2.1 {model} (seed {seed}, its kept reference{caveat}) | "
                         + " | ".join(f"{f:.4f}" for f in figures) + " | - | - | - | - | - |")
            which = f"RecBole {model} seed {seed}"
            for label, runs in ours:
                above = sum(all(r["full"][m] > f for m, f in
                                zip(("hr@10", "ndcg@10", "mrr@10"), figures)) for r in runs)
                lines.append(f"| {label}: seeds above {which} on all three | "
                             f"{above} of {len(runs)} |" + " |" * 7)
            sources.append(source(recbole))
    return lines + ["", _protocol_note([p for group in found for p in group])] + sources


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
    return lines + ["", _protocol_note(found)] + [source(p) for p in found]


def render_ml100k_window_stride():
    """One seed of the recipe with the small-log flags on MovieLens-100K, windows sharing one
    item against a window every 10 items (`--window_stride=10`, each trained on its newest
    10 targets): the same seed, every other flag equal."""
    pairs = [("ml100k_recipe_small_log_3seeds", 0), ("ml100k_stride10_seed0", 0)]
    found = [raw_output.newest("public_quality", tag) for tag, _ in pairs]
    if None in found:
        return None
    lines = ["| run | window stride | full HR@10 | full NDCG@10 | full MRR@10 | selected step "
             "| minutes, launch to exit | load at start |", "|---" * 8 + "|"]
    for payload, (_, seed) in zip(found, pairs):
        run = next(r for r in payload["summary"]["results"]
                   if r["run"] == "recipe" and r["seed"] == seed)
        flags = run["settings"]["recipe"].get("flags") or []
        stride = next((f.split("=", 1)[1] for f in flags if f.startswith("--window_stride=")),
                      "0 (windows share one item)")
        others = [f for f in flags if not f.startswith("--window_stride=")]
        lines.append(
            f"| recipe {' '.join(others)}, seed {seed} | {stride} | {run['full']['hr@10']:.4f} | "
            f"{run['full']['ndcg@10']:.4f} | {run['full']['mrr@10']:.4f} | "
            f"{run['selected_step']} | {run['command_seconds'] / 60:.1f} | "
            f"{run['load_average_before'][0]:.1f} |")
    return lines + [""] + [source(p) for p in found]


#: The ML-100K runs paired with RecBole's references user by user: those whose kept outputs
#: carry `test_ranks`.
ML100K_PAIRED_GROUPS = ML100K_RANKED_GROUPS


def per_user_gain(rank, metric, k=10):
    """One user's HR@k, NDCG@k or MRR@k from the rank of the test item (from 1)."""
    import math

    if rank > k:
        return 0.0
    return {"hr": 1.0, "ndcg": 1.0 / math.log2(rank + 1), "mrr": 1.0 / rank}[metric]


def paired_difference(ours, reference, metric, k=10, z=1.96):
    """The paired difference ours - reference of `metric`@k over the same users.

    `ours` and `reference` are lists of {user: rank from 1}, one per seed; each user's gain
    is averaged over that side's seeds first, then the difference is taken user by user.
    The interval is mean ± z x the standard error of those differences: it covers the
    sampling of users, not the spread between training seeds, which only the seeds given
    stand for. Refuses two sides ranked on different users (not the same split)."""
    users = set(ours[0])
    for side, ranks in (("ours", ours), ("reference", reference)):
        for seed_ranks in ranks:
            if set(seed_ranks) != users:
                missing = sorted(users - set(seed_ranks))[:3]
                extra = sorted(set(seed_ranks) - users)[:3]
                raise ValueError(f"{side}: ranked users differ from the first run's (missing "
                                 f"{missing}, extra {extra}): not the same test split")
    if len(users) < 2:
        raise ValueError("a paired difference needs at least 2 users")

    def mean_gain(ranks, user):
        return statistics.mean(per_user_gain(r[user], metric, k) for r in ranks)

    ours_gain = [mean_gain(ours, u) for u in sorted(users)]
    reference_gain = [mean_gain(reference, u) for u in sorted(users)]
    differences = [a - b for a, b in zip(ours_gain, reference_gain)]
    mean = statistics.mean(differences)
    error = statistics.stdev(differences) / len(differences) ** 0.5
    return {"users": len(users), "ours": statistics.mean(ours_gain),
            "reference": statistics.mean(reference_gain), "difference": mean,
            "low": mean - z * error, "high": mean + z * error}


def _reference_run(reference):
    """How long a kept RecBole reference trained and what stopped it."""
    stop = reference["raw"].get("training_stopped_by")
    return f"{reference['raw']['epochs_run']} epochs, stopped by {str(stop).replace('_', ' ')}"


def render_ml100k_paired_recbole():
    """This project's ML-100K runs against RecBole's references on the same test users:
    per metric, both means and the paired difference with its 95% interval."""
    # Only references on the whole of u.data with per-user ranks: one run on a genre-filtered
    # log or on a --max_users sample has other test items for the same users.
    references = [(model, payload) for model, payload in scale_tables.recbole_references()
                  if payload["raw"].get("test_ranks")
                  and not payload["raw"].get("data", {}).get("excluded_genres")
                  and not payload["raw"].get("data", {}).get("max_users")]
    groups = [[raw_output.newest("public_quality", tag) for tag in tags]
              for tags in ML100K_PAIRED_GROUPS]
    groups = [[p for p in group if p is not None] for group in groups]
    groups = [group for group in groups if group]
    if not references or not groups:
        return None
    lines = ["| run | seeds | against | users | HR@10 (ours / RecBole) | HR@10 difference "
             "[95% CI] | NDCG@10 (ours / RecBole) | NDCG@10 difference [95% CI] | MRR@10 "
             "(ours / RecBole) | MRR@10 difference [95% CI] |", "|---" * 10 + "|"]
    for group in groups:
        runs = sorted((r for p in group for r in p["raw"]["results"]
                       if r["run"] == "recipe" and r["dataset"] == "ml100k"
                       and r.get("test_ranks")), key=lambda r: r["seed"])
        if not runs:
            continue
        label = _recipe_label(group, "ml100k")
        # each kept seed alone, then, for a model with several, all of them averaged per user
        sides = [(model, [reference]) for model, reference in references]
        for model in scale_tables.RECBOLE_MODELS:
            seeds = [reference for name, reference in references if name == model]
            if len(seeds) > 1:
                sides.append((model, seeds))
        for model, kept in sides:
            if len(kept) == 1:
                against = (f"RecBole 1.2.1 {model}, seed {kept[0]['raw']['config']['seed']}, "
                           f"{_reference_run(kept[0])}")
            else:
                against = (f"RecBole 1.2.1 {model}, seeds " + ", ".join(
                    f"{r['raw']['config']['seed']} ({_reference_run(r)})" for r in kept)
                    + ", averaged per user")
            cells = [label, ", ".join(str(r["seed"]) for r in runs), against]
            for metric in ("hr", "ndcg", "mrr"):
                d = paired_difference([r["test_ranks"] for r in runs],
                                      [r["raw"]["test_ranks"] for r in kept], metric)
                if metric == "hr":
                    cells.append(str(d["users"]))
                cells += [f"{d['ours']:.4f} / {d['reference']:.4f}",
                          f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"]
            lines.append("| " + " | ".join(cells) + " |")
    sources = [source(p) for group in groups for p in group]
    sources += [source(payload) for _, payload in references]
    return lines + ["", "Each user's figure is averaged over each side's seeds first; the "
                    "interval covers the sampling of users (1.96 standard errors of the "
                    "per-user differences), not the spread between training seeds."] + sources
