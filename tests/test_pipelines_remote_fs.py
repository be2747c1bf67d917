"""Beam preparations read and write through Apache Beam's filesystems: with a scheme that
only lives in memory (`memtest://`, an object store without directories, registered
here), inputs, shards, vocabularies and metadata never touch a local path, and the
result equals the local preparation byte for byte; publishing replaces an earlier or a
half-published preparation."""

import io
import os
import posixpath

import pytest

from conftest import FINETUNE_CSV, PRETRAIN_CSV
from pipelines import fileio, text_lines
from pipelines.prepare import prepare

beam_filesystem = pytest.importorskip("apache_beam.io.filesystem")
quiet = {"log": lambda *_: None}
BEAM = {"runner": "DirectRunner", "beam_args": ["--direct_num_workers=1"]}
STORE = {}  # path -> bytes: the whole "bucket"


class _Upload(io.BytesIO):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def close(self):
        if not self.closed:
            STORE[self.path] = self.getvalue()
        super().close()


class MemoryFileSystem(beam_filesystem.FileSystem):
    """`memtest://` objects in a dict: no directories, listing by prefix, like GCS."""

    @classmethod
    def scheme(cls):
        return "memtest"

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *paths)

    def split(self, path):
        return posixpath.split(path)

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for path in sorted(STORE):
            if path.startswith(prefix):
                yield beam_filesystem.FileMetadata(path, len(STORE[path]), 0.0)

    def create(self, path, mime_type=None, compression_type=None):
        return _Upload(path)

    def open(self, path, mime_type=None, compression_type=None):
        if path not in STORE:
            raise beam_filesystem.BeamIOError("not found", {path: FileNotFoundError(path)})
        return io.BytesIO(STORE[path])

    def copy(self, sources, destinations):
        for source, destination in zip(sources, destinations):
            STORE[destination] = STORE[source]

    renames_left = None  # a number: the rename after that many fails (an interruption)

    def rename(self, sources, destinations):
        for source, destination in zip(sources, destinations):
            if MemoryFileSystem.renames_left is not None:
                if MemoryFileSystem.renames_left == 0:
                    raise beam_filesystem.BeamIOError("interrupted", {source: IOError()})
                MemoryFileSystem.renames_left -= 1
            STORE[destination] = STORE.pop(source)

    def exists(self, path):
        return path in STORE

    def size(self, path):
        return len(STORE[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(len(STORE[path]))

    def metadata(self, path):
        return beam_filesystem.FileMetadata(path, len(STORE[path]), 0.0)

    def delete(self, paths):
        for path in paths:
            if path not in STORE:
                raise beam_filesystem.BeamIOError("not found", {path: FileNotFoundError(path)})
            del STORE[path]

    def report_lineage(self, path, lineage):
        pass


@pytest.fixture
def bucket():
    STORE.clear()
    yield STORE
    STORE.clear()
    MemoryFileSystem.renames_left = None


def upload(local, remote):
    with open(local, "rb") as handle:
        STORE[remote] = handle.read()
    return remote


def same_sources(got, local):
    """Give a downloaded preparation the local one's source paths (metadata.json records
    where --vocab and --events were; everything else must be equal as it is)."""
    import json

    from pipelines import metadata_checksum
    path = os.path.join(got, "metadata.json")
    meta = json.load(open(path))
    expected = json.load(open(os.path.join(local, "metadata.json")))
    for key in ("vocab_source", "events_source"):
        if key in meta:
            meta[key] = expected[key]
    if metadata_checksum.KEY in meta:  # the edit above is the test's own: seal it again
        meta[metadata_checksum.KEY] = metadata_checksum.content_checksum(meta)
    with open(path, "w") as handle:
        json.dump(meta, handle)
    return got


def download(prefix, directory):
    """Copy every object under `prefix` to a local directory (to compare it)."""
    for path in fileio.list_files(prefix):
        target = os.path.join(directory, path[len(prefix) + 1:])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(STORE[path])
    return directory


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(text_lines, "CHUNK_BYTES", 4096)


def test_remote_input_and_output_equal_the_local_preparation(bucket, tmp_path, small_chunks):
    from test_pipelines_beam import assert_same_dataset
    local = str(tmp_path / "local")
    prepare("peterrec_pretrain_csv", local, PRETRAIN_CSV, **quiet)
    remote_csv = upload(PRETRAIN_CSV, "memtest://in/" + os.path.basename(PRETRAIN_CSV))
    prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, **BEAM, **quiet)
    assert not [p for p in STORE if ".tmp-" in p or p.endswith(fileio.INCOMPLETE)]
    assert_same_dataset(local, download("memtest://out/pre", str(tmp_path / "got")))
    # fine-tuning against a remote vocabulary
    local_ft = str(tmp_path / "local_ft")
    prepare("peterrec_finetune_csv", local_ft, FINETUNE_CSV,
            vocab=os.path.join(str(tmp_path / "got"), "vocab", "items.txt"), **quiet)
    prepare("peterrec_finetune_csv", "memtest://out/ft", upload(FINETUNE_CSV, "memtest://in/" + os.path.basename(FINETUNE_CSV)),
            vocab="memtest://out/pre/vocab/items.txt", **BEAM, **quiet)
    assert_same_dataset(local_ft, same_sources(
        download("memtest://out/ft", str(tmp_path / "got_ft")), local_ft))
    # the same preparation again is a no-op; another one needs --overwrite and replaces it
    before = dict(STORE)
    prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, **BEAM, **quiet)
    assert STORE == before
    with pytest.raises(ValueError, match="different preparation"):
        prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, seed=3, **BEAM,
                **quiet)
    prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, max_len=7,
            overwrite=True, **BEAM, **quiet)
    again = str(tmp_path / "again")
    prepare("peterrec_pretrain_csv", again, PRETRAIN_CSV, max_len=7, **quiet)
    assert_same_dataset(again, download("memtest://out/pre", str(tmp_path / "got_again")))


