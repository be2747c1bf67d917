"""The one definition of how raw lines become prepared records, shared by every path.

`prepare --runner=local` (in memory for the release CSVs, `local_stream` for interaction
logs) and `prepare --runner=<Beam runner>` (`beam_prepare`) call these functions, so the
paths cannot disagree about:
- lines: byte ranges cut at newlines (`plan_chunks`), each line UTF-8 and stripped
  (`chunk_lines`); blank lines after the last non-blank one are not lines (`LineReports`);
- interaction rows (`interactions_header`, `parse_interaction_row`);
- event order: by user (order of first appearance), then by time, ties in file order
  (`order_events`);
- ids: in order of first appearance (`first_appearance_order`), where an occurrence's key is
  (line, position) for the release CSVs and (user's first line, position in the user's
  ordered sequence) for interaction logs;
- OOV summaries (`oov_summary`: most common first, ties by first occurrence);
- splits (`pipelines.dataset.leave_last_out`, `split_users`), record order within a split
  (by the record's key, `rank_keys`), shards (`shard_count`, record rank mod shards);
- metadata.json (`dataset_metadata`, `RecordStats`) and the atomic move (`publish`).
"""

import functools
import json
import math
import os
import re
import shutil
import tempfile

import numpy as np

from pipelines import metadata_checksum
from pipelines.errors import DataError

SPLITS_ORDER = ("train", "validation", "test")  # pipelines.dataset.SPLITS
CHUNK_BYTES = 8 << 20  # per-chunk Python objects: about 40x the bytes, ~300 MB
POSITION_BITS = 24  # a record key is line << 24 | position (positions < 16.7M per line)


def record_key(line, position=0):
    return (int(line) << POSITION_BITS) | int(position)


# --- lines ------------------------------------------------------------------------------

def _open(path, opener=None):
    if opener is not None:
        return opener(path)
    return open(path, "rb")


def plan_chunks(path, chunk_bytes=CHUNK_BYTES, opener=None):
    """[(start, end, first_line_number)]: newline-aligned byte ranges covering `path`.

    One sequential pass that only counts newlines (GB/s), so the workers of a Beam
    pipeline know the line number each range starts at.
    """
    if not os.path.exists(path) and opener is None:
        raise DataError(path, None, "file not found")
    if os.path.isdir(path):
        raise DataError(path, None, "is a directory, expected a file")
    chunks, start, line = [], 0, 1
    with _open(path, opener) as handle:
        carry = b""
        while True:
            block = handle.read(chunk_bytes)
            if not block:
                break
            block = carry + block
            cut = block.rfind(b"\n") + 1
            if cut == 0:  # no newline yet: keep reading
                carry = block
                continue
            chunks.append((start, start + cut, line))
            line += block.count(b"\n", 0, cut)
            start += cut
            carry = block[cut:]
        if carry:
            chunks.append((start, start + len(carry), line))
    return chunks


def chunk_lines(path, start, end, first_line, opener=None):
    """(line number, stripped text) of every line in the byte range [start, end)."""
    with _open(path, opener) as handle:
        handle.seek(start)
        data = handle.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        for number, raw in enumerate(data.split(b"\n"), first_line):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as inner:
                raise DataError(path, number, f"not UTF-8 text ({inner})") from error
        raise DataError(path, None, f"not UTF-8 text ({error})") from error
    pieces = text.split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()  # the newline that ends the range
    return [(number, piece.strip()) for number, piece in enumerate(pieces, first_line)]


def first_nonblank_line(path, opener=None):
    """(number, text) of the first non-blank line; DataError if there is none."""
    with _open(path, opener) as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise DataError(path, number, f"not UTF-8 text ({error})") from error
            if text:
                return number, text
    raise DataError(path, None, "file is empty")


class LineReports:
    """Bad lines in file order, for one file read front to back.

    A blank line is only a bad line if a non-blank line follows it (trailing blank lines
    are not lines), so blank lines wait until the next non-blank line is seen.
    """

    def __init__(self, bad, path):
        self.bad, self.path, self.pending = bad, path, []

    def blank(self, number, message):
        self.pending.append((number, message))

    def seen(self, number=None):
        """A non-blank line (at `number`, or after every pending one): the blank lines
        before it are bad lines."""
        if self.pending:
            ready = [p for p in self.pending if number is None or p[0] < number]
            self.pending = self.pending[len(ready):]
            for blank, message in ready:
                self.bad.report(self.path, blank, message)

    def report(self, number, message):
        self.seen()
        self.bad.report(self.path, number, message)


