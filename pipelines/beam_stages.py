"""The Beam pipeline's stages every format composes, and their worker functions (module
level, so every runner can pickle them): parsing byte ranges of a file (`parse_stage`),
the vocabulary in order of first appearance (`vocabulary_stage`, `first_seen_vocabulary`),
bad-line reports (`bad_stage`), leave-last-out records (`sequence_records_stage`), ranking
without gathering a group on one worker (`bucket_ranks`) and writing the shards with the
report the driver reads afterwards (`write_stage`, `beam_driver`)."""

import json

import numpy as np

from pipelines import canonical, fileio, schema, writer
from pipelines.dataset import SPLITS, leave_last_out
from pipelines.vocab import Vocabulary

REPORT = ".beam_report.json"
#: Records are ranked in buckets of 4096 lines' keys (`bucket_ranks`): one worker sorts a
#: bucket, never a whole split.
RECORD_BUCKET_SHIFT = canonical.POSITION_BITS + 12


# --- worker functions ---------------------------------------------------------------------

def order_user(grouped):
    """(user, [(line, stamp, item)]) -> (user, first line, items in the canonical order)."""
    user, events = grouped
    events = sorted(events, key=lambda e: e[0])  # file order
    order = canonical.order_events(np.zeros(len(events), dtype=np.int32),
                                   [stamp for _, stamp, _ in events])
    return user, events[0][0], [events[i][2] for i in order]


def first_occurrences(line, tokens):
    seen = set()
    for position, token in enumerate(tokens):
        if token not in seen:
            seen.add(token)
            yield token, canonical.record_key(line, position)


def oov_occurrences(line, tokens, index):
    for position, token in enumerate(tokens):
        if token not in index:
            yield token, (1, canonical.record_key(line, position))


def add_counts(values):
    values = list(values)
    return sum(c for c, _ in values), min(k for _, k in values)


def vocabulary_tokens(firsts, base):
    vocab = Vocabulary(base)
    for token in canonical.first_appearance_order(dict(firsts)):
        vocab.id(token)
    return vocab.tokens


def sequence_records(sequence, index, min_length, prefix=""):
    user, line, tokens = sequence
    splits, _ = leave_last_out([(user, [index.get(t, 0) for t in tokens])], min_length)
    key = canonical.record_key(line)
    for split in SPLITS:
        for record in splits[split]:
            yield prefix + split, key, record


# A record travels as (place, key, Record): place is the split, or "dataset/split" for
# multi-task sources; key orders the records of a place.

def _dataset_and_split(place):
    name, _, split = place.rpartition("/")
    return name, split


def bucket_ranks(keyed, label, bucket_of):
    """Rank (group, sort key, payload) elements within their group without gathering a
    group on one worker: elements go to buckets (`bucket_of(sort key)`, ordered like the
    keys), each bucket is sorted by one worker, and a small side table of bucket sizes
    gives each bucket's offset. Returns ((group, rank, group size, sort key, payload)
    elements, the {group: size} table)."""
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    bucketed = keyed | f"{label}Bucket" >> beam.Map(
        lambda e: ((e[0], bucket_of(e[1])), (e[1], e[2])))
    table = (bucketed
             | f"{label}One" >> beam.Map(lambda kv: (kv[0], 1))
             | f"{label}Sizes" >> beam.CombinePerKey(sum)
             | f"{label}AllSizes" >> beam.combiners.ToList()
             | f"{label}Offsets" >> beam.Map(bucket_offsets))
    ranked = (bucketed
              | f"{label}ByBucket" >> beam.GroupByKey()
              | f"{label}Rank" >> beam.FlatMap(rank_bucket, AsSingleton(table)))
    return ranked, table | f"{label}Totals" >> beam.Map(lambda t: t["totals"])


def bucket_offsets(sizes):
    """{"offsets": {(group, bucket): elements in the group's earlier buckets},
    "totals": {group: elements}} from ((group, bucket), size) pairs."""
    offsets, totals = {}, {}
    for (group, bucket), size in sorted(sizes):
        offsets[(group, bucket)] = totals.get(group, 0)
        totals[group] = totals.get(group, 0) + size
    return {"offsets": offsets, "totals": totals}


