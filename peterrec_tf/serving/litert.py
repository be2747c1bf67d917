"""On-device export: a LiteRT (TensorFlow Lite) flatbuffer of a ranking model with numeric
inputs and outputs only (the command: `python -m peterrec_tf.export --model_dir=RUN
--litert=FILE.tflite [--litert_quantize=none|dynamic_int8]`).

The served SavedModel takes and returns strings (hash-table lookups, `SelectV2` on
strings), which LiteRT's builtin kernels do not run; this model takes ids instead:

  input   item_ids   int32 `[1, L]`: the history's item ids (line numbers of the
                     vocabulary written beside the model), oldest first, left-padded
                     with 0 to L = the model's max_len (the most recent L items kept)
  outputs top_k_ids  int32 `[1, k]`: output ids (lines of the output vocabulary beside it)
          scores     float32 `[1, k]`: their logits

It is built from the same Keras model (its own `next_item_logits` / `call` on the ids
framed with the model's `Framing`), so the float32 variant answers the SavedModel's ids.
Id 0 and padding tokens are never ranked; with `exclude_history`, neither is one of the
L ids given (the input: a history's most recent L items). Older items of a longer history
never reach the model, so they are not excluded: the app excludes them (a SavedModel's
--exclude_history covers every item a request sends). FILE.json records the window:
`"exclude_history": {"window": L, ...}` (`false` without it). `dynamic_int8` stores the
weights as int8 (dynamic-range quantization: activations stay float; the converter leaves
tensors under 1,024 elements in float32), a smaller file, ids measured against float32 by
recall@k (BUILD_NOTES). Beside FILE: `FILE.vocab.txt` (item ids), `FILE.outputs.txt`
(output ids, when not the items) and `FILE.json` (shapes, k, framing, quantization).
An existing FILE or one of those sidecars is refused, never replaced; the set is written
under temporary names in FILE's folder and renamed into place, FILE last.
"""

import json
import os

import numpy as np

QUANTIZATIONS = ("none", "dynamic_int8")
LEFT_PADDED = ("history", "tcl", "release_causal")


def ranking_function(model, framing, k, blocked, exclude_history=False):
    """tf.function `item_ids [1, L] int32 -> {top_k_ids, scores}` over the Keras model,
    with only ops LiteRT's builtins run (dense framing: the input is already cut and
    left-padded, so no ragged ops)."""
    import tensorflow as tf

    if framing.kind not in LEFT_PADDED:
        raise ValueError(f"framing {framing.kind!r} pads on the right: the on-device model takes "
                         "left-padded ids; export this model as a SavedModel instead")
    length = framing.length
    outputs = model.head.vocab_size if model.task == "pretrain" else model.num_outputs
    answerable = np.ones(outputs, np.float32)
    answerable[list(blocked)] = 0.0
    answerable = tf.constant(answerable)
    if exclude_history and model.task != "pretrain":
        raise ValueError("--exclude_history on the on-device model is for next-item models "
                         "(outputs = items)")

    import keras

    # the weights as constants: captured Keras variables would become LiteRT resource
    # variables, read uninitialised by the interpreter (garbage, NaN)
    constants = [(w, tf.constant(w.numpy())) for w in model.weights]

    @tf.function(input_signature=[tf.TensorSpec([1, length], tf.int32, name="item_ids")])
    def rank(item_ids):
        with keras.StatelessScope(state_mapping=constants):
            return scored(item_ids)

    def scored(item_ids):
        vocab = model.backbone.vocab_size
        ids = tf.where((item_ids > 0) & (item_ids < vocab), item_ids, 0)
        zeros = tf.zeros_like(ids[:, :1])
        if framing.kind == "tcl":
            ids = tf.concat([zeros, ids, zeros], axis=1)
        elif framing.kind == "release_causal":
            ids = tf.concat([ids, zeros], axis=1)
        if model.task == "pretrain":
            scores = model.next_item_logits(ids)
        else:
            scores = model(ids)
        scores = tf.cast(scores, tf.float32)
        allowed = answerable[None, :]
        if exclude_history:  # one-hot of the history's ids, their maximum per output
            seen = tf.reduce_max(tf.one_hot(item_ids, outputs, dtype=tf.float32), axis=1)
            allowed = allowed * (1.0 - seen)
        scores = tf.where(allowed > 0, scores, tf.fill(tf.shape(scores), -np.inf))
        values, top = tf.math.top_k(scores, k)
        return {"top_k_ids": top, "scores": values}

    return rank


