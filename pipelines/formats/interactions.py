"""Generic interaction logs: CSV/TSV rows of user, item, timestamp (column names by flag).

`prepare --runner=local` streams these logs (`pipelines.local_stream`); this in-memory
reader is the reference the tests compare it with. Both parse with `pipelines.canonical`
(the CSV dialect of `split_delimited`, `interactions_header`, `parse_interaction_row`).
"""

import collections

from pipelines import canonical
from pipelines.dataset import PreparedDataset, leave_last_out
from pipelines.errors import DataError
from pipelines.formats.common import read_lines


def read_interactions(path, items, bad, user_col="user", item_col="item", time_col="timestamp",
                      delimiter=None, min_length=3):
    lines = read_lines(path)
    while not lines[0][1]:  # leading blank lines before the header
        lines.pop(0)
    delimiter, width, columns = canonical.interactions_header(
        path, lines[0][0], lines[0][1], delimiter, user_col, item_col, time_col)
    events = collections.defaultdict(list)
    for parsed in canonical.parse_interaction_rows(lines[1:], delimiter, width, columns):
        if len(parsed) == 3:
            bad.report(path, parsed[0], parsed[1])
            continue
        number, user, item, stamp = parsed
        events[user].append((stamp, number, item))
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