def rank_bucket(grouped, table):
    (group, bucket), members = grouped
    offset, total = table["offsets"][(group, bucket)], table["totals"][group]
    for i, (key, payload) in enumerate(sorted(members, key=lambda m: m[0])):
        yield group, offset + i, total, key, payload


def encode_record(ranked, num_shards):
    """A ranked (place, rank, records of the place, key, Record) -> its shard and bytes: rank
    mod the place's shard count picks the shard (the writer's round-robin)."""
    place, rank, total, _, record = ranked
    shards = canonical.shard_count(total, num_shards)
    yield (place, rank % shards, shards), (rank, schema.encode(
        record.item_ids, record.user_id, record.target, record.label))


def write_shard(grouped, directory):
    (place, shard, shards), records = grouped
    name, split = _dataset_and_split(place)
    records = sorted(records, key=lambda r: r[0])
    folder = fileio.join(directory, name) if name else directory
    fileio.makedirs(folder)
    fileio.write_tfrecords(fileio.join(folder, writer.shard_name(split, shard, shards)),
                           [serialized for _, serialized in records])
    yield place, len(records)


def record_stats(keyed, max_len):
    name, _ = _dataset_and_split(keyed[0])
    return name, canonical.RecordStats(max_len).add(keyed[2].item_ids).as_tuple()


def seen_items(keyed):
    """(dataset, id) of what training covers (canonical.Quality's rule)."""
    place, _, record = keyed
    name, split = _dataset_and_split(place)
    if split == "train" and record.label is None:
        for value in set(record.item_ids if record.target is None else (record.target,)):
            yield name, value


def test_targets(keyed):
    place, _, record = keyed
    name, split = _dataset_and_split(place)
    if split == "test" and record.label is None:
        yield name, record.target


def unseen_tests(grouped):
    """((dataset, target id), {"seen", "tests"}) -> (dataset, (unseen tests, tests))."""
    (name, target), parts = grouped
    tests = sum(parts["tests"])
    if tests:
        yield name, (tests if target == 0 or not list(parts["seen"]) else 0, tests)


def add_pairs(pairs):
    pairs = list(pairs)
    return sum(a for a, _ in pairs), sum(b for _, b in pairs)


def write_report(_, directory, **parts):
    fileio.write_bytes(fileio.join(directory, REPORT), json.dumps(parts).encode("utf-8"))

# --- stages ------------------------------------------------------------------------------

def parse_stage(pipeline, plan, parse, *args, outputs=("bad", "last"), label=""):
    """The file's byte ranges (`text_lines.plan_chunks`) spread over the workers and parsed
    by `parse(chunk, *args)`: its main output (rows) and the tagged `outputs` (`label`:
    one file's stage names)."""
    import apache_beam as beam

    return (pipeline
            | f"{label}Chunks" >> beam.Create(plan)
            | f"{label}Spread" >> beam.Reshuffle()
            | f"{label}Parse" >> beam.FlatMap(parse, *args).with_outputs(*outputs, main="rows"))


def sequence_records_stage(sequences, index, min_length, parts, prefix=""):
    """Leave-last-out records of (user, key, tokens) sequences; counts the users too short
    into `parts["too_short"]`."""
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    parts["too_short"] = (sequences
                          | "TooShort" >> beam.Map(lambda s: int(len(s[2]) < min_length))
                          | "TooShortSum" >> beam.CombineGlobally(sum))
    return sequences | "Records" >> beam.FlatMap(sequence_records, AsSingleton(index),
                                                 min_length, prefix)


def bad_stage(parsed, header_number, keep, label=""):
    """Bad-line reports that count (no trailing blank lines): their number and the first
    `keep` by line, plus the last non-blank line (`label`: one file's stage names)."""
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    last = parsed.last | f"{label}LastLine" >> beam.CombineGlobally(
        lambda xs: max(list(xs) + [header_number]))
    bad_lines = (parsed.bad
                 | f"{label}NotTrailing" >> beam.Filter(lambda r, end: not r[2] or r[0] < end,
                                                        end=AsSingleton(last)))
    return {"last": last,
            "bad_count": bad_lines | f"{label}BadCount" >> beam.combiners.Count.Globally(),
            "bad_first": bad_lines | f"{label}BadFirst" >> beam.combiners.Top.Smallest(keep)}


