"""What the driver does around a Beam pipeline: run it (`run_pipeline`: a worker's
`DataError` raised again as itself), read the report its last stage wrote
(`read_report`), and write a dataset's vocabulary and metadata.json from it
(`finish_dataset`, field for field what the local writer writes)."""

import json

from pipelines import canonical, fileio, text_lines, writer
from pipelines.beam_stages import REPORT
from pipelines.dataset import SPLITS
from pipelines.errors import DataError
from pipelines.vocab import Vocabulary


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


def read_report(tmp):
    path = fileio.join(tmp, REPORT)
    report = json.loads(fileio.read_bytes(path))
    fileio.delete(path)
    return report


def split_counts(report, directory, num_shards, prefix=""):
    """Records per split; an empty split gets the writer's one empty shard."""
    counts = {split: report["counts"].get(prefix + split, 0) for split in SPLITS}
    for split, count in counts.items():
        if not count:
            fileio.write_tfrecords(fileio.join(directory, writer.shard_name(split, 0, 1)), [])
    return counts


def record_stats(report, name, common):
    return canonical.RecordStats(common.get("max_len"),
                                 *report["record_stats"].get(name, (0, 0, 0, 0, 0)))


def shares(report, name, task, record_stats):
    unseen, tests = report["tests"].get(name, (0, 0))
    return canonical.quality_shares_of_counts(task, record_stats, unseen, tests)


def oov_stats(report):
    return {k: [tuple(x) for x in v] if k == "oov_most_common" else v
            for k, v in report["oov"].items()}


def finish_dataset(tmp, report, items, bad, num_shards, common, task, stats, log, quality=None,
                   **sizes):
    """vocab/items.txt, metadata.json (`sizes`: num_targets or num_classes) of the one
    dataset a pipeline wrote into `tmp`; `stats` gets the bad lines and the quality shares.
    Returns the datasets index."""
    fileio.makedirs(fileio.join(tmp, "vocab"))
    items.save(fileio.join(tmp, "vocab", "items.txt"))
    counts = split_counts(report, tmp, num_shards)
    stats = stats(counts) if callable(stats) else stats
    stats.update(bad.summary())
    record_stats_of = record_stats(report, "", common)
    if quality:
        quality("dataset", stats, shares(report, "", task, record_stats_of))
    metadata = writer.dataset_metadata(
        common, task, len(items), counts, record_stats_of, stats,
        shards=writer.shard_records(tmp, counts, num_shards), **sizes)
    writer.write_metadata(tmp, metadata)
    log(f"  wrote dataset: {task}, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return {".": {"task": task, "splits": counts}}


def settle(bad, path, report, prefix=""):
    """The pipeline's bad-line reports of `path` (`prefix`: its report keys' prefix) fed
    into `bad` as a front-to-back reader would (`text_lines.settle_reports`)."""
    text_lines.settle_reports(bad, path, [tuple(r) for r in report[f"{prefix}bad_first"]],
                              report[f"{prefix}last"], report[f"{prefix}bad_count"])


def finish_pretrain(path, tmp, report, items, bad, num_shards, common, options, log,
                    quality=None, **extra_stats):
    """`finish_dataset` of a pre-training dataset (`sequence_records_stage`'s records and a
    vocabulary in order of first appearance), refused when a split would be empty."""
    min_length = options.get("min_length", 3)
    canonical.check_not_empty(
        path, "pretrain", {split: report["counts"].get(split, 0) for split in SPLITS},
        {"users": report["users"], "users_too_short": report["too_short"],
         "min_length": min_length, "skipped_bad_lines": bad.count})
    stats = {"users_too_short": report["too_short"], "min_length": min_length,
             **oov_stats(report), "users": report["users"], **extra_stats}
    return finish_dataset(tmp, report, Vocabulary(report["tokens"], frozen=items.frozen), bad,
                          num_shards, common, "pretrain", stats, log, quality)


def runner_name(pipeline_options):
    from apache_beam.options.pipeline_options import StandardOptions
    return pipeline_options.view_as(StandardOptions).runner
