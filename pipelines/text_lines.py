"""Lines, as every preparation path reads them: newline-aligned byte ranges with the
number of their first line (`plan_chunks`), each line UTF-8 with its `\n` or `\r\n`
removed, a BOM at the start of the file dropped, whitespace-only lines blank
(`chunk_lines`, `line_text`); blank lines after the last non-blank one are not lines
(`LineReports`, `settle_reports`)."""

import os

from pipelines.errors import DataError

CHUNK_BYTES = 8 << 20  # per-chunk Python objects: about 40x the bytes, ~300 MB
BOM_BYTES = b"\xef\xbb\xbf"  # UTF-8 byte order mark: dropped at the start of a file


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
