"""The on-disk model directory every stage reads and writes.

Layout (written by `convert_tf1`, `pretrain`, `finetune`; read by `finetune`,
`evaluate`, `export`):

    DIR/model.keras        the Keras model (NextItNet / GRecPretrainer / FineTuner); a task
                           stored alone over its backbone (`task_artifact`) has instead
                           task_model.json, task_weights.npz and config.json's
                           backbone_dir / backbone_fingerprint
    DIR/config.json        {"kind": "pretrain"|"finetune", "task": ..., ...}
    DIR/vocab.txt          optional: line i = item token of id i (id 0 = <UNK>)
    DIR/target_vocab.txt   optional: item-rec targets, line i = token of target id i
    DIR/labels.txt         optional: classification classes, line i = class i
    DIR/training_records.npz  fine-tuned tasks: digests of the training split's records,
                           which `evaluate` compares other data with when that split is
                           gone (`jobs.record_overlap`)
    DIR/versions/FP/       a pre-trained directory trained further after tasks were stored
                           over it keeps the replaced model here (`task_artifact`)

config.json records the SHA-256 of every other file it was saved with (`checksums`;
model.keras its size) and one of its own content (`config_sha256`); `load_model_dir`
verifies them before reading anything, so a vocabulary with two ids swapped, a hand-edited
config or a truncated task archive is an error naming the file. Directories saved before
record neither and load as they are. The file names and those checks are `model_files`'s,
shared with `task_artifact` (the task-only layout), which this module dispatches to.
"""

import contextlib
import json
import os

from peterrec_tf import task_artifact
from peterrec_tf.model_files import (CONFIG_FILE, EXTRA_FILES, MODEL_FILE, VOCAB_FILES,
                                     config_checksum, require_model_dir, temporary_path,
                                     verify_files)
from pipelines.dataset import file_checksum
from pipelines.vocab import read_tokens as read_lines, write_tokens as write_lines


def model_kind(model):
    """config.json's "kind", from the model's task."""
    return "pretrain" if model.task == "pretrain" else "finetune"


def recorded_framing(model, config):
    """The model's framing as saved: its own (model.keras), or for a model saved before the
    framing recorded its length, that kind at config.json's old `max_len`."""
    import dataclasses

    if model.framing.length or not config.get("max_len"):
        return model.framing
    return dataclasses.replace(model.framing, length=int(config["max_len"]))


def padding_tokens_of(metadata):
    """`{"padding_tokens": [...]}` for a model trained on data whose source pads with item
    tokens it keeps as items (metadata.json's `padding_tokens`, e.g. the release CSVs'
    literal "0"): recommend, export and LiteRT never answer them. `{}` for other data. A
    preparation written before metadata.json recorded them gets its format's (from the
    format and options it records), so re-using an older preparation does not lose them."""
    tokens = metadata.get("padding_tokens")
    if tokens is None and metadata.get("format"):
        from pipelines import formats

        try:
            tokens = formats.get(metadata["format"]).padding_tokens(metadata.get("options") or {})
        except ValueError:  # a format this version does not know: none known
            tokens = []
    tokens = list(tokens or [])
    return {"padding_tokens": tokens} if tokens else {}


