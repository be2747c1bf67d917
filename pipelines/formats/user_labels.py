"""`--format=user_labels`: classification data from a label table and an event log.

    python -m pipelines.prepare --format=user_labels --input=labels.csv --events=log.tsv \
        --vocab=PRE/vocab/items.txt --output_dir=DIR [--user_col=user --label_col=label]

The table has a header and one row per user (`--user_col`, `--label_col`; other columns
are ignored); a user's history is their events in `--events` (`user_history`). Class
ids follow the labels' first appearance in the table (`vocab/labels.txt`). A second row
for a user, an empty user or label, or a row of another width is a bad line.

Labels are exact text, so one class written two ways (`1` and `1.0`, `01` and `1`, `Male`
and `male`, a composed and a decomposed accent) would be two classes, and a model would
be trained and scored on a split nothing in the data means. Such a table is refused,
naming the spellings and their lines; `--exact_labels` keeps them apart where they are
meant to differ (version-like codes: `1.1` and `1.10`).
"""

import decimal
import re
import unicodedata

from pipelines import canonical, dialect, fileio, text_lines
from pipelines.dataset import PreparedDataset, Record
from pipelines.errors import DataError
from pipelines.formats import Flag, register
from pipelines.formats.user_history import UserTableFormat
from pipelines.vocab import write_tokens


@register
class UserLabels(UserTableFormat):
    name, task = "user_labels", "classify"
    flags = UserTableFormat.flags + (
        Flag("string", "label_col", "label", "user_labels: label column of the --input table."),
        Flag("bool", "exact_labels", False, "user_labels: keep labels that are one number or "
             "one word written two ways (1 and 1.0, 01 and 1, Male and male) as different "
             "classes. Default off: such a table is refused, naming the spellings."))
    checks_values = True

    def options(self, values):
        return dict(super().options(values), label_col=values.label_col,
                    exact_labels=bool(values.exact_labels))

    def check_values(self, path, first_keys, options):
        """Refuse labels that are one number (by decimal value) or one word (NFKC,
        case-folded) written two ways, unless --exact_labels."""
        if options.get("exact_labels"):
            return
        spellings = {}
        for token, key in sorted(first_keys.items(), key=lambda kv: kv[1]):
            spellings.setdefault(label_value(token), []).append(
                f"{token!r} (line {key >> canonical.POSITION_BITS})")
        clashes = [" and ".join(s) for s in spellings.values() if len(s) > 1]
        if clashes:
            raise DataError(path, None, (
                f"{'; '.join(clashes[:5])}{' ...' if len(clashes) > 5 else ''}: one label "
                f"written two ways would be two classes ({len(first_keys)} classes, "
                f"{len(first_keys) - len(spellings)} of them a second spelling); write each "
                "class one way, or pass --exact_labels if they are different classes"))

    def table_settings(self, path, options):
        number, text = text_lines.first_nonblank_line(path)
        delimiter, width, columns = dialect.table_header(
            path, number, text, options.get("delimiter"),
            (options.get("user_col", "user"), options.get("label_col", "label")),
            "--user_col/--label_col")
        return number, delimiter, width, columns

    def parse_table_lines(self, lines, settings):
        _, delimiter, width, (u, l) = settings
        rows, bad = [], []
        for parsed in dialect.table_rows(lines, delimiter, width, "a user, label row"):
            if len(parsed) == 3:
                bad.append(parsed)
            elif not parsed[1][u] or not parsed[1][l]:
                bad.append((parsed[0], "empty user or label", False))
            else:
                rows.append((parsed[1][u], (parsed[0], parsed[1][l])))
        return rows, bad

    def user_value(self, rows):
        line, label = rows[0]
        return line, label, [(n, f"a second row for this user (first on line {line}); the "
                              "table holds one label per user") for n, _ in rows[1:]]

    def value_occurrences(self, line, label):
        yield label, canonical.record_key(line)

    def value_vocabulary(self, first_keys):
        return canonical.first_appearance_order(first_keys)

    def records(self, user, line, label, ids, index):
        yield canonical.record_key(line), Record(ids, user, label=index[label])

    def write_vocabulary(self, directory, tokens):
        write_tokens(fileio.join(directory, "vocab", "labels.txt"), tokens)

    def dataset(self, splits, items, tokens, stats):
        return PreparedDataset(self.task, splits, items, labels=list(tokens), stats=stats)

    def sizes(self, tokens):
        return {"num_classes": len(tokens)}



#: A decimal number as an export writes one (no digit separators, no inf or nan).
DECIMAL_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


def label_value(token):
    """What a label means, for finding one class written two ways: a decimal number by
    value (exactly: 0.1 and 0.10000000000000001 differ), other text by its NFKC
    case-folded form."""
    if DECIMAL_NUMBER.match(token):
        try:
            return "number", decimal.Decimal(token)
        except decimal.InvalidOperation:  # an exponent past Decimal's range: text, then
            pass
    return "text", unicodedata.normalize("NFKC", token).casefold()
