"""Fine-tuning data from a per-user table and an event log: what `user_labels` and
`user_targets` share.

A *table* (`--input`) names the users of the downstream task and what to predict for
each (a class label, or target items of another domain); the *event log* (`--events`,
the interaction log of pre-training or one like it) gives each such user's history:
their events strictly before `--cutoff_time` (all events without it), ordered by time,
ties in file order (`canonical.order_events`), mapped through the pre-training
vocabulary (`--vocab`, required; unknown items become id 0 and are counted).

Both files are read by the shared line and row rules (`text_lines.plan_chunks`,
`chunk_lines`, `table_rows`, `parse_interaction_chunk`: an event of the item `<UNK>`,
the vocabulary's reserved id 0, is a bad line), bad lines of the table are
reported before those of the log (the order a front-to-back reader meets them), and
users are split 70/3/27 by `dataset.hash_split_users`: a seeded hash per user, ranked,
so the Beam pipeline never gathers the users on one worker. A record's key is the line
of the user's first table row (and the target's position), so records keep table
order within a split, on every path.

Users of the table without any history (not in the log, or only at or after the cutoff)
are dropped and counted (`users_without_history`, of which `users_not_in_events`);
log users the table does not name are counted (`event_users_not_in_table`). The output
vocabulary (classes, target items) is numbered from the users kept only: a label held
only by dropped users would be a class no record holds, and would let data with one
class left pass for two (accuracy 1.0 for any model).
"""

import types

import numpy as np

from pipelines import beam_driver, beam_stages, canonical, text_lines
from pipelines.dataset import SPLITS, hash_split_users, split_of_rank
from pipelines.dataset import HASH_BITS, user_hash
from pipelines.errors import DataError
from pipelines.formats import DataFormat, Flag
from pipelines.formats.common import EVENT_COLUMNS, event_column_options
from pipelines.formats.interactions import log_settings, parse_log_chunk

RANK_BUCKET_BITS = 12  # users are ranked in 4096 hash buckets (one worker per bucket)


def check_options(items, options, format):
    if not items.frozen:
        raise ValueError(f"--format={format} prepares fine-tuning data against the "
                         "pre-training vocabulary: pass --vocab=PRETRAIN_DIR/vocab/items.txt")
    if not options.get("events"):
        raise ValueError(f"--format={format} needs --events=LOG (the event log the users' "
                         "histories come from)")
    cutoff = options.get("cutoff_time")
    if cutoff is not None and not np.isfinite(cutoff):
        raise ValueError(f"--cutoff_time must be a finite number, got {cutoff}")


def before_cutoff(stamp, cutoff):
    return cutoff is None or stamp < cutoff


def duplicates_of(events):
    """Events repeating an earlier (time, item) of the same user (`(stamp, item)` pairs)."""
    events = list(events)
    return len(events) - len(set(events))


EVENTS = Flag("string", "events", None, "user_labels, user_targets: the event log the users' "
              "histories come from (a header with --user_col, --item_col, --time_col, like "
              "--format=interactions' input).")
CUTOFF_TIME = Flag("float", "cutoff_time", None, "user_labels, user_targets: a user's history "
                   "is their events strictly before this time (--time_col's unit); default: "
                   "every event. The targets of user_targets are not cut.")


