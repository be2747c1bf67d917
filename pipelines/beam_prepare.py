"""Data preparation as an Apache Beam pipeline: `prepare --runner=DirectRunner|FlinkRunner|
SparkRunner|DataflowRunner [Beam pipeline options]`.

Formats: `interactions`, `peterrec_pretrain_csv`, `peterrec_finetune_csv`,
`movielens_100k` (every task; u.data through the pipeline, the small u.user and u.item
read by the driver). The pipeline writes the same shards, vocabularies and metadata.json
as the local path, byte for byte (tests/test_pipelines_beam.py), because both call
`pipelines.canonical` and the formats' own line rules:

1. The driver cuts the input into newline-aligned byte ranges and counts the lines
   before each (`canonical.plan_chunks`), so workers know every line's number.
2. Workers parse their ranges: events or sequences, bad lines (number, message), the
   last non-blank line, dropped "0" tokens.
3. Interaction logs: events grouped by user, each user's events put in the canonical
   order (`canonical.order_events`: by time, ties in file order); the user's key is the
   line of its first event.
4. Vocabulary: a combiner keeps, per token, the smallest key of its first occurrence
   ((line, position), or (user's first line, position in the user's sequence)); sorting
   those keys gives the release's order of first appearance.
5. Records (leave-last-out, or fine-tuning instances with their split), each with a key;
   a record's rank in its split comes from `bucket_ranks` (keys in buckets of 4096 lines,
   each bucket sorted by one worker, offsets from a table of bucket sizes), rank mod
   shards picks its shard; each shard is grouped, sorted by rank and written by one
   worker into the temporary directory.
6. Summaries (counts, bad lines, OOV, duplicates, longest record, what training covers,
   test targets) go into one report; the driver then writes vocab/, metadata.json (with
   each shard's records, bytes and SHA-256, and the quality shares) and moves the
   directory into place (`canonical.publish`).

Files go through `pipelines.fileio`: a path with a scheme (`gs://`, `s3://`, `hdfs://`,
any filesystem registered with Beam) is read and written through Beam's `FileSystems`,
so the driver and the workers need no shared mount (MovieLens excepted: local only).
Bad lines are raised (or counted with --skip_bad_lines) after the pipeline, the smallest
line number first, as a front-to-back reader would.
"""

import json
import os

import numpy as np

from pipelines import canonical, fileio, schema, writer
from pipelines.dataset import SPLITS, Record, leave_last_out, split_users
from pipelines.errors import DataError
from pipelines.vocab import Vocabulary

FORMATS = ("interactions", "peterrec_pretrain_csv", "peterrec_finetune_csv", "movielens_100k")
ML_TASKS = ("gender", "age", "occupation")
REPORT = ".beam_report.json"
#: Records are ranked in buckets of 4096 lines' keys (`bucket_ranks`): one worker sorts a
#: bucket, never a whole split.
RECORD_BUCKET_SHIFT = canonical.POSITION_BITS + 12


# --- worker functions (module level so every runner can pickle them) --------------------

def parse_chunk(chunk, path, format, header_number, settings):
    import apache_beam as beam
    from pipelines.formats.peterrec_csv import parse_finetune_line, parse_pretrain_line
    start, end, first = chunk
    lines = canonical.chunk_lines(path, start, end, first)
    if first <= header_number:
        lines = [(n, t) for n, t in lines if n > header_number]
    last, zeros = 0, 0
    if format == "interactions":
        delimiter, width, columns = settings
        numbers, users, items, stamps, bad_rows = canonical.parse_interaction_chunk(
            lines, delimiter, width, columns)
        for parsed in bad_rows:
            if not parsed[2]:
                last = max(last, parsed[0])
            yield beam.pvalue.TaggedOutput("bad", parsed)
        if numbers:
            last = max(last, numbers[-1])
        for number, user, item, stamp in zip(numbers, users, items, stamps):
            yield user, (number, stamp, item)
    else:
        zero_is_padding = settings
        for number, text in lines:
            if text:
                last = number
            if format == "peterrec_pretrain_csv":
                tokens, message, dropped = parse_pretrain_line(text, zero_is_padding)
                row = (f"line{number}", number, tokens)
            else:
                source, targets, message, dropped = parse_finetune_line(text, zero_is_padding)
                row = (number, source, targets)
            zeros += dropped
            if message:
                yield beam.pvalue.TaggedOutput("bad", (number, message, not text))
                continue
            yield row
    yield beam.pvalue.TaggedOutput("last", last)
    yield beam.pvalue.TaggedOutput("zeros", zeros)


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


