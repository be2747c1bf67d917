"""Checks every job runs before it touches anything: the data holds examples for each
split it reads, and no ranking cut-off can score every example a hit.

A split with no records would train an untrained model for "0 training windows" or
average a metric over nothing; a cut-off `k` at or above the number of items ranked
makes HR@k 1.0 for any model (the true item's rank is below the number of its
competitors plus one), so a model selected or reported by it is chosen by nothing.
Both are refused here, with what emptied the split or how to make the metric mean
something.
"""


def check_split_records(data_dir, meta, splits):
    """`ValueError` naming the dataset, the empty split and (when metadata.json says) the
    threshold that emptied it, unless every split in `splits` holds records."""
    counts = meta.get("splits", {})
    for split in splits:
        if counts.get(split, 0) > 0:
            continue
        stats = meta.get("stats", {})
        why = ""
        if stats.get("users_too_short"):
            why = (f"; {stats['users_too_short']} of {stats.get('users', '?')} users were "
                   f"dropped as shorter than the minimum length {stats.get('min_length', '?')}")
        raise ValueError(f"{data_dir}: the {split} split holds no records (metadata.json: "
                         f"splits.{split} = {counts.get(split, 0)}{why}): nothing to "
                         f"{'train on' if split == 'train' else 'evaluate'}; "
                         "prepare it again from more data or with a lower minimum "
                         "(python -m pipelines.prepare --min_seq_len)")


def ranked_items(meta, ranking, num_candidates):
    """(how many items each example ranks its true item among, what they are), or None for
    classification. Sampled: the true item and num_candidates - 1 negatives; full: every
    id but 0 (padding / <UNK>) of the vocabulary or of the targets."""
    if meta["task"] == "classify":
        return None
    universe = meta["num_items"] if meta["task"] == "pretrain" else meta["num_targets"]
    kind = "items" if meta["task"] == "pretrain" else "targets"
    if ranking == "sampled":
        return num_candidates, (f"--num_candidates={num_candidates}: the true item and "
                                f"{num_candidates - 1} sampled negatives")
    return universe - 1, f"full ranking of the {universe - 1} {kind}"


def check_ranking(data_dir, meta, ranking, num_candidates, ks, flag="--ks"):
    """Refuse sampled candidates the data cannot supply and any k >= the items ranked
    (HR@k would be 1.0 for every model); the advice given never leads into either.
    Classification needs two classes at least (with one, accuracy is 1.0 for any model)."""
    if meta["task"] == "classify":
        if meta.get("num_classes", 2) < 2:
            raise ValueError(f"{data_dir} has {meta['num_classes']} class(es): accuracy would be "
                             "1.0 for any model; prepare data with two classes at least")
        return
    universe = meta["num_items"] if meta["task"] == "pretrain" else meta["num_targets"]
    kind = "items" if meta["task"] == "pretrain" else "targets"
    largest = max(int(k) for k in ks)
    most = universe - 1  # ids that can be ranked: all but 0
    if ranking == "sampled" and num_candidates > most:
        advice = (f"use --num_candidates between {largest + 1} and {most}, or full ranking"
                  if largest + 1 <= most else
                  f"and every {flag} must be below {most}: lower {flag}")
        raise ValueError(f"--num_candidates: {num_candidates} candidates need at least "
                         f"{num_candidates + 1} ids, {data_dir} has {universe} {kind}; {advice}")
    count, what = ranked_items(meta, ranking, num_candidates)
    trivial = sorted(int(k) for k in ks if int(k) >= count)
    if trivial:
        if count - 1 >= 1:
            fix = f"use {flag} below {count}"
            if ranking == "sampled" and largest + 1 <= most:
                fix += f", or --num_candidates above {largest} (at most {most})"
            elif ranking == "sampled":
                fix += " (the data has too few ids for more candidates)"
        else:
            fix = "the data has too few ids to rank"
        raise ValueError(f"{flag}={','.join(str(int(k)) for k in ks)}: k={trivial[0]} is not "
                         f"below the {count} items ranked ({what}), so every example would be "
                         f"a hit (HR@{trivial[0]} = 1.0 for any model); {fix}")

