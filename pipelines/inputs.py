"""Reading a prepared dataset directory, as `pipelines.writer` wrote it: metadata.json,
the vocabularies and the shards, each verified where it is read (checksums, sizes, record
counts), with errors naming the file.

The tf.data input functions that turn the shards into a model's batches are the model's
own preprocessing (`peterrec_tf.data.datasets`); they read the shards through here.
"""

import contextlib
import glob
import json
import os

import tensorflow as tf

from pipelines import metadata_checksum
from pipelines.dataset import file_checksum
from pipelines.errors import DataError
from pipelines.vocab import read_tokens

SUPPORTED_VERSION = 1


def read_metadata(data_dir):
    """metadata.json of a prepared dataset directory (clear error for anything else)."""
    path = os.path.join(data_dir, "metadata.json")
    if not os.path.exists(path):
        hint = (" (it holds several datasets: use one of its sub-directories, see datasets.json)"
                if os.path.exists(os.path.join(data_dir, "datasets.json")) else "")
        raise FileNotFoundError(f"{data_dir} is not a prepared dataset: metadata.json is missing "
                                f"(run python -m pipelines.prepare){hint}")
    try:
        with open(path, encoding="utf-8") as handle:
            meta = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(path, None, f"not valid JSON ({error}); re-run python -m "
                        "pipelines.prepare") from None
    metadata_checksum.verify(path, meta)
    if meta.get("version", 0) > SUPPORTED_VERSION:
        raise ValueError(f"{path}: prepared-data format version {meta['version']} is newer than "
                         f"this code reads ({SUPPORTED_VERSION}); update the code or re-prepare")
    return meta


def check_vocabularies(data_dir):
    """Every vocabulary of a preparation against metadata.json's SHA-256 records, and its
    length against the size metadata.json gives the jobs (a model of `num_items` built
    over a shorter vocabulary would rank ids that name no item)."""
    folder = os.path.join(data_dir, "vocab")
    meta = read_metadata(data_dir)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        metadata_checksum.check_vocab_file(os.path.join(folder, name))
    for name, key in (("items.txt", "num_items"), ("targets.txt", "num_targets"),
                      ("labels.txt", "num_classes")):
        path = os.path.join(folder, name)
        if key in meta and os.path.exists(path) and len(read_tokens(path)) != meta[key]:
            raise DataError(os.path.join(data_dir, "metadata.json"), None,
                            f"{key} is {meta[key]} but {path} holds {len(read_tokens(path))} "
                            "tokens (edited after the preparation?); prepare the data again")


def load_vocab(path):
    """Tokens of a vocabulary file (line i is the token of id i), verified against the
    SHA-256 its preparation's metadata.json records."""
    metadata_checksum.check_vocab_file(path)
    return read_tokens(path)


def read_data_vocab(data_dir, name, metadata=None):
    """Tokens of `data_dir/vocab/<name>`, verified against metadata.json's record (when it
    has one); a missing file is a `FileNotFoundError`, another content a `DataError`."""
    metadata = metadata if metadata is not None else read_metadata(data_dir)
    path = os.path.join(data_dir, "vocab", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; the prepared dataset is incomplete")
    recorded = metadata.get(metadata_checksum.VOCAB_KEY)
    if recorded is not None:
        if name not in recorded:
            raise DataError(path, None, "not written by this preparation (metadata.json does "
                            "not record it)")
        if file_checksum(path) != recorded[name]:
            raise DataError(path, None, "SHA-256 differs from metadata.json's record (edited or "
                            "replaced after the preparation); re-run python -m pipelines.prepare")
    return read_tokens(path)


def shard_files(data_dir, split):
    """The split's shard paths. When metadata.json lists the shards (preparations since
    the fault-injection work), each must be there with its recorded size: a missing,
    extra, truncated or grown shard is a `DataError` naming it (a stat, no reading)."""
    files = sorted(glob.glob(os.path.join(glob.escape(data_dir), f"{split}-*-of-*.tfrecord.gz")))
    recorded = {name: info for name, info in read_metadata(data_dir).get("shards", {}).items()
                if name.startswith(f"{split}-")}
    if recorded:
        found = {os.path.basename(f) for f in files}
        for name in sorted(set(recorded) - found):
            raise DataError(os.path.join(data_dir, name), None, "shard listed in metadata.json "
                            "is missing; re-run python -m pipelines.prepare")
        for name in sorted(found - set(recorded)):
            raise DataError(os.path.join(data_dir, name), None, "shard is not listed in "
                            "metadata.json (left from another preparation?)")
        for path in files:
            size, expected = os.path.getsize(path), recorded[os.path.basename(path)]["bytes"]
            if size != expected:
                raise DataError(path, None, f"{size} bytes, metadata.json records {expected} "
                                "(truncated or replaced); re-run python -m pipelines.prepare")
    if not files:
        raise FileNotFoundError(f"no {split} shards in {data_dir}")
    return files


def shard_info(path):
    """{"records", "bytes", "sha256"} of a shard, read in full (what metadata.json records)."""
    records = sum(1 for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"))
    return {"records": records, "bytes": os.path.getsize(path), "sha256": file_checksum(path)}


def verify_split(data_dir, split):
    """Read every shard of `split` in full; a `DataError` naming the first shard that is
    corrupt or whose records, size or checksum differ from metadata.json (old preparations
    without shard records: the split's total record count only)."""
    meta = read_metadata(data_dir)
    recorded = meta.get("shards", {})
    total = 0
    for path in shard_files(data_dir, split):
        try:
            info = shard_info(path)
        except tf.errors.OpError as error:
            raise DataError(path, None, f"corrupt or truncated shard ({error.message.strip()}); "
                            "re-run python -m pipelines.prepare") from None
        expected = recorded.get(os.path.basename(path))
        for key in ("records", "sha256"):
            if expected and info[key] != expected[key]:
                raise DataError(path, None, f"{key} {info[key]}, metadata.json records "
                                f"{expected[key]}; re-run python -m pipelines.prepare")
        total += info["records"]
    check_count(data_dir, split, total, "holds")
    return total


def check_count(data_dir, split, count, verb="read"):
    """`DataError` unless `count` equals the split's record count in metadata.json."""
    expected = read_metadata(data_dir)["splits"].get(split)
    if expected is not None and count != expected:
        raise DataError(os.path.join(data_dir, f"{split}-*"), None,
                        f"{verb} {count} {split} records, metadata.json records {expected} "
                        "(a shard is truncated or replaced); re-run python -m pipelines.prepare")


@contextlib.contextmanager
def reading(data_dir, splits=("train", "validation", "test")):
    """Turn a `DataLossError` raised while reading (it names no file) into a `DataError`
    naming the bad shard, found by verifying `splits`."""
    try:
        yield
    except tf.errors.DataLossError as error:
        for split in splits:
            verify_split(data_dir, split)
        raise DataError(data_dir, None, f"data loss while reading ({error.message.strip()}) but "
                        "every shard verifies; is the disk failing?") from None
