"""Turn raw data into a prepared dataset: vocabularies, GZIP TFRecord shards, metadata.

    python -m pipelines.prepare --format=FORMAT --input=PATH --output_dir=DIR \
        [--max_len=N] [--num_shards=N] [--vocab=PATH] [--seed=S] [--skip_bad_lines]

Formats (--format): one module each in pipelines/formats/, with the flags it reads
(`synthetic` reads no --input). Multi-task sources (movielens_100k, synthetic) write one
sub-directory per dataset (`pretrain/`, then one per downstream task) and `datasets.json`.
"""

import glob
import hashlib
import json
import math
import os
import shutil
import sys
import time

from pipelines import canonical, fileio, formats, streaming, writer
from pipelines.dataset import file_checksum, quality
from pipelines.errors import BadLines, DataError
from pipelines.locking import exclusive_lock
from pipelines.vocab import Vocabulary


def prepare(format, output_dir, input=None, max_len=50, num_shards=4, vocab=None, seed=0,
            skip_bad_lines=False, overwrite=False, log=print, max_oov_share=0.05, runner="local",
            beam_args=(), **options):
    """Prepare `input` in `format` into `output_dir`; returns the datasets index.

    `options` are format specific (see `define_flags`). Re-running with the same inputs
    and options is a no-op; a different preparation in `output_dir` is an error unless
    `overwrite`. One preparation per `output_dir` at a time (a lock file beside it,
    taken before the input is read, which also proves the location writable).
    OOV and unseen-test-target shares above `max_oov_share` are warned about.
    `runner` is "local" or a Beam runner (`beam_args`: its pipeline options); it is not
    part of the fingerprint, since every runner writes the same records.
    """
    if not formats.get(format).generated and not input:
        raise ValueError(f"--input is required for --format={format}")
    if not (max_len >= 1 and num_shards >= 1):
        raise ValueError(f"--max_len and --num_shards must be >= 1, got {max_len}, {num_shards}")
    if options.get("min_length", 3) < 3:
        raise ValueError(f"--min_seq_len must be >= 3 (leave-last-out takes a validation and a "
                         f"test target and needs an item before them), got "
                         f"{options['min_length']}")
    if not (math.isfinite(max_oov_share) and 0 <= max_oov_share <= 1):
        raise ValueError(f"--max_oov_share must be in [0, 1], got {max_oov_share}")
    remote = [p for p in (output_dir, input, vocab, options.get("events")) if fileio.is_remote(p)]
    if remote and runner == "local":
        raise ValueError(f"{remote[0]}: paths with a scheme are read and written through "
                         "Beam's filesystems; pass a Beam --runner (e.g. --runner=DirectRunner)")
    if fileio.is_remote(output_dir):
        # no lock and no stale-temporary sweep: an object store has no exclusive create, so
        # one preparation per remote output at a time is the caller's to ensure
        return _prepare(format, output_dir, input, max_len, num_shards, vocab, seed,
                        skip_bad_lines, overwrite, log, max_oov_share, options, runner,
                        beam_args)
    if "://" not in output_dir and os.path.islink(output_dir.rstrip("/") or "/"):
        # published where the link points (a data disk), not by replacing the link
        output_dir = os.path.realpath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output_dir {output_dir} is a file, not a directory")
    for flag, path in (("--input", input), ("--vocab", vocab)):
        if path and "://" not in path and "://" not in output_dir and _inside(path, output_dir):
            raise DataError(path, None, f"{flag} lies inside --output_dir {output_dir}, whose "
                            "contents a preparation replaces (it would be deleted); move it "
                            "out or choose another --output_dir")
    parent, name = os.path.split(os.path.abspath(output_dir))
    above = next(p for p in _parents(parent) if os.path.exists(p))
    if not os.path.isdir(above):
        raise DataError(above, None, f"not a directory: cannot create --output_dir {output_dir} "
                        "under it")
    if os.path.isdir(parent) and not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write --output_dir {output_dir}: {parent} is not writable")
    try:
        with exclusive_lock(parent, f".{name}.lock", owner=output_dir):
            _remove_stale_temporaries(output_dir, log)
            return _prepare(format, output_dir, input, max_len, num_shards, vocab, seed,
                            skip_bad_lines, overwrite, log, max_oov_share, options, runner,
                            beam_args)
    except Exception as error:
        fault = filesystem_fault(error, output_dir)
        if fault is None:
            raise
        raise fault from error


