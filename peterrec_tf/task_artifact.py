"""A fine-tuned task stored as only what it trained, over the backbone it was trained on.

PeterRec's promise is that a task costs a few per cent of the parameters; at the paper's
item count a whole model directory is mostly embedding and head (sizes in BUILD_NOTES), so
a fine-tuned model directory holds, like a PEFT adapter, only:

    DIR/task_model.json    the FineTuner's Keras config (architecture, method, framing)
    DIR/task_weights.npz   the weights the task trained (patches, head, trained layer norms;
                           FineLast its last blocks), by path relative to the model
    DIR/config.json        ..., "backbone_dir" (the pre-trained model directory, absolute)
                           and "backbone_fingerprint" (SHA-256 of its backbone weights)

`model_dir.load_model_dir` reads such a directory like any other: it loads the backbone
directory, refuses it when its fingerprint differs from the recorded one (another or a
changed pre-training), builds the FineTuner and puts the task's weights in. Every frozen
weight is checked bit-equal to the backbone's when the task is saved, so what is not
stored is exactly what the backbone holds, and a task archive must fill exactly the weights
the task declares (`declared_weights`: a missing head would keep its random initialisation).

A pre-trained directory that tasks were stored over is never rewritten in place: `pretrain`
re-run on it with more steps first keeps the finished model in `versions/<fingerprint>/`
(`keep_replaced_backbone`), where `load_task_over` finds the backbone a task was tuned on.
"""

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from peterrec_tf import model_files

