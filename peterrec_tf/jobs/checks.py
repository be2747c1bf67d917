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



def check_apart(model_dir, data_dir):
    """Refuse a --model_dir that is the --data_dir, or inside it, or holds it: the job's
    files would mix with the preparation's, and preparing that data again (--overwrite)
    would delete the model with it."""
    import os

    model, data = os.path.realpath(model_dir), os.path.realpath(data_dir)
    if os.path.commonpath([model, data]) in (model, data):
        where = ("is" if model == data else
                 "is inside" if os.path.commonpath([model, data]) == data else "holds")
        raise ValueError(f"--model_dir={model_dir} {where} --data_dir={data_dir}: a model "
                         "directory and a prepared dataset must be separate directories "
                         "(preparing the data again would delete the model); choose another "
                         "--model_dir")


def split_label_counts(data_dir, split, feature):
    """{class or target id: records} of a split, read from its records (the content, not
    metadata.json)."""
    import numpy as np
    import tensorflow as tf

    from pipelines.inputs import shard_files, reading

    spec = {feature: tf.io.FixedLenFeature([], tf.int64)}
    counts = np.zeros(0, dtype=np.int64)
    dataset = tf.data.TFRecordDataset(shard_files(data_dir, split), compression_type="GZIP")
    with reading(data_dir, (split,)):
        for batch in dataset.batch(65536):
            labels = tf.io.parse_example(batch, spec)[feature].numpy()
            found = np.bincount(labels, minlength=len(counts))
            found[:len(counts)] += counts
            counts = found
    return {int(label): int(n) for label, n in enumerate(counts) if n}


def check_classes(data_dir, meta, splits, log=print, warn_only=()):
    """Refuse a classification split whose records hold one class only, or an item
    recommendation split whose records hold one target only (read from the records):
    training on it learns nothing, and a model that always answers that class (ranks that
    target first) scores accuracy (HR@1) 1.0 there. Splits in `warn_only` (validation,
    which only selects) are reported instead. Returns {split: {id: records}}."""
    from pipelines import schema
    from pipelines.inputs import read_data_vocab

    if meta["task"] not in ("classify", "item_rec"):
        return {}
    classify = meta["task"] == "classify"
    feature, vocab, kind = ((schema.LABEL, "labels.txt", "class") if classify
                            else (schema.TARGET, "targets.txt", "target"))
    try:
        names = read_data_vocab(data_dir, vocab, meta)
    except (OSError, ValueError):
        names = None
    found = {}
    for split in splits:
        counts = found[split] = split_label_counts(data_dir, split, feature)
        if len(counts) >= 2:
            continue
        which = ", ".join(f"{names[c] if names and c < len(names) else c} ({n} records)"
                          for c, n in counts.items()) or "none"
        what = ("nothing to learn" if split == "train" else
                "accuracy would be 1.0 for a model that always answers it" if classify else
                "HR@1 would be 1.0 for a model that always ranks it first")
        message = (f"{data_dir}: the {split} split holds one {kind} only ({which}): {what}; "
                   f"prepare data whose users carry two {kind}s at least in every split")
        if split in warn_only:
            log(f"warning: {message}")
        else:
            raise ValueError(message)
    check_test_seen_in_train(data_dir, found, names, kind)
    return found


def check_test_seen_in_train(data_dir, found, names, kind):
    """Refuse a test split none of whose classes (targets) the train split holds: a value
    unique to each user (`--label_col` naming an id column) splits into disjoint sets, and
    the test figures of a model that can only answer what it was trained on say nothing."""
    train, test = found.get("train"), found.get("test")
    if not train or not test or set(train) & set(test):
        return
    kinds = kind + ("es" if kind == "class" else "s")
    shown = ", ".join(repr(names[c]) if names and c < len(names) else str(c)
                      for c in sorted(test)[:5])
    raise ValueError(
        f"{data_dir}: none of the test split's {len(test)} {kinds} ({shown}"
        f"{', ...' if len(test) > 5 else ''}) is in the train split's {len(train)}: a model "
        f"answers only {kinds} it was trained on, so its test figures would say nothing; "
        + ("is the label a value of each user's own (--label_col naming an id column)? "
           if kind == "class" else "are there too few target records for the targets? ")
        + f"Prepare data whose test users share their {kinds} with training users")