def settle_reports(bad, path, reports, last_nonblank, total=None):
    """Feed bad-line reports gathered out of order (Beam) into `bad` as a front-to-back
    reader would: blank ones after `last_nonblank` dropped, the smallest line first.

    `reports` are (number, message, blank) for the first few in line order; `total` the
    number of all reports that count (defaults to len(reports))."""
    kept = sorted((n, m) for n, m, blank in reports if not blank or n < last_nonblank)
    if total is None:
        total = len(kept)
    if kept and not bad.skip:
        raise DataError(path, kept[0][0], kept[0][1])
    for number, message in kept[:bad.keep]:
        bad.report(path, number, message)
    bad.count += total - min(len(kept), bad.keep)


# --- interaction logs ------------------------------------------------------------------

def interactions_header(path, number, text, delimiter, user_col, item_col, time_col):
    """(delimiter, number of fields, (user, item, time) column indices) from the header."""
    import csv
    if delimiter is None:
        delimiter = "\t" if path.endswith((".tsv", ".tab")) or "\t" in text else ","
    header = next(csv.reader([text], delimiter=delimiter))
    missing = [c for c in (user_col, item_col, time_col) if c not in header]
    if missing:
        hint = (f"; the header is one field: is the delimiter not {delimiter!r}? (set "
                "--delimiter)" if len(header) == 1 else "")
        raise DataError(path, number, f"header {header} lacks column(s) {missing} "
                        f"(set --user_col/--item_col/--time_col){hint}")
    return delimiter, len(header), (header.index(user_col), header.index(item_col),
                                    header.index(time_col))


def parse_interaction_rows(lines, delimiter, width, columns):
    """For (number, text) lines: (number, user, item, stamp) or (number, message, blank)."""
    import csv
    u, i, t = columns
    numbers = [number for number, _ in lines]
    for number, row in zip(numbers, csv.reader([text for _, text in lines],
                                               delimiter=delimiter)):
        if not row:
            yield number, "blank line (expected a user, item, timestamp row)", True
            continue
        if len(row) != width:
            yield number, f"expected {width} fields, got {len(row)}", False
            continue
        try:
            stamp = float(row[t])
        except ValueError:
            yield number, f"timestamp {row[t]!r} is not a number", False
            continue
        if not math.isfinite(stamp):
            yield number, (f"timestamp {row[t]!r} is not a finite number (events could not "
                           "be ordered)"), False
            continue
        if not row[u] or not row[i]:
            yield number, "empty user or item", False
            continue
        yield number, row[u], row[i], stamp


@functools.lru_cache(maxsize=None)
def _rows_of_width(delimiter, width):
    """A regex matching newline-separated lines of exactly `width` fields."""
    field = f"[^{re.escape(delimiter)}\\n]*"
    line = field + f"(?:{re.escape(delimiter)}{field}){{{width - 1}}}"
    return re.compile(f"{line}(?:\\n{line})*")


def parse_interaction_chunk(lines, delimiter, width, columns):
    """Columns of the valid rows among (number, text) lines: (numbers, users, items,
    stamps), plus the bad ones as (number, message, blank), both in line order.

    Exactly `parse_interaction_rows`, faster: a chunk without quotes, carriage returns,
    NULs or blank lines whose rows are all valid is split with str.split (what
    csv.reader does to such text); any other chunk goes row by row."""
    texts = [text for _, text in lines]
    blob = "\n".join(texts)
    if texts and not ('"' in blob or "\r" in blob or "\x00" in blob or "\n\n" in blob
                      or not texts[0] or not texts[-1]) and _rows_of_width(
                          delimiter, width).fullmatch(blob):
        fields = blob.replace("\n", delimiter).split(delimiter)
        u, i, t = columns
        users, items = fields[u::width], fields[i::width]
        try:
            stamps = list(map(float, fields[t::width]))
        except ValueError:
            stamps = None
        if (stamps is not None and "" not in users and "" not in items
                and np.isfinite(np.asarray(stamps, dtype=np.float64)).all()):
            return [number for number, _ in lines], users, items, stamps, []
    numbers, users, items, stamps, bad = [], [], [], [], []
    for parsed in parse_interaction_rows(lines, delimiter, width, columns):
        if len(parsed) == 3:
            bad.append(parsed)
            continue
        numbers.append(parsed[0])
        users.append(parsed[1])
        items.append(parsed[2])
        stamps.append(parsed[3])
    return numbers, users, items, stamps, bad


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


