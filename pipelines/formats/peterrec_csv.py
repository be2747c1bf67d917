"""The release's demo CSV formats.

Pre-training: one user per line, `item,item,...` (oldest first).
Fine-tuning: `source items,,target[,target...]`, one instance per target, as the release.

The literal token "0": the demo files left-pad short histories with it (23 times in each
file), but the release gives it an id of its own like any other token (174 distinct
tokens incl. "0" + `<UNK>` = 175 ids, the checkpoint's vocabulary). `zero_is_padding=False`
(default) reproduces that; `True` drops "0" tokens as padding (174 ids, no longer the
release's vocabulary), counted in the stats.

`peterrec_pretrain_csv` is a `SequenceLines` format (local and Beam paths there);
`peterrec_finetune_csv` has its own (`read_finetune`, `prepare_finetune_beam`).
"""

from pipelines import beam_driver, beam_stages, canonical, fileio, text_lines
from pipelines.dataset import SPLITS, PreparedDataset, Record, by_instance_split, by_user_split
from pipelines.dataset import split_users
from pipelines.formats import DataFormat, Flag, register
from pipelines.formats.common import item_tokens_error, read_lines, split_tokens
from pipelines.formats.sequence_lines import SequenceLines
from pipelines.vocab import Vocabulary

ZERO = "0"
ZERO_IS_PADDING = Flag("bool", "zero_is_padding", False, "peterrec_*_csv: treat the literal "
                       "token '0' as padding and drop it. Default off: the release gives '0' "
                       "an id of its own (the demo files then have 175 item ids, as the "
                       "release checkpoint).")


def release_padding_tokens(options):
    """The literal "0" pads the release's lines: kept as an item (the release trains it),
    recorded as padding so that no model trained on the data recommends it, unless
    --zero_is_padding drops it."""
    return [] if options.get("zero_is_padding") else [ZERO]


SPLIT_BY = Flag("enum", "split_by", "user", "peterrec_finetune_csv: split 70/3/27 by line "
                "(all targets of a line together; default, no leakage of a source sequence "
                "into the test split) or by instance (the release).", (["user", "instance"],))


def _strip_zeros(tokens, zero_is_padding):
    """(tokens without padding "0"s if zero_is_padding, number dropped)."""
    if not zero_is_padding:
        return tokens, 0
    kept = [t for t in tokens if t != ZERO]
    return kept, len(tokens) - len(kept)


def parse_pretrain_line(line, zero_is_padding=False):
    """One stripped line of a pre-training CSV: (tokens, None, zeros dropped) or
    (None, bad-line message, zeros dropped).  Every path (in memory, Beam) uses this."""
    if not line:
        return None, "empty sequence (blank line)", 0
    if ",," in line:
        return None, ("empty item between commas (is this a fine-tuning file? "
                      "use --format=peterrec_finetune_csv)"), 0
    tokens = split_tokens(line)
    if "" in tokens:
        return None, "empty item (a leading, trailing or doubled ',')", 0
    message = item_tokens_error(tokens)
    if message:
        return None, message, 0
    tokens, zeros = _strip_zeros(tokens, zero_is_padding)
    if not tokens:
        return None, "empty sequence (only padding '0' tokens)", zeros
    return tokens, None, zeros


def parse_finetune_line(line, zero_is_padding=False):
    """One stripped line of a fine-tuning CSV: (source tokens, target tokens, None, zeros
    dropped) or (None, None, bad-line message, zeros dropped)."""
    if not line:
        return None, None, "empty sequence (blank line)", 0
    if ",," not in line:
        return None, None, "expected 'source items,,target[,target...]' (no ',,' found)", 0
    source, target_text = line.split(",,", 1)
    source_tokens = split_tokens(source) if source.strip() else []
    target_tokens = split_tokens(target_text) if target_text.strip() else []
    if not source_tokens:
        return None, None, "empty source sequence before ',,'", 0
    if not target_tokens:
        return None, None, "no target after ',,'", 0
    if "" in source_tokens or "" in target_tokens:
        return None, None, "empty item (a doubled ',' besides the one ',,' separator)", 0
    message = item_tokens_error(source_tokens) or item_tokens_error(target_tokens)
    if message:
        return None, None, message, 0
    source_tokens, zeros = _strip_zeros(source_tokens, zero_is_padding)
    if not source_tokens:
        return None, None, "empty source sequence (only padding '0' tokens)", zeros
    return source_tokens, target_tokens, None, zeros