def save_model_dir(directory, model, config=None, vocabs=None, task_over=None,
                   extra_files=None):
    """Write model + config (+ vocabularies by key of VOCAB_FILES) into `directory`.

    Every file is written under a temporary name and renamed into place, config.json
    last; a failure (a full disk, say) removes the temporaries, so a reader never sees a
    half-written file. config.json records each file's SHA-256 (`checksums`; model.keras
    its size) and a checksum of its own content (`config_sha256`), which `load_model_dir`
    verifies. Weights holding NaN/Inf are refused (naming the variable) before anything
    is written. `task_over=(backbone_dir, backbone)` stores a fine-tuned model as its task
    alone over that pre-trained backbone (`task_artifact`). `extra_files` maps a name of
    EXTRA_FILES to a function writing that file at the path it is given (staged and
    checksummed as the rest).
    """
    from peterrec_tf.training.finite import check_finite

    check_finite(model.variables, f"(refusing to save {directory})")
    os.makedirs(directory, exist_ok=True)
    config = dict(config or {})
    config.setdefault("kind", model_kind(model))
    if config["kind"] == "finetune":
        config.setdefault("task", model.task)
        config.setdefault("method", model.method)
    config["backbone"] = {k: v for k, v in model.backbone.get_config().items()
                          if k not in ("name", "trainable", "dtype")}
    for key in ("checksums", "config_sha256", "vocab_files", "items_vocab_of_backbone"):
        config.pop(key, None)  # recomputed below for this save
    vocabs = dict(vocabs or {})
    shared_items = os.path.join(task_over[0], VOCAB_FILES["items"]) if task_over else None
    if shared_items and vocabs.get("items") is not None and os.path.exists(shared_items) \
            and read_lines(shared_items) == list(vocabs["items"]):
        del vocabs["items"]  # a task stored alone reads its backbone's, not a copy
        config["items_vocab_of_backbone"] = True
    staged = {}  # final name -> temporary path, renamed into place together at the end
    try:
        _stage_files(directory, vocabs, extra_files, staged, config)
        if config.get("items_vocab_of_backbone"):
            config["backbone_items_vocab_sha256"] = file_checksum(shared_items)
        if task_over:
            config.update(task_artifact.save_task(directory, model, *task_over, staged=staged))
        else:
            for key in ("backbone_dir", "backbone_fingerprint", "task_weights",
                        "backbone_items_vocab_sha256"):
                config.pop(key, None)
            staged[MODEL_FILE] = temporary_path(directory, MODEL_FILE)
            with _without_optimizer(model):
                model.save(staged[MODEL_FILE])
        config["checksums"] = {name: (f"bytes:{os.path.getsize(path)}" if name == MODEL_FILE
                                      else file_checksum(path))
                               for name, path in sorted(staged.items())}
        config["config_sha256"] = config_checksum(config)
        staged[CONFIG_FILE] = temporary_path(directory, CONFIG_FILE)
        with open(staged[CONFIG_FILE], "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
        for name, path in staged.items():
            os.replace(path, os.path.join(directory, name))
    except BaseException:
        for path in staged.values():
            with contextlib.suppress(OSError):
                os.remove(path)
        raise
    # what an earlier save of another kind left (the other layout, vocabularies not saved
    # now): a reader of this config.json must not find them
    stale = [MODEL_FILE] if task_over else [task_artifact.TASK_MODEL_FILE,
                                            task_artifact.TASK_WEIGHTS_FILE]
    stale += [name for name in (*VOCAB_FILES.values(), *EXTRA_FILES) if name not in staged]
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))
    return config


def _stage_files(directory, vocabs, extra_files, staged, config):
    """Write the vocabularies (keys of VOCAB_FILES, recorded in config's `vocab_files`) and
    `extra_files` (names of EXTRA_FILES -> writer) under temporary names in `staged`."""
    for key, tokens in vocabs.items():
        if tokens is None:
            continue
        if key not in VOCAB_FILES:
            raise ValueError(f"unknown vocabulary {key!r}; expected one of "
                             f"{sorted(VOCAB_FILES)}")
        staged[VOCAB_FILES[key]] = temporary_path(directory, VOCAB_FILES[key])
        write_lines(staged[VOCAB_FILES[key]], tokens)
        config.setdefault("vocab_files", {})[key] = VOCAB_FILES[key]
    for name, write in (extra_files or {}).items():
        if name not in EXTRA_FILES:
            raise ValueError(f"unknown model file {name!r}; expected one of {EXTRA_FILES}")
        staged[name] = temporary_path(directory, name)
        write(staged[name])


@contextlib.contextmanager
def _without_optimizer(model):
    """Save the model without its optimizer's state. Keras stores a compiled model's Adam
    moments in `model.keras` (two slots: twice the weights' bytes again; BUILD_NOTES has
    the paper-scale sizes); resuming reads `checkpoints/`, and every job compiles a loaded
    model afresh, so nothing reads them.
    A fresh optimizer of the same configuration stands in (no moments: its step count and
    learning rate only), so that `keras.saving.load_model` compiles the model with it and
    finds in the file exactly the variables that optimizer has."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        yield
        return
    model.optimizer = type(optimizer).from_config(optimizer.get_config())
    try:
        yield
    finally:
        model.optimizer = optimizer


def load_model_dir(directory, compile=False, backbone_dir=None):
    """(model, config, vocabs) from a model directory; clear error when it is not one.
    Every file is verified against config.json's checksums before it is read. A task
    stored alone is put over its backbone (config.json's `backbone_dir`, or
    `backbone_dir`), refused when that backbone's fingerprint differs."""
    config = require_model_dir(directory)
    verify_files(directory, config)
    model, backbone_dir = task_artifact.load_directory_model(directory, config, compile,
                                                             backbone_dir)
    vocabs = {}
    for key, name in VOCAB_FILES.items():
        path = os.path.join(directory, name)
        if key == "items" and config.get("items_vocab_of_backbone"):
            path = os.path.join(backbone_dir, name)
            expected = config.get("backbone_items_vocab_sha256")
            if expected is not None and file_checksum(path) != expected:
                raise ValueError(f"{path}: differs from the item vocabulary {directory} was "
                                 "saved with (config.json's backbone_items_vocab_sha256)")
        if os.path.exists(path):
            vocabs[key] = read_lines(path)
    model.framing = recorded_framing(model, config)  # the one record every reader uses
    return model, config, vocabs