def split_identity(meta):
    """What decides which records of a preparation fall in which split, as a training job
    records it (flags.json `data_split`): the split seed, how the split is drawn
    (`split_by`, where the format records it), and the checksums of the files that name
    the users (every source but the event log; by content, whatever the files are called).
    For fine-tuning data the seed draws users (or lines) into train/validation/test; the
    event log and --cutoff_time also move users near the split boundaries (only users with
    history are ranked), which is not provable from these and is left to the warning."""
    sources = meta.get("source_checksums") or {}
    return {"split_seed": (meta.get("seeds") or {}).get("split", meta.get("seed")),
            "split_by": (meta.get("stats") or {}).get("split_by"),
            "task": meta.get("task"),
            "table_checksums": sorted(v for k, v in sources.items()
                                      if not k.startswith("events:"))}


# share of the split scored that may be training records before its figures are refused:
# a re-drawn split holds about 70% (the train split's share), a table of other users none;
# at 5% a model that answers its training records right moves accuracy (HR) by up to five
# points, more than the differences the figures are read for
SEEN_SHARE_REFUSED = 0.05


def check_evaluated_apart(model_dir, data_dir, meta, split, log=print, vocabs=None):
    """Refuse to score (or further fine-tune) a model on a split holding the records it
    trained on. The same table files (by checksum) split with another seed re-draw the
    users (fine-tuning data, whose seed draws the split; next-item data is split by
    position, whatever the seed): about 70% of the test users were training users, a
    figure that looks right and is not. Other fine-tuning data than the model's own
    preparation is compared by its records while the model's training data (config.json's
    `data_dir`, the preparation of its `data_fingerprint`) is at hand: when
    SEEN_SHARE_REFUSED of `split`'s records or more are identical to a record of its train
    split (by meaning, `record_overlap`: history items and label or target by token, or
    user and label or target for data with real user keys; a copy of the table with other
    line ends, a BOM, rows reordered or added; for next-item data, a history and next item
    inside a training sequence: a log cut earlier, `sequence_overlap`), it is refused too;
    fewer, or none, or
    data that cannot be compared, is used with a warning saying which. Models whose
    flags.json records no data (converted, older) are not checked. Returns (whether the
    data is the preparation the model trained on, None: unknown; how many of `split`'s
    records are training records, None: not compared). `vocabs`: the model's own
    (`load_model_dir`), to read the digests it keeps when its training data is gone."""
    import os

    from peterrec_tf.training.results import read_json

    path = os.path.join(model_dir, "flags.json")
    if not os.path.exists(path):
        return None, None
    flags = read_json(path)
    trained = flags.get("data_fingerprint")
    if trained is None:
        return None, None
    if trained == meta.get("fingerprint"):
        return True, None
    recorded, current = flags.get("data_split"), split_identity(meta)
    if (recorded and current["task"] != "pretrain" and current["table_checksums"]
            and recorded.get("table_checksums") == current["table_checksums"]
            and recorded.get("split_seed") != current["split_seed"]):
        raise ValueError(
            f"{data_dir} splits the users of the table {model_dir} was trained on with "
            f"--seed={current['split_seed']}, the model's training data with "
            f"--seed={recorded.get('split_seed')}: most of its {split} users were in the "
            "model's training split, so its figures would not be held-out ones; use a "
            f"preparation with --seed={recorded.get('split_seed')} (the model's data: "
            f"{flags.get('data_dir')})")
    seen, said = check_records_apart(model_dir, flags, data_dir, meta, split, vocabs)
    log(f"warning: {data_dir} (fingerprint {meta.get('fingerprint')}) is not the preparation "
        f"{model_dir} was trained on (fingerprint {trained}, {flags.get('data_dir')}): "
        + (said or f"make sure its {split} records were not in the model's training data"))
    return False, seen


def kept_records_seen(model_dir, data_dir, meta, split, vocabs):
    """(seen, total) from the digests a fine-tuned model keeps of its training split
    (`record_overlap.TRAINING_RECORDS_FILE`, verified against config.json), for when its
    training data is gone or prepared again; (None, why not) when it keeps none or they
    cannot be compared. `vocabs`: the model's own (`load_model_dir`)."""
    import os

    from peterrec_tf import model_files
    from peterrec_tf.jobs.record_overlap import TRAINING_RECORDS_FILE, kept_records_seen as seen

    config = model_files.read_config(model_dir)
    if TRAINING_RECORDS_FILE not in (config.get("checksums") or {}):
        return None, f"{model_dir} keeps no digests of its training records"
    if vocabs is None:
        return None, "the model's vocabularies were not read"
    model_files.verify_files(model_dir, config, names=[TRAINING_RECORDS_FILE])
    return seen(data_dir, meta, split, os.path.join(model_dir, TRAINING_RECORDS_FILE), vocabs)


