"""What a job can verify of a prepared dataset besides its shards: metadata.json's own
content and its vocabularies, by checksums recorded when the preparation is written.

    metadata = sealed(directory, metadata)      # the writer, just before metadata.json
    verify(path, metadata)                      # inputs.read_metadata, on every read
    tokens = inputs.read_data_vocab(data_dir, "items.txt")

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


def check_vocab_file(path):
    """`DataError` if `path`, a DIR/vocab/NAME of a preparation, differs from the SHA-256
    DIR/metadata.json records for it: its ids would no longer mean what the shards hold
    (a `--vocab` edited, or copied from another preparation, after it was written).
    Nothing for a file outside a preparation or of an older one (no record)."""
    folder = os.path.dirname(os.path.abspath(path))
    meta_path = os.path.join(os.path.dirname(folder), "metadata.json")
    if os.path.basename(folder) != "vocab" or not os.path.exists(meta_path):
        return
    with open(meta_path, encoding="utf-8") as handle:
        recorded = (json.load(handle).get(VOCAB_KEY) or {}).get(os.path.basename(path))
    if recorded and recorded != file_checksum(path):
        raise DataError(path, None, "SHA-256 differs from metadata.json's record (edited, or "
                        "copied from another preparation, after this one was written): its "
                        "ids would not mean what the shards hold; prepare the data again")
