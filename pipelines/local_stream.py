"""Interaction logs prepared locally in a compact working set (`--runner=local`).

The log is read in newline-aligned chunks; every valid event keeps only a user rank
(int32), an item index (int32) and its timestamp (float64): 16 bytes, plus one
dictionary entry per distinct user and item. One stable `np.lexsort` puts the events in
the canonical order (`canonical.order_events`), ids are given in order of first
appearance in that order, and records are cut (`dataset.leave_last_out`) and written
user by user in batches, round-robin over the shards. Peak memory is about 40 bytes per
event (BUILD_NOTES, "Paper scale: data preparation"); the Beam pipeline
(`beam_prepare`) writes the same records, which the tests check record for record.
"""

import array
import time

import numpy as np

from pipelines import canonical, dialect, schema, text_lines, writer
from pipelines.dataset import SPLITS, leave_last_out
from pipelines.errors import DataError

USER_BATCH = 20000


def _peak_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _first_positions(values, count, step=1 << 23):
    """For dense codes 0..count-1: the first index each occurs at in `values` (len(values)
    where absent), in chunks so the temporaries stay small."""
    first = np.full(count, len(values), dtype=np.int64)
    for start in range(0, len(values), step):
        codes, where = np.unique(values[start:start + step], return_index=True)
        unset = first[codes] == len(values)
        first[codes[unset]] = where[unset] + start
    return first


def read_events(path, user_col, item_col, time_col, delimiter, bad, chunk_bytes=None):
    """(user names, item tokens, user ranks, item codes, stamps): names and tokens in
    order of first appearance in the file, the arrays per valid row in file order."""
    header_number, header = text_lines.first_nonblank_line(path)
    delimiter, width, columns = dialect.interactions_header(
        path, header_number, header, delimiter, user_col, item_col, time_col)
    users, tokens = {}, {}
    user_ranks, item_codes, stamps = array.array("i"), array.array("i"), array.array("d")
    reports = text_lines.LineReports(bad, path)
    plan = text_lines.plan_chunks(path, chunk_bytes or text_lines.CHUNK_BYTES)
    for start, end, first in plan:
        lines = text_lines.chunk_lines(path, start, end, first)
        if first <= header_number:
            lines = [(n, t) for n, t in lines if n > header_number]
        numbers, names, things, times, bad_rows = dialect.parse_interaction_chunk(
            lines, delimiter, width, columns)
        for number, message, blank in bad_rows:
            if blank:
                reports.blank(number, message)
            else:
                reports.report(number, message)
        if numbers:
            reports.seen(numbers[-1])
        # ids in order of first appearance: a new key gets the dictionary's current size
        user_ranks.extend([users.setdefault(name, len(users)) for name in names])
        item_codes.extend([tokens.setdefault(thing, len(tokens)) for thing in things])
        stamps.extend(times)
    if not users:
        raise DataError(path, None, "no interaction rows after the header")
    return list(users), list(tokens), user_ranks, item_codes, stamps


def _duplicates(codes, times, lengths):
    """Events repeating an earlier (time, item) of the same user, for consecutive users
    (`read_interactions`' count: events minus distinct (time, item) per user)."""
    users = np.repeat(np.arange(len(lengths)), lengths)
    order = np.lexsort((codes, times, users))
    codes, times, users = codes[order], times[order], users[order]
    return int(np.count_nonzero((users[1:] == users[:-1]) & (times[1:] == times[:-1])
                                & (codes[1:] == codes[:-1])))