def read_pretrain(path, items, bad, seed, zero_is_padding=False, min_length=3):
    """The datasets of a pre-training CSV, in memory (what `--runner=local` reads)."""
    return PretrainCsv().read(path, items, bad, seed, {"zero_is_padding": zero_is_padding,
                                                       "min_length": min_length})


def check_finetune_options(items, split_by):
    if not items.frozen:
        raise ValueError("fine-tuning data must be prepared against the pre-training vocabulary: "
                         "pass --vocab=PRETRAIN_DIR/vocab/items.txt")
    if split_by not in ("user", "instance"):
        raise ValueError(f"--split_by must be user or instance, got {split_by!r}")


def read_finetune(path, items, bad, seed, zero_is_padding=False, split_by="user"):
    check_finetune_options(items, split_by)
    targets = Vocabulary()
    records, empty, zeros = [], 0, 0
    for number, line in read_lines(path):
        source_tokens, target_tokens, message, dropped = parse_finetune_line(line, zero_is_padding)
        zeros += dropped
        if message:
            bad.report(path, number, message)
            continue
        source_ids = items.ids(source_tokens)
        empty += all(i == 0 for i in source_ids)
        for token in target_tokens:
            records.append(Record(source_ids, f"line{number}", target=targets.id(token)))
    stats = dict(items.oov_summary(), sources_entirely_oov=empty, instances=len(records),
                 split_by=split_by, zero_is_padding=zero_is_padding, zero_tokens_dropped=zeros)
    split = by_user_split if split_by == "user" else by_instance_split
    return [PreparedDataset("item_rec", split(records, seed), items, targets=targets,
                            stats=stats)]


@register
class PretrainCsv(SequenceLines):
    """The release's pre-training CSV: one user per line, `item,item,...`."""

    name = "peterrec_pretrain_csv"
    flags = SequenceLines.flags + (ZERO_IS_PADDING,)

    def options(self, values):
        return dict(super().options(values),
                    **({"zero_is_padding": True} if values.zero_is_padding else {}))

    def padding_tokens(self, options):
        return release_padding_tokens(options)

    def parse_line(self, text, options):
        return parse_pretrain_line(text, options.get("zero_is_padding", False))

    def line_stats(self, options, dropped):
        return {"zero_is_padding": options.get("zero_is_padding", False),
                "zero_tokens_dropped": dropped}


@register
class FinetuneCsv(DataFormat):
    """The release's fine-tuning CSV: `source items,,target[,target...]` per line."""

    name = "peterrec_finetune_csv"
    flags = (ZERO_IS_PADDING, SPLIT_BY)

    def options(self, values):
        return dict({"zero_is_padding": True} if values.zero_is_padding else {},
                    **({} if values.split_by == "user" else {"split_by": values.split_by}))

    def padding_tokens(self, options):
        return release_padding_tokens(options)

    def read(self, input, items, bad, seed, options):
        return read_finetune(input, items, bad, seed, options.get("zero_is_padding", False),
                             options.get("split_by", "user"))

    def prepare_beam(self, *args, **kwargs):
        return prepare_finetune_beam(*args, **kwargs)


# --- the fine-tuning CSV on Beam (worker functions at module level: runners pickle them) ---

def parse_finetune_chunk(chunk, path, zero_is_padding):
    """Worker: (line, source tokens, target tokens) of one byte range's lines, bad lines,
    the last non-blank line and the "0" tokens dropped."""
    import apache_beam as beam
    start, end, first = chunk
    last, zeros = 0, 0
    for number, text in text_lines.chunk_lines(path, start, end, first):
        if text:
            last = number
        source, targets, message, dropped = parse_finetune_line(text, zero_is_padding)
        zeros += dropped
        if message:
            yield beam.pvalue.TaggedOutput("bad", (number, message, not text))
            continue
        yield number, source, targets
    yield beam.pvalue.TaggedOutput("last", last)
    yield beam.pvalue.TaggedOutput("zeros", zeros)


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