def _inside(path, directory):
    """Whether `path` is `directory` or lies under it (symbolic links resolved)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def _parents(path):
    """`path` and every directory above it, nearest first."""
    while True:
        yield path
        up = os.path.dirname(path)
        if up == path:
            return
        path = up


def filesystem_fault(error, output_dir):
    """A `DataError` naming the path and the reason for an operating-system error (a full
    disk, a read-only or unwritable location, an unreadable input) or a TensorFlow file
    error (shards are written by tf.io), also as the cause of a Beam runner's error; None
    for anything else (a ValueError, DataError included, already says what is wrong).
    Every writer removes its temporary directory on the way out, so nothing partial is
    published; a path inside that directory is reported as `output_dir` (the name the
    user gave)."""
    if isinstance(error, ValueError):
        return None
    tf = sys.modules.get("tensorflow")
    kinds = (OSError,) if tf is None else (OSError, tf.errors.OpError)
    while error is not None and not isinstance(error, kinds):
        # a Beam runner raises a RuntimeError while handling the worker's error
        error = error.__cause__ or error.__context__
    if error is None:
        return None
    if isinstance(error, OSError):
        path, reason = error.filename, error.strerror or str(error)
    else:
        path, reason = None, error.message
    parent, name = os.path.split(os.path.abspath(output_dir))
    if path is None or os.path.abspath(str(path)).startswith(
            os.path.join(parent, f".{name}.tmp-")):
        path = output_dir
    return DataError(path, None, f"{reason} (nothing was published; any earlier "
                     "preparation there is unchanged)")


def _remove_stale_temporaries(output_dir, log):
    """Delete `.<name>.tmp-*` left by killed preparations of `output_dir` (and superseded
    `.<name>.old-*` when the output exists). Only called under the output's lock, so no
    running job owns them. The output's own name is escaped: `DATA/x*` must not match
    the temporaries of `DATA/xyz`."""
    parent, name = os.path.split(os.path.abspath(output_dir))
    stale = glob.glob(os.path.join(glob.escape(parent), glob.escape(f".{name}.tmp-") + "*"))
    if os.path.isdir(output_dir):
        stale += glob.glob(os.path.join(glob.escape(parent), glob.escape(f".{name}.old-") + "*"))
    for path in sorted(stale):
        log(f"removing {path}, left by an interrupted preparation")
        shutil.rmtree(path, ignore_errors=True)


def _warn(datasets, max_oov_share, log):
    """Record each dataset's OOV / unseen-target shares; warn above `max_oov_share`."""
    for dataset in datasets:
        _note_quality(dataset.name or "dataset", dataset.stats, quality(dataset),
                      max_oov_share, log)


def _note_quality(where, stats, shares, max_oov_share, log):
    """Put `shares` (dataset.quality's) and the warnings they call for into `stats`; the
    streaming paths compute the shares as they write and call this too."""
    warnings = []
    if stats.get("duplicate_interactions"):
        warnings.append(f"{where}: {stats['duplicate_interactions']} duplicate "
                        "(user, item, time) rows kept")
    limit = f"over --max_oov_share={max_oov_share}"
    if shares["oov_share"] > max_oov_share:
        warnings.append(f"{where}: {shares['oov_share']:.1%} of item occurrences are not "
                        f"in the vocabulary (mapped to id 0), {limit}")
    without, users = stats.get("users_without_history", 0), stats.get("users", 0)
    if users and without / users > max_oov_share:
        warnings.append(f"{where}: {without} of {users} users of the table "
                        f"({without / users:.1%}; {stats.get('users_not_in_events', 0)} not in "
                        "the event log at all) have no history and were dropped, "
                        f"{limit}")
    if shares.get("unseen_test_target_share", 0) > max_oov_share:
        warnings.append(f"{where}: {shares['unseen_test_target_share']:.1%} of test targets "
                        f"({shares['unseen_test_targets']}) never occur in training, {limit}")
    stats.update(shares, warnings=warnings)
    for warning in warnings:
        log(f"warning: {warning}")


