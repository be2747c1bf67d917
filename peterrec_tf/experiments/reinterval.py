"""Seed-aware intervals for a stored transfer report, without retraining.

    python -m peterrec_tf.experiments.reinterval --report_dir=reports/transfer_synthetic
    python -m peterrec_tf.experiments.reinterval --report_dir=reports/transfer_synthetic --check

A report written before the two-level bootstrap holds, per (objective, task, method), the
per-seed test values of every run and a 95% bootstrap interval over test users only (the
trained models held fixed), but not the per-example outputs per seed (they stayed in the
work directory: they derive from the data). This command adds the training seeds' noise
to every interval the way `stats.seed_user_normal_ci` states: a normal interval whose
variance is the user-only interval's (half-width / 1.96, squared) plus the sample
variance over seeds of the per-seed values (or paired per-seed differences) divided by
the number of seeds. The user-only interval stays beside it as `ci95_users`. A difference
with no stored user-only interval (vs the from-scratch counterpart) takes the sum of the
two methods' own user standard errors as its user term, an upper bound (the two methods'
errors on the same users are correlated), marked `"user_se": "bound"`.

It rewrites `results.json`'s summary (recording which commit and command did it),
`results.md` and the charts; `--check` writes nothing and exits 1 if either file differs
from what the command would write now. Idempotent: the user-only intervals are read from
`ci95_users` once they are there.
"""

import json
import os
import statistics
import sys

from peterrec_tf.experiments import provenance, stats
from peterrec_tf.experiments.transfer.report import write_report
from peterrec_tf.experiments.transfer.runner import save_results
from peterrec_tf.experiments.transfer.summary import COMPARISONS, USER_INTERVALS

METHOD = ("95% normal interval over training seeds and test users: variance = (user-only "
          "bootstrap half-width / 1.96)^2 + sample variance (n-1) over seeds of the per-seed "
          "values or paired per-seed differences / n seeds")


def _user_se(ci, level=0.95):
    return (ci[1] - ci[0]) / (2.0 * statistics.NormalDist().inv_cdf(0.5 + level / 2.0))


def _seed_values(results):
    """{(objective, task, method): {seed: primary test value}} of the full-data runs."""
    values = {}
    for r in results["runs"]:
        if r["fraction"] == 1.0:
            values.setdefault((r["objective"], r["task"], r["method"]), {})[r["seed"]] = r["value"]
    return values


def _combined(point, user_ci, seed_values):
    """The seed-aware interval; the user-only one itself where every seed gave the same
    value (a deterministic baseline, or a difference of two), since then the seeds add
    nothing and the percentile interval is the better one."""
    if len(seed_values) > 1 and max(seed_values) == min(seed_values):
        return list(user_ci)
    found = stats.seed_user_normal_ci(point, user_ci, seed_values)
    return None if found is None else [found[0], found[1]]


def reinterval(results, state=None):
    """The summary of `results` with seed-aware `ci95` (and `ci95_users` kept), in place;
    returns it."""
    summary = results["summary"]
    values = _seed_values(results)
    entries = {(e["objective"], e["task"], e["method"]): e for e in summary["main"]}
    for e in summary["main"]:
        e.setdefault("ci95_users", e["ci95"])
    for e in summary["main"]:
        own = values[(e["objective"], e["task"], e["method"])]
        e["ci95"] = _combined(e["mean"], e["ci95_users"], [own[s] for s in sorted(own)])
        for name, reference in COMPARISONS:
            if name in e:
                reference = e[name]["reference"]
            elif isinstance(reference, dict):
                reference = reference.get(e["method"])
            else:
                continue
            other_entry = entries.get((e["objective"], e["task"], reference))
            if not reference or other_entry is None or reference == e["method"]:
                continue
            other = values[(e["objective"], e["task"], reference)]
            common = sorted(set(own) & set(other))
            differences = [own[s] - other[s] for s in common]
            d = e.setdefault(name, {"reference": reference,
                                    "difference": e["mean"] - other_entry["mean"]})
            if "ci95_users" not in d and "ci95" in d and d.get("user_se") != "bound":
                d["ci95_users"] = d["ci95"]
            if "ci95_users" in d:
                user_ci = d["ci95_users"]
            else:  # no stored paired interval: bound the users' term by both methods' own
                half = 1.96 * (_user_se(e["ci95_users"]) + _user_se(other_entry["ci95_users"]))
                user_ci = [d["difference"] - half, d["difference"] + half]
                d["user_se"] = "bound"
            d["seeds"], d["seed_differences"] = common, differences
            d["ci95"] = _combined(d["difference"], user_ci, differences)
    resamples = results["provenance"]["configuration"]["evaluation"]["bootstrap_resamples"]
    summary["intervals"] = METHOD
    summary["intervals_users"] = USER_INTERVALS.format(n=resamples)
    if state is not None:
        summary["rewritten"] = {
            "commit": state["commit"], "dirty": state["dirty"],
            "command": "python -m peterrec_tf.experiments.reinterval --report_dir=<report "
                       "directory>",
            "note": f"Intervals recomputed at commit {(state['commit'] or 'unknown')[:7]} "
                    "(python -m peterrec_tf.experiments.reinterval) from the stored runs and "
                    "user-only intervals, no retraining: the per-example outputs per seed "
                    "were not kept, so the two-level bootstrap could not run. \"(bound)\": no "
                    "paired user-only interval was stored; its user term is the sum of the "
                    "two methods' own (an upper bound)."}
    return summary


