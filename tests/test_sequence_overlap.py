"""`sequence_overlap`: which next-item records lie inside training sequences, by vectorised
rolling hashes, checked against the rule spelled out in plain Python on random data (users
with and without keys, windows cut anywhere, repeated runs, ids the training side lacks,
several records a user), and the cases the rule is for."""

import random

import numpy as np

from peterrec_tf.jobs.sequence_overlap import transitions_seen


def batches(rows, batch=7):
    """`record_overlap.parsed_batches`-like tuples from [(user, items, target or None)]."""
    def generate():
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            items = np.array([i for _, seq, _ in part for i in seq], np.int64)
            bounds = np.cumsum([0] + [len(seq) for _, seq, _ in part]).astype(np.int64)
            targets = (None if part[0][2] is None
                       else np.array([t for _, _, t in part], np.int64))
            yield np.array([u for u, _, _ in part], object), items, bounds, targets
    return generate


def by_the_rule(scored, training, with_user):
    """The rule in plain Python: history + [target] is a window of the same user's training
    sequence (with user keys) or begins some training sequence (without)."""
    seen = 0
    for user, history, target in scored:
        whole = list(history) + [target]
        for other, sequence, _ in training:
            if with_user and other == user and any(
                    list(sequence[i:i + len(whole)]) == whole
                    for i in range(len(sequence) - len(whole) + 1)):
                seen += 1
                break
            if not with_user and list(sequence[:len(whole)]) == whole:
                seen += 1
                break
    return seen


def test_the_vectorised_comparison_follows_the_rule_on_random_data():
    rng = random.Random(4)
    for trial in range(60):
        with_user = trial % 2 == 0
        items = rng.choice([3, 6, 40])  # few items: repeated runs and shared prefixes
        training, scored = [], []
        for u in range(rng.randrange(1, 12)):
            user = f"u{u}".encode()
            sequence = [rng.randrange(1, items) for _ in range(rng.randrange(1, 15))]
            training.append((user, sequence, None))
            for _ in range(rng.choice([1, 1, 2])):
                cut = rng.randrange(0, len(sequence) + 2)
                start = rng.randrange(0, max(cut - 1, 1)) if rng.random() < 0.5 else 0
                history = sequence[start:cut][:-1] or [rng.randrange(1, items)]
                if rng.random() < 0.3:
                    history = [rng.randrange(-1, items) for _ in history]  # -1: unknown there
                target = sequence[cut - 1] if 0 < cut <= len(sequence) else rng.randrange(1, items)
                owner = user if rng.random() < 0.8 else f"u{rng.randrange(12)}".encode()
                scored.append((owner, history, target))
        rng.shuffle(scored)
        expected = by_the_rule(scored, training, with_user)
        assert transitions_seen(batches(scored), batches(training), with_user) == (
            expected, len(scored)), trial


def test_the_cases_the_rule_is_for():
    training = [(b"a", [5, 6, 7, 8, 9, 10], None), (b"b", [1, 2, 3], None)]
    cases = [
        ((b"a", [5, 6, 7], 8), True, True),      # a log cut earlier: a prefix
        ((b"a", [6, 7, 8], 9), True, False),     # cut at both ends: a window, same user only
        ((b"b", [5, 6, 7], 8), False, True),     # another user's run: keyed, not seen
        ((b"a", [5, 6, 7, 8, 9, 10], 11), False, False),  # a later item: held out
        ((b"a", [9, 10], 5), False, False),      # not contiguous
    ]
    for record, keyed, unkeyed in cases:
        for with_user, expected in ((True, keyed), (False, unkeyed)):
            assert transitions_seen(batches([record]), batches(training), with_user) == (
                int(expected), 1), (record, with_user)
    # a run the user repeats is no match unless the whole record recurs
    repeats = [(b"a", [1, 2, 3, 1, 2, 3], None)]
    assert transitions_seen(batches([(b"a", [1, 2, 3, 1, 2, 3], 4)]), batches(repeats),
                            True) == (0, 1)
    assert transitions_seen(batches([(b"a", [2, 3, 1, 2], 3)]), batches(repeats),
                            True) == (1, 1)


def test_an_item_the_other_side_lacks_maps_to_its_unknown_id_and_an_answer_to_none():
    """The reference preparation stored an item its vocabulary lacks as id 0, so that item
    maps to 0 and still matches (review: 15 of 80 users went uncounted); an answer it lacks
    matches nothing."""
    from peterrec_tf.jobs.record_overlap import token_map

    ours, theirs = ["<UNK>", "a", "b", "new"], ["<UNK>", "b", "a"]
    assert list(token_map(ours, theirs, 0)) == [0, 2, 1, 0, -1]
    assert list(token_map(ours, theirs, -1)) == [0, 2, 1, -1, -1]
