"""Where `prepare` sends the preparations that stream: `--runner=local` for interaction
logs (`local_stream`, compact arrays) and every Beam runner (`beam_prepare`). Both write
into the writer's `.<name>.tmp-*` directory and move it into place only when complete."""

import shutil

from pipelines import canonical, fileio

LOCAL_FORMATS = ("interactions",)


def handles(format, runner):
    return runner != "local" or format in LOCAL_FORMATS


def prepare(format, output_dir, input, items, bad, num_shards, seed, common, options,
            runner="local", beam_args=(), log=print, chunk_bytes=None, quality=None):
    """Prepare into `output_dir` atomically; returns the datasets index. `quality(where,
    stats, shares)` records dataset.quality's shares and warnings into stats."""
    remote = fileio.is_remote(output_dir)  # workers write there through Beam's filesystems
    tmp = fileio.temp_prefix(output_dir) if remote else canonical.temp_dir(output_dir)
    try:
        if runner == "local":
            from pipelines.local_stream import prepare_interactions
            if format not in LOCAL_FORMATS:
                raise ValueError(f"no streaming local path for --format={format}")
            metadata = prepare_interactions(input, tmp, items, bad, num_shards, common,
                                            options, log=log, chunk_bytes=chunk_bytes,
                                            quality=quality)
            index = {".": {"task": metadata["task"], "splits": metadata["splits"]}}
        else:
            from pipelines import beam_prepare
            index = beam_prepare.prepare(format, input, tmp, items, bad, num_shards, seed,
                                            common, options, runner, beam_args, log=log,
                                            chunk_bytes=chunk_bytes, quality=quality)
        (fileio.publish if remote else canonical.publish)(tmp, output_dir)
    except BaseException:
        if remote:
            fileio.remove_tree(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index
