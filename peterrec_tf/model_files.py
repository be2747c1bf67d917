"""The files of a model directory and their integrity, below both layouts that use them.

`model_dir` (the directory as a whole: a model.keras, or a task stored alone) and
`task_artifact` (the task-only layout, which loads the pre-trained directory it sits over)
both read and write these files; keeping them here lets each import this module instead
of the other. config.json records the SHA-256 of every other file it was saved with
(`checksums`; model.keras its size) and one of its own content (`config_sha256`);
`read_config` and `verify_files` check them before anything is read.
"""

import hashlib
import json
import os
import tempfile
import zipfile

from pipelines.dataset import file_checksum

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
VOCAB_FILES = {"items": "vocab.txt", "targets": "target_vocab.txt", "labels": "labels.txt"}
#: Files a model is saved with beside its weights and vocabularies, written by the job that
#: saves it (`save_model_dir(extra_files=...)`): a fine-tuned task's digests of its
#: training records (`jobs.record_overlap`).
EXTRA_FILES = ("training_records.npz",)


def temporary_path(directory, name):
    """A fresh temporary path beside `directory/name` (removed or renamed by the caller)."""
    handle, path = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{name}", dir=directory)
    os.close(handle)
    return path


def config_checksum(config):
    """SHA-256 of config.json's content without its own checksum, canonically encoded:
    the same for any whitespace or key order, different for any changed value."""
    content = {k: v for k, v in config.items() if k != "config_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def read_config(directory):
    """config.json of a model directory ({} when absent), verified against its recorded
    checksum (older directories record none and are read as they are)."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); the model directory is damaged") \
            from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    recorded = config.get("config_sha256")
    if recorded is not None and recorded != config_checksum(config):
        raise ValueError(f"{path}: content differs from its recorded checksum (edited or "
                         "damaged after it was saved); restore it or save the model again")
    return config


def verify_files(directory, config, names=None):
    """Check each file config.json records (`checksums`) is there with its recorded
    SHA-256 (model.keras: size), and that no vocabulary it does not record is there;
    `ValueError`/`FileNotFoundError` naming the file. Nothing to check in directories
    saved before checksums were recorded."""
    recorded = config.get("checksums")
    if recorded is None:
        return
    for name, expected in sorted(recorded.items()):
        if names is not None and name not in names:
            continue
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing (config.json records it); the model "
                                    "directory is incomplete")
        found = (f"bytes:{os.path.getsize(path)}" if expected.startswith("bytes:")
                 else file_checksum(path))
        if found != expected:
            raise ValueError(f"{path}: {'size' if expected.startswith('bytes:') else 'SHA-256'} "
                             f"differs from config.json's record (truncated, edited or "
                             "replaced after the model was saved)")
    for name in VOCAB_FILES.values():
        if name not in recorded and os.path.exists(os.path.join(directory, name)) \
                and (names is None or name in names):
            raise ValueError(f"{os.path.join(directory, name)}: not written with this model "
                             "(config.json does not record it); remove it")


def require_model_dir(directory):
    """config.json of `directory`, or a `FileNotFoundError` saying what it is instead (a
    prepared dataset given as a model is named as such): a job checks this before its
    data, so a swapped --model_dir/--data_dir is reported as what it is."""
    if os.path.exists(os.path.join(directory, "metadata.json")) and \
            not os.path.exists(os.path.join(directory, CONFIG_FILE)):
        raise FileNotFoundError(
            f"{directory} is a prepared dataset (it holds metadata.json), not a peterrec-tf "
            "model directory: give the model's directory as --model_dir")
    config = read_config(directory)
    if not os.path.exists(os.path.join(directory, MODEL_FILE)) and \
            "backbone_fingerprint" not in config:
        raise FileNotFoundError(
            f"{directory} is not a peterrec-tf model directory: {MODEL_FILE} is missing")
    return config


def load_model_file(directory, compile=False):
    """The Keras model of `directory`'s model.keras (the caller verified the files); a
    damaged archive is a `ValueError` naming it."""
    import keras

    import peterrec_tf  # noqa: F401  (registers the classes)

    model_path = os.path.join(directory, MODEL_FILE)
    try:
        return keras.saving.load_model(model_path, compile=compile)
    except (zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{model_path}: damaged archive ({error}); save the model "
                         "again") from None