def _source_checksums(input, vocab, events):
    """{name: SHA-256} of every source (a file `input`, each file of a directory `input`,
    the event log as `events:NAME`); DataError for a source that is missing."""
    checksums = {}
    for path in (input, vocab, events):
        if fileio.is_remote(path) and not fileio.exists(path):
            raise DataError(path, None, "not found")
    if fileio.is_remote(input):
        checksums[fileio.split(input)[1]] = file_checksum(input)
    elif input and os.path.isfile(input):
        checksums[os.path.basename(input)] = file_checksum(input)
    elif input and os.path.isdir(input):
        for name in sorted(os.listdir(input)):
            if os.path.isfile(os.path.join(input, name)):
                checksums[name] = file_checksum(os.path.join(input, name))
    elif input:
        raise DataError(input, None, "not found")
    if events and not fileio.isfile(events):
        raise DataError(events, None, "--events not found (expected the event log file)")
    if events:
        checksums["events:" + fileio.split(events)[1]] = file_checksum(events)
    if vocab and not fileio.isfile(vocab):
        raise DataError(vocab, None, "--vocab not found (expected PRETRAIN_DIR/vocab/items.txt)")
    return checksums


def _prepare(format, output_dir, input, max_len, num_shards, vocab, seed, skip_bad_lines,
             overwrite, log, max_oov_share, options, runner="local", beam_args=()):
    events = options.get("events")
    checksums = _source_checksums(input, vocab, events)
    vocab_checksum = file_checksum(vocab) if vocab else None
    # the event log is a source like --input: its checksum counts, not where it lies
    recorded = {k: v for k, v in options.items() if k != "events"}
    settings = {"format": format, "max_len": max_len, "num_shards": num_shards, "seed": seed,
                "skip_bad_lines": skip_bad_lines, "options": recorded}
    if writer.FORMAT_VERSION != 1:  # version-1 fingerprints stay what they always were
        settings["format_version"] = writer.FORMAT_VERSION
    fingerprint = hashlib.sha256(json.dumps(
        [settings, checksums, vocab_checksum], sort_keys=True).encode()).hexdigest()[:16]
    found = writer.existing_fingerprint(output_dir)
    if found == fingerprint and not overwrite:
        log(f"{output_dir} already holds this preparation (fingerprint {fingerprint}); nothing to do")
        return writer.read_index(output_dir)
    if found == "unknown":
        raise ValueError(f"{output_dir} is not empty and holds no preparation (no metadata.json "
                         "or datasets.json); refusing to write into it, even with --overwrite")
    if found not in (None, "") and found != fingerprint and not overwrite:
        raise ValueError(f"{output_dir} already holds a different preparation (fingerprint "
                         f"{found}, this one {fingerprint}); choose another --output_dir or "
                         "pass --overwrite")
    try:
        items = Vocabulary.load(vocab) if vocab else Vocabulary()
    except DataError:
        raise
    except ValueError as error:
        raise DataError(vocab, None, str(error)) from error
    bad = BadLines(skip_bad_lines)
    start = time.time()
    log(f"reading {input or 'synthetic generator'} as {format}")
    common = {"format": format, "max_len": max_len, "seed": seed, "fingerprint": fingerprint,
              "seeds": {"split": seed,
                        "generator": seed if formats.get(format).generated else None},
              "source_checksums": checksums, "vocab_source": vocab,
              "vocab_source_checksum": vocab_checksum, "options": recorded}
    if events:
        common["events_source"] = events
    padding = formats.get(format).padding_tokens(options)
    if padding:
        common["padding_tokens"] = padding
    if streaming.handles(format, runner):  # interaction logs locally, everything on Beam
        index = streaming.prepare(
            format, output_dir, input, items, bad, num_shards, seed, common, options, runner,
            beam_args, log=log, quality=lambda where, stats, shares: _note_quality(
                where, stats, shares, max_oov_share, log))
        if bad.count:
            log(f"  skipped {bad.count} bad lines, e.g. {bad.examples[:3]}")
        log(f"prepared in {time.time() - start:.1f}s (fingerprint {fingerprint})")
        return index
    datasets = formats.get(format).read(input, items, bad, seed, options)
    for dataset in datasets:
        dataset.stats.update(bad.summary())
        canonical.check_not_empty(
            input, dataset.name or dataset.task,
            {split: len(records) for split, records in dataset.splits.items()}, dataset.stats)
    _warn(datasets, max_oov_share, log)
    log(f"read in {time.time() - start:.1f}s; writing {len(datasets)} dataset(s)")
    index = writer.write_all(output_dir, datasets, num_shards, common, log=log)
    if bad.count:
        log(f"  skipped {bad.count} bad lines, e.g. {bad.examples[:3]}")
    log(f"prepared in {time.time() - start:.1f}s (fingerprint {fingerprint})")
    return index


