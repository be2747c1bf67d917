"""Generic interaction logs: CSV/TSV rows of user, item, timestamp (column names by flag)."""

import csv
import collections
import math

from pipelines.dataset import PreparedDataset, leave_last_out
from pipelines.errors import DataError
from pipelines.formats.common import read_lines


def read_interactions(path, items, bad, user_col="user", item_col="item", time_col="timestamp",
                      delimiter=None, min_length=3):
    lines = read_lines(path)
    while not lines[0][1]:  # leading blank lines before the header
        lines.pop(0)
    if delimiter is None:
        delimiter = "\t" if path.endswith((".tsv", ".tab")) or "\t" in lines[0][1] else ","
    header = next(csv.reader([lines[0][1]], delimiter=delimiter))
    missing = [c for c in (user_col, item_col, time_col) if c not in header]
    if missing:
        hint = (f"; the header is one field: is the delimiter not {delimiter!r}? (set "
                "--delimiter)" if len(header) == 1 else "")
        raise DataError(path, lines[0][0], f"header {header} lacks column(s) {missing} "
                        f"(set --user_col/--item_col/--time_col){hint}")
    u, i, t = header.index(user_col), header.index(item_col), header.index(time_col)
    events = collections.defaultdict(list)
    for number, row in zip((n for n, _ in lines[1:]),
                           csv.reader([text for _, text in lines[1:]], delimiter=delimiter)):
        if not row:
            bad.report(path, number, "blank line (expected a user, item, timestamp row)")
            continue
        if len(row) != len(header):
            bad.report(path, number, f"expected {len(header)} fields, got {len(row)}")
            continue
        try:
            stamp = float(row[t])
        except ValueError:
            bad.report(path, number, f"timestamp {row[t]!r} is not a number")
            continue
        if not math.isfinite(stamp):
            bad.report(path, number, f"timestamp {row[t]!r} is not a finite number (events "
                       "could not be ordered)")
            continue
        if not row[u] or not row[i]:
            bad.report(path, number, "empty user or item")
            continue
        events[row[u]].append((stamp, number, row[i]))
    if not events:
        raise DataError(path, None, "no interaction rows after the header")
    sequences, duplicates = [], 0
    for user in events:  # order of first appearance of the user in the file
        ordered = sorted(events[user])  # by time, ties by file order
        duplicates += len(ordered) - len({(stamp, item) for stamp, _, item in ordered})
        sequences.append((user, items.ids([item for _, _, item in ordered])))
    splits, stats = leave_last_out(sequences, min_length)
    stats.update(items.oov_summary(), users=len(events), duplicate_interactions=duplicates)
    return [PreparedDataset("pretrain", splits, items, stats=stats)]
