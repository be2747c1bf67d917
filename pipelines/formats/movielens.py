"""MovieLens-100K: pre-training sequences and the paper-style downstream tasks.

Source domain = movies without any of `target_genres`; pre-training sequences are each
user's source-domain movies by time.  Downstream tasks (inputs: the same source
sequences): gender, age bracket (one class per 10 years, as the paper's AgeEst),
occupation, and cold-start cross-domain item recommendation `coldrec` (targets: each
user's first <= 3 target-domain movies, one instance per target, as the paper's ColdRec).
With `target_genres` empty every movie is in the source domain and coldrec is skipped
(the setting for comparing next-item quality with other libraries).
On a Beam runner u.data goes through the pipeline (every task), the small u.user and
u.item are read by the driver (`prepare_beam`): the same datasets, byte for byte.
"""

import json
import os

from pipelines import beam_driver, beam_stages, canonical, fileio, text_lines, writer
from pipelines.beam_stages import (bad_stage, first_occurrences, first_seen_vocabulary,
                                   vocabulary_stage, write_stage)
from pipelines.dataset import (SPLITS, PreparedDataset, Record, by_user_split, leave_last_out,
                               split_users)
from pipelines.errors import DataError
from pipelines.formats import DataFormat, Flag, register
from pipelines.formats.common import MIN_SEQ_LEN, min_length_option
from pipelines.formats.movielens_files import (GENRES, is_header, order_ratings,
                                               parse_rating_line, read_genres, read_ratings,
                                               read_users)
from pipelines.vocab import Vocabulary

ML_TASKS = ("gender", "age", "occupation")


