"""Pre-training formats with one user's sequence per line, oldest item first (the release's
pre-training CSV, and any format whose line is a sequence): the local reader and the Beam
pipeline, so such a format only says how one line parses (`parse_line`).

The user of line N is `lineN`; a blank or unparsable line is a bad line; sequences are
cut leave-last-out (`--min_seq_len`); ids follow first appearance, line by line and left
to right, on every runner.
"""

from pipelines import beam_driver, beam_stages, text_lines
from pipelines.dataset import PreparedDataset, leave_last_out
from pipelines.formats import DataFormat
from pipelines.formats.common import MIN_SEQ_LEN, min_length_option, read_lines


class SequenceLines(DataFormat):
    """A format of one sequence per line; subclasses set `name` and define `parse_line`
    (and `line_stats`, `options`, `flags` where they have more)."""

    flags = (MIN_SEQ_LEN,)

    def parse_line(self, text, options):
        """(tokens, None, dropped) of one line (`text_lines.line_text`: "" when blank), or
        (None, bad-line message, dropped); `dropped` counts tokens left out (padding)."""
        raise NotImplementedError

    def line_stats(self, options, dropped):
        """The format's own stats, from the number of tokens `parse_line` dropped."""
        return {}

    def options(self, values):
        return min_length_option(values)

    def read(self, input, items, bad, seed, options):
        sequences, dropped = [], 0
        for number, line in read_lines(input):
            tokens, message, left_out = self.parse_line(line, options)
            dropped += left_out
            if message:
                bad.report(input, number, message)
                continue
            sequences.append((f"line{number}", items.ids(tokens)))
        splits, stats = leave_last_out(sequences, options.get("min_length", 3))
        stats.update(items.oov_summary(), users=len(sequences),
                     **self.line_stats(options, dropped))
        return [PreparedDataset("pretrain", splits, items, stats=stats)]

    def prepare_beam(self, path, tmp, items, bad, num_shards, seed, common, options,
                     pipeline_options, log=print, chunk_bytes=None, quality=None):
        text_lines.first_nonblank_line(path)  # "file is empty"
        plan = text_lines.plan_chunks(path, chunk_bytes or text_lines.CHUNK_BYTES)
        log(f"  running the Beam pipeline on {beam_driver.runner_name(pipeline_options)} "
            f"({len(plan)} chunk(s))")
        beam_driver.run_pipeline(pipeline_options, path, lambda pipeline: self.build_beam(
            pipeline, path, tmp, items, bad, num_shards, common.get("max_len"), options, plan))
        report = beam_driver.read_report(tmp)
        beam_driver.settle(bad, path, report)
        return beam_driver.finish_pretrain(
            path, tmp, report, items, bad, num_shards, common, options, log, quality,
            **self.line_stats(options, report["dropped"]))

    def build_beam(self, pipeline, path, tmp, items, bad, num_shards, max_len, options, plan):
        import apache_beam as beam

        parsed = beam_stages.parse_stage(pipeline, plan, parse_sequence_chunk, path, self,
                                         options, outputs=("bad", "last", "dropped"))
        index, parts = beam_stages.vocabulary_stage(pipeline, parsed.rows, items)
        parts.update(beam_stages.bad_stage(parsed, 0, bad.keep),
                     dropped=parsed.dropped | "Dropped" >> beam.CombineGlobally(sum))
        records = beam_stages.sequence_records_stage(parsed.rows, index,
                                                     options.get("min_length", 3), parts)
        beam_stages.write_stage(pipeline, records, tmp, num_shards, max_len, parts)


def parse_sequence_chunk(chunk, path, format, options):
    """Worker: (user, line, tokens) of one byte range's lines, bad lines, the last
    non-blank line and the tokens dropped."""
    import apache_beam as beam
    start, end, first = chunk
    last, dropped = 0, 0
    for number, text in text_lines.chunk_lines(path, start, end, first):
        if text:
            last = number
        tokens, message, left_out = format.parse_line(text, options)
        dropped += left_out
        if message:
            yield beam.pvalue.TaggedOutput("bad", (number, message, not text))
            continue
        yield f"line{number}", number, tokens
    yield beam.pvalue.TaggedOutput("last", last)
    yield beam.pvalue.TaggedOutput("dropped", dropped)
