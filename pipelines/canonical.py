"""The one definition of how raw lines become prepared records, shared by every path.

`prepare --runner=local` (in memory, or `local_stream` for interaction logs) and
`prepare --runner=<Beam runner>` (`beam_prepare`) call these functions and those of
`pipelines.lines` (lines: byte ranges cut at newlines, UTF-8, a BOM at the start dropped,
blank lines) and `pipelines.dialect` (the CSV dialect, numbers, table and interaction
rows), so the paths cannot disagree about:
- event order: by user (order of first appearance), then by time, ties in file order
  (`order_events`);
- ids: in order of first appearance (`first_appearance_order`), where an occurrence's key is
  (line, position) for the release CSVs and (user's first line, position in the user's
  ordered sequence) for interaction logs;
- OOV summaries (`oov_summary`: most common first, ties by first occurrence);
- splits (`pipelines.dataset.leave_last_out`, `split_users`), record order within a split
  (by the record's key; Beam ranks the keys in buckets, `beam_stages.bucket_ranks`),
  shards (`shard_count`, record rank mod shards);
- what metadata.json says of the records (`RecordStats`, `Quality`) and the refusal of
  an empty split (`check_not_empty`); the writer writes it (`writer.dataset_metadata`,
  `writer.publish`: the atomic move).
"""

import numpy as np

from pipelines.errors import DataError

SPLITS_ORDER = ("train", "validation", "test")  # pipelines.dataset.SPLITS
POSITION_BITS = 24  # a record key is line << 24 | position (positions < 16.7M per line)


def record_key(line, position=0):
    return (int(line) << POSITION_BITS) | int(position)


# --- order and ids ---------------------------------------------------------------------

def order_events(user_ranks, stamps):
    """Indices putting events (given in file order) in the canonical order: by user rank,
    then by time; equal times keep file order (np.lexsort is stable)."""
    return np.lexsort((np.asarray(stamps, dtype=np.float64), np.asarray(user_ranks)))


def first_appearance_order(first_keys):
    """Tokens ordered by the key of their first appearance ({token: key} -> [token])."""
    return [token for token, _ in sorted(first_keys.items(), key=lambda kv: kv[1])]


def oov_summary(found, top=10):
    """`Vocabulary.oov_summary` from {token: (count, first key)}: most common first, ties
    by first occurrence (as collections.Counter.most_common in insertion order)."""
    ordered = sorted(found.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
    return {"oov_occurrences": int(sum(c for c, _ in found.values())),
            "oov_distinct": len(found),
            "oov_most_common": [(token, int(count)) for token, (count, _) in ordered[:top]]}


# --- records, shards, metadata ---------------------------------------------------------

def shard_count(num_records, num_shards):
    """Shards of a split (the writer's rule: fewer if fewer records, at least one)."""
    return max(1, min(num_shards, num_records))


class RecordStats:
    """The per-record parts of metadata.json, mergeable across workers: the longest record,
    records holding OOV, records longer than max_len, item occurrences, OOV occurrences."""

    def __init__(self, max_len, longest=0, with_oov=0, longer=0, occurrences=0, zeros=0):
        self.max_len, self.longest, self.with_oov, self.longer = max_len, longest, with_oov, longer
        self.occurrences, self.zeros = occurrences, zeros

    def add(self, item_ids):
        n = len(item_ids)
        self.longest = max(self.longest, n)
        zeros = item_ids.count(0)
        self.with_oov += zeros > 0
        self.longer += bool(self.max_len) and n > self.max_len
        self.occurrences += n
        self.zeros += zeros
        return self

    def as_tuple(self):
        return self.longest, self.with_oov, self.longer, self.occurrences, self.zeros


def merge_record_stats(values):
    """Merge RecordStats tuples (a Beam combiner's function)."""
    total = (0, 0, 0, 0, 0)
    for value in values:
        total = (max(total[0], value[0]),) + tuple(a + b for a, b in zip(total[1:], value[1:]))
    return total


class Quality:
    """`dataset.quality` for records seen one at a time: what training covers (items of
    training sequences for pre-training, training targets for item_rec) and test targets."""

    def __init__(self):
        self.seen, self.test_targets = set(), []

    def add(self, split, record):
        if record.label is not None:
            return
        if split == "train":
            self.seen.update(record.item_ids if record.target is None else (record.target,))
        elif split == "test":
            self.test_targets.append(record.target)


def quality_shares(task, record_stats, seen, test_targets):
    """The shares `dataset.quality` gives, from streamed counts."""
    unseen = sum(t == 0 or t not in seen for t in test_targets)
    return quality_shares_of_counts(task, record_stats, unseen, len(test_targets))


def quality_shares_of_counts(task, record_stats, unseen, tests):
    """`quality_shares` from the number of unseen test targets and of test targets (what
    the Beam pipeline counts per target id, without gathering the targets)."""
    occurrences, zeros = record_stats.occurrences, record_stats.zeros
    result = {"oov_share": round(zeros / occurrences, 6) if occurrences else 0.0}
    if task == "classify" or not tests:
        return result
    result.update(unseen_test_targets=unseen,
                  unseen_test_target_share=round(unseen / tests, 6))
    return result


def check_not_empty(path, name, counts, stats):
    """A `DataError` naming dataset `name` and the threshold that emptied it when a split
    would hold no records: a preparation never publishes an empty split (a job would
    train or score nothing). `stats` are the dataset's (users, users_too_short,
    min_length for leave-last-out; split_by; skipped_bad_lines)."""
    from pipelines.dataset import smallest_full_split
    empty = [split for split in SPLITS_ORDER if not counts.get(split)]
    if not empty:
        return
    skipped = stats.get("skipped_bad_lines", 0)
    tail = f"; {skipped} bad lines were skipped (--skip_bad_lines)" if skipped else ""
    if "users_too_short" in stats:
        users, minimum = stats.get("users", 0), stats.get("min_length", 3)
        raise DataError(path, None, f"{name}: {users - stats['users_too_short']} of {users} "
                        f"users have at least {minimum} items (--min_seq_len={minimum}); "
                        f"nothing written{tail}")
    unit = "instance" if stats.get("split_by") == "instance" else "user"
    sizes = ", ".join(f"{split} {counts.get(split, 0)}" for split in SPLITS_ORDER)
    raise DataError(path, None, f"{name}: the {' and '.join(empty)} "
                    f"split{'s' if len(empty) > 1 else ''} would hold no "
                    f"records ({sizes}): the 70/3/27 split by {unit} needs at least "
                    f"{smallest_full_split()} {unit}s; nothing written{tail}")
