"""Reading a TF1 checkpoint and its `.meta` graph: every failure is a ConversionError
naming the file, never a traceback, and nothing is read twice or mixed."""

import glob
import os

import numpy as np

from peterrec_tf.conversion.errors import ConversionError
from peterrec_tf.conversion.names import PRETRAINING_HEADS, match_name, training_state


def _data_files(prefix):
    return sorted(glob.glob(glob.escape(prefix) + ".data-*-of-*"))


def _describe(error):
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(text.split())


def read_checkpoint(prefix):
    """(model variables {name: array}, training-state names) of checkpoint `prefix`.

    Every tensor is read, training state included, so a truncated `.data` file or a
    checksum mismatch anywhere in the bundle fails the conversion.
    """
    import tensorflow as tf

    index = prefix + ".index"
    if os.path.isdir(prefix) and not os.path.exists(index):
        raise ConversionError(directory_given(prefix))
    if not os.path.exists(index):
        raise ConversionError(f"{index}: cannot read checkpoint: file not found "
                              "(--checkpoint is the prefix, without .index/.data-*)")
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as error:  # DataLossError, OpError, ...: a corrupt or foreign index
        raise ConversionError(f"{index}: cannot read checkpoint: {_describe(error)}") from error
    data = ", ".join(_data_files(prefix)) or prefix + ".data-*"
    state = training_state(shapes)
    variables = {}
    for name in sorted(shapes):
        try:
            value = reader.get_tensor(name)
        except Exception as error:  # IndexError (truncated), DataLossError (checksum), ...
            raise ConversionError(
                f"{data}: cannot read variable {name}: {_describe(error)}") from error
        if tuple(np.shape(value)) != tuple(shapes[name]):
            raise ConversionError(f"{data}: variable {name} has shape {np.shape(value)}, "
                                  f"the index says {tuple(shapes[name])}")
        if name not in state:
            if not dtypes[name].is_floating:
                raise ConversionError(f"{prefix}: variable {name} is {dtypes[name].name}, "
                                      "expected a float model variable")
            variables[name] = np.asarray(value, dtype=np.float32)
    return variables, sorted(state)


def directory_given(directory):
    """Why a checkpoint directory is no --checkpoint, naming the prefixes in it and the
    one its `checkpoint` file names (which of several is meant is the user's to say)."""
    found = sorted(os.path.join(directory, name[:-len(".index")])
                   for name in os.listdir(directory) if name.endswith(".index"))
    named = None
    state = os.path.join(directory, "checkpoint")
    if os.path.exists(state):
        for line in open(state, encoding="utf-8", errors="replace"):
            if line.startswith("model_checkpoint_path:"):
                named = os.path.join(directory, os.path.basename(
                    line.split(":", 1)[1].strip().strip('"')))
    hint = (f"; {state} names {named}" if named else "") + (
        f"; checkpoints there: {', '.join(found)}" if found else "; it holds no .index file")
    return (f"{directory}: is a directory; --checkpoint is the prefix of one checkpoint "
            f"(the path without .index/.data-*){hint}")


def read_meta_graph(prefix):
    """The GraphDef of `PREFIX.meta`, or None when there is none."""
    path = prefix + ".meta"
    if not os.path.exists(path):
        return None
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef()
    try:
        with open(path, "rb") as handle:
            meta.ParseFromString(handle.read())
    except (DecodeError, OSError, ValueError) as error:
        raise ConversionError(f"{path}: cannot parse the meta graph (truncated or not a "
                              f".meta file): {_describe(error)}") from error
    if not meta.graph_def.node:
        raise ConversionError(f"{path}: the meta graph holds no graph (truncated or empty)")
    return meta.graph_def


def check_meta_covers(graph_def, path, names):
    """A .meta graph describes the checkpoint: a variable node for every model variable."""
    nodes = {node.name for node in graph_def.node
             if node.op in ("VariableV2", "Variable", "VarHandleOp")}
    absent = [name for name in names if name not in nodes]
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise ConversionError(f"{path}: the graph has no variable {shown} of the checkpoint "
                              "(truncated, or the .meta of another model)")


def check_checkpoint_covers(graph_def, path, prefix, names, finetuned):
    """The checkpoint holds every model variable its `.meta` graph has (a fine-tuned one
    may lack the graph's unused pre-training head): a block or patches missing from a
    partial save (or beside another model's .meta) would otherwise convert into a model
    without them, answering otherwise than the graph, with no error."""
    skipped = PRETRAINING_HEADS if finetuned else ()
    nodes = {node.name for node in graph_def.node
             if node.op in ("VariableV2", "Variable", "VarHandleOp")}
    absent = sorted(name for name in nodes - set(names)
                    if (match_name(name)[0] is not None
                        and match_name(name)[0].role not in skipped))
    if absent:
        shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise ConversionError(f"{prefix}: the checkpoint lacks {len(absent)} model variable"
                              f"{'s' * (len(absent) > 1)} of its graph {path}: {shown} (a "
                              "partial save, or the .meta of another model); the converted "
                              "model would answer otherwise than that graph")


def find_non_finite(variables):
    """`name: n non-finite values` for every variable holding NaN or inf."""
    found = []
    for name, value in sorted(variables.items()):
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        if bad:
            found.append(f"{name}: {bad} non-finite value{'s' * (bad > 1)} (NaN or inf)")
    return found
