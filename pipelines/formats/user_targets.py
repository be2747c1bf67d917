"""`--format=user_targets`: item recommendation on a target domain from a second log.

    python -m pipelines.prepare --format=user_targets --input=target_log.tsv \
        --events=log.tsv --vocab=PRE/vocab/items.txt --output_dir=DIR

`--input` is an interaction log of the target domain with the same columns as the event
log (`--user_col`, `--item_col`, `--time_col`); each of its users gets one record per
target event (history from `--events`, `user_history`), targets in time order, ties in
file order. Target ids follow first appearance in that order over the target log's users
that have history (`vocab/targets.txt`, id 0 `<UNK>`; a target only dropped users hold is
no output), as in `peterrec_finetune_csv`. `--cutoff_time`
bounds the history only; the targets are taken as they are.

A row that repeats an earlier row of the same user with the same item and the same time
is a bad line naming the line it repeats (it would be a second, identical record: a
duplicated test target counts twice in the metrics); the same item at another time is a
target of its own. Rows are read by the interaction-log rules
(`dialect.parse_interaction_chunk`: an empty field, a row of another width or the item
`<UNK>`, the targets' reserved id 0, is a bad line).
"""

from pipelines import beam_stages, canonical, dialect, fileio, text_lines
from pipelines.dataset import PreparedDataset, Record
from pipelines.formats import register
from pipelines.formats.user_history import UserTableFormat
from pipelines.vocab import Vocabulary


@register
class UserTargets(UserTableFormat):
    name, task = "user_targets", "item_rec"

    def table_settings(self, path, options):
        number, text = text_lines.first_nonblank_line(path)
        return (number,) + dialect.interactions_header(
            path, number, text, options.get("delimiter"), options.get("user_col", "user"),
            options.get("item_col", "item"), options.get("time_col", "timestamp"))

    def parse_table_lines(self, lines, settings):
        _, delimiter, width, columns = settings
        numbers, users, items, stamps, bad = dialect.parse_interaction_chunk(
            lines, delimiter, width, columns)
        return [(user, (number, stamp, item)) for number, user, item, stamp
                in zip(numbers, users, items, stamps)], bad

    def user_value(self, rows):
        """Rows (line, stamp, item) in line order -> the user's first line, targets in time
        order, and a bad line for each row repeating an earlier (stamp, item)."""
        first, kept, bad = {}, [], []
        for row in rows:
            number, stamp, item = row
            earlier = first.setdefault((stamp, item), number)
            if earlier == number:
                kept.append(row)
            else:
                bad.append((number, f"repeats line {earlier} (the same user, item and time): "
                            "it would be a second, identical record; a target at another "
                            "time is one of its own"))
        _, line, targets = beam_stages.order_user((None, kept))
        return line, targets, bad

    def value_occurrences(self, line, targets):
        return beam_stages.first_occurrences(line, targets)

    def value_vocabulary(self, first_keys):
        return beam_stages.vocabulary_tokens(first_keys.items(), Vocabulary().tokens)

    def records(self, user, line, targets, ids, index):
        for position, token in enumerate(targets):
            yield canonical.record_key(line, position), Record(ids, user, target=index[token])

    def write_vocabulary(self, directory, tokens):
        Vocabulary(tokens).save(fileio.join(directory, "vocab", "targets.txt"))

    def dataset(self, splits, items, tokens, stats):
        return PreparedDataset(self.task, splits, items, targets=Vocabulary(tokens), stats=stats)

    def sizes(self, tokens):
        return {"num_targets": len(tokens)}