def rank_keys(keys):
    """Sorted int64 array of a split's record keys: a record's rank is its searchsorted
    position, its shard the rank mod the split's shard count."""
    return np.sort(np.asarray(keys, dtype=np.int64))


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
    occurrences, zeros = record_stats.occurrences, record_stats.zeros
    result = {"oov_share": round(zeros / occurrences, 6) if occurrences else 0.0}
    if task == "classify" or not test_targets:
        return result
    unseen = sum(t == 0 or t not in seen for t in test_targets)
    result.update(unseen_test_targets=unseen,
                  unseen_test_target_share=round(unseen / len(test_targets), 6))
    return result


def shard_records(directory, counts, num_shards):
    """metadata.json's "shards": each written shard's records, bytes and SHA-256."""
    from pipelines import writer
    found = {}
    for split in SPLITS_ORDER:
        count = counts.get(split, 0)
        shards = shard_count(count, num_shards)
        for i in range(shards):
            name = writer.shard_name(split, i, shards)
            found[name] = writer.shard_record(os.path.join(directory, name),
                                              len(range(i, count, shards)))
    return found


def dataset_metadata(common, task, num_items, counts, record_stats, stats, num_targets=None,
                     num_classes=None, shards=None):
    """metadata.json of one dataset, field for field what `writer.write_dataset` writes."""
    from pipelines import writer
    longest, with_oov, longer = record_stats.as_tuple()[:3]
    metadata = dict(common)
    metadata.update({
        "version": writer.FORMAT_VERSION,
        "task": task,
        "num_items": num_items,
        "splits": counts,
        "shards": shards,
        "longest_sequence": longest,
        "stats": stats,
        "summary": {
            "dropped_users_too_short": stats.get("users_too_short", 0),
            "skipped_bad_lines": stats.get("skipped_bad_lines", 0),
            "zero_tokens_dropped": stats.get("zero_tokens_dropped", 0),
            "oov_occurrences": stats.get("oov_occurrences", 0),
            "oov_distinct": stats.get("oov_distinct", 0),
            "records_with_oov": with_oov,
            "records_longer_than_max_len": longer if common.get("max_len") else 0,
            "duplicate_interactions": stats.get("duplicate_interactions", 0),
            **{key: stats[key] for key in writer.QUALITY_KEYS if key in stats},
        },
    })
    if num_targets is not None:
        metadata["num_targets"] = num_targets
    if num_classes is not None:
        metadata["num_classes"] = num_classes
    metadata["stats"]["sequences_longer_than_max_len"] = metadata["summary"][
        "records_longer_than_max_len"]
    return metadata


def write_metadata(directory, metadata):
    metadata = metadata_checksum.sealed(directory, metadata)  # verified by every reader
    with open(os.path.join(directory, "metadata.json"), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)


class ShardWriters:
    """A split's GZIP shards, written round-robin in record order (the writer's layout)."""

    def __init__(self, directory, split, num_records, num_shards):
        import tensorflow as tf
        from pipelines import writer
        self.shards = shard_count(num_records, num_shards)
        self.writers = [tf.io.TFRecordWriter(
            os.path.join(directory, writer.shard_name(split, i, self.shards)), options="GZIP")
            for i in range(self.shards)]
        self.written = 0

    def write(self, serialized):
        self.writers[self.written % self.shards].write(serialized)
        self.written += 1

    def close(self):
        for each in self.writers:
            each.close()


def temp_dir(output_dir):
    """`.<name>.tmp-*` beside the output, the writer's naming (so its clean-up sees it)."""
    parent = os.path.dirname(os.path.abspath(output_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)


def publish(tmp, output_dir):
    """Move a finished `tmp` into place as `writer.write_all` does: an earlier preparation
    is renamed aside first and deleted last, so an interruption leaves the old one or the
    new one, never a half-written directory."""
    parent = os.path.dirname(os.path.abspath(output_dir)) or "."
    old = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=parent)
        os.replace(output_dir, os.path.join(old, "previous"))
    os.replace(tmp, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)