def instance_assignment(lines, seed, split_by):
    """{record key: split} of the fine-tuning instances, as `by_user_split` /
    `by_instance_split` assign them over the whole file."""
    lines = sorted(lines)  # (line, number of targets)
    if split_by == "user":
        users = split_users([f"line{n}" for n, _ in lines], seed)
        return {canonical.record_key(n, p): users[f"line{n}"] for n, k in lines for p in range(k)}
    keys, offset = [], 0
    for n, k in lines:
        keys.extend((canonical.record_key(n, p), f"line{n}#{offset + p}") for p in range(k))
        offset += k
    by_key = split_users([name for _, name in keys], seed)
    return {key: by_key[name] for key, name in keys}


def finetune_records(row, index, target_index, assignment):
    number, source, targets = row
    ids = [index.get(t, 0) for t in source]
    for position, token in enumerate(targets):
        key = canonical.record_key(number, position)
        yield assignment[key], key, Record(ids, f"line{number}", target=target_index[token])


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
    import tensorflow as tf
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


def user_duplicates(grouped):
    """Events repeating an earlier (time, item) of the same user."""
    _, events = grouped
    events = list(events)
    return len(events) - len({(stamp, item) for _, stamp, item in events})


# --- MovieLens-100K ---------------------------------------------------------------------

def parse_ratings_chunk(chunk, path, header_number):
    import apache_beam as beam
    from pipelines.formats.movielens import parse_rating_line
    start, end, first = chunk
    last = 0
    for number, text in canonical.chunk_lines(path, start, end, first):
        if number <= header_number:
            continue
        if text:
            last = number
        parsed = parse_rating_line(text)
        if isinstance(parsed, str):
            yield beam.pvalue.TaggedOutput("bad", (number, parsed, not text))
            continue
        yield parsed
    yield beam.pvalue.TaggedOutput("last", last)


def movielens_user(grouped, genres, target_genres, max_targets):
    """(user, [(time, movie id, movie)]) -> (user, key, source movies, first targets), as
    `read_movielens` does per user."""
    from pipelines.formats.movielens import order_ratings
    user, events = grouped
    ordered = order_ratings(list(events))
    in_target = [bool(genres.get(m, set()) & target_genres) for _, _, m in ordered]
    source = [m for (_, _, m), t in zip(ordered, in_target) if not t]
    firsts = [m for (_, _, m), t in zip(ordered, in_target) if t][:max_targets]
    return user, int(user), source, firsts


