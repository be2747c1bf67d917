"""What several formats share: reading text files line by line with precise errors, the
release CSVs' item tokens, and the flags more than one format reads."""

import os

from pipelines import dialect, text_lines
from pipelines.errors import DataError
from pipelines.formats import Flag

MIN_SEQ_LEN = Flag("integer", "min_seq_len", 3, "Pre-training sequences shorter than this are "
                   "dropped (counted); leave-last-out needs 3 (train, validation, test items).")
#: The columns of an interaction log (`interactions`, and the event log of the table
#: formats).
EVENT_COLUMNS = (
    Flag("string", "user_col", "user", "interactions: user column name."),
    Flag("string", "item_col", "item", "interactions: item column name."),
    Flag("string", "time_col", "timestamp", "interactions: timestamp column name (numeric)."),
    Flag("string", "delimiter", None, "interactions: field delimiter (default: tab for "
         ".tsv or tab-containing headers, else comma)."),
)


def min_length_option(values):
    """{"min_length": --min_seq_len} when it is not the default 3 (the fingerprints of
    earlier preparations leave it out)."""
    return {} if values.min_seq_len == 3 else {"min_length": values.min_seq_len}


def event_column_options(values):
    return {"user_col": values.user_col, "item_col": values.item_col,
            "time_col": values.time_col, "delimiter": values.delimiter}


def read_lines(path):
    """(line number, text) for every line up to the last non-blank one, by the rules every
    path shares (`text_lines.chunk_lines`: `\\n` or `\\r\\n` line ends, a BOM at the start
    dropped, whitespace-only lines blank, other lines verbatim, UTF-8 errors at their line).

    Trailing blank lines (a final newline, an editor's extra ones) are dropped; a blank
    line *between* data lines is kept as `(number, "")` so each format can report it as
    an empty sequence instead of silently shifting what a line number means.
    """
    if not os.path.exists(path):
        raise DataError(path, None, "file not found")
    if os.path.isdir(path):
        raise DataError(path, None, "is a directory, expected a file")
    try:
        found = text_lines.chunk_lines(path, 0, os.path.getsize(path), 1)
    except OSError as error:
        raise DataError(path, None, f"cannot read: {error.strerror or error}") from error
    while found and not found[-1][1]:
        found.pop()
    if not found:
        raise DataError(path, None, "file is empty")
    return found


def item_tokens_error(tokens):
    """Release CSV items are non-negative integer ids in ASCII digits; the message for the
    first that is not, else None."""
    for token in tokens:
        if dialect.is_ascii_integer(token):
            continue
        if token != token.strip():
            return (f"item {token!r} has whitespace around it (the dialect keeps none: "
                    "remove it)")
        if token.isdigit():
            return (f"item {token!r} is not written in ASCII digits 0-9 (it would be a "
                    "different id than its ASCII twin)")
        return f"expected integer item ids separated by ',', got {token!r}"
    return None


def check_item_tokens(tokens, path, number, bad):
    """Release CSV items are non-negative integer ids; anything else is a bad line."""
    message = item_tokens_error(tokens)
    if message:
        bad.report(path, number, message)
        return False
    return True


def split_tokens(text):
    """`a,b,c` -> ['a', 'b', 'c'], verbatim: whitespace around a token is an error of
    `item_tokens_error`, never silently removed."""
    return text.split(",")
