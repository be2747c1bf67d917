"""`--format=interactions`: generic interaction logs, CSV/TSV rows of user, item, timestamp
(column names by flag), prepared for pre-training (leave-last-out per user).

`prepare --runner=local` streams these logs (`pipelines.local_stream`); the in-memory
reader (`read`) is the reference the tests compare it with; a Beam runner runs
`prepare_beam`. All parse with `pipelines.dialect` (the CSV dialect of
`split_delimited`, `interactions_header`, `parse_interaction_row`/`_chunk`); a row of
the item `<UNK>` (id 0: padding and every unknown item) is a bad line.
"""

import collections

from pipelines import beam_driver, beam_stages, dialect, text_lines
from pipelines.dataset import PreparedDataset, leave_last_out
from pipelines.errors import DataError
from pipelines.formats import DataFormat, register
from pipelines.formats.common import (EVENT_COLUMNS, MIN_SEQ_LEN, event_column_options,
                                      min_length_option, read_lines)


def read_interactions(path, items, bad, user_col="user", item_col="item", time_col="timestamp",
                      delimiter=None, min_length=3):
    lines = read_lines(path)
    while not lines[0][1]:  # leading blank lines before the header
        lines.pop(0)
    delimiter, width, columns = dialect.interactions_header(
        path, lines[0][0], lines[0][1], delimiter, user_col, item_col, time_col)
    events = collections.defaultdict(list)
    for parsed in dialect.parse_interaction_rows(lines[1:], delimiter, width, columns):
        if len(parsed) == 3:
            bad.report(path, parsed[0], parsed[1])
            continue
        number, user, item, stamp = parsed
        events[user].append((stamp, number, item))
    if not events:
        raise DataError(path, None, "no interaction rows after the header")
    sequences, duplicates = [], 0
    for user in events:  # order of first appearance of the user in the file
        ordered = sorted(events[user])  # by time, ties by file order
        duplicates += len(ordered) - len({(stamp, item) for stamp, _, item in ordered})
        sequences.append((user, items.ids([item for _, _, item in ordered])))
    splits, stats = leave_last_out(sequences, min_length)
    stats.update(items.oov_summary(), users=len(events), duplicate_interactions=duplicates)
    return [PreparedDataset("pretrain", splits, items, stats=stats)]


def log_settings(path, options):
    """(header line number, (delimiter, width, columns)) of an interaction log."""
    number, text = text_lines.first_nonblank_line(path)
    return number, dialect.interactions_header(
        path, number, text, options.get("delimiter"), options.get("user_col", "user"),
        options.get("item_col", "item"), options.get("time_col", "timestamp"))


# --- Beam (worker functions at module level, so every runner can pickle them) ------------

def parse_log_chunk(chunk, path, header_number, settings):
    """Worker: (user, (line, stamp, item)) of one byte range, bad lines, the last line."""
    import apache_beam as beam
    start, end, first = chunk
    lines = text_lines.chunk_lines(path, start, end, first)
    if first <= header_number:
        lines = [(n, t) for n, t in lines if n > header_number]
    last = 0
    numbers, users, items, stamps, bad_rows = dialect.parse_interaction_chunk(lines, *settings)
    for parsed in bad_rows:
        if not parsed[2]:
            last = max(last, parsed[0])
        yield beam.pvalue.TaggedOutput("bad", parsed)
    if numbers:
        last = max(last, numbers[-1])
    for number, user, item, stamp in zip(numbers, users, items, stamps):
        yield user, (number, stamp, item)
    yield beam.pvalue.TaggedOutput("last", last)


def user_duplicates(grouped):
    """Events repeating an earlier (time, item) of the same user."""
    _, events = grouped
    events = list(events)
    return len(events) - len({(stamp, item) for _, stamp, item in events})


def build_beam(pipeline, path, tmp, items, bad, num_shards, max_len, options, plan, settings):
    import apache_beam as beam

    header_number, columns = settings
    parsed = beam_stages.parse_stage(pipeline, plan, parse_log_chunk, path, header_number,
                                     columns)
    grouped = parsed.rows | "ByUser" >> beam.GroupByKey()
    sequences = grouped | "Order" >> beam.Map(beam_stages.order_user)
    index, parts = beam_stages.vocabulary_stage(pipeline, sequences, items)
    parts.update(beam_stages.bad_stage(parsed, header_number, bad.keep))
    parts["duplicates"] = (grouped
                           | "Duplicates" >> beam.Map(user_duplicates)
                           | "DuplicatesSum" >> beam.CombineGlobally(sum))
    records = beam_stages.sequence_records_stage(sequences, index,
                                                 options.get("min_length", 3), parts)
    beam_stages.write_stage(pipeline, records, tmp, num_shards, max_len, parts)


@register
class Interactions(DataFormat):
    name = "interactions"
    named_users = True  # the log's own user keys
    flags = (MIN_SEQ_LEN,) + EVENT_COLUMNS

    def options(self, values):
        return dict(min_length_option(values), **event_column_options(values))

    def read(self, input, items, bad, seed, options):
        return read_interactions(input, items, bad, options.get("user_col", "user"),
                                 options.get("item_col", "item"),
                                 options.get("time_col", "timestamp"), options.get("delimiter"),
                                 options.get("min_length", 3))

    def prepare_local(self, input, tmp, items, bad, num_shards, common, options, log=print,
                      chunk_bytes=None, quality=None):
        from pipelines.local_stream import prepare_interactions
        metadata = prepare_interactions(input, tmp, items, bad, num_shards, common, options,
                                        log=log, chunk_bytes=chunk_bytes, quality=quality)
        return {".": {"task": metadata["task"], "splits": metadata["splits"]}}

    def prepare_beam(self, path, tmp, items, bad, num_shards, seed, common, options,
                     pipeline_options, log=print, chunk_bytes=None, quality=None):
        settings = log_settings(path, options)
        plan = text_lines.plan_chunks(path, chunk_bytes or text_lines.CHUNK_BYTES)
        log(f"  running the Beam pipeline on {beam_driver.runner_name(pipeline_options)} "
            f"({len(plan)} chunk(s))")
        beam_driver.run_pipeline(pipeline_options, path, lambda pipeline: build_beam(
            pipeline, path, tmp, items, bad, num_shards, common.get("max_len"), options, plan,
            settings))
        report = beam_driver.read_report(tmp)
        beam_driver.settle(bad, path, report)
        if not report["users"]:
            raise DataError(path, None, "no interaction rows after the header")
        return beam_driver.finish_pretrain(
            path, tmp, report, items, bad, num_shards, common, options, log, quality,
            duplicate_interactions=report["duplicates"])
