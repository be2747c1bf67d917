"""Convert a checkpoint of the original TF1 PeterRec / NextItNet release to Keras.

    python -m peterrec_tf.convert_tf1 --checkpoint=PREFIX --output_dir=DIR \
        [--causal=true|false] [--insertion=b|d] [--vocab_csv=CSV] [--target_vocab_csv=CSV]

Everything is inferred from the checkpoint's names and shapes (vocabulary, channels,
kernel size, dilation list, head, patches, target embeddings); whether the backbone is
causal and whether patches are serial (b) or parallel (d) is read from `PREFIX.meta`
when present, else from the flags.  Strict: every variable must be placed, every
weight filled, every shape must fit, or the conversion fails naming all offenders.
"""

import json
import os
import re
import sys

import numpy as np

from peterrec_tf.model_dir import save_model_dir

BLOCK = re.compile(r"^nextitnet_residual_blockdecoder_layer_(\d+)_(\d+)/(.+)$")
PATCH = re.compile(r"^(mp_\d+)/mp_conv1_(down|up)_(\d+)/(weight|bias)$")
BLOCK_PARTS = {
    "dilated_conv1/weight": ("conv1", "kernel"), "dilated_conv1/bias": ("conv1", "bias"),
    "layer_norm1/gamma": ("layer_norm1", "gamma"), "layer_norm1/beta": ("layer_norm1", "beta"),
    "dilated_conv2/weight": ("conv2", "kernel"), "dilated_conv2/bias": ("conv2", "bias"),
    "layer_norm2/gamma": ("layer_norm2", "gamma"), "layer_norm2/beta": ("layer_norm2", "beta"),
}
EMBEDDING = "allitem_embeddings"
TARGET_EMBEDDING = "target-item/allitem_embeddings_target"
FULL_HEAD = ("logits/weight", "logits/bias")
DOT_HEAD = ("softmax_w", "softmax_b")
#: The release's serial insertion is (b), its parallel one (d).
RELEASE_INSERTIONS = ("b", "d")


class ConversionError(ValueError):
    """The checkpoint does not fit the release's model as documented."""


def is_training_state(name):
    """Optimizer slots and counters: not part of the model."""
    leaf = name.rsplit("/", 1)[-1]
    return (name.endswith("/Adam") or name.endswith("/Adam_1") or leaf.startswith("beta1_power")
            or leaf.startswith("beta2_power") or name == "global_step")