def write_litert(model_dir, path, k=10, quantize="none", max_len=None, exclude_history=False,
                 backbone_dir=None, log=print):
    """Convert `model_dir`'s ranking model to a LiteRT flatbuffer at `path` (written under a
    temporary name, renamed when complete; never over an existing `path` or sidecar) with
    its vocabularies and a JSON beside it; returns the JSON's dict."""
    import tensorflow as tf

    from peterrec_tf.model_dir import load_model_dir

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"litert_quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    if not path.endswith(".tflite"):
        raise ValueError(f"{path}: name the on-device model FILE.tflite")
    refuse_existing(path)  # before the model is loaded and converted
    model, config, vocabs = load_model_dir(model_dir, backbone_dir=backbone_dir)
    if model.task == "classify":
        raise ValueError("the on-device export ranks items: a classification model ranks none")
    framing = model.framing.resolved(max_len)
    if not framing.length:
        raise ValueError(f"{model_dir} records no history length: give --max_len")
    items = vocabs.get("items")
    outputs_vocab = items if model.task == "pretrain" else vocabs.get("targets")
    if items is None or outputs_vocab is None:
        raise ValueError(f"{model_dir}: the on-device model needs its vocabularies beside it")
    outputs = len(outputs_vocab)
    padding = set(config.get("padding_tokens", []))
    blocked = [0] + [i for i, token in enumerate(outputs_vocab) if i > 0 and token in padding]
    k = int(k)
    if not 1 <= k <= outputs - len(blocked):
        raise ValueError(f"k must be in [1, {outputs - len(blocked)}], got {k}")
    function = ranking_function(model, framing, k, blocked, exclude_history)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    info = {"model_dir": os.path.abspath(model_dir), "task": model.task, "k": k,
            "quantize": quantize, "exclude_history": exclusion_window(exclude_history, framing),
            "inputs": {"item_ids": {"dtype": "int32", "shape": [1, framing.length],
                                    "meaning": "item ids (lines of .vocab.txt, 0-based), oldest "
                                               "first, left-padded with 0; an item not in "
                                               ".vocab.txt is 0 in its place (as the "
                                               "SavedModel frames an unknown token)"}},
            "outputs": {"top_k_ids": {"dtype": "int32", "shape": [1, k],
                                      "vocabulary": os.path.basename(
                                          path + (".vocab.txt" if outputs_vocab is items
                                                  else ".outputs.txt"))},
                        "scores": {"dtype": "float32", "shape": [1, k]}},
            "framing": framing.get_config(), "blocked": blocked, "bytes": len(flatbuffer)}
    try:
        _write_files(path, flatbuffer, items, outputs_vocab, info)
    except OSError as error:  # unwritable or full: one line, no half-written model
        raise ValueError(f"{path}: {error.strerror or error}") from error
    log(f"wrote {path} ({len(flatbuffer):,} bytes, {quantize}, top {k} of {outputs:,} outputs "
        f"from int32 item ids [1, {framing.length}]; vocabularies and "
        f"{os.path.basename(path)}.json beside it)")
    if exclude_history:
        log(f"  history excluded: only the {framing.length} ids given (a history's most recent "
            f"{framing.length}); exclude older items on the app side")
    return info


def exclusion_window(exclude_history, framing):
    """FILE.json's "exclude_history": false, or the window the model excludes (its input:
    the most recent `framing.length` items, never an older one)."""
    if not exclude_history:
        return False
    return {"window": framing.length,
            "excludes": f"the {framing.length} ids given as item_ids (a history's most recent "
                        f"{framing.length} items); older items are not excluded: exclude them "
                        "on the app side"}


SIDECARS = (".vocab.txt", ".outputs.txt", ".json")


def refuse_existing(path):
    """A `ValueError` naming FILE and those of its sidecars that exist: an on-device model
    is never overwritten (as a fixed --version or --item_embeddings directory), and a
    sidecar left from another export (an item-rec model's .outputs.txt) would be read
    as this model's."""
    there = [name for name in [path] + [path + s for s in SIDECARS] if os.path.lexists(name)]
    if there:
        raise ValueError(f"{', '.join(there)} already exist{'s' if len(there) == 1 else ''}: "
                         f"--litert needs a FILE.tflite that is not there yet, nor its "
                         f"{', '.join(SIDECARS)} (an on-device model is never overwritten): "
                         "give a new path or remove those files")


def _write_files(path, flatbuffer, items, outputs_vocab, info):
    """FILE, its vocabularies and FILE.json, so that a FILE present always has the files
    written with it beside it: all are written under temporary names in FILE's folder, the
    companions renamed, FILE renamed last. A FILE or sidecar already there is refused
    (`refuse_existing`), never replaced. A stop or a failure anywhere leaves no FILE, no
    companion renamed before it and no temporary."""
    from pipelines.vocab import write_tokens

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    refuse_existing(path)
    suffix = f".tmp{os.getpid()}"
    companions = [path + ".vocab.txt", path + ".json"]
    if outputs_vocab is not items:
        companions.append(path + ".outputs.txt")
    written, renamed = [], []
    try:
        write_tokens(written_as(path + ".vocab.txt" + suffix, written), items)
        if outputs_vocab is not items:
            write_tokens(written_as(path + ".outputs.txt" + suffix, written), outputs_vocab)
        with open(written_as(path + ".json" + suffix, written), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
        with open(written_as(path + suffix, written), "wb") as handle:
            handle.write(flatbuffer)
        refuse_existing(path)  # another export took the name meanwhile
        for companion in companions:
            os.replace(companion + suffix, written_as(companion, renamed))
        os.replace(path + suffix, path)
        renamed = []  # complete: the set stays
    finally:
        for tmp in written + renamed:  # renamed: ours, none was there before
            if os.path.exists(tmp):
                os.remove(tmp)


def written_as(tmp, written):
    """`tmp`, recorded in `written` (removed if the write does not complete)."""
    written.append(tmp)
    return tmp


def run_litert(path, item_ids):
    """(top_k_ids, scores) of a LiteRT model for one history `[1, L]` of int32 ids, with
    `tf.lite.Interpreter` (TF 2.21 still ships it; `ai-edge-litert` is its successor)."""
    import tensorflow as tf

    import warnings

    with warnings.catch_warnings():  # its deprecation notice, once per interpreter
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    out = runner(item_ids=np.asarray(item_ids, np.int32))
    return out["top_k_ids"], out["scores"]
