"""The one definition of how raw lines become prepared records, shared by every path.

`prepare --runner=local` (in memory for the release CSVs, `local_stream` for interaction
logs) and `prepare --runner=<Beam runner>` (`beam_prepare`) call these functions, so the
paths cannot disagree about:
- lines: byte ranges cut at newlines (`plan_chunks`), each line UTF-8, its `\n` or
  `\r\n` removed, a BOM at the start of the file dropped, whitespace-only lines blank
  (`chunk_lines`, `line_text`); blank lines after the last non-blank one are not lines
  (`LineReports`);
- the CSV dialect (`split_delimited`: quoting within one line, no whitespace around a
  field, no control characters) and numbers (`is_ascii_integer`, `decimal_error`);
- interaction rows (`interactions_header`, `parse_interaction_row`);
- event order: by user (order of first appearance), then by time, ties in file order
  (`order_events`);
- ids: in order of first appearance (`first_appearance_order`), where an occurrence's key is
  (line, position) for the release CSVs and (user's first line, position in the user's
  ordered sequence) for interaction logs;
- OOV summaries (`oov_summary`: most common first, ties by first occurrence);
- splits (`pipelines.dataset.leave_last_out`, `split_users`), record order within a split
  (by the record's key; Beam ranks the keys in buckets, `beam_prepare.bucket_ranks`),
  shards (`shard_count`, record rank mod shards);
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
BOM_BYTES = b"\xef\xbb\xbf"  # UTF-8 byte order mark: dropped at the start of a file
POSITION_BITS = 24  # a record key is line << 24 | position (positions < 16.7M per line)


def record_key(line, position=0):
    return (int(line) << POSITION_BITS) | int(position)


# --- lines ------------------------------------------------------------------------------

def _open(path, opener=None):
    if opener is not None:
        return opener(path)
    from pipelines import fileio
    return fileio.open_read(path)  # a local file, or any scheme Beam's filesystems know


def plan_chunks(path, chunk_bytes=CHUNK_BYTES, opener=None):
    """[(start, end, first_line_number)]: newline-aligned byte ranges covering `path`.

    One sequential pass that only counts newlines (GB/s), so the workers of a Beam
    pipeline know the line number each range starts at.
    """
    from pipelines import fileio
    if opener is None and not fileio.exists(path):
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


def line_text(raw):
    """A line as every format sees it (the dialect's line rules): the line ending (`\n`,
    or `\r\n`) removed; a line holding only whitespace is blank (""); any other line is
    kept verbatim, so whitespace around a field stays visible to the field rules."""
    if raw.endswith("\r"):
        raw = raw[:-1]
    return raw if raw.strip() else ""


def _decode(raw, path, number):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, number, f"not UTF-8 text ({error.reason} at byte "
                        f"{error.start + 1} of the line)") from error


def chunk_lines(path, start, end, first_line, opener=None):
    """(line number, text) of every line in the byte range [start, end), by `line_text`.

    A UTF-8 byte order mark at the start of the file is not part of line 1. Text that is
    not UTF-8 stops the preparation at its line (even with --skip_bad_lines: the file's
    encoding is wrong, not one line)."""
    with _open(path, opener) as handle:
        handle.seek(start)
        data = handle.read(end - start)
    if start == 0 and data.startswith(BOM_BYTES):
        data = data[len(BOM_BYTES):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        for number, raw in enumerate(data.split(b"\n"), first_line):
            _decode(raw, path, number)
        raise DataError(path, None, "not UTF-8 text")
    pieces = text.split("\n")
    if pieces and pieces[-1] == "":
        pieces.pop()  # the newline that ends the range
    return [(number, line_text(piece)) for number, piece in enumerate(pieces, first_line)]


def first_line(path, opener=None):
    """The text of line 1 by the rules of `chunk_lines` ("" if blank or empty)."""
    with _open(path, opener) as handle:
        raw = handle.readline()
    lines = chunk_lines(path, 0, len(raw), 1, opener) if raw else []
    return lines[0][1] if lines else ""


def first_nonblank_line(path, opener=None):
    """(number, text) of the first non-blank line (`chunk_lines`' rules); DataError if
    there is none."""
    with _open(path, opener) as handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and raw.startswith(BOM_BYTES):
                raw = raw[len(BOM_BYTES):]
            text = line_text(_decode(raw, path, number).rstrip("\n"))
            if text:
                return number, text
    raise DataError(path, None, "file is empty")


# --- the CSV dialect --------------------------------------------------------------------

class LineError(ValueError):
    """What is wrong with one line; the caller names the file and line (`DataError`) or
    counts the line as a bad line under --skip_bad_lines."""


_DECIMAL = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_DECIMAL_RE = re.compile(_DECIMAL + r"\Z")
_DECIMAL_LINES_RE = re.compile(rf"(?:{_DECIMAL}\n)*{_DECIMAL}\Z")
_NON_FINITE_RE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
# characters a line may not hold: C0 controls but tab, DEL, and U+FEFF (a byte order mark
# anywhere but the start of the file: files concatenated?)
_ASCII_ALLOWED = bytes(range(0x20, 0x7f)) + b"\t\n"  # what an ASCII chunk may hold
_FORBIDDEN_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufeff]")  # not \n: never in a line


def is_ascii_integer(text):
    """A non-negative integer written in ASCII digits (str.isdigit and int() also accept
    '٣', '３' and '²', which would give ids that differ from their ASCII twins)."""
    return text.isascii() and text.isdigit()


def decimal_error(text, what):
    """None if `text` is a finite decimal number in ASCII (what `float` then reads), else
    the message: float() alone also takes '٣', '1_0', ' 1' and 'nan'."""
    if _DECIMAL_RE.match(text):
        if math.isfinite(float(text)):
            return None
    elif not _NON_FINITE_RE.match(text):
        return (f"{what} {text!r} is not a number (expected ASCII decimal digits, e.g. "
                "1700000000 or 1.7e9)")
    return f"{what} {text!r} is not a finite number (events could not be ordered)"


def _forbidden_character(text):
    found = _FORBIDDEN_RE.search(text)
    if found is None:
        return None
    char, column = found.group(), found.start() + 1
    if char == "\r":
        return (f"a carriage return inside the line (column {column}): only '\\n' or "
                "'\\r\\n' end a line")
    if char == "\ufeff":
        return (f"a byte order mark (U+FEFF) inside the file (column {column}); only one at "
                "the start of the file is allowed (files concatenated?)")
    return f"control character {char!r} in the line (column {column})"


def split_delimited(text, delimiter, quoting=True):
    """The fields of one non-blank line (`line_text`) in this project's CSV dialect, or
    `LineError`. Every delimited input goes through these rules:

    - one record per line: a field never spans lines;
    - fields are separated by `delimiter` (one character);
    - with `quoting`, a field may be quoted: it starts with '"' and ends with the '"' that
      is followed by the delimiter or the end of the line; inside, the delimiter is plain
      text and '""' is one '"'. A quote that is not closed on its line, a '"' inside an
      unquoted field and text after a closing quote are errors;
    - no field has whitespace around it (inside the quotes either): ' u1' would be a
      different token than 'u1';
    - no control character (tab aside), carriage return inside the line, or byte order
      mark after the start of the file.
    """
    problem = _forbidden_character(text)
    if problem:
        raise LineError(problem)
    if not quoting or '"' not in text:
        fields = text.split(delimiter)
        for number, field in enumerate(fields, 1):
            _check_edges(field, number)
        return fields
    fields, position, end = [], 0, len(text)
    while True:
        number = len(fields) + 1
        if text.startswith('"', position):
            value, position = _quoted(text, position, number, delimiter)
            _check_edges(value, number, quoted=True)
        else:
            stop = text.find(delimiter, position)
            stop = end if stop < 0 else stop
            value = text[position:stop]
            _check_edges(value, number)
            if '"' in value:
                raise LineError(f"field {number} ({value!r}) has a '\"' inside it but does not "
                                "start with one: quote the whole field and double the '\"' "
                                "inside it")
            position = stop
        fields.append(value)
        if position >= end:
            return fields
        position += 1  # the delimiter
        if position == end:
            fields.append("")
            return fields


def _quoted(text, start, number, delimiter):
    """(value, position after the closing quote) of the quoted field at `start`."""
    parts, position = [], start + 1
    while True:
        close = text.find('"', position)
        if close < 0:
            raise LineError(f"field {number}: the '\"' at column {start + 1} is not closed on "
                            "this line (a quoted field cannot span lines)")
        parts.append(text[position:close])
        if text.startswith('""', close):
            parts.append('"')
            position = close + 2
            continue
        after = close + 1
        if after < len(text) and text[after] != delimiter:
            raise LineError(f"field {number}: text after its closing '\"' at column {close + 1}"
                            f" (expected {delimiter!r} or the end of the line)")
        return "".join(parts), after


def _check_edges(value, number, quoted=False):
    if value != value.strip():
        where = " inside its quotes" if quoted else ""
        raise LineError(f"field {number} ({value!r}) has whitespace around it{where}: the "
                        "dialect keeps no surrounding whitespace (' u1' is not 'u1'); remove it")


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

def check_delimiter(delimiter):
    """A delimiter is one character that is not a quote, a line end or a space."""
    if len(delimiter) != 1 or delimiter in '"\r\n' or (delimiter.isspace() and delimiter != "\t"):
        raise ValueError(f"--delimiter must be one character other than '\"', a space or a "
                         f"line end, got {delimiter!r}")


def table_header(path, number, text, delimiter, wanted, flag_names):
    """(delimiter, number of fields, indices of the `wanted` columns) from a table's header
    line, read by the one dialect (`split_delimited`); `flag_names` (e.g.
    "--user_col/--item_col") are named when a column is missing. The delimiter defaults to
    tab for .tsv/.tab files or a header holding a tab, else comma."""
    if delimiter is None:
        delimiter = "\t" if path.endswith((".tsv", ".tab")) or "\t" in text else ","
    check_delimiter(delimiter)
    try:
        header = split_delimited(text, delimiter)
    except LineError as error:
        raise DataError(path, number, f"header: {error}") from error
    missing = [c for c in wanted if c not in header]
    if missing:
        hint = (f"; the header is one field: is the delimiter not {delimiter!r}? (set "
                "--delimiter)" if len(header) == 1 else "")
        raise DataError(path, number, f"header {header} lacks column(s) {missing} "
                        f"(set {flag_names}){hint}")
    repeated = sorted({c for c in wanted if header.count(c) > 1})
    if repeated:
        raise DataError(path, number, f"header {header} names column(s) {repeated} more than "
                        "once")
    return delimiter, len(header), tuple(header.index(c) for c in wanted)


def interactions_header(path, number, text, delimiter, user_col, item_col, time_col):
    """(delimiter, number of fields, (user, item, time) column indices) from the header."""
    return table_header(path, number, text, delimiter, (user_col, item_col, time_col),
                        "--user_col/--item_col/--time_col")


def table_row(number, text, delimiter, width, expected="a user, item, timestamp row"):
    """One line of a table by the one dialect: (number, fields), or (number, message,
    blank) for a blank line, a line the dialect refuses or a row of another width."""
    if not text:
        return number, f"blank line (expected {expected})", True
    try:
        row = split_delimited(text, delimiter)
    except LineError as error:
        return number, str(error), False
    if len(row) != width:
        return number, f"expected {width} fields, got {len(row)}", False
    return number, row


def table_rows(lines, delimiter, width, expected="a user, item, timestamp row"):
    """`table_row` of each (number, text) line."""
    for number, text in lines:
        yield table_row(number, text, delimiter, width, expected)


def _non_ascii_digit(value):
    """The first non-ASCII digit of an id ('٣', '３', '²'), else None."""
    if value.isascii():
        return None
    return next((c for c in value if c.isdigit() and not c.isascii()), None)


def parse_interaction_row(number, text, delimiter, width, columns):
    """One line of an interaction log: (number, user, item, stamp), or (number, message,
    blank) for a bad line."""
    parsed = table_row(number, text, delimiter, width)
    if len(parsed) == 3:
        return parsed
    row = parsed[1]
    u, i, t = columns
    message = decimal_error(row[t], "timestamp")
    if message:
        return number, message, False
    if not row[u] or not row[i]:
        return number, "empty user or item", False
    for what, value in (("user", row[u]), ("item", row[i])):
        digit = _non_ascii_digit(value)
        if digit:
            return number, (f"{what} {value!r} holds the non-ASCII digit {digit!r}: ids are "
                            "compared as text, so it would differ from its ASCII twin; write "
                            "digits as 0-9"), False
    return number, row[u], row[i], float(row[t])


def parse_interaction_rows(lines, delimiter, width, columns):
    """For (number, text) lines: (number, user, item, stamp) or (number, message, blank)."""
    for number, text in lines:
        yield parse_interaction_row(number, text, delimiter, width, columns)


@functools.lru_cache(maxsize=None)
def _rows_of_width(delimiter, width):
    """A regex matching newline-separated lines of exactly `width` fields."""
    field = f"[^{re.escape(delimiter)}\\n]*"
    line = field + f"(?:{re.escape(delimiter)}{field}){{{width - 1}}}"
    return re.compile(f"{line}(?:\\n{line})*")


@functools.lru_cache(maxsize=None)
def _edge_whitespace(delimiter):
    """A regex finding whitespace at the start or end of a field."""
    space = f"[^\\S\\n{re.escape(delimiter)}]"
    edge = f"[\\n{re.escape(delimiter)}]"
    return re.compile(f"(?:^|{edge}){space}|{space}(?:{edge}|$)")


def parse_interaction_chunk(lines, delimiter, width, columns):
    """Columns of the valid rows among (number, text) lines: (numbers, users, items,
    stamps), plus the bad ones as (number, message, blank), both in line order.

    Exactly `parse_interaction_rows`, faster: a chunk without quotes, forbidden
    characters, blank lines or fields with whitespace around them, whose rows are all
    valid, is split with str.split (what `split_delimited` does to such lines); any other
    chunk goes row by row."""
    texts = [text for _, text in lines]
    blob = "\n".join(texts)
    ascii_text = blob.isascii()
    # with no forbidden character, ASCII whitespace is a space, a tab or a line end
    spaces = not ascii_text or " " in blob or (delimiter != "\t" and "\t" in blob)
    forbidden = (blob.encode("ascii").translate(None, _ASCII_ALLOWED) if ascii_text
                 else _FORBIDDEN_RE.search(blob))
    if (texts and all(texts) and '"' not in blob and not forbidden
            and _rows_of_width(delimiter, width).fullmatch(blob)
            and not (spaces and _edge_whitespace(delimiter).search(blob))):
        fields = blob.replace("\n", delimiter).split(delimiter)
        u, i, t = columns
        users, items, stamp_texts = fields[u::width], fields[i::width], fields[t::width]
        digits = "".join(stamp_texts)  # integer stamps, the common case: one C-level test
        if ((ascii_text and digits.isdigit() and "" not in stamp_texts
             or _DECIMAL_LINES_RE.match("\n".join(stamp_texts))) and "" not in users
                and "" not in items and (ascii_text or not any(
                    map(_non_ascii_digit, users + items)))):
            stamps = list(map(float, stamp_texts))
            if np.isfinite(np.asarray(stamps, dtype=np.float64)).all():
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


def shard_records(directory, counts, num_shards):
    """metadata.json's "shards": each written shard's records, bytes and SHA-256."""
    from pipelines import fileio, writer
    found = {}
    for split in SPLITS_ORDER:
        count = counts.get(split, 0)
        shards = shard_count(count, num_shards)
        for i in range(shards):
            name = writer.shard_name(split, i, shards)
            found[name] = writer.shard_record(fileio.join(directory, name),
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


def write_metadata(directory, metadata):
    from pipelines import fileio, metadata_checksum
    metadata = metadata_checksum.sealed(directory, metadata)  # verified by every reader
    fileio.write_bytes(fileio.join(directory, "metadata.json"),
                       json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8"))


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
    """Move a finished `tmp` into place (every writer's last step): an earlier preparation
    is renamed aside first and deleted last, so an interruption leaves the old one or the
    new one, never a half-written directory (a failing move puts the earlier one back)."""
    parent = os.path.dirname(os.path.abspath(output_dir)) or "."
    old = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=parent)
        os.replace(output_dir, os.path.join(old, "previous"))
    try:
        os.replace(tmp, output_dir)
    except BaseException:
        if old:  # put the earlier preparation back
            os.replace(os.path.join(old, "previous"), output_dir)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)