def read_movielens(directory, items, bad, seed, target_genres=("Comedy",), max_targets=3,
                   min_length=3):
    for name in ("u.data", "u.user", "u.item"):
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(os.path.join(directory, name), None,
                            "not found: --input must be the ml-100k directory")
    events = read_ratings(os.path.join(directory, "u.data"), bad)
    if not events:
        raise DataError(os.path.join(directory, "u.data"), None, "no ratings")
    users = read_users(os.path.join(directory, "u.user"), bad)
    genres = read_genres(os.path.join(directory, "u.item"), bad)
    target_genres = set(target_genres or ())
    unknown = target_genres - set(GENRES)
    if unknown:
        raise ValueError(f"unknown genre(s) {sorted(unknown)}; MovieLens genres: {GENRES}")
    sources, firsts = [], {}
    targets = Vocabulary()
    for user in sorted(events, key=int):
        ordered = order_ratings(events[user])  # by time, ties by movie id
        in_target = [g & target_genres != set() for g in (genres.get(m, set()) for _, _, m in ordered)]
        source = [m for (_, _, m), t in zip(ordered, in_target) if not t]
        sources.append((user, items.ids(source)))
        firsts[user] = [m for (_, _, m), t in zip(ordered, in_target) if t][:max_targets]
    pretrain_splits, stats = leave_last_out(sources, min_length)
    datasets = [PreparedDataset("pretrain", pretrain_splits, items, name="pretrain",
                                stats=dict(stats, users=len(sources), **items.oov_summary()))]
    by_user = {user: seq for user, seq in sources if seq}

    def classification(name, label_of, names):
        records = [Record(by_user[u], u, label=label_of(users[u])) for u in by_user if u in users]
        return PreparedDataset("classify", by_user_split(records, seed), items, labels=names,
                               name=name, stats={"instances": len(records)})

    datasets.append(classification("gender", lambda u: int(u["gender"] == "F"), ["M", "F"]))
    brackets = sorted({u["age"] // 10 for u in users.values()})
    datasets.append(classification("age", lambda u: brackets.index(u["age"] // 10),
                                   [f"{10 * b}-{10 * b + 9}" for b in brackets]))
    occupations = sorted({u["occupation"] for u in users.values()})
    datasets.append(classification("occupation", lambda u: occupations.index(u["occupation"]),
                                   occupations))
    if target_genres:
        records = [Record(by_user[u], u, target=targets.id(m))
                   for u in by_user for m in firsts[u]]
        datasets.append(PreparedDataset(
            "item_rec", by_user_split(records, seed), items, targets=targets, name="coldrec",
            stats={"instances": len(records), "target_genres": sorted(target_genres),
                   "max_targets_per_user": max_targets}))
    return datasets


@register
class MovieLens100K(DataFormat):
    name = "movielens_100k"
    named_users = True  # u.data's user ids
    flags = (MIN_SEQ_LEN,
             Flag("string", "target_genres", "Comedy", "movielens_100k: comma-separated genres "
                  "that form the cold-start target domain; empty = no domain split."),
             Flag("integer", "max_targets", 3, "movielens_100k: target-domain items per user "
                  "(ColdRec)."))

    def options(self, values):
        return dict(min_length_option(values), target_genres=values.target_genres,
                    max_targets=values.max_targets)

    def read(self, input, items, bad, seed, options):
        genres = [g for g in options.get("target_genres", "Comedy").split(",") if g]
        return read_movielens(input, items, bad, seed, genres, options.get("max_targets", 3),
                              options.get("min_length", 3))

    def prepare_beam(self, *args, **kwargs):
        return prepare_beam(*args, **kwargs)


# --- Beam (worker functions at module level, so every runner can pickle them) ------------

def parse_ratings_chunk(chunk, path, header_number):
    import apache_beam as beam
    start, end, first = chunk
    last = 0
    for number, text in text_lines.chunk_lines(path, start, end, first):
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
    parsed = beam_stages.parse_stage(pipeline, plan, parse_ratings_chunk, path, header_number)
    per_user = (parsed.rows
                | "ByUser" >> beam.GroupByKey()
                | "Order" >> beam.Map(movielens_user, genres, target_genres, max_targets))
    sequences = per_user | "Sources" >> beam.Map(lambda u: (u[0], u[1], u[2]))
    index, parts = vocabulary_stage(pipeline, sequences, items)
    parts.update(bad_stage(parsed, header_number, bad.keep))
    records = [beam_stages.sequence_records_stage(sequences, index, min_length, parts,
                                                  "pretrain/")]
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


class _Recorder:
    """Bad lines of the small MovieLens files, replayed after u.data's (the file order)."""

    def __init__(self):
        self.found = []

    def report(self, path, line, message):
        self.found.append((path, line, message))


def prepare_beam(directory, tmp, items, bad, num_shards, seed, common, options,
                 pipeline_options, log=print, chunk_bytes=None, quality=None):
    """Run the pipeline, then write every task's dataset and datasets.json into `tmp`."""
    if fileio.is_remote(directory) or fileio.is_remote(tmp):
        raise ValueError("--format=movielens_100k reads and writes local directories only "
                         "(its small u.user/u.item are read by the driver)")
    for name in ("u.data", "u.user", "u.item"):
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(os.path.join(directory, name), None,
                            "not found: --input must be the ml-100k directory")
    path = os.path.join(directory, "u.data")
    text_lines.first_nonblank_line(path)  # "file is empty"
    header_number = 1 if is_header(text_lines.first_line(path)) else 0
    later = _Recorder() if bad.skip else bad
    users = read_users(os.path.join(directory, "u.user"), later)
    genres = read_genres(os.path.join(directory, "u.item"), later)
    target_genres = {g for g in options.get("target_genres", "Comedy").split(",") if g}
    unknown = target_genres - set(GENRES)
    if unknown:
        raise ValueError(f"unknown genre(s) {sorted(unknown)}; MovieLens genres: {GENRES}")
    brackets = sorted({u["age"] // 10 for u in users.values()})
    occupations = sorted({u["occupation"] for u in users.values()})
    plan = text_lines.plan_chunks(path, text_lines.CHUNK_BYTES)
    log(f"  running the Beam pipeline ({len(plan)} chunk(s) of u.data)")
    beam_driver.run_pipeline(pipeline_options, path, lambda pipeline: build_movielens(
        pipeline, path, tmp, items, bad, num_shards, seed, common.get("max_len"), options, plan,
        header_number, users, genres, target_genres, brackets, occupations))
    report = beam_driver.read_report(tmp)
    beam_driver.settle(bad, path, report)
    if not report["users"]:
        raise DataError(path, None, "no ratings")
    if later is not bad:
        for each in later.found:
            bad.report(*each)
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
    return write_datasets(tmp, names, report, items, bad, num_shards, common, options, labels,
                          sorted(target_genres), log, quality)


def write_datasets(tmp, names, report, items, bad, num_shards, common, options, labels,
                   target_genres, log, quality):
    """Each task's vocab/ and metadata.json from the report, then datasets.json."""
    vocab = Vocabulary(report["tokens"], frozen=items.frozen)
    index = {}
    for name in names:
        target = os.path.join(tmp, name)
        os.makedirs(os.path.join(target, "vocab"), exist_ok=True)
        vocab.save(os.path.join(target, "vocab", "items.txt"))
        counts = beam_driver.split_counts(report, target, num_shards, f"{name}/")
        stats_of = beam_driver.record_stats(report, name, common)
        num_targets = num_classes = None
        if name == "pretrain":
            task = "pretrain"
            stats = {"users_too_short": report["too_short"],
                     "min_length": options.get("min_length", 3), "users": report["users"],
                     **beam_driver.oov_stats(report)}
        elif name == "coldrec":
            task = "item_rec"
            targets = Vocabulary(report["targets"])
            targets.save(os.path.join(target, "vocab", "targets.txt"))
            num_targets = len(targets)
            stats = {"instances": sum(counts.values()), "target_genres": target_genres,
                     "max_targets_per_user": options.get("max_targets", 3)}
        else:
            task = "classify"
            with open(os.path.join(target, "vocab", "labels.txt"), "w", encoding="utf-8") as out:
                out.write("".join(f"{label}\n" for label in labels[name]))
            num_classes = len(labels[name])
            stats = {"instances": sum(counts.values())}
        stats.update(bad.summary())
        if quality:
            quality(name, stats, beam_driver.shares(report, name, task, stats_of))
        metadata = writer.dataset_metadata(
            common, task, len(vocab), counts, stats_of, stats, num_targets=num_targets,
            num_classes=num_classes, shards=writer.shard_records(target, counts, num_shards))
        writer.write_metadata(target, metadata)
        log(f"  wrote {name}: {task}, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        index[name] = {"task": task, "splits": counts}
    with open(os.path.join(tmp, "datasets.json"), "w", encoding="utf-8") as handle:
        json.dump({"fingerprint": common["fingerprint"], "datasets": index}, handle, indent=2,
                  sort_keys=True)
    return index
