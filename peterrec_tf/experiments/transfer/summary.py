"""The transfer comparison's summary from its recorded runs and per-example outputs: means
and sample stds over seeds, paired 95% intervals (two-level bootstrap over seeds and test
users, the user-only one beside it) of every method and of its differences with FineAll,
the best simple baseline and its from-scratch counterpart; the limited-data and
learning-curve means."""

import collections
import os

import numpy as np

from peterrec_tf.experiments import stats
from peterrec_tf.experiments.transfer.plan import METHODS, PRIMARY, run_file

#: the from-scratch counterpart of each method that starts from the pre-trained backbone
SCRATCH = {"FineCLS": "FineZero", "FineLast": "FineZero", "FineAll": "FineZero",
           "PeterRec (b)": "PeterZero", "PeterRec (c)": "PeterZero",
           "PeterRec (d)": "PeterZero", "PeterRec (e)": "PeterZero"}
#: the paired comparisons every main entry records: (summary key, reference or None for
#: the best simple baseline)
COMPARISONS = (("vs_fineall", "FineAll"), ("vs_best_simple", None), ("vs_scratch", SCRATCH))
INTERVALS = ("95% two-level percentile bootstrap: training seeds drawn with replacement, then "
             "test users with replacement (a user's instances stay together), {n} resamples; "
             "it covers training noise and the choice of test users")
USER_INTERVALS = ("95% percentile bootstrap over test users only ({n} resamples) of the mean "
                  "over seeds, the trained models held fixed (the older interval)")


def _ranking_outcomes(files, metric):
    """`[seeds, examples]` per-example gains of a ranking metric, one row per seed's run."""
    kind, k = metric.split("@")
    column = "full_ranks" if kind.startswith("full_") else "sampled_ranks"
    name = kind.replace("full_", "") + "@" + k
    return np.stack([stats.ranking_gains(np.load(f)[column], int(k))[name] for f in files])


class _TaskOutcomes:
    """One task's test truth and user groups (as the run stored them), turning runs into
    per-example outcomes and matrices of outcomes into intervals."""

    def __init__(self, output_dir, task, runs, resamples, seed):
        saved = np.load(os.path.join(output_dir, "per_example", f"truth_{task}.npz"))
        self.truth, self.user_groups = saved["truth"], saved["groups"]
        self.kind = "item_rec" if any(r["metric"] == "hr@5" for r in runs
                                      if r["task"] == task) else "classify"
        self.primary = PRIMARY[self.kind]
        self.output_dir, self.resamples, self.seed = output_dir, resamples, seed

    def outcomes(self, runs):
        """{seed: per-example outcomes `[examples]`} of one method's runs."""
        runs = sorted(runs, key=lambda r: r["seed"])
        files = [os.path.join(self.output_dir, "per_example", run_file(r)) for r in runs]
        if self.kind == "item_rec":
            rows = _ranking_outcomes(files, self.primary)
        else:
            rows = np.stack([(np.load(f)["pred"] == self.truth).astype(np.float64)
                             for f in files])
        return {r["seed"]: row for r, row in zip(runs, rows)}

    def intervals(self, matrix):
        """(two-level interval, user-only interval) of a `[seeds, examples]` matrix."""
        _, low, high = stats.two_level_bootstrap_ci(matrix, self.user_groups, self.resamples,
                                                    self.seed)
        _, u_low, u_high = stats.bootstrap_ci(lambda idx: matrix.mean(axis=0)[idx].mean(),
                                              self.user_groups, self.resamples, self.seed)
        return [low, high], [u_low, u_high]


