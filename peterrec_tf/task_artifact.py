"""A fine-tuned task stored as only what it trained, over the backbone it was trained on.

PeterRec's promise is that a task costs a few per cent of the parameters; at the paper's
645K items a full model directory is ~1.3 GB, so a fine-tuned model directory holds, like
a PEFT adapter, only:

    DIR/task_model.json    the FineTuner's Keras config (architecture, method, framing)
    DIR/task_weights.npz   the weights the task trained (patches, head, trained layer norms;
                           FineLast its last blocks), by path relative to the model
    DIR/config.json        ..., "backbone_dir" (the pre-trained model directory, absolute)
                           and "backbone_fingerprint" (SHA-256 of its backbone weights)

`model_dir.load_model_dir` reads such a directory like any other: it loads the backbone
directory, refuses it when its fingerprint differs from the recorded one (another or a
changed pre-training), builds the FineTuner and puts the task's weights in. Every frozen
weight is checked bit-equal to the backbone's when the task is saved, so what is not
stored is exactly what the backbone holds.
"""

import contextlib
import hashlib
import json
import os

import numpy as np

TASK_MODEL_FILE = "task_model.json"
TASK_WEIGHTS_FILE = "task_weights.npz"


def relative_path(weight):
    """'backbone/block_0_1/mp_1/down_0_kernel' or 'target_embeddings/embeddings': the
    weight's path without the enclosing model's (instance-numbered) name."""
    path = weight.path
    if "backbone/" in path:
        return path[path.index("backbone/"):]
    return path.split("/", 1)[1] if "/" in path else path


def backbone_fingerprint(backbone):
    """SHA-256 over the paths, shapes and bytes of a backbone's pre-trained (non-patch)
    weights: equal exactly when two backbones hold the same pre-training."""
    digest = hashlib.sha256()
    for weight in sorted(backbone.backbone_weights(), key=relative_path):
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{relative_path(weight)}|{value.shape}|{value.dtype}\n".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


#: {(real path, model file's mtime and size): (backbone, fingerprint)} while
#: `sharing_backbones()` is active; None otherwise (a long-lived process keeps nothing).
_shared_sources = None


@contextlib.contextmanager
def sharing_backbones():
    """Within this block, tasks over the same pre-trained directory load it (and hash its
    backbone) once: an export of N tasks at 645K items otherwise reads the 1.3 GB directory
    N times, each load a transient copy of embedding and head. Only the backbone is kept,
    not the pre-training head."""
    global _shared_sources
    outer = _shared_sources
    if outer is None:
        _shared_sources = {}
    try:
        yield
    finally:
        _shared_sources = outer


def _source_backbone(backbone_dir):
    """(backbone, fingerprint) of a pre-trained directory, shared within `sharing_backbones`."""
    from peterrec_tf.model_dir import load_model_dir

    key = None
    if _shared_sources is not None:
        stat = [(entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                for entry in sorted(os.scandir(backbone_dir), key=lambda e: e.name)
                if entry.is_file()]
        key = (os.path.realpath(backbone_dir), tuple(stat))
        if key in _shared_sources:
            return _shared_sources[key]
    source, _, _ = load_model_dir(backbone_dir)
    found = (source.backbone, backbone_fingerprint(source.backbone))
    del source  # the head (as large as the embedding at 645K items) is not needed
    if key is not None:
        _shared_sources[key] = found
    return found


def stores_task_only(model):
    """Whether a fine-tuned model can be stored as its task alone (every method but
    fineall, which changes the whole backbone)."""
    return model.task != "pretrain" and model.method != "fineall"


def save_task(directory, model, backbone_dir, backbone):
    """Write `model`'s task files into `directory` (the caller writes config.json and the
    vocabularies); returns the config entries that name the backbone. `backbone` is the
    pre-trained backbone the model was built from (loaded from `backbone_dir`)."""
    import keras

    trained = {id(w) for w in model.trainable_weights}
    source = {relative_path(w): w for w in backbone.backbone_weights()}
    stored, changed = {}, []
    for weight in model.weights:
        path = relative_path(weight)
        if id(weight) in trained or path not in source:
            stored[path] = weight.numpy()
        elif not np.array_equal(weight.numpy(), source[path].numpy()):
            changed.append(path)
    if changed:
        raise ValueError(f"frozen weights differ from {backbone_dir}'s backbone: {changed[:5]}: "
                         "the task cannot be stored over it")
    config = keras.saving.serialize_keras_object(model)
    with open(os.path.join(directory, TASK_MODEL_FILE), "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    with open(os.path.join(directory, TASK_WEIGHTS_FILE), "wb") as handle:
        np.savez(handle, **{path.replace("/", "|"): value for path, value in stored.items()})
    return {"backbone_dir": os.path.abspath(backbone_dir),
            "backbone_fingerprint": backbone_fingerprint(backbone),
            "task_weights": len(stored)}


def load_task(directory, config, backbone_dir=None):
    """The FineTuner of a task-only directory, over the backbone of `backbone_dir`
    (default: the one recorded in config.json)."""
    import keras

    backbone_dir = backbone_dir or config.get("backbone_dir")
    if not backbone_dir or not os.path.isdir(backbone_dir):
        raise FileNotFoundError(
            f"{directory} holds a task over the backbone of {backbone_dir!r}, which is not "
            "there: give its pre-trained model directory (--backbone_dir)")
    source_backbone, found = _source_backbone(backbone_dir)
    if found != config.get("backbone_fingerprint"):
        raise ValueError(
            f"{backbone_dir}'s backbone (fingerprint {found[:12]}) is not the one {directory} "
            f"was fine-tuned on ({str(config.get('backbone_fingerprint'))[:12]}): use that "
            "pre-trained model directory")
    from peterrec_tf.training import optimizer  # noqa: F401  registers the stored compile
    # config's FusedAdam: a process that only loads (export, evaluate) imports nothing else
    with open(os.path.join(directory, TASK_MODEL_FILE), encoding="utf-8") as handle:
        model = keras.saving.deserialize_keras_object(json.load(handle))
    model.build()
    model.backbone.copy_backbone_weights_from(source_backbone)
    with np.load(os.path.join(directory, TASK_WEIGHTS_FILE)) as stored:
        values = {key.replace("|", "/"): stored[key] for key in stored.files}
    weights = {relative_path(w): w for w in model.weights}
    missing = sorted(set(values) - set(weights))
    if missing:
        raise ValueError(f"{directory}/{TASK_WEIGHTS_FILE}: weights {missing[:5]} have no place "
                         "in the task model")
    for path, value in values.items():
        if tuple(weights[path].shape) != value.shape:
            raise ValueError(f"{directory}/{TASK_WEIGHTS_FILE}: {path} has shape {value.shape}, "
                             f"the model expects {tuple(weights[path].shape)}")
        weights[path].assign(value)
    return model