def test_table_formats_through_remote_files(bucket, tmp_path):
    from test_pipelines_beam import assert_same_dataset
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "".join(
        f"u{u},i{(u * 7 + k) % 11},{k}\n" for u in range(12) for k in range(5)))
    labels = tmp_path / "labels.csv"
    labels.write_text("user,label\n" + "".join(f"u{u},{'ab'[u % 2]}\n" for u in range(12)))
    pre = str(tmp_path / "pre")
    prepare("interactions", pre, str(log), **quiet)
    vocab = os.path.join(pre, "vocab", "items.txt")
    local = str(tmp_path / "labels_local")
    prepare("user_labels", local, str(labels), events=str(log), vocab=vocab, cutoff_time=4.0,
            **quiet)
    prepare("user_labels", "memtest://out/labels", upload(str(labels), "memtest://in/labels.csv"),
            events=upload(str(log), "memtest://in/log.csv"),
            vocab=upload(vocab, "memtest://in/items.txt"), cutoff_time=4.0, **BEAM, **quiet)
    assert_same_dataset(local, same_sources(
        download("memtest://out/labels", str(tmp_path / "got")), local))


def test_an_interrupted_publish_is_replaced_and_local_runs_refuse_schemes(bucket, tmp_path):
    remote_csv = upload(PRETRAIN_CSV, "memtest://in/" + os.path.basename(PRETRAIN_CSV))
    STORE["memtest://out/pre/" + fileio.INCOMPLETE] = b""
    STORE["memtest://out/pre/train-00000-of-00004.tfrecord.gz"] = b"half"
    prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, **BEAM, **quiet)
    names = {p.rsplit("/", 1)[1] for p in fileio.list_files("memtest://out/pre")}
    assert "metadata.json" in names and fileio.INCOMPLETE not in names
    assert STORE["memtest://out/pre/train-00000-of-00004.tfrecord.gz"] != b"half"
    STORE["memtest://junk/x"] = b"not a preparation"
    with pytest.raises(ValueError, match="holds no preparation"):
        prepare("peterrec_pretrain_csv", "memtest://junk", remote_csv, **BEAM, **quiet)
    with pytest.raises(ValueError, match="Beam --runner"):
        prepare("peterrec_pretrain_csv", "memtest://out/x", remote_csv, **quiet)


def test_a_publish_interrupted_midway_never_looks_finished(bucket, tmp_path):
    from pipelines import writer
    from test_pipelines_beam import assert_same_dataset
    remote_csv = upload(PRETRAIN_CSV, "memtest://in/" + os.path.basename(PRETRAIN_CSV))
    prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, **BEAM, **quiet)
    MemoryFileSystem.renames_left = 3  # the old one deleted, three new files moved
    with pytest.raises(Exception, match="interrupted"):
        prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, max_len=7,
                overwrite=True, **BEAM, **quiet)
    MemoryFileSystem.renames_left = None
    names = [p.rsplit("/", 1)[1] for p in fileio.list_files("memtest://out/pre")]
    assert len(names) == 4 and fileio.INCOMPLETE in names  # three new shards, no marker
    assert "metadata.json" not in names and "datasets.json" not in names
    assert not [p for p in STORE if ".tmp-" in p]  # the temporary prefix is removed
    assert writer.existing_fingerprint("memtest://out/pre") == ""
    prepare("peterrec_pretrain_csv", "memtest://out/pre", remote_csv, max_len=7, **BEAM,
            **quiet)  # replaces the half-published one, no --overwrite needed
    local = str(tmp_path / "local")
    prepare("peterrec_pretrain_csv", local, PRETRAIN_CSV, max_len=7, **quiet)
    assert_same_dataset(local, download("memtest://out/pre", str(tmp_path / "got")))