def read_checkpoint(prefix):
    """{name: array} of the model variables (training state skipped)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as error:  # NotFoundError, DataLossError, ...
        raise ConversionError(f"cannot read checkpoint {prefix!r}: {error}") from error
    names = reader.get_variable_to_shape_map()
    return {name: reader.get_tensor(name) for name in sorted(names) if not is_training_state(name)}


def read_meta_graph(prefix):
    """The GraphDef of `PREFIX.meta`, or None when there is none."""
    path = prefix + ".meta"
    if not os.path.exists(path):
        return None
    from tensorflow.core.protobuf import meta_graph_pb2

    meta = meta_graph_pb2.MetaGraphDef()
    with open(path, "rb") as handle:
        meta.ParseFromString(handle.read())
    return meta.graph_def


def infer_causal(graph_def, block_scope):
    """Causal convs pad explicitly on the left (a `Pad` op in the conv's scope).

    Non-causal convs use SAME padding, which TF1 lowers to a plain Conv2D (rate 1) or
    SpaceToBatchND + VALID Conv2D (rate > 1): neither has a Pad op, so the Pad op, not
    the Conv2D padding attribute, is the evidence.
    """
    convs = 0
    for node in graph_def.node:
        for conv in ("dilated_conv1", "dilated_conv2"):
            if node.name.startswith(f"{block_scope}/{conv}/"):
                if node.op in ("Pad", "PadV2") and "/convolution" not in node.name:
                    return True
                convs += node.op == "Conv2D"
    if not convs:
        raise ConversionError(f"cannot tell causal from the .meta graph: no conv in {block_scope}")
    return False


def infer_insertion(graph_def, block_scope):
    """Serial (b) when mp_1 consumes conv1's output; parallel (d) when it reads the block input."""
    by_name = {node.name: node for node in graph_def.node}

    def producers(name, depth=0):
        node = by_name.get(name.split(":")[0].lstrip("^"))
        if node is None or depth > 6:
            return
        yield node.name
        if node.op in ("Identity", "ExpandDims", "Squeeze"):
            for inp in node.input:
                yield from producers(inp, depth + 1)

    for node in graph_def.node:
        if node.name.startswith(f"{block_scope}/mp_1/mp_conv1_down_0/") and node.op == "Conv2D":
            sources = list(producers(node.input[0]))
            if any(s.startswith(f"{block_scope}/dilated_conv1/") for s in sources):
                return "b"
            return "d"
    raise ConversionError(f"cannot tell the insertion from the .meta graph: no mp_1 in {block_scope}")


def parse_layout(variables):
    """Group names into embedding / blocks / patches / heads; list what does not fit."""
    layout = {"blocks": {}, "unknown": []}
    for name, value in variables.items():
        match = BLOCK.match(name)
        if match:
            index, dilation, rest = int(match.group(1)), int(match.group(2)), match.group(3)
            block = layout["blocks"].setdefault(index, {"dilation": dilation, "parts": {}, "patches": {}})
            if block["dilation"] != dilation:
                layout["unknown"].append(f"{name} (block {index} has two dilations)")
            elif rest in BLOCK_PARTS:
                block["parts"][rest] = value
            elif PATCH.match(rest):
                patch, direction, branch, kind = PATCH.match(rest).groups()
                block["patches"].setdefault(patch, {})[(direction, int(branch), kind)] = value
            else:
                layout["unknown"].append(name)
        elif name not in (EMBEDDING, TARGET_EMBEDDING, *FULL_HEAD, *DOT_HEAD):
            layout["unknown"].append(name)
    return layout


def _check_shape(errors, name, value, shape):
    if tuple(value.shape) != tuple(shape):
        errors.append(f"{name}: shape {tuple(value.shape)}, expected {tuple(shape)}")
        return False
    return True


def release_token_order(csv_path, targets=False):
    """The release's id order: first appearance, line by line, left to right; 0 = <UNK>.

    `targets=True` reads the fine-tuning file's targets (after `,,`) instead.
    """
    tokens, seen = ["<UNK>"], {"<UNK>"}
    with open(csv_path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if targets:
                if ",," not in line:
                    raise ConversionError(f"{csv_path}:{number}: no ',,' between source and targets")
                line = line.split(",,", 1)[1]
            elif ",," in line:
                line = line.split(",,", 1)[0]
            for token in line.split(","):
                if token == "":
                    raise ConversionError(f"{csv_path}:{number}: empty token")
                if token not in seen:
                    seen.add(token)
                    tokens.append(token)
    return tokens


def release_history_length(csv_path):
    """The longest source history (items before `,,`) of a release CSV, in items."""
    longest = 0
    with open(csv_path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                longest = max(longest, len(line.split(",,", 1)[0].split(",")))
    return longest


def convert_checkpoint(prefix, output_dir, causal=None, insertion=None, vocab_csv=None,
                       target_vocab_csv=None, log=print, max_len=None):
    """Convert `prefix` into a model directory; returns its config.json contents.

    `max_len` (items of history a served request keeps) is recorded in config.json; when
    not given it is read off the release CSV the model was trained on: the fine-tuning
    file's longest history for a fine-tuned model, else the pre-training file's longest
    row (minus the one a causal pre-training graph drops). Without either it stays unset.
    """
    import keras

    from peterrec_tf.models import Backbone, FineTuner, pretrainer_for

    variables = read_checkpoint(prefix)
    layout = parse_layout(variables)
    errors = [f"unexpected variable {name}" for name in layout["unknown"]]
    if EMBEDDING not in variables:
        errors.append(f"missing variable {EMBEDDING}")
        raise ConversionError(_error_text(prefix, errors))
    vocab_size, channels = variables[EMBEDDING].shape
    blocks = layout["blocks"]
    if not blocks:
        errors.append("no residual block (nextitnet_residual_blockdecoder_layer_*) found")
        raise ConversionError(_error_text(prefix, errors))
    if sorted(blocks) != list(range(len(blocks))):
        errors.append(f"block indices are not 0..{len(blocks) - 1}: {sorted(blocks)}")
    order = sorted(blocks)
    dilations = [blocks[i]["dilation"] for i in order]
    first_kernel = blocks[order[0]]["parts"].get("dilated_conv1/weight")
    kernel_size = int(first_kernel.shape[1]) if first_kernel is not None else 3
    for i in order:
        missing = sorted(set(BLOCK_PARTS) - set(blocks[i]["parts"]))
        errors += [f"missing variable nextitnet_residual_blockdecoder_layer_{i}_{blocks[i]['dilation']}/{m}"
                   for m in missing]

    patch_names = sorted({p for i in order for p in blocks[i]["patches"]})
    has_targets = TARGET_EMBEDDING in variables
    finetuned = has_targets or bool(patch_names)
    head = None
    if all(n in variables for n in FULL_HEAD):
        head = "full"
    elif all(n in variables for n in DOT_HEAD):
        head = "dot"
    unused = []
    if finetuned:
        unused = [n for n in (*FULL_HEAD, *DOT_HEAD) if n in variables]
    else:
        present = [n for n in (*FULL_HEAD, *DOT_HEAD) if n in variables]
        if head is None:
            errors.append("no pre-training head: expected logits/weight+logits/bias or "
                          f"softmax_w+softmax_b, found {present or 'neither'}")
        elif len(present) != 2:
            errors.append(f"two heads or a partial one: {present}")

    graph_def = read_meta_graph(prefix)
    first_scope = f"nextitnet_residual_blockdecoder_layer_{order[0]}_{dilations[0]}"
    if graph_def is not None:
        meta_causal = infer_causal(graph_def, first_scope)
        if causal is not None and causal != meta_causal:
            raise ConversionError(f"--causal={causal} contradicts {prefix}.meta (causal={meta_causal})")
        causal = meta_causal
    elif causal is None:
        raise ConversionError(f"{prefix}.meta not found: pass --causal=true|false")

    patch_config = None
    if patch_names:
        if patch_names != ["mp_1", "mp_2"]:
            errors.append(f"patch scopes {patch_names}: the release's insertions use mp_1 and mp_2")
        if graph_def is not None:
            meta_insertion = infer_insertion(graph_def, first_scope)
            if insertion is not None and insertion != meta_insertion:
                raise ConversionError(
                    f"--insertion={insertion} contradicts {prefix}.meta (insertion={meta_insertion})")
            insertion = meta_insertion
        elif insertion is None:
            raise ConversionError(f"{prefix}.meta not found and the checkpoint has patches: "
                                  "pass --insertion=b (serial) or --insertion=d (parallel)")
        if insertion not in RELEASE_INSERTIONS:
            raise ConversionError(f"the release implements insertions b and d, got {insertion!r}")
        some_patch = blocks[order[0]]["patches"].get("mp_1", {})
        branches = sorted({key[1] for key in some_patch})
        down = some_patch.get(("down", 0, "weight"))
        width = int(down.shape[-1]) if down is not None else max(1, channels // 4)
        patch_config = {"bottleneck_dim": width, "cardinality": max(1, len(branches)),
                        "activation": "gelu_tanh", "shortcut": True}
    elif insertion is not None:
        raise ConversionError(f"--insertion={insertion} given but the checkpoint has no patches")

    if errors:
        raise ConversionError(_error_text(prefix, errors))

    keras.utils.set_random_seed(0)
    backbone = Backbone(vocab_size, channels, dilations, kernel_size, causal,
                        insertion=insertion if patch_names else None, patch_config=patch_config)
    if finetuned:
        if not has_targets:
            raise ConversionError(_error_text(prefix, [f"missing variable {TARGET_EMBEDDING}"]))
        num_targets = variables[TARGET_EMBEDDING].shape[0]
        method = "peterrec" if patch_names else "fineall"
        model = FineTuner(backbone, task="item_rec", num_outputs=num_targets, method=method)
    else:
        model = pretrainer_for(backbone, head=head)
    model.build()

    assign = _assignments(model, variables, blocks, order, head if not finetuned else None,
                          vocab_size, channels, kernel_size, errors)
    if errors:
        raise ConversionError(_error_text(prefix, errors))
    for weight, value in assign:
        weight.assign(value)
    placed = {name for name in variables if name not in unused}
    log(f"converted {len(placed)} variables from {prefix}"
        + (f"; not used by the fine-tuning model: {', '.join(unused)}" if unused else ""))

    vocabs = {}
    if vocab_csv:
        vocabs["items"] = release_token_order(vocab_csv)
        if len(vocabs["items"]) != vocab_size:
            raise ConversionError(f"{vocab_csv} gives {len(vocabs['items'])} ids but the checkpoint "
                                  f"has {vocab_size} item embeddings")
    if target_vocab_csv:
        if not has_targets:
            raise ConversionError("--target_vocab_csv given but the checkpoint has no target embeddings")
        vocabs["targets"] = release_token_order(target_vocab_csv, targets=True)
        if len(vocabs["targets"]) != variables[TARGET_EMBEDDING].shape[0]:
            raise ConversionError(
                f"{target_vocab_csv} gives {len(vocabs['targets'])} target ids but the checkpoint "
                f"has {variables[TARGET_EMBEDDING].shape[0]} target embeddings")
    max_len_from = "--max_len"
    if max_len is None or max_len <= 0:
        max_len, max_len_from = None, None
        if finetuned and target_vocab_csv:
            max_len, max_len_from = release_history_length(target_vocab_csv), target_vocab_csv
        elif vocab_csv:
            max_len = release_history_length(vocab_csv) - (1 if causal and not finetuned else 0)
            max_len_from = vocab_csv
    config = {
        "source": "tf1_checkpoint",
        "max_len": max_len,
        "max_len_from": max_len_from,
        "checkpoint": os.path.abspath(prefix),
        "converted_variables": len(placed),
        "unused_variables": unused,
        "inferred_from_meta": graph_def is not None,
    }
    if unused:
        np.savez(os.path.join(_ensure(output_dir), "unused_variables.npz"),
                 **{n.replace("/", "__"): variables[n] for n in unused})
        config["unused_variables_file"] = "unused_variables.npz"
    return save_model_dir(output_dir, model, config, vocabs)


def _ensure(directory):
    os.makedirs(directory, exist_ok=True)
    return directory


def _assignments(model, variables, blocks, order, head, vocab_size, channels, kernel_size, errors):
    """(keras weight, value) pairs for every checkpoint variable; shape errors appended."""
    backbone = model.backbone
    pairs = []

    def put(weight, name, value, shape):
        if _check_shape(errors, name, value, shape):
            pairs.append((weight, value.reshape(weight.shape)))

    put(backbone.item_embedding.embeddings, EMBEDDING, variables[EMBEDDING], (vocab_size, channels))
    for index, block in zip(order, backbone.blocks):
        scope = f"nextitnet_residual_blockdecoder_layer_{index}_{blocks[index]['dilation']}"
        for part, value in blocks[index]["parts"].items():
            layer_name, weight_name = BLOCK_PARTS[part]
            layer = getattr(block, layer_name)
            weight = getattr(layer, weight_name)
            expected = (1, kernel_size, channels, channels) if weight_name == "kernel" else (channels,)
            put(weight, f"{scope}/{part}", value, expected)
        by_name = {patch.name: patch for patch in block.patches}
        for patch_name, parts in blocks[index]["patches"].items():
            patch = by_name[patch_name]
            width = patch.resolve_bottleneck(channels)
            for (direction, branch, kind), value in parts.items():
                name = f"{scope}/{patch_name}/mp_conv1_{direction}_{branch}/{kind}"
                if branch >= patch.cardinality:
                    errors.append(f"{name}: branch beyond the patch's cardinality")
                    continue
                if direction == "down":
                    weight = patch.down_kernels[branch] if kind == "weight" else patch.down_biases[branch]
                    shape = (1, 1, channels, width) if kind == "weight" else (width,)
                else:
                    weight = patch.up_kernels[branch] if kind == "weight" else patch.up_biases[branch]
                    shape = (1, 1, width, channels) if kind == "weight" else (channels,)
                put(weight, name, value, shape)
            expected = 4 * patch.cardinality
            if len(parts) != expected:
                errors.append(f"{scope}/{patch_name}: {len(parts)} variables, expected {expected}")
    if head == "full":
        put(model.head.kernel, FULL_HEAD[0], variables[FULL_HEAD[0]], (1, 1, channels, vocab_size))
        put(model.head.bias, FULL_HEAD[1], variables[FULL_HEAD[1]], (vocab_size,))
    elif head == "dot":
        put(model.head.kernel, DOT_HEAD[0], variables[DOT_HEAD[0]], (vocab_size, channels))
        put(model.head.bias, DOT_HEAD[1], variables[DOT_HEAD[1]], (vocab_size,))
    if TARGET_EMBEDDING in variables and hasattr(model, "task"):
        value = variables[TARGET_EMBEDDING]
        put(model.head.embeddings, TARGET_EMBEDDING, value, (value.shape[0], channels))
    return pairs


def _error_text(prefix, errors):
    return f"cannot convert {prefix}:\n  " + "\n  ".join(errors)


def _parse_bool(text):
    if text is None:
        return None
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"--causal must be true or false, got {text!r}")


def define_flags():
    from absl import flags

    flags.DEFINE_string("checkpoint", None,
                        "Prefix of the TF1 checkpoint (the path without .index/.data-*); "
                        "PREFIX.meta is used when present to infer --causal and --insertion.")
    flags.DEFINE_string("output_dir", None, "Model directory to write (model.keras, config.json, vocabularies).")
    flags.DEFINE_string("causal", None,
                        "true (NextItNet) or false (GRec encoder). Required when PREFIX.meta is absent; "
                        "must agree with the .meta graph when both are present.")
    flags.DEFINE_enum("insertion", None, list(RELEASE_INSERTIONS),
                      "Patch insertion of a fine-tuned checkpoint: b (serial) or d (parallel). "
                      "Required for checkpoints with patches when PREFIX.meta is absent.")
    flags.DEFINE_string("vocab_csv", None,
                        "The release's pre-training CSV: rebuilds its item id order (first appearance, "
                        "0 = <UNK>) into DIR/vocab.txt.")
    flags.DEFINE_string("target_vocab_csv", None,
                        "The release's fine-tuning CSV: rebuilds its target id order (targets after ',,', "
                        "0 reserved) into DIR/target_vocab.txt.")
    flags.DEFINE_integer("max_len", 0, "Items of history the converted model keeps (recorded in "
                         "config.json; the export cuts served histories to it). 0 = the longest "
                         "history of --target_vocab_csv (fine-tuned) or --vocab_csv (minus one for "
                         "a causal pre-trained model, whose graph drops the last item).")
    flags.mark_flags_as_required(["checkpoint", "output_dir"])


def main(argv):
    from absl import flags

    del argv
    values = flags.FLAGS
    try:
        config = convert_checkpoint(values.checkpoint, values.output_dir, _parse_bool(values.causal),
                                    values.insertion, values.vocab_csv, values.target_vocab_csv,
                                    max_len=values.max_len)
    except (ConversionError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: config[k] for k in ("kind", "backbone") if k in config}, indent=2))
    print(f"wrote {values.output_dir}")
    return 0


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
