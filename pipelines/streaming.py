"""Where `prepare` sends the preparations that stream: `--runner=local` for the formats
with a streaming local path (`prepare_local`, e.g. interaction logs in compact arrays)
and every Beam runner (`beam_prepare`). Both write into the writer's `.<name>.tmp-*`
directory and move it into place only when complete."""

import shutil

from pipelines import beam_prepare, fileio, formats, writer


def handles(format, runner):
    return runner != "local" or formats.get(format).prepare_local is not None


def prepare(format, output_dir, input, items, bad, num_shards, seed, common, options,
            runner="local", beam_args=(), log=print, chunk_bytes=None, quality=None):
    """Prepare into `output_dir` atomically; returns the datasets index. `quality(where,
    stats, shares)` records dataset.quality's shares and warnings into stats."""
    remote = fileio.is_remote(output_dir)  # workers write there through Beam's filesystems
    tmp = fileio.temp_prefix(output_dir) if remote else writer.temp_dir(output_dir)
    try:
        if runner == "local":
            data_format = formats.get(format)
            if data_format.prepare_local is None:
                raise ValueError(f"no streaming local path for --format={format}")
            index = data_format.prepare_local(input, tmp, items, bad, num_shards, common,
                                              options, log=log, chunk_bytes=chunk_bytes,
                                              quality=quality)
        else:
            index = beam_prepare.prepare(format, input, tmp, items, bad, num_shards, seed,
                                         common, options, runner, beam_args, log=log,
                                         chunk_bytes=chunk_bytes, quality=quality)
        (fileio.publish if remote else writer.publish)(tmp, output_dir)
    except BaseException:
        if remote:
            fileio.remove_tree(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index
