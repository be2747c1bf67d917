"""Paper-shaped interaction logs for tests and benchmarks (no data needed).

Shaped like the paper's pre-training data: Zipf item popularity over a large catalogue
(645K items at paper scale), histories of about `history` events per user, and rows not
ordered by user or time (users are written in blocks whose rows are shuffled together).
Timestamps are integers with repeats inside a user's history, so the tie rule (file
order) matters. Generated block by block: memory does not grow with the log.

    python -m pipelines.paper_log --output=log.tsv [--events=N] [--num_items=N] [--history=N]
"""

import contextlib
import os

import numpy as np

HEADER = "user\titem\ttimestamp\n"
LABELS_HEADER = "user\tlabel\n"
TARGETS_PER_USER = 2


def zipf_cdf(num_items, exponent=1.0):
    weights = 1.0 / np.arange(1, num_items + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def item_token(item, prefix="i"):
    """The log's token of catalogue item `item` (0-based): `i17`, or `18` with prefix ""
    (plain positive integers, what the release's CSV formats accept)."""
    return f"i{item}" if prefix else str(item + 1)


def user_labels(item_col, begins, lengths):
    """Per user (rows grouped by user, `begins`/`lengths`): `even` when more than half of
    their events are of even-numbered items, else `odd`."""
    even = np.add.reduceat((item_col % 2 == 0).astype(np.int64), begins)
    return np.where(2 * even > lengths, "even", "odd")


def target_events(rng, item_col, stamps, begins, lengths):
    """Per user, `TARGETS_PER_USER` (item, timestamp) target events: items drawn from the
    user's own events (their counterparts in the target domain), one minute apart, after
    the user's last event."""
    picks = begins[:, None] + (rng.rand(len(begins), TARGETS_PER_USER)
                               * lengths[:, None]).astype(np.int64)
    last = np.maximum.reduceat(stamps, begins)
    times = last[:, None] + 60 * np.arange(1, TARGETS_PER_USER + 1)
    return item_col[picks], times


def write_paper_log(path, events, num_items=645_000, history=100, seed=0, block_users=20_000,
                    exponent=1.0, prefix="i", labels_path=None, target_log_path=None):
    """Write about `events` rows (user, item, timestamp) to `path` (TSV with a header);
    returns the number of rows written. Items are `item_token(i, prefix)`. With
    `labels_path` / `target_log_path` also a label table and a target-domain log of the
    same users (module docstring); `path` is the same bytes with or without them."""
    rng = np.random.RandomState(seed)
    target_rng = np.random.RandomState(seed + 1)  # leaves the log's draws as they are
    cdf = zipf_cdf(num_items, exponent)
    item_of_rank = rng.permutation(num_items)
    num_users = max(1, int(round(events / history)))
    written = 0
    # Each file is written under a temporary name and all are renamed when complete: an
    # interrupted or failed run leaves no partial log that a later `prepare` would read.
    finals = [p for p in (path, labels_path, target_log_path) if p]
    partial = {p: f"{p}.tmp{os.getpid()}" for p in finals}
    with contextlib.ExitStack() as files:
        files.callback(_remove_partial, partial.values())
        handle = files.enter_context(open(partial[path], "w", encoding="utf-8"))
        labels = (files.enter_context(open(partial[labels_path], "w", encoding="utf-8"))
                  if labels_path else None)
        targets = (files.enter_context(open(partial[target_log_path], "w", encoding="utf-8"))
                   if target_log_path else None)
        handle.write(HEADER)
        if labels:
            labels.write(LABELS_HEADER)
        if targets:
            targets.write(HEADER)
        for first in range(0, num_users, block_users):
            users = np.arange(first, min(first + block_users, num_users))
            lengths = np.maximum(1, rng.poisson(history, size=len(users)))
            user_col = np.repeat(users, lengths)
            ranks = np.searchsorted(cdf, rng.rand(len(user_col)))
            item_col = item_of_rank[np.minimum(ranks, num_items - 1)]
            gaps = rng.choice([0, 1, 60, 3600], size=len(user_col), p=[0.2, 0.3, 0.3, 0.2])
            starts = np.repeat(rng.randint(1_500_000_000, 1_600_000_000, size=len(users)),
                               lengths)
            total = np.cumsum(gaps)
            begins = np.cumsum(lengths) - lengths  # each user's first row
            stamps = starts + total - np.repeat(total[begins] - gaps[begins], lengths)
            order = rng.permutation(len(user_col))
            if not prefix:
                item_col = item_col + 1
            handle.write("".join(f"u{u}\t{prefix}{i}\t{t}\n" for u, i, t in zip(
                user_col[order].tolist(), item_col[order].tolist(), stamps[order].tolist())))
            written += len(user_col)
            if labels:
                labels.write("".join(f"u{u}\t{label}\n" for u, label in zip(
                    users.tolist(), user_labels(item_col, begins, lengths).tolist())))
            if targets:
                items, times = target_events(target_rng, item_col, stamps, begins, lengths)
                targets.write("".join(
                    f"u{u}\tt{i}\t{t}\n" for u, row_items, row_times
                    in zip(users.tolist(), items.tolist(), times.tolist())
                    for i, t in zip(row_items, row_times)))
        for handle_ in (handle, labels, targets):
            if handle_:
                handle_.close()
        for final in finals:
            os.replace(partial[final], final)
    return written


def _remove_partial(paths):
    """Remove what a write left under temporary names (none after the renames)."""
    for tmp in paths:
        if os.path.exists(tmp):
            os.remove(tmp)


def define_flags():
    from absl import flags

    flags.DEFINE_string("output", None, "The log to write: TSV with the header "
                        "user<TAB>item<TAB>timestamp, string keys (u17, i42).")
    flags.DEFINE_integer("events", 100_000, "About how many rows (events) to write.")
    flags.DEFINE_integer("num_items", 645_000, "Catalogue size (Zipf popularity over it).")
    flags.DEFINE_integer("history", 100, "Mean events per user (Poisson).")
    flags.DEFINE_integer("seed", 0, "Seed of the generator.")
    flags.DEFINE_string("labels", None, "Also write a per-user label table here "
                        "(user<TAB>label, even/odd: the parity most of the user's items have; "
                        "--format=user_labels reads it).")
    flags.DEFINE_string("target_log", None, "Also write a target-domain log here (the log's "
                        f"columns, {TARGETS_PER_USER} events per user after their last, items "
                        "t42 for a user's i42; --format=user_targets reads it).")
    flags.mark_flags_as_required(["output"])
    for name, low in (("events", 1), ("num_items", 1), ("history", 1)):
        flags.register_validator(name, lambda value, low=low: value >= low,
                                 message=f"--{name} must be >= {low}")


def main(v):
    """Write a paper-shaped log (for trying the commands without data of one's own)."""
    from pipelines.command import Done, command_line

    rows = write_paper_log(v.output, v.events, num_items=v.num_items, history=v.history,
                           seed=v.seed, labels_path=v.labels, target_log_path=v.target_log)
    also = "".join(f", {path}" for path in (v.labels, v.target_log) if path)
    return Done(f"wrote {v.output} ({rows:,} events){also}", command_line(
        "pipelines.prepare", format="interactions", input=v.output, output_dir="DIR"))


def cli():
    """The command (`python -m pipelines.paper_log`)."""
    from pipelines.command import STARTS_OVER, run_command

    run_command(define_flags, main, __doc__, on_interrupt=STARTS_OVER)


if __name__ == "__main__":
    cli()
