"""The on-disk model directory every stage reads and writes.

Layout (written by `convert_tf1`, `pretrain`, `finetune`; read by `finetune`,
`evaluate`, `export`):

    DIR/model.keras        the Keras model (NextItNet / GRecEncoder / FineTuner)
    DIR/config.json        {"kind": "pretrain"|"finetune", "task": ..., ...}
    DIR/vocab.txt          optional: line i = item token of id i (id 0 = <UNK>)
    DIR/target_vocab.txt   optional: item-rec targets, line i = token of target id i
    DIR/labels.txt         optional: classification classes, line i = class i
"""

import json
import os
import tempfile

import keras

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
VOCAB_FILES = {"items": "vocab.txt", "targets": "target_vocab.txt", "labels": "labels.txt"}


from pipelines.vocab import read_tokens as read_lines, write_tokens as write_lines  # noqa: E402


def model_kind(model):
    """config.json's "kind", from the model's task."""
    return "pretrain" if model.task == "pretrain" else "finetune"


def model_framing(model, config):
    """The model's framing at its length; a model saved before framing was part of the
    model's config takes its length from config.json's max_len."""
    framing = model.framing
    return framing if framing.length else framing.with_length(config.get("max_len"))


def save_model_dir(directory, model, config=None, vocabs=None):
    """Write model + config (+ vocabularies by key of VOCAB_FILES) into `directory`.

    The model file is written under a temporary name and renamed, so a reader never
    sees a half-written `model.keras`.
    """
    os.makedirs(directory, exist_ok=True)
    config = dict(config or {})
    config.setdefault("kind", model_kind(model))
    if config["kind"] == "finetune":
        config.setdefault("task", model.task)
        config.setdefault("method", model.method)
    config["backbone"] = {k: v for k, v in model.backbone.get_config().items()
                          if k not in ("name", "trainable", "dtype")}
    for key, tokens in (vocabs or {}).items():
        if tokens is None:
            continue
        if key not in VOCAB_FILES:
            raise ValueError(f"unknown vocabulary {key!r}; expected one of {sorted(VOCAB_FILES)}")
        write_lines(os.path.join(directory, VOCAB_FILES[key]), tokens)
        config.setdefault("vocab_files", {})[key] = VOCAB_FILES[key]
    handle, tmp_path = tempfile.mkstemp(suffix=".keras", dir=directory)
    os.close(handle)
    model.save(tmp_path)
    os.replace(tmp_path, os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, CONFIG_FILE), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
    return config


def load_model_dir(directory, compile=False):
    """(model, config, vocabs) from a model directory; clear error when it is not one."""
    model_path = os.path.join(directory, MODEL_FILE)
    if not os.path.exists(model_path):
        raise FileNotFoundError(
            f"{directory} is not a peterrec-tf model directory: {MODEL_FILE} is missing")
    import peterrec_tf  # noqa: F401  (registers the classes)
    model = keras.saving.load_model(model_path, compile=compile)
    config_path = os.path.join(directory, CONFIG_FILE)
    config = {}
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    vocabs = {}
    for key, name in VOCAB_FILES.items():
        path = os.path.join(directory, name)
        if os.path.exists(path):
            vocabs[key] = read_lines(path)
    return model, config, vocabs
