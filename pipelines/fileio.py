"""Files by path, local or through Apache Beam's filesystems (`gs://`, `s3://`, `hdfs://`,
any registered scheme), so a Beam preparation needs no filesystem shared by the driver
and the workers.

A path without a scheme (`data/x`, `/tmp/x`) goes through `open`/`os` exactly as before;
a path with one (`gs://bucket/x`) through `apache_beam.io.filesystems.FileSystems`.
`publish` moves a finished temporary prefix into place: by directory renames locally
(the old preparation or the new one, never a mix), file by file with markers otherwise
(see `publish`).
"""

import hashlib
import os
import posixpath
import re
import shutil
import uuid

SCHEME = re.compile(r"[a-zA-Z][-a-zA-Z0-9+.]*://")
#: Written into an output prefix before a remote publish starts and deleted when it ends:
#: a prefix holding it is a half-published preparation, replaced by the next one.
INCOMPLETE = ".incomplete"
MARKERS = ("metadata.json", "datasets.json")


def is_remote(path):
    return bool(path) and SCHEME.match(str(path)) is not None


def _fs():
    from apache_beam.io.filesystems import FileSystems
    return FileSystems


def _raw():
    from apache_beam.io.filesystem import CompressionTypes
    return CompressionTypes.UNCOMPRESSED


def join(base, *names):
    return posixpath.join(base, *names) if is_remote(base) else os.path.join(base, *names)


def split(path):
    """(parent, name) of a path (a remote one's parent without a trailing slash)."""
    if is_remote(path):
        parent, name = posixpath.split(path.rstrip("/"))
        return parent, name
    return os.path.split(os.path.abspath(path))


def exists(path):
    return _fs().exists(path) if is_remote(path) else os.path.exists(path)


def isfile(path):
    """A local regular file, or an existing remote path (object stores have no others)."""
    return exists(path) if is_remote(path) else os.path.isfile(path)


def _matches(pattern):
    from apache_beam.io.filesystem import BeamIOError
    try:
        return _fs().match([pattern])[0].metadata_list
    except BeamIOError:
        return []


def open_read(path):
    """A seekable binary stream of `path`."""
    if is_remote(path):
        return _fs().open(path, compression_type=_raw())
    return open(path, "rb")


def create(path):
    """A binary stream writing `path` (its parents made as needed)."""
    if is_remote(path):
        return _fs().create(path, compression_type=_raw())
    return open(path, "wb")


def read_bytes(path):
    with open_read(path) as handle:
        return handle.read()


def write_bytes(path, data):
    with create(path) as handle:
        handle.write(data)


def makedirs(path):
    """A directory and its parents; on object stores (no directories) nothing to do
    beyond what the filesystem's `mkdirs` does."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
        return
    if not _fs().exists(path):
        try:
            _fs().mkdirs(path)
        except IOError:
            if not _fs().exists(path):
                raise


def size(path):
    if not is_remote(path):
        return os.path.getsize(path)
    return _fs().match([path])[0].metadata_list[0].size_in_bytes


def sha256(path):
    digest = hashlib.sha256()
    with open_read(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def list_files(prefix):
    """Every file under a remote `prefix` (recursively), sorted."""
    return sorted(m.path for m in _matches(prefix.rstrip("/") + "/**"))


def delete(path):
    """Delete one file."""
    if is_remote(path):
        _fs().delete([path])
    else:
        os.remove(path)


def remove_tree(path):
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    files = list_files(path)
    if files:
        _fs().delete(files)
    if _fs().exists(path):  # a directory of a filesystem that has them
        _fs().delete([path])


def temp_prefix(output_dir):
    """`.<name>.tmp-<random>` beside a remote output (the local writer's naming)."""
    parent, name = split(output_dir)
    return join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


def write_tfrecords(path, serialized):
    """A GZIP TFRecord file of `serialized` records: TensorFlow's writer, so the bytes are
    those of every other shard; a remote file is written locally, then copied."""
    import tempfile

    import tensorflow as tf
    if not is_remote(path):
        with tf.io.TFRecordWriter(path, options="GZIP") as handle:
            for record in serialized:
                handle.write(record)
        return
    with tempfile.TemporaryDirectory(prefix="peterrec-shard-") as scratch:
        local = os.path.join(scratch, "shard")
        write_tfrecords(local, serialized)
        with open(local, "rb") as source, create(path) as target:
            shutil.copyfileobj(source, target, 1 << 20)


def publish(tmp, output_dir):
    """Move the files of a finished remote `tmp` prefix to `output_dir`.

    Object stores rename file by file (a copy and a delete), so the directory cannot
    change in one step. The order keeps every state a reader can see safe: INCOMPLETE is
    written into the output first, the old preparation's markers (metadata.json,
    datasets.json) are deleted before anything else of it, the new files are moved with
    the markers last, and INCOMPLETE is deleted at the end. Readers and `prepare` find
    either the old preparation, a prefix without a marker (refused by readers; replaced by
    the next `prepare`), or the new one."""
    marker = join(output_dir, INCOMPLETE)
    write_bytes(marker, b"a preparation is being published here\n")
    old = [path for path in list_files(output_dir) if path != marker]
    first = [p for p in old if posixpath.basename(p) in MARKERS]
    if first:
        _fs().delete(first)
    rest = [p for p in old if p not in first]
    if rest:
        _fs().delete(rest)
    sources = list_files(tmp)
    base = tmp.rstrip("/") + "/"
    ordered = sorted(sources, key=lambda p: (posixpath.basename(p) in MARKERS,
                                             p.endswith("datasets.json"), p))
    for source in ordered:
        target = join(output_dir, source[len(base):])
        makedirs(posixpath.dirname(target))
        _fs().rename([source], [target])
    _fs().delete([marker])
    remove_tree(tmp)
