"""What a job can verify of a prepared dataset besides its shards: metadata.json's own
content and its vocabularies, by checksums recorded when the preparation is written.

    metadata = sealed(directory, metadata)      # the writer, just before metadata.json
    verify(path, metadata)                      # inputs.read_metadata, on every read
    tokens = read_data_vocab(data_dir, "items.txt")

`vocab_sha256` holds the SHA-256 of each file under vocab/, `metadata_sha256` one of
metadata.json's canonical content (keys sorted, no whitespace) without itself: a value
edited by hand, or a vocabulary with two ids swapped, is an error naming the file instead
of ids that silently mean other items. Preparations written before record neither and are
read as they are.
"""

import hashlib
import json
import os

from pipelines.dataset import file_checksum
from pipelines.errors import DataError
from pipelines.vocab import read_tokens

KEY = "metadata_sha256"
VOCAB_KEY = "vocab_sha256"


def content_checksum(metadata):
    """SHA-256 of the metadata's canonical JSON without its own checksum."""
    content = {k: v for k, v in metadata.items() if k != KEY}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def sealed(directory, metadata):
    """`metadata` with the checksums of `directory/vocab/*` and of its own content."""
    from pipelines import fileio

    metadata = dict(metadata)
    vocab = fileio.join(directory, "vocab")
    if fileio.is_remote(vocab):  # an object store has no directories: list the prefix
        names = sorted(fileio.split(path)[1] for path in fileio.list_files(vocab))
    else:
        names = sorted(os.listdir(vocab)) if os.path.isdir(vocab) else []
    metadata[VOCAB_KEY] = {name: file_checksum(fileio.join(vocab, name)) for name in names}
    metadata[KEY] = content_checksum(metadata)
    return metadata


def verify(path, metadata):
    """`DataError` when metadata.json's content differs from its recorded checksum."""
    recorded = metadata.get(KEY)
    if recorded is not None and recorded != content_checksum(metadata):
        raise DataError(path, None, "content differs from its recorded checksum (edited or "
                        "damaged after the preparation); re-run python -m pipelines.prepare")


def read_data_vocab(data_dir, name, metadata=None):
    """Tokens of `data_dir/vocab/<name>`, verified against metadata.json's record (when it
    has one); a missing file is a `FileNotFoundError`, another content a `DataError`."""
    from pipelines.inputs import read_metadata

    metadata = metadata if metadata is not None else read_metadata(data_dir)
    path = os.path.join(data_dir, "vocab", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; the prepared dataset is incomplete")
    recorded = metadata.get(VOCAB_KEY)
    if recorded is not None:
        if name not in recorded:
            raise DataError(path, None, "not written by this preparation (metadata.json does "
                            "not record it)")
        if file_checksum(path) != recorded[name]:
            raise DataError(path, None, "SHA-256 differs from metadata.json's record (edited or "
                            "replaced after the preparation); re-run python -m pipelines.prepare")
    return read_tokens(path)
