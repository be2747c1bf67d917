"""What the release's data loaders feed its graphs, built from the facts doc (never from
this project's `Framing`), for tests that compare against the release's own graphs."""

import numpy as np

from conftest import FINETUNE_CSV


def _lines(path):
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]


def demo_sources(path=FINETUNE_CSV):
    """Every user's source history of a fine-tuning CSV (default: the demo's) as raw
    tokens, in file order (short histories carry the release's literal "0" left-padding
    tokens)."""
    return [line.split(",,")[0].split(",") for line in _lines(path)]


def release_finetune_vocabularies(path):
    """(item tokens, target tokens), token of id i at index i, as a release fine-tuning
    script numbers a fine-tuning CSV: its VocabularyProcessor is fitted on the source
    histories (before `,,`, split on `,`), ids by first appearance line by line, left to
    right, 0 = `<UNK>` (a literal "0" padding token is an item like any other); the
    targets (after `,,`) get their own vocabulary the same way."""
    items, targets = ["<UNK>"], ["<UNK>"]
    for line in _lines(path):
        source, target = line.split(",,", 1)
        for tokens, vocabulary in ((source.split(","), items), (target.split(","), targets)):
            vocabulary.extend(t for t in dict.fromkeys(tokens) if t not in vocabulary)
    return items, targets


def demo_histories(items):
    """Every user's source history of the demo fine-tuning CSV as ids of `items` (the
    converted model's vocabulary; unknown tokens -> 0), one per line, in file order."""
    index = {token: i for i, token in enumerate(items)}
    return [[index.get(token, 0) for token in source] for source in demo_sources()]


def release_feed(histories, family, width):
    """What the release's loaders feed, built from the facts, not from Framing:
    causal PeterRec `[s1..sn, 0 (right-padding).., 0, target]`; non-causal PeterRec
    `[0, s1..sn, 0]`; NextitNet FineAll `[s1..sn, 0..]` + one 0; GRec FineAll `[s1..sn, 0..]`."""
    rows = []
    for history in histories:
        padded = list(history[-width:]) + [0] * (width - len(history[-width:]))
        rows.append({"causal": padded + [0, 1], "noncausal": [0] + list(history) + [0],
                     "nextitnet_fineall": padded + [0], "grec_fineall": padded}[family])
    return np.array(rows, dtype="int32")
