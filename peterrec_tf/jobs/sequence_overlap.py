"""Which next-item records of one preparation lie inside the training sequences of another.

Next-item data is split by position (each user's newest items held out), so a copy of the
model's log holds out the items the model held out, and a later log holds out newer ones;
but a log cut earlier (fewer events a user, an earlier `--cutoff_time`), or cut at both ends
(a "last N events" export), holds out items inside the model's training sequences. A record
(history, target) of the scored split counts as trained on when history + [target]:
- occurs contiguously in the same user's training sequence, where both preparations hold
  the source's own user keys (`record_overlap.compared_parts`): a window of the user's
  own events, wherever it was cut;
- begins a training sequence otherwise (made-up ids such as release-CSV line numbers name
  no user, and a short run of items shared by two users is no evidence; the start of a
  sequence anchors it).
A repeated run inside one user's history is no false match: the whole scored sequence
must recur, not its last items.

Sequences are compared by 64-bit polynomial hashes (mod 2**64, items first mixed by
splitmix64), computed for every position of a batch at once with numpy, so a comparison
is one vectorised pass over the training split; memory is the scored split's keys (24
bytes a record).
"""

import hashlib

import numpy as np

BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2**64
BASE_INVERSE = np.uint64(pow(int(BASE), -1, 2 ** 64))


def mix(values):
    """splitmix64 of a uint64 array (a bijection: distinct inputs, distinct outputs)."""
    with np.errstate(over="ignore"):
        x = values + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


_POWERS = {}


def powers(base, count):
    """[base**0, ..., base**(count-1)] mod 2**64 (cached and grown as needed)."""
    known = _POWERS.get(int(base), np.ones(1, np.uint64))
    if len(known) < count:
        grown = [int(v) for v in known]
        while len(grown) < count:
            grown.append(grown[-1] * int(base) % 2 ** 64)
        known = _POWERS[int(base)] = np.array(grown, np.uint64)
    return known[:count]


def running_sums(values, bounds):
    """(S, position): `S[i]` = sum over the row's items j <= i of mix(item_j) * BASE**-j, and
    each item's position in its row; a window's hash is BASE**end * (S[end] - S[start-1])."""
    position = np.arange(len(values)) - np.repeat(bounds[:-1], np.diff(bounds))
    width = int(position.max()) + 1 if len(values) else 1
    with np.errstate(over="ignore"):
        # an id of -1 (a token the other side lacks) mixes to a value no id >= 0 gives
        terms = mix(values.astype(np.int64).astype(np.uint64) + np.uint64(1)) \
            * powers(BASE_INVERSE, width)[position]
        total = np.cumsum(terms, dtype=np.uint64)
        before = np.concatenate([np.zeros(1, np.uint64), total])[
            np.repeat(bounds[:-1], np.diff(bounds))]
        return total - before, position


def keys(window_hashes, lengths, users):
    """One uint64 key of (window hash, its length, user hash)."""
    with np.errstate(over="ignore"):
        return mix(window_hashes ^ mix(lengths.astype(np.uint64)) ^ users)


def user_hashes(users, with_user):
    """uint64 per user id (bytes); 0 for every row without user keys."""
    if not with_user:
        return np.zeros(len(users), np.uint64)
    return np.array([int.from_bytes(hashlib.blake2b(u, digest_size=8).digest(), "little")
                     for u in users], dtype=np.uint64)


def scored_keys(batches, with_user):
    """(keys, user hashes, lengths) of every scored record's history + [target]."""
    found = ([], [], [])
    for users, items, bounds, targets in batches:
        values = np.insert(items, bounds[1:], targets)
        bounds = bounds + np.arange(len(bounds))
        sums, position = running_sums(values, bounds)
        ends = bounds[1:] - 1
        lengths = np.diff(bounds)
        hashes = sums[ends] * powers(BASE, int(lengths.max()) + 1)[position[ends]]
        owners = user_hashes(users, with_user)
        found[0].append(keys(hashes, lengths, owners))
        found[1].append(owners)
        found[2].append(lengths)
    return tuple(np.concatenate(part) if part else np.zeros(0, np.uint64) for part in found)


def prefixes_seen(training_batches, record_keys):
    """Boolean per record: its key is the key of a prefix of some training sequence."""
    unique, inverse = np.unique(record_keys, return_inverse=True)
    hit = np.zeros(len(unique), bool)
    for users, items, bounds, _ in training_batches:
        if not len(items) or not len(unique):
            continue
        sums, position = running_sums(items, bounds)
        hashes = sums * powers(BASE, int(position.max()) + 1)[position]
        prefix = keys(hashes, position + 1, np.zeros(len(items), np.uint64))
        at = np.minimum(np.searchsorted(unique, prefix), len(unique) - 1)
        hit[at[unique[at] == prefix]] = True
    return hit[inverse]


def windows_seen(training_batches, record_keys, owners, lengths):
    """Boolean per record: the same user's training sequence holds a window equal to the
    record (one record a user is the rule; further records of a user are checked in further
    rounds over the same batches)."""
    order = np.lexsort((np.arange(len(owners)), owners))
    owners_sorted = owners[order]
    first = np.searchsorted(owners_sorted, owners_sorted)
    rank = np.empty(len(owners), np.int64)
    rank[order] = np.arange(len(owners)) - first
    seen = np.zeros(len(owners), bool)
    for round_ in range(int(rank.max()) + 1 if len(rank) else 0):
        chosen = np.flatnonzero(rank == round_)
        by_user = chosen[np.argsort(owners[chosen])]
        users_sorted = owners[by_user]
        for users, items, bounds, _ in training_batches():
            if not len(items):
                continue
            row_users = user_hashes(users, True)
            at = np.minimum(np.searchsorted(users_sorted, row_users), len(users_sorted) - 1)
            has = users_sorted[at] == row_users
            record = np.where(has, by_user[at], -1)
            seen |= windows_in_rows(items, bounds, record, record_keys, lengths, owners)
    return seen


def windows_in_rows(items, bounds, record, record_keys, lengths, owners):
    """Boolean per record: a row whose record it is holds a window with the record's key."""
    seen = np.zeros(len(record_keys), bool)
    row_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    wanted = record[row_of]
    sums, position = running_sums(items, bounds)
    length = np.where(wanted >= 0, lengths[np.maximum(wanted, 0)], 0)
    ends = np.flatnonzero((wanted >= 0) & (position + 1 >= length))
    if not len(ends):
        return seen
    start_before = ends - length[ends]  # the index before the window, in this row or not
    earlier = np.where(position[ends] + 1 > length[ends], sums[np.maximum(start_before, 0)],
                       np.uint64(0))
    with np.errstate(over="ignore"):
        hashes = (sums[ends] - earlier) * powers(BASE, int(position.max()) + 1)[position[ends]]
    match = keys(hashes, length[ends], owners[wanted[ends]]) == record_keys[wanted[ends]]
    seen[wanted[ends][match]] = True
    return seen


def transitions_seen(scored, training, with_user):
    """(scored records trained on, scored records): `scored()` and `training()` yield
    `record_overlap.parsed_batches` of the scored split (with targets, ids already in the
    training preparation's numbering) and of the training split."""
    record_keys, owners, lengths = scored_keys(scored(), with_user)
    if with_user:
        seen = windows_seen(training, record_keys, owners, lengths)
    else:
        seen = prefixes_seen(training(), record_keys)
    return int(seen.sum()), len(record_keys)