def model_training_data(model_dir, flags, task):
    """(directory, metadata.json) of the preparation a model trained on, while it is there
    as it was (its fingerprint) and holds `task` data; else (None, why not). The path is
    config.json's (made absolute when the model was saved), not flags.json's (as given:
    relative to wherever the job ran)."""
    import os

    from peterrec_tf import model_files
    from pipelines.inputs import read_metadata

    try:
        where = model_files.read_config(model_dir).get("data_dir")
    except (OSError, ValueError):
        where = None
    where = where or flags.get("data_dir")
    if not where or not os.path.exists(os.path.join(where, "metadata.json")):
        return None, f"its training data ({where}) is gone"
    try:
        train_meta = read_metadata(where)
    except (OSError, ValueError) as error:
        return None, f"its training data cannot be read ({error})"
    if train_meta.get("fingerprint") != flags.get("data_fingerprint"):
        return None, (f"{where} was prepared again since the model trained on it (fingerprint "
                      f"{train_meta.get('fingerprint')})")
    if train_meta.get("task") != task:
        return None, f"{where} holds {train_meta.get('task')} data, not {task} data"
    return where, train_meta


def check_records_apart(model_dir, flags, data_dir, meta, split, vocabs=None):
    """(records of `split` identical to a record the model trained on, what the warning
    says of them), or (None, why they could not be compared); `ValueError` when they are
    SEEN_SHARE_REFUSED of the split or more. Without the model's training data, the
    digests a fine-tuned model keeps are read through its vocabularies `vocabs`."""
    from peterrec_tf.jobs.record_overlap import (KEPT_PARTS, TRAINING_RECORDS_FILE,
                                                 compared_parts, records_seen)

    train_dir, train_meta = model_training_data(model_dir, flags, meta["task"])
    if train_dir is not None:
        seen, total = records_seen(data_dir, meta, split, train_dir, train_meta)
        with_user, with_history = compared_parts(meta, train_meta)
        source = f"the train split of {train_dir}, the data {model_dir} was trained on"
        instead = f"score the model on its own preparation ({train_dir})"
    else:
        gone = train_meta
        seen, total = kept_records_seen(model_dir, data_dir, meta, split, vocabs)
        with_user, with_history = KEPT_PARTS
        if seen is None:
            return None, (f"its {split} records could not be compared with the model's "
                          f"training records: {gone}, and {total}; make sure they were "
                          "not in its training data")
        source = (f"the train split {model_dir} was trained on (by the digests it keeps, "
                  f"{TRAINING_RECORDS_FILE}: {gone})")
        instead = "score the model on the held-out splits of its own training data"
    share = seen / max(total, 1)
    same = ["user"] * with_user + ["history"] * with_history + [
        {"classify": "label", "pretrain": "next item"}.get(meta["task"], "target")]
    what = (f"{seen} of its {total} {split} records ({share:.0%}) "
            + (f"{'is a record' if seen == 1 else 'are records'} of "
               if meta["task"] != "pretrain" else
               f"{'is' if seen == 1 else 'are'} inside the training sequences of ")
            + f"{source} (the same " + ", ".join(same[:-1]) + " and " + same[-1] + ")")
    if seen and share >= SEEN_SHARE_REFUSED:
        seed = (flags.get("data_split") or {}).get("split_seed")
        instead += (f", or prepare this table with the model's --seed={seed}"
                    if meta["task"] != "pretrain" else
                    ", or score it on a log whose held-out items come after its training "
                    "events (a log cut earlier holds out items the model trained on)")
        raise ValueError(
            f"{data_dir}: {what}: its figures would not be held-out ones (at "
            f"{SEEN_SHARE_REFUSED:.0%} or more this is refused); {instead}")
    if seen:
        return seen, f"{what}; its figures are not wholly held-out ones"
    return seen, f"none of its {total} {split} records is a record of {source}"