def entirely_oov(sequence, index):
    return int(all(index.get(t, 0) == 0 for t in sequence[2]))


def build_finetune_beam(pipeline, path, tmp, items, bad, num_shards, seed, max_len, options,
                        plan):
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    parsed = beam_stages.parse_stage(pipeline, plan, parse_finetune_chunk, path,
                                     options.get("zero_is_padding", False),
                                     outputs=("bad", "last", "zeros"))
    # the source sequence of each line plays the part of a sequence
    sequences = parsed.rows | "Sources" >> beam.Map(lambda r: (f"line{r[0]}", r[0], r[1]))
    index, parts = beam_stages.vocabulary_stage(pipeline, sequences, items)
    parts.update(beam_stages.bad_stage(parsed, 0, bad.keep),
                 zeros=parsed.zeros | "Zeros" >> beam.CombineGlobally(sum))
    parts["targets"], target_index = beam_stages.first_seen_vocabulary(
        parsed.rows | "TargetFirstSeen" >> beam.FlatMap(
            lambda r: beam_stages.first_occurrences(r[0], r[2])),
        Vocabulary().tokens, "Target")
    assignment = (parsed.rows
                  | "Instances" >> beam.Map(lambda r: (r[0], len(r[2])))
                  | "AllInstances" >> beam.combiners.ToList()
                  | "Assign" >> beam.Map(instance_assignment, seed,
                                         options.get("split_by", "user")))
    records = parsed.rows | "Records" >> beam.FlatMap(
        finetune_records, AsSingleton(index), AsSingleton(target_index),
        AsSingleton(assignment))
    parts["entirely_oov"] = (sequences
                             | "EntirelyOOV" >> beam.Map(entirely_oov, AsSingleton(index))
                             | "EntirelyOOVSum" >> beam.CombineGlobally(sum))
    beam_stages.write_stage(pipeline, records, tmp, num_shards, max_len, parts)


def prepare_finetune_beam(path, tmp, items, bad, num_shards, seed, common, options,
                          pipeline_options, log=print, chunk_bytes=None, quality=None):
    split_by = options.get("split_by", "user")
    check_finetune_options(items, split_by)
    text_lines.first_nonblank_line(path)  # "file is empty"
    plan = text_lines.plan_chunks(path, chunk_bytes or text_lines.CHUNK_BYTES)
    log(f"  running the Beam pipeline on {beam_driver.runner_name(pipeline_options)} "
        f"({len(plan)} chunk(s))")
    beam_driver.run_pipeline(pipeline_options, path, lambda pipeline: build_finetune_beam(
        pipeline, path, tmp, items, bad, num_shards, seed, common.get("max_len"), options, plan))
    report = beam_driver.read_report(tmp)
    beam_driver.settle(bad, path, report)
    canonical.check_not_empty(path, "item_rec",
                              {split: report["counts"].get(split, 0) for split in SPLITS},
                              {"split_by": split_by, "skipped_bad_lines": bad.count})
    targets = Vocabulary(report["targets"])
    fileio.makedirs(fileio.join(tmp, "vocab"))
    targets.save(fileio.join(tmp, "vocab", "targets.txt"))

    def stats(counts):
        return dict(beam_driver.oov_stats(report), sources_entirely_oov=report["entirely_oov"],
                    instances=sum(counts.values()), split_by=split_by,
                    zero_is_padding=options.get("zero_is_padding", False),
                    zero_tokens_dropped=report["zeros"])
    return beam_driver.finish_dataset(
        tmp, report, Vocabulary(report["tokens"], frozen=items.frozen), bad, num_shards, common,
        "item_rec", stats, log, quality, num_targets=len(targets))
