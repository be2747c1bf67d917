"""The release's demo CSV formats.

Pre-training: one user per line, `item,item,...` (oldest first).
Fine-tuning: `source items,,target[,target...]`, one instance per target, as the release.

The literal token "0": the demo files left-pad short histories with it (23 times in each
file), but the release gives it an id of its own like any other token (174 distinct
tokens incl. "0" + `<UNK>` = 175 ids, the checkpoint's vocabulary). `zero_is_padding=False`
(default) reproduces that; `True` drops "0" tokens as padding (174 ids, no longer the
release's vocabulary), counted in the stats.
"""

from pipelines.dataset import (PreparedDataset, Record, by_instance_split, by_user_split,
                               leave_last_out)
from pipelines.formats.common import item_tokens_error, read_lines, split_tokens
from pipelines.vocab import Vocabulary

ZERO = "0"


def _strip_zeros(tokens, zero_is_padding):
    """(tokens without padding "0"s if zero_is_padding, number dropped)."""
    if not zero_is_padding:
        return tokens, 0
    kept = [t for t in tokens if t != ZERO]
    return kept, len(tokens) - len(kept)


def parse_pretrain_line(line, zero_is_padding=False):
    """One stripped line of a pre-training CSV: (tokens, None, zeros dropped) or
    (None, bad-line message, zeros dropped).  Every path (in memory, Beam) uses this."""
    if not line:
        return None, "empty sequence (blank line)", 0
    if ",," in line:
        return None, ("empty item between commas (is this a fine-tuning file? "
                      "use --format=peterrec_finetune_csv)"), 0
    tokens = split_tokens(line)
    if "" in tokens:
        return None, "empty item (a leading, trailing or doubled ',')", 0
    message = item_tokens_error(tokens)
    if message:
        return None, message, 0
    tokens, zeros = _strip_zeros(tokens, zero_is_padding)
    if not tokens:
        return None, "empty sequence (only padding '0' tokens)", zeros
    return tokens, None, zeros


def parse_finetune_line(line, zero_is_padding=False):
    """One stripped line of a fine-tuning CSV: (source tokens, target tokens, None, zeros
    dropped) or (None, None, bad-line message, zeros dropped)."""
    if not line:
        return None, None, "empty sequence (blank line)", 0
    if ",," not in line:
        return None, None, "expected 'source items,,target[,target...]' (no ',,' found)", 0
    source, target_text = line.split(",,", 1)
    source_tokens = split_tokens(source) if source.strip() else []
    target_tokens = split_tokens(target_text) if target_text.strip() else []
    if not source_tokens:
        return None, None, "empty source sequence before ',,'", 0
    if not target_tokens:
        return None, None, "no target after ',,'", 0
    if "" in source_tokens or "" in target_tokens:
        return None, None, "empty item (a doubled ',' besides the one ',,' separator)", 0
    message = item_tokens_error(source_tokens) or item_tokens_error(target_tokens)
    if message:
        return None, None, message, 0
    source_tokens, zeros = _strip_zeros(source_tokens, zero_is_padding)
    if not source_tokens:
        return None, None, "empty source sequence (only padding '0' tokens)", zeros
    return source_tokens, target_tokens, None, zeros


def read_pretrain(path, items, bad, seed, zero_is_padding=False, min_length=3):
    sequences, zeros = [], 0
    for number, line in read_lines(path):
        tokens, message, dropped = parse_pretrain_line(line, zero_is_padding)
        zeros += dropped
        if message:
            bad.report(path, number, message)
            continue
        sequences.append((f"line{number}", items.ids(tokens)))
    splits, stats = leave_last_out(sequences, min_length)
    stats.update(items.oov_summary(), users=len(sequences), zero_is_padding=zero_is_padding,
                 zero_tokens_dropped=zeros)
    return [PreparedDataset("pretrain", splits, items, stats=stats)]


def check_finetune_options(items, split_by):
    if not items.frozen:
        raise ValueError("fine-tuning data must be prepared against the pre-training vocabulary: "
                         "pass --vocab=PRETRAIN_DIR/vocab/items.txt")
    if split_by not in ("user", "instance"):
        raise ValueError(f"--split_by must be user or instance, got {split_by!r}")


def read_finetune(path, items, bad, seed, zero_is_padding=False, split_by="user"):
    check_finetune_options(items, split_by)
    targets = Vocabulary()
    records, empty, zeros = [], 0, 0
    for number, line in read_lines(path):
        source_tokens, target_tokens, message, dropped = parse_finetune_line(line, zero_is_padding)
        zeros += dropped
        if message:
            bad.report(path, number, message)
            continue
        source_ids = items.ids(source_tokens)
        empty += all(i == 0 for i in source_ids)
        for token in target_tokens:
            records.append(Record(source_ids, f"line{number}", target=targets.id(token)))
    stats = dict(items.oov_summary(), sources_entirely_oov=empty, instances=len(records),
                 split_by=split_by, zero_is_padding=zero_is_padding, zero_tokens_dropped=zeros)
    split = by_user_split if split_by == "user" else by_instance_split
    return [PreparedDataset("item_rec", split(records, seed), items, targets=targets,
                            stats=stats)]
