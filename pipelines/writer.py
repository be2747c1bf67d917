"""Write prepared datasets as GZIP TFRecord shards + vocabularies + metadata, atomically:
in memory (`write_all`), or shard by shard for the streaming paths (`ShardWriters`,
`shard_records`, `dataset_metadata`, `write_metadata`, `temp_dir`, `publish`)."""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from pipelines import canonical, fileio, metadata_checksum, schema
from pipelines.dataset import SPLITS, file_checksum

FORMAT_VERSION = 1
#: Shares and warnings `prepare` puts into a dataset's stats, repeated in the summary.
QUALITY_KEYS = ("oov_share", "unseen_test_targets", "unseen_test_target_share", "warnings")


def shard_name(split, index, count):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord.gz"


def _summary(dataset, max_len):
    """Everything dropped, truncated or mapped to OOV, in one place of metadata.json."""
    stats = dataset.stats
    records = [r for rs in dataset.splits.values() for r in rs]
    return {
        "dropped_users_too_short": stats.get("users_too_short", 0),
        "skipped_bad_lines": stats.get("skipped_bad_lines", 0),
        "zero_tokens_dropped": stats.get("zero_tokens_dropped", 0),
        "oov_occurrences": stats.get("oov_occurrences", 0),
        "oov_distinct": stats.get("oov_distinct", 0),
        "records_with_oov": sum(0 in r.item_ids for r in records),
        "records_longer_than_max_len": (sum(len(r.item_ids) > max_len for r in records)
                                        if max_len else 0),
        "duplicate_interactions": stats.get("duplicate_interactions", 0),
        **{key: stats[key] for key in QUALITY_KEYS if key in stats},
    }


def write_dataset(directory, dataset, num_shards, common):
    """Shards, vocab/, metadata.json for one dataset (directory must not exist yet)."""
    os.makedirs(os.path.join(directory, "vocab"))
    dataset.items.save(os.path.join(directory, "vocab", "items.txt"))
    if dataset.targets is not None:
        dataset.targets.save(os.path.join(directory, "vocab", "targets.txt"))
    if dataset.labels is not None:
        with open(os.path.join(directory, "vocab", "labels.txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{name}\n" for name in dataset.labels))
    counts, longest, shard_records = {}, 0, {}
    for split in SPLITS:
        records = dataset.splits.get(split, [])
        shards = max(1, min(num_shards, len(records)))
        names = [shard_name(split, i, shards) for i in range(shards)]
        writers = [tf.io.TFRecordWriter(os.path.join(directory, name), options="GZIP")
                   for name in names]
        for i, record in enumerate(records):
            writers[i % shards].write(schema.encode(record.item_ids, record.user_id,
                                                    record.target, record.label))
            longest = max(longest, len(record.item_ids))
        for writer in writers:
            writer.close()
        counts[split] = len(records)
        for i, name in enumerate(names):  # round-robin: shard i holds every shards-th record
            shard_records[name] = shard_record(os.path.join(directory, name),
                                                len(range(i, len(records), shards)))
    metadata = dict(common)
    metadata.update({
        "version": FORMAT_VERSION,
        "task": dataset.task,
        "num_items": len(dataset.items),
        "splits": counts,
        "shards": shard_records,
        "longest_sequence": longest,
        "stats": dataset.stats,
        "summary": _summary(dataset, common.get("max_len")),
    })
    if dataset.targets is not None:
        metadata["num_targets"] = len(dataset.targets)
    if dataset.labels is not None:
        metadata["num_classes"] = len(dataset.labels)
    metadata["stats"]["sequences_longer_than_max_len"] = metadata["summary"][
        "records_longer_than_max_len"]
    metadata = metadata_checksum.sealed(directory, metadata)  # verified by every reader
    with open(os.path.join(directory, "metadata.json"), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)
    return metadata


def shard_record(path, records):
    """What readers verify a shard against: record count, byte size, SHA-256."""
    return {"records": records, "bytes": fileio.size(path), "sha256": file_checksum(path)}


def write_all(output_dir, datasets, num_shards, common, log=None):
    """Write every dataset under a temporary directory, then move it into place.

    A single unnamed dataset goes to `output_dir` itself; named ones to sub-directories
    plus `datasets.json`.  An interrupted run leaves only the temporary directory
    (`.<name>.tmp-*`), never a half-written dataset that looks finished.
    """
    tmp = temp_dir(output_dir)
    try:
        index = {}
        for dataset in datasets:
            target = tmp if dataset.name is None else os.path.join(tmp, dataset.name)
            if dataset.name is None:
                os.rmdir(tmp)
            meta = write_dataset(target, dataset, num_shards, common)
            if log:
                log(f"  wrote {dataset.name or 'dataset'}: {meta['task']}, "
                    + ", ".join(f"{k} {v}" for k, v in meta["splits"].items()))
            index[dataset.name or "."] = {"task": meta["task"], "splits": meta["splits"]}
        if any(d.name for d in datasets):
            with open(os.path.join(tmp, "datasets.json"), "w", encoding="utf-8") as handle:
                json.dump({"fingerprint": common["fingerprint"], "datasets": index}, handle,
                          indent=2, sort_keys=True)
        publish(tmp, output_dir)  # an earlier preparation was checked by the caller
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def read_index(output_dir):
    """{name: {"task", "splits"}} of a finished preparation ("." for a single dataset)."""
    path = fileio.join(output_dir, "datasets.json")
    if fileio.exists(path):
        return json.loads(fileio.read_bytes(path))["datasets"]
    meta = json.loads(fileio.read_bytes(fileio.join(output_dir, "metadata.json")))
    return {".": {"task": meta["task"], "splits": meta["splits"]}}


