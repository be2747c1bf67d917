"""Item embeddings of a model directory, for an external nearest-neighbour index (ScaNN,
FAISS) or TensorBoard's projector (the command: `python -m peterrec_tf.export
--model_dir=RUN --item_embeddings=DIR`).

What the served ranking computes, and so what is written, per kind of model:

  pre-trained, `dot` head   score(u, i) = h . W[i] + b[i]        W `[V, C]`, query h
  pre-trained, `full` head  score(u, i) = relu(h) . W[:, i] + b[i]  W `[C, V]`, query relu(h)
  item recommendation       score(u, i) = u . E[i]               E `[T, C]` (no bias)

where h / u is what the export's `<task>_user_embedding` signature returns. DIR gets:

  embeddings.npy    float32 `[N, C]`: row i is output i's vector (W[i], the column
                    W[:, i] of a `full` head, or E[i]); row i = token i of vocab.tsv
  bias.npy          float32 `[N]`: b (zeros for item recommendation)
  vocab.tsv         the output tokens, one a line (TensorBoard's one-column metadata)
  item_embeddings.json  the formula above for this model (`query`: "user_embedding" or
                    "relu(user_embedding)"), the ids never served (`blocked`: 0 and
                    padding tokens), the source directory
  projector_config.pbtxt + checkpoint  TensorBoard's projector over the same rows
                    (`tensorboard --logdir=DIR`, Projector tab)

An exact maximum-inner-product search over `[embeddings | bias]` with the query
`[query(user_embedding) | 1]`, blocked ids removed, returns the served top k (ids and
order, ties by lower id); an approximate index returns what its recall allows.
"""

import json
import os
import shutil
import tempfile

import numpy as np

def output_embeddings(model):
    """(rows `[N, C]` float32, bias `[N]` float32, query kind) of a next-item or item-rec
    model, per the table in the module docstring."""
    from peterrec_tf.layers.heads import DotProductHead, FullSoftmaxHead

    if model.task == "pretrain":
        kernel = np.asarray(model.head.kernel.numpy(), np.float32)
        bias = np.asarray(model.head.bias.numpy(), np.float32)
        if isinstance(model.head, DotProductHead):
            return np.ascontiguousarray(kernel), bias, "user_embedding"
        if isinstance(model.head, FullSoftmaxHead):
            return np.ascontiguousarray(kernel.T), bias, "relu(user_embedding)"
        raise ValueError(f"head {type(model.head).__name__} has no item embeddings")
    if model.task == "item_rec":
        rows = np.asarray(model.head.embeddings.numpy(), np.float32)
        return np.ascontiguousarray(rows), np.zeros(rows.shape[0], np.float32), "user_embedding"
    raise ValueError("a classification model ranks no items: it has no item embeddings")


def refuse_existing_dir(out_dir):
    """A `ValueError` when DIR exists and is not an empty directory: never written over."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(f"{out_dir} exists and is not empty: give a new directory")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"{out_dir} exists and is not a directory")


def write_item_embeddings(model_dir, out_dir, backbone_dir=None, log=print):
    """Write DIR (see the module docstring) for `model_dir`; never over an existing
    non-empty DIR (written beside it under a temporary name, renamed when complete).
    Returns the path of `embeddings.npy`."""
    from peterrec_tf.model_dir import load_model_dir

    out_dir = os.path.abspath(out_dir)
    refuse_existing_dir(out_dir)
    model, config, vocabs = load_model_dir(model_dir, backbone_dir=backbone_dir)
    rows, bias, query = output_embeddings(model)
    tokens = vocabs.get("targets" if model.task == "item_rec" else "items")
    if tokens is None:
        name = "target_vocab.txt" if model.task == "item_rec" else "vocab.txt"
        raise ValueError(f"{model_dir} has no {name}: the rows would have no names")
    if len(tokens) != rows.shape[0]:
        raise ValueError(f"{model_dir}: {len(tokens)} tokens for {rows.shape[0]} output rows")
    for line, token in enumerate(tokens, 1):
        if "\t" in token or "\n" in token or "\r" in token:
            raise ValueError(f"{model_dir}: token {line} ({token!r}) holds a tab or line break: "
                             "it cannot be one line of vocab.tsv")
    if not np.isfinite(rows).all() or not np.isfinite(bias).all():
        raise ValueError(f"{model_dir}: the output weights hold NaN or Inf: never exported")
    padding = set(config.get("padding_tokens", []))
    blocked = [0] + [i for i, token in enumerate(tokens) if i > 0 and token in padding]
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(out_dir)}-", dir=parent)
    except OSError as error:
        raise ValueError(f"{out_dir}: cannot write here ({error.strerror or error})") from error
    try:
        np.save(os.path.join(tmp, "embeddings.npy"), rows)
        np.save(os.path.join(tmp, "bias.npy"), bias)
        with open(os.path.join(tmp, "vocab.tsv"), "w", encoding="utf-8", newline="\n") as handle:
            handle.write("".join(f"{token}\n" for token in tokens))
        formula = {"user_embedding": "embeddings[i] . user_embedding + bias[i]",
                   "relu(user_embedding)": "embeddings[i] . relu(user_embedding) + bias[i]"}[query]
        with open(os.path.join(tmp, "item_embeddings.json"), "w", encoding="utf-8") as handle:
            json.dump({"model_dir": os.path.abspath(model_dir), "task": model.task,
                       "head": type(model.head).__name__, "rows": int(rows.shape[0]),
                       "channels": int(rows.shape[1]), "query": query, "score": formula,
                       "blocked": blocked, "row_i_is": "token i of vocab.tsv"}, handle, indent=2)
        write_projector(tmp, rows)
        os.chmod(tmp, 0o755)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # empty (checked above)
        os.rename(tmp, out_dir)
    except OSError as error:  # a full or failing disk: one line, nothing left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(f"{out_dir}: {error.strerror or error}") from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {rows.shape[0]:,} x {rows.shape[1]} item embeddings of {model_dir} to {out_dir} "
        f"(query = {query}; see item_embeddings.json; tensorboard --logdir={out_dir})")
    return os.path.join(out_dir, "embeddings.npy")


def write_projector(directory, rows):
    """TensorBoard's projector over `rows`: a checkpoint of one variable and the
    plugin's config naming it, with vocab.tsv as the metadata (the plugin's own API)."""
    import tensorflow as tf
    from tensorboard.plugins import projector

    checkpoint = tf.train.Checkpoint(item_embeddings=tf.Variable(rows, trainable=False))
    checkpoint.save(os.path.join(directory, "embeddings.ckpt"))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "item_embeddings/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "vocab.tsv"
    projector.visualize_embeddings(directory, config)