TASK_MODEL_FILE = "task_model.json"
TASK_WEIGHTS_FILE = "task_weights.npz"
#: The folder of a pre-trained directory that keeps the backbones a re-run replaced.
VERSIONS_DIR = "versions"
#: config.json entry of a pre-trained directory (and of a fine-tuned one, which further
#: tasks can be tuned over): its own backbone's fingerprint.
PRETRAINED_FINGERPRINT = "pretrained_fingerprint"


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
    backbone) once: an export of N tasks otherwise reads the whole pre-trained directory
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
    key = None
    if _shared_sources is not None:
        stat = [(entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                for entry in sorted(os.scandir(backbone_dir), key=lambda e: e.name)
                if entry.is_file()]
        key = (os.path.realpath(backbone_dir), tuple(stat))
        if key in _shared_sources:
            return _shared_sources[key]
    config = model_files.require_model_dir(backbone_dir)
    model_files.verify_files(backbone_dir, config)
    source, _ = load_directory_model(backbone_dir, config)
    found = (source.backbone, backbone_fingerprint(source.backbone))
    del source  # the head (as large as the embedding at 645K items) is not needed
    if key is not None:
        _shared_sources[key] = found
    return found


def stores_task_only(model):
    """Whether a fine-tuned model can be stored as its task alone: as its transfer method
    declares (`stored_alone`; not a method that trains the whole backbone)."""
    from peterrec_tf import transfer_methods

    return model.task != "pretrain" and transfer_methods.get(model.method).stored_alone


def save_task(directory, model, backbone_dir, backbone, staged=None):
    """Write `model`'s task files into `directory` (the caller writes config.json and the
    vocabularies); returns the config entries that name the backbone. `backbone` is the
    pre-trained backbone the model was built from (loaded from `backbone_dir`). With
    `staged` (a dict), the files go to temporary paths recorded there by final name, for
    the caller to rename into place."""
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
    paths = {}
    for name in (TASK_MODEL_FILE, TASK_WEIGHTS_FILE):
        paths[name] = (model_files.temporary_path(directory, name) if staged is not None
                       else os.path.join(directory, name))
        if staged is not None:
            staged[name] = paths[name]
    with open(paths[TASK_MODEL_FILE], "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    with open(paths[TASK_WEIGHTS_FILE], "wb") as handle:
        np.savez(handle, **{path.replace("/", "|"): value for path, value in stored.items()})
    return {"backbone_dir": os.path.abspath(backbone_dir),
            "backbone_fingerprint": backbone_fingerprint(backbone),
            "task_weights": len(stored)}


def declared_weights(model):
    """Paths of the weights a task stores (what `save_task` writes): every weight it trains
    and every weight its backbone directory does not hold (the head, the patches)."""
    source = {relative_path(w) for w in model.backbone.backbone_weights()}
    trained = {id(w) for w in model.trainable_weights}
    return {relative_path(w) for w in model.weights
            if id(w) in trained or relative_path(w) not in source}


def backbone_version_dir(backbone_dir, fingerprint):
    """Where a pre-trained directory keeps the earlier backbone a re-run replaced
    (`pretrain` moves it there so that the tasks fine-tuned over it keep loading)."""
    return os.path.join(backbone_dir, VERSIONS_DIR, str(fingerprint)[:16])


def load_directory_model(directory, config, compile=False, backbone_dir=None):
    """(model, backbone directory) of a model directory in either layout, its files
    verified by the caller: a task stored alone is put over its backbone (`load_task_over`),
    anything else is its model.keras (the backbone directory then as given)."""
    if "backbone_fingerprint" in config:
        return load_task_over(directory, config, backbone_dir)
    return model_files.load_model_file(directory, compile), backbone_dir


def load_task(directory, config, backbone_dir=None):
    """The FineTuner of a task-only directory (see `load_task_over`)."""
    return load_task_over(directory, config, backbone_dir)[0]


def load_task_over(directory, config, backbone_dir=None):
    """(FineTuner, the backbone directory it was put over) of a task-only directory, over
    the backbone of `backbone_dir` (default: the one recorded in config.json) or, when
    that directory was pre-trained further since, over the earlier version it keeps."""
    import keras

    backbone_dir = backbone_dir or config.get("backbone_dir")
    if not backbone_dir or not os.path.isdir(backbone_dir):
        raise FileNotFoundError(
            f"{directory} holds a task over the backbone of {backbone_dir!r}, which is not "
            "there: give its pre-trained model directory (--backbone_dir)")
    expected = config.get("backbone_fingerprint")
    earlier = backbone_version_dir(backbone_dir, expected)
    if os.path.isdir(earlier) and _recorded_fingerprint(backbone_dir) not in (None, expected):
        backbone_dir = earlier  # pre-trained further since; the task's version is kept
    source_backbone, found = _source_backbone(backbone_dir)
    if found != expected and os.path.isdir(earlier) and backbone_dir != earlier:
        source_backbone, found = _source_backbone(earlier)
        backbone_dir = earlier if found == expected else backbone_dir
    if found != expected:
        raise ValueError(
            f"{backbone_dir}'s backbone (fingerprint {found[:12]}) is not the one {directory} "
            f"was fine-tuned on ({str(expected)[:12]}): use that "
            "pre-trained model directory")
    from peterrec_tf.training import optimizer  # noqa: F401  registers the stored compile
    # config's FusedAdam: a process that only loads (export, evaluate) imports nothing else
    model_path = os.path.join(directory, TASK_MODEL_FILE)
    try:
        with open(model_path, encoding="utf-8") as handle:
            model = keras.saving.deserialize_keras_object(json.load(handle))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{model_path}: not valid JSON ({error}); the task is damaged") \
            from None
    model.build()
    model.backbone.copy_backbone_weights_from(source_backbone)
    values = read_task_weights(directory, config)
    weights = {relative_path(w): w for w in model.weights}
    weights_path = os.path.join(directory, TASK_WEIGHTS_FILE)
    extra = sorted(set(values) - set(weights))
    if extra:
        raise ValueError(f"{weights_path}: weights {extra[:5]} have no place in the task model")
    missing = sorted(declared_weights(model) - set(values))
    if missing:
        raise ValueError(f"{weights_path}: lacks {len(missing)} weight(s) the task declares "
                         f"({missing[:5]}); they would keep a random initialisation")
    for path, value in values.items():
        if tuple(weights[path].shape) != value.shape:
            raise ValueError(f"{weights_path}: {path} has shape {value.shape}, "
                             f"the model expects {tuple(weights[path].shape)}")
        weights[path].assign(value)
    return model, backbone_dir


def _recorded_fingerprint(backbone_dir):
    """The backbone fingerprint a pre-trained directory's config.json records, or None."""
    return model_files.read_config(backbone_dir).get(PRETRAINED_FINGERPRINT)


def read_task_weights(directory, config):
    """{path: array} of task_weights.npz; a damaged archive or a count other than
    config.json's `task_weights` is a `ValueError` naming the file."""
    path = os.path.join(directory, TASK_WEIGHTS_FILE)
    try:
        with np.load(path, allow_pickle=False) as stored:
            values = {key.replace("|", "/"): stored[key] for key in stored.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; the task directory is incomplete") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: damaged archive ({type(error).__name__}: {error}); "
                         "fine-tune the task again") from None
    recorded = config.get("task_weights")
    if recorded is not None and recorded != len(values):
        raise ValueError(f"{path}: holds {len(values)} weights, config.json records {recorded}")
    return values


def link_or_copy(source, destination):
    """A hard link (the file's content stays while the original is replaced by a rename),
    or a copy where the filesystem has none."""
    import shutil

    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def keep_replaced_backbone(directory, backbone, log=print):
    """Before a pre-trained `directory` (or a task, which further tasks can be tuned over)
    is saved again with `backbone`: when it holds a finished model with another backbone,
    keep that model (its files: model.keras or the task's, config.json, vocabularies,
    hard-linked where possible) in `versions/<fingerprint>/`, where the tasks stored over
    it find it (`load_task_over`). Returns that folder, or None when
    there was nothing to keep. Every file of the directory is replaced by a rename when
    it is saved, so a hard link keeps the old content."""
    import shutil

    if not os.path.exists(os.path.join(directory, model_files.CONFIG_FILE)):
        return None  # an interrupted run (config.json is saved last): nothing to depend on
    config = model_files.read_config(directory)
    old = config.get(PRETRAINED_FINGERPRINT) or _source_backbone(directory)[1]
    if old == backbone_fingerprint(backbone):
        return None
    target = backbone_version_dir(directory, old)
    if os.path.isdir(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".keep-", dir=os.path.dirname(target))
    try:
        for entry in os.scandir(directory):
            if entry.is_file() and not entry.name.startswith("."):
                link_or_copy(entry.path, os.path.join(staging, entry.name))
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"{directory} held a finished model (backbone {old[:12]}) that fine-tuned tasks may be "
        f"stored over: kept in {target}, where they still find it; remove it when no task "
        "needs it")
    return target
