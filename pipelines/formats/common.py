"""Reading text files line by line with precise errors."""

import os

from pipelines.errors import DataError


def read_lines(path):
    """(line number, stripped line) for every line up to the last non-blank one.

    Trailing blank lines (a final newline, an editor's extra ones) are dropped; a blank
    line *between* data lines is kept as `(number, "")` so each format can report it as
    an empty sequence instead of silently shifting what a line number means.
    """
    if not os.path.exists(path):
        raise DataError(path, None, "file not found")
    if os.path.isdir(path):
        raise DataError(path, None, "is a directory, expected a file")
    try:
        with open(path, encoding="utf-8", errors="strict") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as error:
        raise DataError(path, None, f"not UTF-8 text ({error})") from error
    except OSError as error:
        raise DataError(path, None, f"cannot read: {error}") from error
    found = [(number, line.strip()) for number, line in enumerate(lines, 1)]
    while found and not found[-1][1]:
        found.pop()
    if not found:
        raise DataError(path, None, "file is empty")
    return found


def item_tokens_error(tokens):
    """Release CSV items are non-negative integer ids; the message for the first that is
    not, else None."""
    for token in tokens:
        if not token.isdigit():
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
    """`a, b ,c` -> ['a', 'b', 'c'] (whitespace around a token is not part of it)."""
    return [token.strip() for token in text.split(",")]