def existing_fingerprint(output_dir):
    """The fingerprint of a preparation already in `output_dir`, '' if empty, None if absent."""
    if fileio.is_remote(output_dir):  # a prefix: "absent" and "empty" are the same
        if fileio.exists(fileio.join(output_dir, fileio.INCOMPLETE)):
            return ""  # a publish was interrupted: the next preparation replaces it
        for name in ("metadata.json", "datasets.json"):
            if fileio.exists(fileio.join(output_dir, name)):
                return json.loads(fileio.read_bytes(fileio.join(output_dir, name))).get(
                    "fingerprint", "")
        return "unknown" if fileio.list_files(output_dir) else None
    if not os.path.exists(output_dir):
        return None
    for name in ("metadata.json", "datasets.json"):
        path = os.path.join(output_dir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle).get("fingerprint", "")
    return "" if not os.listdir(output_dir) else "unknown"


def shard_records(directory, counts, num_shards):
    """metadata.json's "shards": each written shard's records, bytes and SHA-256."""
    found = {}
    for split in SPLITS:
        count = counts.get(split, 0)
        shards = canonical.shard_count(count, num_shards)
        for i in range(shards):
            name = shard_name(split, i, shards)
            found[name] = shard_record(fileio.join(directory, name),
                                              len(range(i, count, shards)))
    return found


def dataset_metadata(common, task, num_items, counts, record_stats, stats, num_targets=None,
                     num_classes=None, shards=None):
    """metadata.json of one dataset, field for field what `write_dataset` writes."""
    longest, with_oov, longer = record_stats.as_tuple()[:3]
    metadata = dict(common)
    metadata.update({
        "version": FORMAT_VERSION,
        "task": task,
        "num_items": num_items,
        "splits": counts,
        "shards": shards,
        "longest_sequence": longest,
        "stats": stats,
        "summary": {
            "dropped_users_too_short": stats.get("users_too_short", 0),
            "skipped_bad_lines": stats.get("skipped_bad_lines", 0),
            "zero_tokens_dropped": stats.get("zero_tokens_dropped", 0),
            "oov_occurrences": stats.get("oov_occurrences", 0),
            "oov_distinct": stats.get("oov_distinct", 0),
            "records_with_oov": with_oov,
            "records_longer_than_max_len": longer if common.get("max_len") else 0,
            "duplicate_interactions": stats.get("duplicate_interactions", 0),
            **{key: stats[key] for key in QUALITY_KEYS if key in stats},
        },
    })
    if num_targets is not None:
        metadata["num_targets"] = num_targets
    if num_classes is not None:
        metadata["num_classes"] = num_classes
    metadata["stats"]["sequences_longer_than_max_len"] = metadata["summary"][
        "records_longer_than_max_len"]
    return metadata

def write_metadata(directory, metadata):
    metadata = metadata_checksum.sealed(directory, metadata)  # verified by every reader
    fileio.write_bytes(fileio.join(directory, "metadata.json"),
                       json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8"))


class ShardWriters:
    """A split's GZIP shards, written round-robin in record order (the writer's layout)."""

    def __init__(self, directory, split, num_records, num_shards):
        self.shards = canonical.shard_count(num_records, num_shards)
        self.writers = [tf.io.TFRecordWriter(
            os.path.join(directory, shard_name(split, i, self.shards)), options="GZIP")
            for i in range(self.shards)]
        self.written = 0

    def write(self, serialized):
        self.writers[self.written % self.shards].write(serialized)
        self.written += 1

    def close(self):
        for each in self.writers:
            each.close()


def temp_dir(output_dir):
    """`.<name>.tmp-*` beside the output, the writer's naming (so its clean-up sees it)."""
    parent = os.path.dirname(os.path.abspath(output_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.tmp-", dir=parent)


def publish(tmp, output_dir):
    """Move a finished `tmp` into place (every writer's last step): an earlier preparation
    is renamed aside first and deleted last, so an interruption leaves the old one or the
    new one, never a half-written directory (a failing move puts the earlier one back)."""
    parent = os.path.dirname(os.path.abspath(output_dir)) or "."
    old = None
    if os.path.exists(output_dir):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.old-", dir=parent)
        os.replace(output_dir, os.path.join(old, "previous"))
    try:
        os.replace(tmp, output_dir)
    except BaseException:
        if old:  # put the earlier preparation back
            os.replace(os.path.join(old, "previous"), output_dir)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)