class UserTableFormat(DataFormat):
    """One table format: how its rows are read and what a user's record holds. Subclasses
    (`user_labels.UserLabels`, `user_targets.UserTargets`) define the table's columns and
    rows (`table_settings`, `parse_table_lines`), what a user's value is (`user_value`),
    the output vocabulary (`value_vocabulary`) and the records (`records`)."""

    task = None
    named_users = True  # the table's own user keys
    flags = EVENT_COLUMNS + (EVENTS, CUTOFF_TIME)

    def options(self, values):
        options = dict(event_column_options(values), events=values.events)
        if values.cutoff_time is not None:
            options["cutoff_time"] = values.cutoff_time
        return options

    def prepare_beam(self, *args, **kwargs):
        return prepare_beam(self, *args, **kwargs)

    # --- the table -------------------------------------------------------------------
    def table_settings(self, path, options):
        raise NotImplementedError

    def parse_table_lines(self, lines, settings):
        """(rows as (user, (line, value...)), bad as (number, message, blank)) of lines."""
        raise NotImplementedError

    def user_value(self, rows):
        """(line, value, bad) of a user's table rows (sorted by line): the user's key line,
        what the user's records predict, bad-line reports for rows that cannot count."""
        raise NotImplementedError

    def value_occurrences(self, line, value):
        """(token, first-appearance key) pairs that number the output vocabulary."""
        raise NotImplementedError

    def value_vocabulary(self, first_keys):
        """The output vocabulary's tokens from {token: first key}."""
        raise NotImplementedError

    #: Whether `check_values` reads anything (the Beam path then reports each output
    #: token's first key, which it otherwise does not gather).
    checks_values = False

    def check_values(self, path, first_keys, options):
        """Refuse output tokens that would not mean what the table means ({token: first
        key} of the users kept, on every runner, before the vocabulary is written)."""

    def records(self, user, line, value, ids, index):
        """(key, Record) of one user with history; `index`: output token -> id."""
        raise NotImplementedError

    def write_vocabulary(self, directory, tokens):
        raise NotImplementedError

    def dataset(self, splits, items, tokens, stats):
        raise NotImplementedError

    # --- local ---------------------------------------------------------------------
    def read_table(self, path, settings, bad):
        """{user: (line, value)} in table order (first row's line). Bad lines are settled
        as the Beam pipeline settles them (`text_lines.settle_reports`: the smallest line
        first), since a repeated user's row is only known bad once its first row is."""
        header_number = settings[0]
        reports, last, rows = [], header_number, {}
        for start, end, first in text_lines.plan_chunks(path, text_lines.CHUNK_BYTES):
            lines = [(n, t) for n, t in text_lines.chunk_lines(path, start, end, first)
                     if n > header_number]
            found, bad_rows = self.parse_table_lines(lines, settings)
            reports.extend(bad_rows)
            last = max([last] + [row[1][0] for row in found]
                       + [n for n, _, blank in bad_rows if not blank])
            for user, row in found:
                rows.setdefault(user, []).append(row)
        values = {}
        for user, user_rows in rows.items():
            line, value, user_bad = self.user_value(sorted(user_rows))
            reports.extend((number, message, False) for number, message in user_bad)
            if line is not None:
                values[user] = (line, value)
        text_lines.settle_reports(bad, path, reports, last)
        if not values:
            raise DataError(path, None, f"no {self.name} rows after the header")
        return dict(sorted(values.items(), key=lambda kv: kv[1][0]))

    def read(self, path, items, bad, seed, options):
        """The dataset of `path` and the event log, in memory (`--runner=local`)."""
        from pipelines.local_stream import read_events
        check_options(items, options, self.name)
        settings = self.table_settings(path, options)
        events = options["events"]
        log_settings(events, options)  # the log's header errors before its rows'
        table = self.read_table(path, settings, bad)
        names, tokens, user_ranks, item_codes, stamps = read_events(
            events, options.get("user_col", "user"), options.get("item_col", "item"),
            options.get("time_col", "timestamp"), options.get("delimiter"), bad)
        ranks = np.frombuffer(user_ranks, dtype=np.int32)
        times = np.frombuffer(stamps, dtype=np.float64)
        codes = np.frombuffer(item_codes, dtype=np.int32)
        rank_of = {name: rank for rank, name in enumerate(names)}
        wanted = np.zeros(len(names), dtype=bool)
        wanted[[rank_of[u] for u in table if u in rank_of]] = True
        keep = wanted[ranks]
        cutoff = options.get("cutoff_time")
        if cutoff is not None:
            keep &= times < cutoff
        kept = np.flatnonzero(keep)
        kept = kept[canonical.order_events(ranks[kept], times[kept])]
        histories, duplicates = {}, {}
        bounds = np.flatnonzero(np.diff(ranks[kept])) + 1
        for segment in np.split(kept, bounds) if len(kept) else []:
            user = names[ranks[segment[0]]]
            histories[user] = [tokens[c] for c in codes[segment]]
            duplicates[user] = duplicates_of(zip(times[segment].tolist(),
                                                 codes[segment].tolist()))
        with_history = [u for u in table if u in histories]
        first_keys = {}  # only users with history: a class no record holds is no class
        for user in with_history:
            line, value = table[user]
            for token, key in self.value_occurrences(line, value):
                first_keys.setdefault(token, key)
        self.check_values(path, first_keys, options)
        vocab = self.value_vocabulary(first_keys)
        index = {token: i for i, token in enumerate(vocab)}
        assignment = hash_split_users(with_history, seed)
        splits = {split: [] for split in SPLITS}
        for user in with_history:
            line, value = table[user]
            ids = items.ids(histories[user])
            for _, record in self.records(user, line, value, ids, index):
                splits[assignment[user]].append(record)
        stats = self.stats(items.oov_summary(), {
            "users": len(table), "users_not_in_events": sum(u not in rank_of for u in table),
            "users_without_history": len(table) - len(with_history),
            "event_users_not_in_table": sum(n not in table for n in names),
            "instances": sum(len(r) for r in splits.values()),
            "duplicate_interactions": sum(duplicates[u] for u in with_history)}, options)
        if not with_history:
            raise no_history_error(path, events, cutoff)
        return [self.dataset(splits, items, vocab, stats)]

    def stats(self, oov, counts, options):
        return dict(oov, **counts, cutoff_time=options.get("cutoff_time"), split_by="user")


