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
"""

import contextlib
import json
import os
import tempfile

import keras

from pipelines.vocab import read_tokens as read_lines, write_tokens as write_lines

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
VOCAB_FILES = {"items": "vocab.txt", "targets": "target_vocab.txt", "labels": "labels.txt"}


def model_kind(model):
    """config.json's "kind", from the model's task."""
    return "pretrain" if model.task == "pretrain" else "finetune"


def model_framing(model, config):
    """The model's framing at its length; a model saved before framing was part of the
    model's config takes its length from config.json's max_len."""
    framing = model.framing
    return framing if framing.length else framing.with_length(config.get("max_len"))


def save_model_dir(directory, model, config=None, vocabs=None, task_over=None):
    """Write model + config (+ vocabularies by key of VOCAB_FILES) into `directory`.

    The model file is written under a temporary name and renamed, so a reader never
    sees a half-written `model.keras`. Weights holding NaN/Inf are refused (naming the
    variable) before anything is written. `task_over=(backbone_dir, backbone)` stores a
    fine-tuned model as its task alone over that pre-trained backbone (`task_artifact`).
    """
    from peterrec_tf import task_artifact
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
    vocabs = dict(vocabs or {})
    shared_items = os.path.join(task_over[0], VOCAB_FILES["items"]) if task_over else None
    if shared_items and vocabs.get("items") is not None and os.path.exists(shared_items) \
            and read_lines(shared_items) == list(vocabs["items"]):
        del vocabs["items"]  # a task stored alone reads its backbone's (645K items: ~5 MB)
        config["items_vocab_of_backbone"] = True
    for key, tokens in vocabs.items():
        if tokens is None:
            continue
        if key not in VOCAB_FILES:
            raise ValueError(f"unknown vocabulary {key!r}; expected one of {sorted(VOCAB_FILES)}")
        write_lines(os.path.join(directory, VOCAB_FILES[key]), tokens)
        config.setdefault("vocab_files", {})[key] = VOCAB_FILES[key]
    stale = [MODEL_FILE] if task_over else [task_artifact.TASK_MODEL_FILE,
                                            task_artifact.TASK_WEIGHTS_FILE]
    if task_over:
        config.update(task_artifact.save_task(directory, model, *task_over))
    else:
        for key in ("backbone_dir", "backbone_fingerprint", "task_weights"):
            config.pop(key, None)
        handle, tmp_path = tempfile.mkstemp(suffix=".keras", dir=directory)
        os.close(handle)
        with _without_optimizer(model):
            model.save(tmp_path)
        os.replace(tmp_path, os.path.join(directory, MODEL_FILE))
    for name in stale:  # what an earlier save of the other kind left
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
    return config


@contextlib.contextmanager
def _without_optimizer(model):
    """Save the model without its optimizer's state. Keras stores a compiled model's Adam
    moments in `model.keras` (twice the weights again: a 645K-item model took 4.0 GB
    instead of 1.3 GB, and loading it peaked at 11 GB of memory); resuming reads
    `checkpoints/`, and every job compiles a loaded model afresh, so nothing reads them.
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
    A task stored alone is put over its backbone (config.json's `backbone_dir`, or
    `backbone_dir`), refused when that backbone's fingerprint differs."""
    from peterrec_tf import task_artifact

    model_path = os.path.join(directory, MODEL_FILE)
    config_path = os.path.join(directory, CONFIG_FILE)
    config = {}
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    task_only = "backbone_fingerprint" in config
    if not os.path.exists(model_path) and not task_only:
        raise FileNotFoundError(
            f"{directory} is not a peterrec-tf model directory: {MODEL_FILE} is missing")
    import peterrec_tf  # noqa: F401  (registers the classes)
    if task_only:
        model = task_artifact.load_task(directory, config, backbone_dir)
    else:
        model = keras.saving.load_model(model_path, compile=compile)
    vocabs = {}
    for key, name in VOCAB_FILES.items():
        path = os.path.join(directory, name)
        if key == "items" and config.get("items_vocab_of_backbone"):
            path = os.path.join(backbone_dir or config["backbone_dir"], name)
        if os.path.exists(path):
            vocabs[key] = read_lines(path)
    return model, config, vocabs