def summarise(results, output_dir, resamples=1000, seed=0):
    """Means, sample stds over seeds and paired 95% intervals of every (objective, task,
    method) at full data (differences vs FineAll, vs the best simple baseline and vs the
    method's from-scratch counterpart): `ci95` the two-level bootstrap over seeds and users,
    `ci95_users` the user-only one beside it; means +- std of the limited-data and curve
    runs."""
    groups = collections.defaultdict(list)
    for r in results["runs"]:
        groups[(r["objective"], r["task"], r["method"], r["fraction"])].append(r)
    summary = {"main": [], "limited": [], "curves": [],
               "intervals": INTERVALS.format(n=resamples),
               "intervals_users": USER_INTERVALS.format(n=resamples),
               "std": "sample standard deviation (n-1) over training seeds"}
    fractions = sorted({r["fraction"] for r in results["runs"]})
    for task in sorted({r["task"] for r in results["runs"]}):
        task_outcomes = _TaskOutcomes(output_dir, task, results["runs"], resamples, seed)
        for objective in sorted({r["objective"] for r in results["runs"]}):
            rows = {label: groups.get((objective, task, label, 1.0), []) for label, _ in METHODS}
            rows = {k: v for k, v in rows.items() if v}
            summary["main"] += _main_entries(objective, task, rows, task_outcomes)
            for label, _ in METHODS:
                for fraction in fractions:
                    runs = groups.get((objective, task, label, fraction), [])
                    if runs and (fraction < 1 or label in results["provenance"]
                                 ["configuration"]["limited_methods"]):
                        summary["limited"].append(_limited_entry(objective, task, label,
                                                                 fraction, runs))
                summary["curves"] += _curve_entries(objective, task, label,
                                                    groups.get((objective, task, label, 1.0), []),
                                                    task_outcomes.primary)
    return summary


def _main_entries(objective, task, rows, task_outcomes):
    """The summary's entries of one (objective, task) at full data: {label: runs} in."""
    per_seed = {label: task_outcomes.outcomes(runs) for label, runs in rows.items()}
    simple = [label for label, spec in METHODS if isinstance(spec, str) and label in rows]
    best_simple = max(simple, key=lambda m: np.mean(list(per_seed[m].values()))) \
        if simple else None
    entries = []
    for label, runs in rows.items():
        values = [r["value"] for r in runs]
        matrix = np.stack(list(per_seed[label].values()))
        ci, ci_users = task_outcomes.intervals(matrix)
        entry = {"objective": objective, "task": task, "method": label,
                 "metric": task_outcomes.primary, "seeds": len(runs),
                 "mean": float(np.mean(values)), "std": stats.sample_std(values), "ci95": ci,
                 "ci95_users": ci_users, "means": {m: float(np.mean([r["test"][m] for r in runs]))
                                                   for m in runs[0]["test"]}}
        for name, reference in COMPARISONS:
            reference = (best_simple if reference is None else
                         reference.get(label) if isinstance(reference, dict) else reference)
            if not reference or reference not in per_seed or reference == label:
                continue
            common = sorted(set(per_seed[label]) & set(per_seed[reference]))
            diff = np.stack([per_seed[label][s] - per_seed[reference][s] for s in common])
            ci, ci_users = task_outcomes.intervals(diff)
            entry[name] = {"reference": reference, "difference": float(diff.mean()),
                           "ci95": ci, "ci95_users": ci_users, "seeds": common,
                           "seed_differences": diff.mean(axis=1).tolist()}
        entries.append(entry)
    return entries


def _limited_entry(objective, task, label, fraction, runs):
    values = [r["value"] for r in runs]
    return {"objective": objective, "task": task, "method": label, "fraction": fraction,
            "train_examples": runs[0]["train_examples"], "mean": float(np.mean(values)),
            "std": stats.sample_std(values), "seeds": len(runs)}


def _curve_entries(objective, task, label, runs, primary):
    """Mean +- std learning curves (validation and test) of a method's full-data runs."""
    if not runs or not runs[0].get("curve"):
        return []
    steps = [p["step"] for p in runs[0]["curve"]]
    entries = []
    for split in ("validation", "test"):
        per_step = [[p[split][primary] for p in r["curve"]] for r in runs
                    if [p["step"] for p in r["curve"]] == steps]
        entries.append({
            "objective": objective, "task": task, "method": label, "steps": steps,
            "split": split, "metric": primary, "mean": np.mean(per_step, axis=0).tolist(),
            "std": ([stats.sample_std(c) for c in np.array(per_step).T]
                    if len(per_step) > 1 else None)})
    return entries