def movielens_label(task, info, brackets, occupations):
    if task == "gender":
        return int(info["gender"] == "F")
    if task == "age":
        return brackets.index(info["age"] // 10)
    return occupations.index(info["occupation"])


def classify_records(user, index, assignment, users, brackets, occupations):
    name, key, source, _ = user
    ids = [index.get(t, 0) for t in source]
    for task in ML_TASKS:
        yield (f"{task}/{assignment[name]}", canonical.record_key(key),
               Record(ids, name, label=movielens_label(task, users[name], brackets,
                                                       occupations)))


def coldrec_records(user, index, target_index, assignment):
    name, key, source, firsts = user
    ids = [index.get(t, 0) for t in source]
    for position, movie in enumerate(firsts):
        yield (f"coldrec/{assignment[name]}", canonical.record_key(key, position),
               Record(ids, name, target=target_index[movie]))


def build_movielens(pipeline, path, tmp, items, bad, num_shards, seed, max_len, options, plan,
                    header_number, users, genres, target_genres, brackets, occupations):
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    min_length, max_targets = options.get("min_length", 3), options.get("max_targets", 3)
    parsed = (pipeline
              | "Chunks" >> beam.Create(plan)
              | "Spread" >> beam.Reshuffle()
              | "Parse" >> beam.FlatMap(parse_ratings_chunk, path, header_number)
              .with_outputs("bad", "last", main="rows"))
    per_user = (parsed.rows
                | "ByUser" >> beam.GroupByKey()
                | "Order" >> beam.Map(movielens_user, genres, target_genres, max_targets))
    sequences = per_user | "Sources" >> beam.Map(lambda u: (u[0], u[1], u[2]))
    index, parts = vocabulary_stage(pipeline, sequences, items)
    parts.update(bad_stage(parsed, header_number, bad.keep))
    parts["too_short"] = (sequences
                          | "TooShort" >> beam.Map(lambda s: int(len(s[2]) < min_length))
                          | "TooShortSum" >> beam.CombineGlobally(sum))
    records = [sequences | "Records" >> beam.FlatMap(sequence_records, AsSingleton(index),
                                                     min_length, "pretrain/")]
    with_history = per_user | "WithHistory" >> beam.Filter(lambda u: len(u[2]) > 0)
    labelled = with_history | "Labelled" >> beam.Filter(lambda u: u[0] in users)
    assignment = (labelled
                  | "ClassifyUsers" >> beam.Map(lambda u: u[0])
                  | "AllClassifyUsers" >> beam.combiners.ToList()
                  | "ClassifySplit" >> beam.Map(split_users, seed))
    records.append(labelled | "ClassifyRecords" >> beam.FlatMap(
        classify_records, AsSingleton(index), AsSingleton(assignment), users, brackets,
        occupations))
    if target_genres:
        cold = with_history | "WithTargets" >> beam.Filter(lambda u: len(u[3]) > 0)
        targets, target_index = first_seen_vocabulary(
            cold | "TargetFirstSeen" >> beam.FlatMap(lambda u: first_occurrences(u[1], u[3])),
            Vocabulary().tokens, "Target")
        cold_assignment = (cold
                           | "ColdUsers" >> beam.Map(lambda u: u[0])
                           | "AllColdUsers" >> beam.combiners.ToList()
                           | "ColdSplit" >> beam.Map(split_users, seed))
        records.append(cold | "ColdRecords" >> beam.FlatMap(
            coldrec_records, AsSingleton(index), AsSingleton(target_index),
            AsSingleton(cold_assignment)))
        parts["targets"] = targets
    write_stage(pipeline, tuple(records) | "AllRecords" >> beam.Flatten(), tmp, num_shards,
                max_len, parts)


def run_pipeline(pipeline_options, path, add):
    """Build with `add` and run; a DataError raised in a worker (runners wrap it in their
    own exception) is raised again as the DataError it was, naming file and line."""
    import apache_beam as beam
    try:
        with beam.Pipeline(options=pipeline_options) as pipeline:
            add(pipeline)
    except DataError:
        raise
    except Exception as error:
        marker = "DataError: "
        text = str(error)
        if marker not in text:
            raise
        message = text.split(marker, 1)[1].split(" [while running")[0].strip()
        line = None
        if message.startswith(f"{path}:"):
            number, _, rest = message[len(path) + 1:].partition(": ")
            if number.isdigit():
                line, message = int(number), rest
        raise DataError(path, line, message) from error


class _Recorder:
    """Bad lines of the small MovieLens files, replayed after u.data's (the file order)."""

    def __init__(self):
        self.found = []

    def report(self, path, line, message):
        self.found.append((path, line, message))


def prepare_movielens(directory, tmp, items, bad, num_shards, seed, common, options,
                      pipeline_options, log, quality=None):
    from pipelines.formats import movielens

    for name in ("u.data", "u.user", "u.item"):
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(os.path.join(directory, name), None,
                            "not found: --input must be the ml-100k directory")
    path = os.path.join(directory, "u.data")
    canonical.first_nonblank_line(path)  # "file is empty"
    header_number = 1 if movielens.is_header(canonical.first_line(path)) else 0
    later = _Recorder() if bad.skip else bad
    users = movielens._users(os.path.join(directory, "u.user"), later)
    genres = movielens._movie_genres(os.path.join(directory, "u.item"), later)
    target_genres = {g for g in options.get("target_genres", "Comedy").split(",") if g}
    unknown = target_genres - set(movielens.GENRES)
    if unknown:
        raise ValueError(f"unknown genre(s) {sorted(unknown)}; MovieLens genres: "
                         f"{movielens.GENRES}")
    brackets = sorted({u["age"] // 10 for u in users.values()})
    occupations = sorted({u["occupation"] for u in users.values()})
    plan = canonical.plan_chunks(path, canonical.CHUNK_BYTES)
    log(f"  running the Beam pipeline ({len(plan)} chunk(s) of u.data)")
    run_pipeline(pipeline_options, path, lambda pipeline: build_movielens(
        pipeline, path, tmp, items, bad, num_shards, seed, common.get("max_len"), options, plan,
        header_number, users, genres, target_genres, brackets, occupations))
    report = _read_report(tmp)
    canonical.settle_reports(bad, path, [tuple(r) for r in report["bad_first"]],
                             report["last"], report["bad_count"])
    if not report["users"]:
        raise DataError(path, None, "no ratings")
    if later is not bad:
        for each in later.found:
            bad.report(*each)
    vocab = Vocabulary(report["tokens"], frozen=items.frozen)
    names = ["pretrain", *ML_TASKS] + (["coldrec"] if target_genres else [])
    for name in names:
        canonical.check_not_empty(
            directory, name, {split: report["counts"].get(f"{name}/{split}", 0)
                              for split in SPLITS},
            {"users": report["users"], "users_too_short": report["too_short"],
             "min_length": options.get("min_length", 3), "skipped_bad_lines": bad.count}
            if name == "pretrain" else {"skipped_bad_lines": bad.count})
    labels = {"gender": ["M", "F"], "age": [f"{10 * b}-{10 * b + 9}" for b in brackets],
              "occupation": occupations}
    index = {}
    for name in names:
        target = os.path.join(tmp, name)
        os.makedirs(os.path.join(target, "vocab"), exist_ok=True)
        vocab.save(os.path.join(target, "vocab", "items.txt"))
        counts = _split_counts(report, target, num_shards, f"{name}/")
        stats_of = _record_stats(report, name, common)
        num_targets = num_classes = None
        if name == "pretrain":
            task = "pretrain"
            stats = {"users_too_short": report["too_short"],
                     "min_length": options.get("min_length", 3), "users": report["users"],
                     **_oov(report)}
        elif name == "coldrec":
            task = "item_rec"
            targets = Vocabulary(report["targets"])
            targets.save(os.path.join(target, "vocab", "targets.txt"))
            num_targets = len(targets)
            stats = {"instances": sum(counts.values()), "target_genres": sorted(target_genres),
                     "max_targets_per_user": options.get("max_targets", 3)}
        else:
            task = "classify"
            with open(os.path.join(target, "vocab", "labels.txt"), "w", encoding="utf-8") as out:
                out.write("".join(f"{label}\n" for label in labels[name]))
            num_classes = len(labels[name])
            stats = {"instances": sum(counts.values())}
        stats.update(bad.summary())
        if quality:
            quality(name, stats, _shares(report, name, task, stats_of))
        metadata = canonical.dataset_metadata(
            common, task, len(vocab), counts, stats_of, stats, num_targets=num_targets,
            num_classes=num_classes, shards=canonical.shard_records(target, counts, num_shards))
        canonical.write_metadata(target, metadata)
        log(f"  wrote {name}: {task}, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        index[name] = {"task": task, "splits": counts}
    with open(os.path.join(tmp, "datasets.json"), "w", encoding="utf-8") as handle:
        json.dump({"fingerprint": common["fingerprint"], "datasets": index}, handle, indent=2,
                  sort_keys=True)
    return index


def _read_report(tmp):
    path = fileio.join(tmp, REPORT)
    report = json.loads(fileio.read_bytes(path))
    fileio.delete(path)
    return report


def _split_counts(report, directory, num_shards, prefix=""):
    """Records per split; an empty split gets the writer's one empty shard."""
    counts = {split: report["counts"].get(prefix + split, 0) for split in SPLITS}
    for split, count in counts.items():
        if not count:
            fileio.write_tfrecords(fileio.join(directory, writer.shard_name(split, 0, 1)), [])
    return counts


def _record_stats(report, name, common):
    return canonical.RecordStats(common.get("max_len"),
                                 *report["record_stats"].get(name, (0, 0, 0, 0, 0)))


def _shares(report, name, task, record_stats):
    unseen, tests = report["tests"].get(name, (0, 0))
    return canonical.quality_shares_of_counts(task, record_stats, unseen, tests)


def _oov(report):
    return {k: [tuple(x) for x in v] if k == "oov_most_common" else v
            for k, v in report["oov"].items()}


def write_report(_, directory, **parts):
    fileio.write_bytes(fileio.join(directory, REPORT), json.dumps(parts).encode("utf-8"))


# --- the pipeline -----------------------------------------------------------------------

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


def build(pipeline, format, path, tmp, items, bad, num_shards, seed, max_len, options,
          plan, header_number, settings):
    """Add the preparation to `pipeline`; the driver reads `REPORT` in `tmp` after it ran."""
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    min_length = options.get("min_length", 3)
    parsed = (pipeline
              | "Chunks" >> beam.Create(plan)
              | "Spread" >> beam.Reshuffle()
              | "Parse" >> beam.FlatMap(parse_chunk, path, format, header_number, settings)
              .with_outputs("bad", "last", "zeros", main="rows"))
    zeros = parsed.zeros | "Zeros" >> beam.CombineGlobally(sum)

    duplicates = None
    if format == "interactions":
        grouped = parsed.rows | "ByUser" >> beam.GroupByKey()
        sequences = grouped | "Order" >> beam.Map(order_user)
        duplicates = (grouped
                      | "Duplicates" >> beam.Map(user_duplicates)
                      | "DuplicatesSum" >> beam.CombineGlobally(sum))
    elif format == "peterrec_pretrain_csv":
        sequences = parsed.rows
    else:  # fine-tuning: the source sequence of each line plays the part of a sequence
        sequences = parsed.rows | "Sources" >> beam.Map(lambda r: (f"line{r[0]}", r[0], r[1]))
    index, parts = vocabulary_stage(pipeline, sequences, items)
    parts.update(bad_stage(parsed, header_number, bad.keep), zeros=zeros)
    if duplicates is not None:
        parts["duplicates"] = duplicates

    if format == "peterrec_finetune_csv":
        target_tokens, target_index = first_seen_vocabulary(
            parsed.rows | "TargetFirstSeen" >> beam.FlatMap(
                lambda r: first_occurrences(r[0], r[2])),
            Vocabulary().tokens, "Target")
        assignment = (parsed.rows
                      | "Instances" >> beam.Map(lambda r: (r[0], len(r[2])))
                      | "AllInstances" >> beam.combiners.ToList()
                      | "Assign" >> beam.Map(instance_assignment, seed,
                                             options.get("split_by", "user")))
        records = parsed.rows | "Records" >> beam.FlatMap(
            finetune_records, AsSingleton(index), AsSingleton(target_index),
            AsSingleton(assignment))
        parts["targets"] = target_tokens
        parts["entirely_oov"] = (sequences
                                 | "EntirelyOOV" >> beam.Map(
                                     lambda s, ix: int(all(ix.get(t, 0) == 0 for t in s[2])),
                                     ix=AsSingleton(index))
                                 | "EntirelyOOVSum" >> beam.CombineGlobally(sum))
    else:
        records = sequences | "Records" >> beam.FlatMap(
            sequence_records, AsSingleton(index), min_length)
        parts["too_short"] = (sequences
                              | "TooShort" >> beam.Map(lambda s: int(len(s[2]) < min_length))
                              | "TooShortSum" >> beam.CombineGlobally(sum))

    write_stage(pipeline, records, tmp, num_shards, max_len, parts)


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


def prepare(format, path, tmp, items, bad, num_shards, seed, common, options, runner,
            beam_args=(), log=print, chunk_bytes=None, quality=None):
    """Run the pipeline on `runner`, then write vocab/ and metadata.json into `tmp`;
    returns the datasets index."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.formats import TABLE_FORMATS, table_format, user_history

    if format not in FORMATS + tuple(TABLE_FORMATS):
        raise ValueError(f"--runner={runner} supports --format in {FORMATS}; {format} is "
                         "prepared with --runner=local")
    pipeline_options = PipelineOptions(list(beam_args) + [f"--runner={runner}"])
    if format in TABLE_FORMATS:
        return user_history.prepare_beam(table_format(format), path, tmp, items, bad,
                                         num_shards, seed, common, options, pipeline_options,
                                         log, chunk_bytes, quality)
    if format == "movielens_100k":
        if fileio.is_remote(path) or fileio.is_remote(tmp):
            raise ValueError("--format=movielens_100k reads and writes local directories only "
                             "(its small u.user/u.item are read by the driver)")
        return prepare_movielens(path, tmp, items, bad, num_shards, seed, common, options,
                                 pipeline_options, log, quality)
    if format == "peterrec_finetune_csv":
        from pipelines.formats.peterrec_csv import check_finetune_options
        check_finetune_options(items, options.get("split_by", "user"))
    header_number, header = canonical.first_nonblank_line(path)
    if format == "interactions":
        settings = canonical.interactions_header(
            path, header_number, header, options.get("delimiter"),
            options.get("user_col", "user"), options.get("item_col", "item"),
            options.get("time_col", "timestamp"))
    else:
        header_number, settings = 0, options.get("zero_is_padding", False)
    plan = canonical.plan_chunks(path, chunk_bytes or canonical.CHUNK_BYTES)
    log(f"  running the Beam pipeline on {runner} ({len(plan)} chunk(s))")
    run_pipeline(pipeline_options, path, lambda pipeline: build(
        pipeline, format, path, tmp, items, bad, num_shards, seed, common.get("max_len"),
        options, plan, header_number, settings))
    report = _read_report(tmp)
    canonical.settle_reports(bad, path, [tuple(r) for r in report["bad_first"]],
                             report["last"], report["bad_count"])
    if format == "interactions" and not report["users"]:
        raise DataError(path, None, "no interaction rows after the header")
    canonical.check_not_empty(
        path, "item_rec" if format == "peterrec_finetune_csv" else "pretrain",
        {split: report["counts"].get(split, 0) for split in SPLITS},
        {"split_by": options.get("split_by", "user"), "skipped_bad_lines": bad.count}
        if format == "peterrec_finetune_csv" else
        {"users": report["users"], "users_too_short": report["too_short"],
         "min_length": options.get("min_length", 3), "skipped_bad_lines": bad.count})
    vocab = Vocabulary(report["tokens"], frozen=items.frozen)
    fileio.makedirs(fileio.join(tmp, "vocab"))
    vocab.save(fileio.join(tmp, "vocab", "items.txt"))
    counts = _split_counts(report, tmp, num_shards)
    oov = _oov(report)
    zero_is_padding = options.get("zero_is_padding", False)
    num_targets = None
    if format == "peterrec_finetune_csv":
        targets = Vocabulary(report["targets"])
        targets.save(fileio.join(tmp, "vocab", "targets.txt"))
        num_targets = len(targets)
        stats = dict(oov, sources_entirely_oov=report["entirely_oov"],
                     instances=sum(counts.values()), split_by=options.get("split_by", "user"),
                     zero_is_padding=zero_is_padding, zero_tokens_dropped=report["zeros"])
        task = "item_rec"
    else:
        stats = {"users_too_short": report["too_short"],
                 "min_length": options.get("min_length", 3), **oov, "users": report["users"]}
        if format == "peterrec_pretrain_csv":
            stats.update(zero_is_padding=zero_is_padding, zero_tokens_dropped=report["zeros"])
        else:
            stats["duplicate_interactions"] = report["duplicates"]
        task = "pretrain"
    stats.update(bad.summary())
    record_stats = _record_stats(report, "", common)
    if quality:
        quality("dataset", stats, _shares(report, "", task, record_stats))
    metadata = canonical.dataset_metadata(
        common, task, len(vocab), counts, record_stats, stats, num_targets=num_targets,
        shards=canonical.shard_records(tmp, counts, num_shards))
    canonical.write_metadata(tmp, metadata)
    log(f"  wrote dataset: {task}, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return {".": {"task": task, "splits": counts}}
