"""The release's demo CSVs, read by the project's one parser (pipelines.formats.peterrec_csv).

The release builds its ids in order of first appearance, line by line, left to right,
with 0 = `<UNK>`: exactly what the pipelines' `Vocabulary` does, so the converter asks
the pipelines reader for the vocabulary and the history lengths instead of parsing the
file a second way. Each release script fits its vocabulary on the file it reads: the
pre-training script on the pre-training CSV, a fine-tuning script on the fine-tuning
CSV's sources, so a fine-tuned checkpoint reads ids in the fine-tuning CSV's order.
"""

from pipelines.errors import BadLines, DataError
from pipelines.vocab import Vocabulary

from peterrec_tf.conversion.errors import ConversionError


def _pretrain(csv_path):
    from pipelines.formats.peterrec_csv import read_pretrain

    items = Vocabulary()
    try:
        [dataset] = read_pretrain(csv_path, items, BadLines(), seed=0, min_length=1)
    except DataError as error:
        raise ConversionError(str(error)) from error
    return dataset


def _finetune(csv_path, items=None):
    from pipelines.formats.peterrec_csv import read_finetune

    items = Vocabulary(items or None, frozen=True)
    try:
        [dataset] = read_finetune(csv_path, items, BadLines(), seed=0)
    except DataError as error:
        raise ConversionError(str(error)) from error
    return dataset


def release_token_order(csv_path, targets=False):
    """The release's id order of a pre-training CSV's items, or (`targets=True`) of a
    fine-tuning CSV's targets (after `,,`); line i = token of id i, 0 = `<UNK>`."""
    if targets:
        return list(_finetune(csv_path).targets.tokens)
    return list(_pretrain(csv_path).items.tokens)


def release_source_order(csv_path):
    """The id order a release fine-tuning script gives a fine-tuning CSV's source items:
    the script fits its own VocabularyProcessor on the source histories (each line's part
    before `,,`, split on `,`), so ids follow first appearance over those sources, line by
    line, left to right, 0 = `<UNK>`; a literal `0` left-padding token is an item of its
    own, and the targets (after `,,`) never enter it. Line i = token of id i."""
    from pipelines.formats.peterrec_csv import parse_finetune_line, read_lines

    items, bad = Vocabulary(), BadLines()
    try:
        for number, line in read_lines(csv_path):
            sources, _, message, _ = parse_finetune_line(line, zero_is_padding=False)
            if message:
                bad.report(csv_path, number, message)
                continue
            items.ids(sources)
    except DataError as error:
        raise ConversionError(str(error)) from error
    return list(items.tokens)


def pretrain_row_length(csv_path):
    """The longest row of a pre-training CSV, in items."""
    dataset = _pretrain(csv_path)
    # the test split holds each row but its last item
    return max((len(record.item_ids) + 1 for record in dataset.splits["test"]), default=0)


def source_history_length(csv_path):
    """The longest source history (items before `,,`) of a fine-tuning CSV: the width the
    release's VocabularyProcessor right-pads every source to."""
    dataset = _finetune(csv_path)
    return max((len(record.item_ids) for split in dataset.splits.values() for record in split),
               default=0)