def no_history_error(path, events, cutoff):
    when = f" before --cutoff_time={cutoff}" if cutoff is not None else ""
    return DataError(path, None, f"no user of this table has events in {events}{when}: "
                     "nothing to fine-tune on (do --user_col values match the log's?)")


# --- Beam -------------------------------------------------------------------------------

def parse_table_chunk(chunk, path, format, settings):
    """Worker: the table rows of one byte range, bad lines and the last non-blank line."""
    import apache_beam as beam
    start, end, first = chunk
    lines = [(n, t) for n, t in text_lines.chunk_lines(path, start, end, first)
             if n > settings[0]]
    rows, bad_rows = format.parse_table_lines(lines, settings)
    last = max([row[1][0] for row in rows] + [n for n, _, blank in bad_rows if not blank]
               + [0])
    for parsed in bad_rows:
        yield beam.pvalue.TaggedOutput("bad", parsed)
    yield from rows
    yield beam.pvalue.TaggedOutput("last", last)


def join_user(grouped, format, cutoff, seed):
    """Worker: one user's table rows and events -> the user with history (hash, user,
    line, value, history items), plus bad rows, counters and vocabulary occurrences."""
    import apache_beam as beam
    user, parts = grouped
    rows, events = sorted(parts["table"]), list(parts["events"])
    if events:
        yield beam.pvalue.TaggedOutput("count", "event_users")
    if not rows:
        yield beam.pvalue.TaggedOutput("count", "event_users_not_in_table")
        return
    line, value, bad_rows = format.user_value(rows)
    for number, message in bad_rows:
        yield beam.pvalue.TaggedOutput("bad", (number, message, False))
    if line is None:
        return
    yield beam.pvalue.TaggedOutput("count", "users")
    if not events:
        yield beam.pvalue.TaggedOutput("count", "users_not_in_events")
    events = [e for e in events if before_cutoff(e[1], cutoff)]
    if not events:
        yield beam.pvalue.TaggedOutput("count", "users_without_history")
        return
    # only users with history number the outputs: a class no record holds is no class
    for occurrence in format.value_occurrences(line, value):
        yield beam.pvalue.TaggedOutput("occurrence", occurrence)
    _, _, history = beam_stages.order_user((user, events))
    yield beam.pvalue.TaggedOutput("duplicates", duplicates_of((s, i) for _, s, i in events))
    yield user_hash(user, seed), user, line, value, history


def user_records(ranked, format, index, value_index):
    """Worker: a ranked user -> (split, key, Record) for each of its records."""
    _, rank, total, _, (user, line, value, history) = ranked
    split = split_of_rank(rank, total)
    ids = [index.get(t, 0) for t in history]
    for key, record in format.records(user, line, value, ids, value_index):
        yield split, key, record


