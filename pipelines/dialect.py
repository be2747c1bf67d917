"""The one CSV dialect of every delimited input, on every path (`split_delimited`:
quoting within one line, no whitespace around a field, no control characters), numbers
(`is_ascii_integer`, `decimal_error`), table headers and rows (`table_header`,
`table_row`) and interaction rows (`interactions_header`, `parse_interaction_row`, and
its fast twin over a chunk, `parse_interaction_chunk`)."""

import functools
import math
import re

import numpy as np

from pipelines.errors import DataError
from pipelines.vocab import UNK


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


EXACT_INTEGER_STAMP = 2 ** 53  # float64 holds every integer up to this one


def decimal_error(text, what):
    """None if `text` is a finite decimal number in ASCII (what `float` then reads), else
    the message: float() alone also takes '٣', '1_0', ' 1' and 'nan'."""
    if _DECIMAL_RE.match(text):
        digits = text.lstrip("+-")
        if digits.isdigit() and int(digits) > EXACT_INTEGER_STAMP:
            return (f"{what} {text!r} is above 2**53, where float64 (how events are ordered) "
                    "no longer holds every integer: events closer than its rounding would "
                    "be ordered by file position; write it in coarser units (e.g. "
                    "milliseconds or seconds)")
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


#: The item `<UNK>` would silently merge with padding and every unknown item (id 0): its
#: rows would vanish from the vocabulary and its occurrences from the OOV counts.
RESERVED_ITEM = (f"item {UNK!r} is the reserved token of unknown items (id 0); rename this "
                 "item")


def parse_interaction_row(number, text, delimiter, width, columns):
    """One line of an interaction log: (number, user, item, stamp), or (number, message,
    blank) for a bad line. An empty user or item, a non-finite or non-decimal stamp, a
    non-ASCII digit in an id, and the item `<UNK>` (`vocab.UNK`, the reserved id 0) are
    bad lines: every format reading user, item, time rows (an interaction log, an event
    log, a target log) goes through here or `parse_interaction_chunk`."""
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
    if row[i] == UNK:
        return number, RESERVED_ITEM, False
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
                and "" not in items and (UNK not in blob or UNK not in items)
                and (ascii_text or not any(map(_non_ascii_digit, users + items)))):
            stamps = list(map(float, stamp_texts))
            column = np.asarray(stamps, dtype=np.float64)
            # above 2**53 an integer stamp may be rounded: the row path decides
            if np.isfinite(column).all() and (np.abs(column) < EXACT_INTEGER_STAMP).all():
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