def prepare_interactions(path, tmp, items, bad, num_shards, common, options, log=print,
                         chunk_bytes=None, quality=None):
    """Write the pre-training dataset of an interaction log into `tmp` (which must not
    exist); returns its metadata."""
    import os
    started = time.time()
    min_length = options.get("min_length", 3)
    user_names, token_names, user_ranks, item_codes, stamps = read_events(
        path, options.get("user_col", "user"), options.get("item_col", "item"),
        options.get("time_col", "timestamp"), options.get("delimiter"), bad, chunk_bytes)
    events = len(user_ranks)
    log(f"  read {events:,} events of {len(user_names):,} users, {len(token_names):,} items "
        f"in {time.time() - started:.1f}s (peak RSS {_peak_mb()} MB)")
    ranks = np.frombuffer(user_ranks, dtype=np.int32)
    lengths = np.bincount(ranks, minlength=len(user_names))
    times = np.frombuffer(stamps, dtype=np.float64)
    order = canonical.order_events(ranks, times)
    del ranks, user_ranks
    times = times[order]  # kept (8 bytes an event) to count duplicate rows per user
    del stamps
    codes = np.frombuffer(item_codes, dtype=np.int32)[order]
    del order, item_codes
    first = _first_positions(codes, len(token_names))
    if items.frozen:
        table = np.array([items.index.get(t, 0) for t in token_names], dtype=np.int32)
        oov = np.flatnonzero(table == 0)
        counts = np.bincount(codes, minlength=len(token_names))
        oov_stats = canonical.oov_summary(
            {token_names[c]: (int(counts[c]), int(first[c])) for c in oov if counts[c]})
    else:
        in_order = canonical.first_appearance_order(
            {token_names[c]: int(first[c]) for c in range(len(token_names))})
        ids = {token: items.id(token) for token in in_order}
        table = np.array([ids[t] for t in token_names], dtype=np.int32)
        oov_stats = canonical.oov_summary({})
    del first
    ids = table[codes]
    log(f"  ordered and numbered in {time.time() - started:.1f}s (peak RSS {_peak_mb()} MB)")
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    kept = int((lengths >= min_length).sum())
    canonical.check_not_empty(path, "pretrain", {split: kept for split in SPLITS}, {
        "users": len(user_names), "users_too_short": len(user_names) - kept,
        "min_length": min_length, "skipped_bad_lines": bad.count})
    os.makedirs(os.path.join(tmp, "vocab"))
    items.save(os.path.join(tmp, "vocab", "items.txt"))
    writers = {split: writer.ShardWriters(tmp, split, kept, num_shards) for split in SPLITS}
    record_stats, shares = canonical.RecordStats(common.get("max_len")), canonical.Quality()
    dropped = duplicates = 0
    try:
        for batch in range(0, len(user_names), USER_BATCH):
            users = range(batch, min(batch + USER_BATCH, len(user_names)))
            splits, cut = leave_last_out(
                [(user_names[u], ids[offsets[u]:offsets[u + 1]].tolist()) for u in users],
                min_length)
            dropped += cut["users_too_short"]
            span = slice(offsets[users[0]], offsets[users[-1] + 1])
            duplicates += _duplicates(codes[span], times[span], lengths[users[0]:users[-1] + 1])
            for split in SPLITS:
                for record in splits[split]:
                    record_stats.add(record.item_ids)
                    shares.add(split, record)
                    writers[split].write(schema.encode(record.item_ids, record.user_id,
                                                       record.target, record.label))
    finally:
        for each in writers.values():
            each.close()
    stats = {"users_too_short": dropped, "min_length": min_length, **oov_stats,
             "users": len(user_names), "duplicate_interactions": duplicates}
    stats.update(bad.summary())
    if quality:
        quality("dataset", stats, canonical.quality_shares(
            "pretrain", record_stats, shares.seen, shares.test_targets))
    counts = {split: kept for split in SPLITS}
    metadata = writer.dataset_metadata(
        common, "pretrain", len(items), counts, record_stats, stats,
        shards=writer.shard_records(tmp, counts, num_shards))
    writer.write_metadata(tmp, metadata)
    log("  wrote dataset: pretrain, " + ", ".join(f"{s} {kept}" for s in SPLITS)
        + f" ({events:,} events, {time.time() - started:.1f}s, peak RSS {_peak_mb()} MB)")
    return metadata
