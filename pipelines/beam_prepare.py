"""Data preparation as an Apache Beam pipeline: `prepare --runner=DirectRunner|FlinkRunner|
SparkRunner|DataflowRunner [Beam pipeline options]`.

Every format with a Beam parse (`formats.names()`, those whose `prepare_beam` is set)
builds its own pipeline from the shared stages (`beam_stages`) and finishes it on the
driver (`beam_driver`). The pipeline writes the same shards, vocabularies and
metadata.json as the local path, byte for byte (tests/test_pipelines_beam.py), because
both call `pipelines.canonical`, `text_lines`, `dialect` and the formats' own line rules:

1. The driver cuts the input into newline-aligned byte ranges and counts the lines
   before each (`text_lines.plan_chunks`), so workers know every line's number.
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
   directory into place (`writer.publish`).

Files go through `pipelines.fileio`: a path with a scheme (`gs://`, `s3://`, `hdfs://`,
any filesystem registered with Beam) is read and written through Beam's `FileSystems`,
so the driver and the workers need no shared mount (MovieLens excepted: local only).
Bad lines are raised (or counted with --skip_bad_lines) after the pipeline, the smallest
line number first, as a front-to-back reader would.
"""

from pipelines import formats


def beam_formats():
    """The formats a Beam runner prepares."""
    return tuple(name for name in formats.names() if formats.get(name).prepare_beam)


def prepare(format, path, tmp, items, bad, num_shards, seed, common, options, runner,
            beam_args=(), log=print, chunk_bytes=None, quality=None):
    """Run `format`'s pipeline on `runner`, then write vocab/ and metadata.json into `tmp`;
    returns the datasets index."""
    from apache_beam.options.pipeline_options import PipelineOptions

    data_format = formats.get(format)
    if not data_format.prepare_beam:
        raise ValueError(f"--runner={runner} supports --format in {beam_formats()}; {format} "
                         "is prepared with --runner=local")
    pipeline_options = PipelineOptions(list(beam_args) + [f"--runner={runner}"])
    return data_format.prepare_beam(path, tmp, items, bad, num_shards, seed, common, options,
                                    pipeline_options, log=log, chunk_bytes=chunk_bytes,
                                    quality=quality)