def build_beam(pipeline, format, path, events, tmp, items, bad, num_shards, seed, max_len,
               options, plans, settings):
    """The Beam preparation of a table format; the driver reads the report afterwards."""
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    table_plan, events_plan = plans
    table_settings, (events_header, events_columns) = settings
    table = beam_stages.parse_stage(pipeline, table_plan, parse_table_chunk, path, format,
                                    table_settings, label="Table")
    logged = beam_stages.parse_stage(pipeline, events_plan, parse_log_chunk, events,
                                     events_header, events_columns)
    joined = ({"table": table.rows, "events": logged.rows}
              | "Join" >> beam.CoGroupByKey()
              | "PerUser" >> beam.FlatMap(join_user, format, options.get("cutoff_time"), seed)
              .with_outputs("bad", "count", "occurrence", "duplicates", main="users"))
    table_bad = types.SimpleNamespace(
        last=table.last,
        bad=(table.bad, joined.bad) | "TableBad" >> beam.Flatten())
    sequences = joined.users | "Sequences" >> beam.Map(lambda u: (u[1], u[2], u[4]))
    index, parts = beam_stages.vocabulary_stage(pipeline, sequences, items)
    del parts["users"]  # users of the table, counted below
    parts.update({f"table_{k}": v for k, v in beam_stages.bad_stage(
        table_bad, table_settings[0], bad.keep, "Table").items()})
    parts.update(beam_stages.bad_stage(logged, events_header, bad.keep))
    parts["counters"] = (joined.count
                         | "Counters" >> beam.combiners.Count.PerElement()
                         | "AllCounters" >> beam.combiners.ToList()
                         | "CounterTable" >> beam.Map(dict))
    parts["duplicates"] = joined.duplicates | "DuplicatesSum" >> beam.CombineGlobally(sum)
    firsts = (joined.occurrence
              | "ValueEarliest" >> beam.CombinePerKey(min)
              | "ValueAll" >> beam.combiners.ToList())
    parts["values"] = firsts | "ValueVocabulary" >> beam.Map(
        lambda pairs: format.value_vocabulary(dict(pairs)))
    if format.checks_values:
        parts["value_firsts"] = firsts
    value_index = parts["values"] | "ValueIndex" >> beam.Map(
        lambda ts: {t: i for i, t in enumerate(ts)})
    shift = HASH_BITS - RANK_BUCKET_BITS
    ranked, _ = beam_stages.bucket_ranks(
        joined.users | "ByHash" >> beam.Map(lambda u: ("users", (u[0], u[1]), u[1:])),
        "Users", lambda key: key[0] >> shift)
    records = ranked | "Records" >> beam.FlatMap(
        user_records, format, AsSingleton(index), AsSingleton(value_index))
    beam_stages.write_stage(pipeline, records, tmp, num_shards, max_len, parts)


def prepare_beam(format, path, tmp, items, bad, num_shards, seed, common, options,
                 pipeline_options, log=print, chunk_bytes=None, quality=None):
    """Run the table format's pipeline, then write vocab/ and metadata.json into `tmp`."""
    from pipelines import fileio

    check_options(items, options, format.name)
    table_settings = format.table_settings(path, options)
    events = options["events"]
    settings = (table_settings, log_settings(events, options))
    plans = tuple(text_lines.plan_chunks(p, chunk_bytes or text_lines.CHUNK_BYTES)
                  for p in (path, events))
    log(f"  running the Beam pipeline ({len(plans[0])} + {len(plans[1])} chunk(s))")
    beam_driver.run_pipeline(pipeline_options, path, lambda pipeline: build_beam(
        pipeline, format, path, events, tmp, items, bad, num_shards, seed,
        common.get("max_len"), options, plans, settings))
    report = beam_driver.read_report(tmp)
    beam_driver.settle(bad, path, report, "table_")
    counters = report["counters"]
    if not counters.get("users"):
        raise DataError(path, None, f"no {format.name} rows after the header")
    beam_driver.settle(bad, events, report)
    if not counters.get("event_users"):
        raise DataError(events, None, "no interaction rows after the header")
    users = counters.get("users", 0)
    without = counters.get("users_without_history", 0)
    if users == without:
        raise no_history_error(path, events, options.get("cutoff_time"))
    if format.checks_values:
        format.check_values(path, dict(report["value_firsts"]), options)
    fileio.makedirs(fileio.join(tmp, "vocab"))
    format.write_vocabulary(tmp, report["values"])

    def stats(counts):
        return format.stats(beam_driver.oov_stats(report), {
            "users": users, "users_not_in_events": counters.get("users_not_in_events", 0),
            "users_without_history": without,
            "event_users_not_in_table": counters.get("event_users_not_in_table", 0),
            "instances": sum(counts.values()), "duplicate_interactions": report["duplicates"]},
            options)
    return beam_driver.finish_dataset(tmp, report, items, bad, num_shards, common, format.task,
                                      stats, log, quality, **format.sizes(report["values"]))