def first_seen_vocabulary(occurrences, reserved, label=""):
    """(tokens, token -> id index) from (token, first-appearance key) pairs: ids in order of
    first appearance after `reserved`, by one `min` combiner per token and a sort."""
    import apache_beam as beam

    tokens = (occurrences
              | f"{label}Earliest" >> beam.CombinePerKey(min)
              | f"{label}AllFirst" >> beam.combiners.ToList()
              | f"{label}Vocabulary" >> beam.Map(vocabulary_tokens, reserved))
    index = tokens | f"{label}Index" >> beam.Map(lambda ts: {t: i for i, t in enumerate(ts)})
    return tokens, index


def vocabulary_stage(pipeline, sequences, items):
    """Item ids from (user, key, tokens) sequences: (index side input, report parts)."""
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    if items.frozen:
        tokens = pipeline | "GivenVocab" >> beam.Create([items.tokens])
        index = tokens | "Index" >> beam.Map(lambda ts: {t: i for i, t in enumerate(ts)})
    else:
        tokens, index = first_seen_vocabulary(
            sequences | "FirstSeen" >> beam.FlatMap(lambda s: first_occurrences(s[1], s[2])),
            items.tokens)
    oov = (sequences
           | "OOV" >> beam.FlatMap(lambda s, ix: oov_occurrences(s[1], s[2], ix),
                                   ix=AsSingleton(index))
           | "OOVCount" >> beam.CombinePerKey(add_counts)
           | "OOVAll" >> beam.combiners.ToList()
           | "OOVSummary" >> beam.Map(lambda found: canonical.oov_summary(dict(found))))
    users = sequences | "Users" >> beam.combiners.Count.Globally()
    return index, {"tokens": tokens, "oov": oov, "users": users}


def write_stage(pipeline, records, tmp, num_shards, max_len, parts):
    """Rank, shard and write (place, key, Record)s; then write the report of `parts`."""
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    ranked, parts["counts"] = bucket_ranks(records, "Keys", lambda key: key >> RECORD_BUCKET_SHIFT)
    parts["record_stats"] = (records
                             | "RecordStats" >> beam.Map(record_stats, max_len)
                             | "MergeStats" >> beam.CombinePerKey(canonical.merge_record_stats)
                             | "AllStats" >> beam.combiners.ToList()
                             | "StatsByDataset" >> beam.Map(dict))
    # test targets never seen in training, counted per (dataset, target id): no worker
    # holds the test split's targets
    seen = (records
            | "Seen" >> beam.FlatMap(seen_items)
            | "SeenOnce" >> beam.Distinct()
            | "SeenFlag" >> beam.Map(lambda key: (key, True)))
    tests = (records
             | "TestTargets" >> beam.FlatMap(test_targets)
             | "TestOne" >> beam.Map(lambda key: (key, 1))
             | "TestCount" >> beam.CombinePerKey(sum))
    parts["tests"] = ({"seen": seen, "tests": tests}
                      | "SeenOrNot" >> beam.CoGroupByKey()
                      | "Unseen" >> beam.FlatMap(unseen_tests)
                      | "UnseenSum" >> beam.CombinePerKey(add_pairs)
                      | "AllUnseen" >> beam.combiners.ToList()
                      | "UnseenByDataset" >> beam.Map(dict))
    parts["written"] = (ranked
                        | "Encode" >> beam.FlatMap(encode_record, num_shards)
                        | "ByShard" >> beam.GroupByKey()
                        | "Write" >> beam.FlatMap(write_shard, tmp)
                        | "Written" >> beam.CombinePerKey(sum)
                        | "AllWritten" >> beam.combiners.ToList())
    (pipeline
     | "Once" >> beam.Create([None])
     | "Report" >> beam.Map(write_report, tmp,
                            **{name: AsSingleton(pc) for name, pc in parts.items()}))
