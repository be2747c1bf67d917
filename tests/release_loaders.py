"""What the release's data loaders feed its graphs, built from the facts doc (never from
this project's `Framing`), for tests that compare against the release's own graphs."""

import numpy as np

from conftest import FINETUNE_CSV


def demo_sources():
    """Every user's source history of the demo fine-tuning CSV as raw tokens, in file order
    (short histories carry the release's literal "0" left-padding tokens)."""
    with open(FINETUNE_CSV) as handle:
        lines = [line.strip() for line in handle if line.strip()]
    return [line.split(",,")[0].split(",") for line in lines]


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