def _render(results, directory):
    """results.md and the charts as write_report makes them, in `directory`."""
    write_report(results, directory)


#: What Ctrl-C's last line says to run next: the command recomputes everything from the
#: stored runs (a stop between writing results.json and results.md leaves them disagreeing,
#: which `--check` finds and a rerun repairs).
INTERRUPTED = "the same command again (it recomputes both files from the stored runs)"


def define_flags():
    from absl import flags

    flags.DEFINE_string("report_dir", None, "The transfer report to recompute: a directory "
                        "holding results.json (python -m peterrec_tf.experiments.transfer "
                        "--output_dir), e.g. reports/transfer_synthetic.")
    flags.DEFINE_boolean("check", False, "Write nothing; exit 1 if results.json's summary or "
                         "results.md differs from what the command would write now.")
    flags.DEFINE_boolean("allow_dirty", False, "Rewrite even from a working tree with "
                         "uncommitted changes outside reports/ (recorded as dirty).")
    flags.mark_flags_as_required(["report_dir"])


def read_results(directory):
    path = os.path.join(directory, "results.json")
    try:
        with open(path, encoding="utf-8") as handle:
            return path, json.load(handle)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: a transfer results.json was expected ({error})") from error


def differences(directory):
    """What differs between the stored report in `directory` and a recomputation (the
    paths, with why); empty when they agree. Writes nothing."""
    import tempfile

    path, results = read_results(directory)
    stored = json.loads(json.dumps(results["summary"]))
    reinterval(results, state=None)
    results["summary"]["rewritten"] = stored.get("rewritten")
    if results["summary"] != stored:
        return [f"{path}: summary differs from a recomputation"]
    with tempfile.TemporaryDirectory() as tmp:
        _render(results, tmp)
        found = []
        for name in ("results.md",):
            with open(os.path.join(tmp, name), encoding="utf-8") as fresh, \
                    open(os.path.join(directory, name), encoding="utf-8") as kept:
                if fresh.read() != kept.read():
                    found.append(f"{os.path.join(directory, name)} differs from what the "
                                 "command writes")
        return found


def main(v):
    """--check: compare and exit 1 on a difference; else recompute and rewrite."""
    from pipelines.command import Done, command_line

    directory = v.report_dir
    if v.check:
        found = differences(directory)
        for line in found:
            print(line, file=sys.stderr)
        return Done(f"{directory}: " + ("differs from a recomputation" if found else
                                        "matches a recomputation"), code=1 if found else 0)
    path, results = read_results(directory)
    state = provenance.git_state()
    # the reports this command rewrites are not the code that computes them
    state["dirty_files"] = [f for f in state["dirty_files"] if not f.startswith("reports/")]
    state["dirty"] = bool(state["dirty_files"]) or state["commit"] is None
    try:
        provenance.check_clean(state, v.allow_dirty)
    except provenance.DirtyTree as error:
        raise ValueError(str(error)) from error
    reinterval(results, state)
    save_results(path, results)
    _render(results, directory)
    return Done(f"wrote {path}, {os.path.join(directory, 'results.md')} and the charts",
                command_line("peterrec_tf.experiments.reinterval", report_dir=directory,
                             check="true"))


def cli():
    """The command (`python -m peterrec_tf.experiments.reinterval`)."""
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__, on_interrupt=INTERRUPTED)


if __name__ == "__main__":
    cli()