def define_flags():
    from absl import flags

    flags.DEFINE_enum("format", None, list(formats.names()), "Source format of --input.")
    flags.DEFINE_string("input", None, "Input file (CSV/TSV formats) or directory "
                        "(movielens_100k: the ml-100k folder). Not used by synthetic.")
    flags.DEFINE_string("output_dir", None, "Directory to write the prepared dataset(s) into.")
    flags.DEFINE_integer("max_len", 50, "Sequence length the input functions pad/truncate to "
                         "(most recent items kept); recorded in metadata.json.")
    flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split (fewer if fewer records).")
    flags.DEFINE_string("vocab", None, "Existing items vocabulary (PRETRAIN_DIR/vocab/items.txt) "
                        "to prepare against; required for fine-tuning data. Unknown items map "
                        "to id 0 (<UNK>) and are counted in metadata.json.")
    flags.DEFINE_integer("seed", 0, "Seed for splits and the synthetic generator.")
    flags.DEFINE_bool("skip_bad_lines", False, "Count and report malformed lines instead of "
                      "stopping at the first one.")
    flags.DEFINE_bool("overwrite", False, "Replace a different preparation in --output_dir.")
    flags.DEFINE_float("max_oov_share", 0.05, "Warn (and record in metadata.json) when more "
                       "than this share of item occurrences is out of the vocabulary, or of "
                       "test targets never occurs in training.")
    formats.define_flags(flags)  # every format's own flags
    from pipelines.beam_prepare import beam_formats
    flags.DEFINE_string("runner", "local", "local (in memory; interaction logs in compact "
                        "arrays), or a Beam runner: DirectRunner, FlinkRunner, SparkRunner, "
                        f"DataflowRunner, ... (formats {', '.join(beam_formats())}). Flags this "
                        "command does not know are passed to Beam as pipeline options.")
    flags.mark_flags_as_required(["format", "output_dir"])


def options_from_flags(values):
    """The format-specific options of `prepare` from parsed flags (only the relevant ones,
    so an unrelated flag does not change the fingerprint)."""
    return formats.get(values.format).options(values)


def main(values, beam_args):
    """flags -> prepare -> the last line; `beam_args` are the flags prepare does not
    define: Beam pipeline options, refused with the local runner."""
    if beam_args and values.runner == "local":
        raise ValueError(f"unknown flags {beam_args} (Beam pipeline options need a Beam "
                         "--runner)")
    if values.runner != "local" and not values["verbosity"].present and not any(
            arg.startswith("--default_sdk_harness_log_level") for arg in beam_args):
        # Beam's workers (processes of their own) log at INFO unless told otherwise
        beam_args = beam_args + ["--default_sdk_harness_log_level=WARNING"]
    index = prepare(
        values.format, values.output_dir, values.input, values.max_len, values.num_shards,
        values.vocab, values.seed, values.skip_bad_lines, values.overwrite,
        max_oov_share=values.max_oov_share, runner=values.runner, beam_args=beam_args,
        **options_from_flags(values))
    return next_step(values.output_dir, index)


def next_step(output_dir, index):
    """The last line: where each prepared dataset's --data_dir is and what to run next."""
    from pipelines.command import Done, command_line

    data_dirs = {name: os.path.normpath(os.path.join(output_dir, name)) for name in index}
    listed = ", ".join(f"{data_dirs[name]} ({info['task']})" for name, info in index.items())
    pretrain = [data_dirs[name] for name, info in index.items() if info["task"] == "pretrain"]
    following = (command_line("peterrec_tf.pretrain", data_dir=pretrain[0],
                              model_dir="runs/pretrained") if pretrain else
                 command_line("peterrec_tf.finetune", pretrained="PRETRAINED_MODEL_DIR",
                              data_dir=next(iter(data_dirs.values())), model_dir="runs/TASK"))
    return Done(f"wrote --data_dir {listed}", following)


def cli():
    """The command (`python -m pipelines.prepare` and `peterrec-prepare`); flags it does
    not define are Beam pipeline options (--runner=...)."""
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__, passes_unknown=True,
                minimums={"max_len": 1, "num_shards": 1, "max_oov_share": 0})


if __name__ == "__main__":
    cli()
