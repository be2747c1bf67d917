"""The release graphs' answers for the tests, each computed once per test session.

`peterrec_tf.tf1_oracle.run_oracle_batches` runs a checkpoint's TF1 graph in a fresh
process (oneDNN off; see that module). Its answers are a function of the checkpoint and
the ids fed, so the tests ask through `oracle_batches`, which keeps every answer it got
(keyed by the checkpoint, the ids' exact bytes and shape, and `with_targets`) and, when it
must start the process for a checkpoint, also feeds it every batch `plan`ned for that
checkpoint. Several tests (and modules) that compare against the same graph thereby share
one process instead of starting one each (each start imports TensorFlow: seconds on the
CI's 2 cores). A planned batch a test does not end up asking for costs a row of a graph
run; a test asking for one that was not planned gets it from its own process, as before:
a plan changes how many processes run, never what a test compares against.
"""

import os

import numpy as np

from conftest import FINETUNE_CSV, FINETUNED, PRETRAIN_CSV
from peterrec_tf.tf1_oracle import run_oracle_batches
from release_loaders import (demo_histories, demo_sources, release_feed,
                             release_finetune_vocabularies)

_answers = {}   # (checkpoint, with_targets, dtype, shape, bytes) -> {output: array}
_planned = {}   # (checkpoint, with_targets) -> [int32 arrays]
processes = []  # (checkpoint, number of batches) of each oracle process started


def _checkpoint(prefix):
    return os.path.realpath(prefix)


def _key(prefix, ids, with_targets):
    return (_checkpoint(prefix), bool(with_targets), ids.dtype.str, ids.shape, ids.tobytes())


def plan(prefix, batches, with_targets=True):
    """Feed `batches` too when the process for `prefix` next starts."""
    _planned.setdefault((_checkpoint(prefix), bool(with_targets)), []).extend(
        np.asarray(ids, dtype=np.int32) for ids in batches)


def oracle_batches(prefix, batches, with_targets=True):
    """`run_oracle_batches(prefix, batches, with_targets)`, from kept answers where the
    same checkpoint was fed the same ids before (copies: a test may change its own)."""
    _plan_shared_checkpoints()
    batches = [np.asarray(ids, dtype=np.int32) for ids in batches]
    missing = {}
    for ids in batches:
        key = _key(prefix, ids, with_targets)
        if key not in _answers:
            missing.setdefault(key, ids)
    if missing:
        for ids in _planned.pop((_checkpoint(prefix), bool(with_targets)), []):
            key = _key(prefix, ids, with_targets)
            if key not in _answers:
                missing.setdefault(key, ids)
        keys = list(missing)
        processes.append((_checkpoint(prefix), len(keys)))
        answers = run_oracle_batches(prefix, [missing[key] for key in keys], with_targets)
        _answers.update(zip(keys, answers))
    return [{name: value.copy() for name, value in _answers[_key(prefix, ids, with_targets)].items()}
            for ids in batches]


def oracle(prefix, ids, with_targets=True):
    """`run_oracle(prefix, ids, with_targets)`, shared as `oracle_batches`."""
    return oracle_batches(prefix, [ids], with_targets)[0]


# ---- what the tests feed the shared release checkpoints (../shared/tf1_checkpoints) -------
# Built here once for the tests and for the plan, so the two cannot drift apart.

def finetuned_parity_batches(causal):
    """(ids, feeds) of `test_convert_tf1.test_finetuned_parity_with_oracle`: id rows
    `[0, history.., 0]` of several shapes; the causal graphs are fed one more (target)
    column, which they drop themselves."""
    rng = np.random.RandomState(11)
    batches = []
    for batch, length in ((1, 6), (3, 6), (1, 17), (3, 32)):
        history = rng.randint(1, 175, (batch, length - 2))
        zeros = np.zeros((batch, 1), "int32")
        batches.append(np.concatenate([zeros, history, zeros], axis=1).astype("int32"))
    feeds = [np.concatenate([ids, np.ones((len(ids), 1), "int32")], 1) if causal else ids
             for ids in batches]
    return batches, feeds


def with_short_histories(histories, lengths):
    """`histories` and, after them, the first ones cut to `lengths` (the causal loaders
    right-pad such shorter sources with 0)."""
    return histories + [h[:n] for h, n in zip(histories[:len(lengths)], lengths)]


def reversed_finetune_csv(path):
    """Writes the demo fine-tuning CSV with its lines reversed at `path`, returns it."""
    with open(FINETUNE_CSV) as handle:
        lines = [line for line in handle.read().splitlines() if line.strip()]
    with open(path, "w") as handle:
        handle.write("\n".join(reversed(lines)) + "\n")
    return path


def reversed_finetune_feed(path, family):
    """(items, targets, sources, feed) for the reversed fine-tuning CSV at `path`: its
    release vocabularies, its users' raw sources (for the causal family also three shorter
    ones) and the ids the release's loader feeds for them."""
    items, targets = release_finetune_vocabularies(path)
    sources = demo_sources(path)
    if family == "causal":
        sources += [s[-n:] for s, n in zip(sources[:3], (2, 5, 8))]
    index = {token: i for i, token in enumerate(items)}
    feed = release_feed([[index[t] for t in s] for s in sources], family, 9)
    return items, targets, sources, feed


_shared_planned = []


def _plan_shared_checkpoints():
    """Plans, once, every feed the suite's tests give the three fine-tuned release
    checkpoints (test_convert_tf1, test_export), so each graph runs in one process."""
    if _shared_planned or not all(os.path.exists(p + ".index") for p in FINETUNED.values()):
        return
    _shared_planned.append(True)
    import tempfile

    from peterrec_tf.convert_tf1 import release_token_order
    histories = demo_histories(release_token_order(PRETRAIN_CSV))
    with tempfile.TemporaryDirectory() as tmp:
        csv = reversed_finetune_csv(os.path.join(tmp, "finetune_reversed.csv"))
        for name, prefix in FINETUNED.items():
            causal = name.startswith("cau")
            family = "causal" if causal else "noncausal"
            feeds = [release_feed(histories, family, 9), reversed_finetune_feed(csv, family)[3]]
            if causal:  # the loader right-pads shorter histories; non-causal rows are not cut
                feeds.append(release_feed(with_short_histories(histories, (1, 4, 6, 8)),
                                          family, 9))
            plan(prefix, finetuned_parity_batches(causal)[1] + feeds)
