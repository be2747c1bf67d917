"""Building the serving module from task model directories: each task's weights mapped to
the variables the export stores (the frozen backbone once, shared by every task, beside
each task's own patches, trained layer norms and head), the tasks checked to share one
backbone, and the int8 next-item index wired to a next-item task's head when asked.

Why not Keras 3's `model.export`: it writes every variable twice, and it cannot share
one frozen backbone between several tasks' models (BUILD_NOTES, Export).
"""

import numpy as np
import tensorflow as tf

from peterrec_tf import transfer_methods
from peterrec_tf.serving.export_options import ExportError, ExportOptions
from peterrec_tf.serving.serving_module import ServedTask, ServingModule


def _backbone_path(weight):
    """'backbone/block_0_1/dilated_conv1/kernel' whatever the enclosing model is called."""
    path = weight.path
    return path[path.index("backbone/"):] if "backbone/" in path else path


def _stored_weights(name, directory, model, shared):
    """[(Keras variable, tf.Variable)] for every weight of `model`: frozen backbone weights
    map to the variables in `shared` (added when first seen, refused when a later task's
    differs by one bit), what the task trained to task-owned copies."""
    from peterrec_tf.training.finite import NonFiniteError, check_finite

    try:
        check_finite(model.weights, f"in {directory}: a diverged model is never exported")
    except NonFiniteError as error:
        raise ExportError(str(error)) from error
    finetuned = model.task != "pretrain"
    patch_ids = {id(w) for p in model.backbone.patches for w in p.weights}
    pairs = []
    for weight in model.backbone.weights:
        path = _backbone_path(weight)
        value = weight.numpy()
        if id(weight) in patch_ids:  # the task's own adapter
            stored = tf.Variable(value, trainable=True, name=f"tasks/{name}/{path}")
        elif finetuned and weight.trainable:
            # a backbone weight the task trained (PeterRec's layer norms; everything for
            # fineall): the task's own copy, frozen for serving like the rest
            stored = tf.Variable(value, trainable=False, name=f"tasks/{name}/{path}")
        elif path in shared:
            kept = shared[path].numpy()
            if kept.shape != value.shape or not np.array_equal(kept, value):
                difference = np.abs(kept - value).max() if kept.shape == value.shape else "shape"
                raise ExportError(
                    f"task {name} ({directory}) is not over the same frozen backbone as "
                    f"the tasks before it: {path} differs (max |difference| {difference}); "
                    "fine-tune every task from the same pre-trained model directory")
            stored = shared[path]
        else:  # first seen (a task before may have trained its own copy: LN2)
            stored = shared[path] = tf.Variable(value, trainable=False, name=path)
        pairs.append((weight, stored))
    pairs += [(w, tf.Variable(w.numpy(), trainable=True, name=f"tasks/{name}/head/{i}"))
              for i, w in enumerate(model.head.weights)]
    missing = {id(w) for w in model.weights} - {id(w) for w, _ in pairs}
    if missing:
        raise ExportError(f"{directory}: weights outside the backbone and head cannot be exported: "
                          f"{[w.path for w in model.weights if id(w) in missing]}")
    return pairs



def build_serving_module(model_dirs, asset_dir, options=ExportOptions(), log=print):
    """(ServingModule, parameter reports, bytes of the separate full models) over
    [(task name, model dir), ...]. The frozen backbone is stored once and must be the same
    architecture and bit-identical across tasks; `options.max_len` overrides the models'
    own history length; `options.backbone_dir` is where tasks stored alone find their
    backbone when it moved; `options.next_item_index="int8"` adds
    `candidate_index.Int8CandidateIndex` to every next-item task (see there: exact
    answers, needs XLA where served)."""
    from peterrec_tf.model_dir import load_model_dir

    from peterrec_tf.task_artifact import sharing_backbones

    shared, tasks, items_vocab, reports = {}, [], None, {}
    full_model_bytes = 0
    with sharing_backbones():  # N tasks over one pre-trained directory load it once
        loaded = [(name, directory, *load_model_dir(directory, backbone_dir=options.backbone_dir))
                  for name, directory in model_dirs]
    for name, directory, model, config, vocabs in loaded:
        items_vocab = _checked_items_vocab(directory, model, vocabs, items_vocab)
        _check_backbone_shareable(name, directory, model, tasks, len(model_dirs))
        task = _served_task(name, directory, model, config, vocabs, items_vocab, shared,
                            options, log)
        tasks.append(task)
        reports[name] = _parameter_report(task, options.k, log)
        full_model_bytes += sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    if options.next_item_index != "none" and not any(t.index is not None for t in tasks):
        raise ExportError(f"--next_item_index={options.next_item_index} indexes next-item "
                          "(pre-trained model) tasks, and none of the tasks is one")
    module = ServingModule(tasks, items_vocab, options.k, asset_dir, options.exclude_history)
    return module, reports, full_model_bytes


def _checked_items_vocab(directory, model, vocabs, items_vocab):
    """The export's item tokens: this task's, refused unless the tasks before had the same
    (`items_vocab`, None for the first) and the model has one embedding row per token."""
    if "items" not in vocabs:
        raise ExportError(f"{directory} has no vocab.txt: the export needs the item tokens")
    if items_vocab is None:
        items_vocab = vocabs["items"]
    elif vocabs["items"] != items_vocab:
        raise ExportError(f"{directory}: its item vocabulary differs from the first task's")
    if len(items_vocab) != model.backbone.vocab_size:
        raise ExportError(f"{directory}: vocab.txt holds {len(items_vocab)} tokens but the "
                          f"model has {model.backbone.vocab_size} items")
    return items_vocab


def _check_backbone_shareable(name, directory, model, tasks, num_tasks):
    """Refuses a task whose backbone cannot be the one the export stores for all
    `num_tasks`: another architecture than the first task's, or (with several tasks) a
    method that changes the backbone. Bit-identity is checked weight by weight later."""
    finetuned = model.task != "pretrain"
    if tasks:
        differs = model.backbone.architecture_differences(tasks[0].model.backbone)
        if differs:
            raise ExportError(f"task {name} ({directory}) has another backbone architecture "
                              f"than task {tasks[0].name}: {'; '.join(differs)}")
    if (num_tasks > 1 and finetuned
            and transfer_methods.get(model.method).changes_backbone):
        raise ExportError(f"task {name} ({directory}) was fine-tuned with {model.method}, which "
                          "changes the backbone: export it on its own, not over a shared backbone")


def _served_task(name, directory, model, config, vocabs, items_vocab, shared, options, log):
    """The ServedTask of one loaded model directory: its framing, output tokens, blocked
    outputs, stored weights (sharing `shared`'s backbone variables) and int8 index."""
    framing = model.framing.resolved(options.max_len)
    if not framing.length:
        raise ExportError(f"{directory} records no history length: give --max_len (served "
                          "answers must not depend on how much padding a request carries)")
    kind = model.task
    outputs = _output_tokens(directory, model, vocabs, items_vocab, log)
    padding = set(config.get("padding_tokens", []))
    blocked = [i for i, token in enumerate(outputs) if i > 0 and token in padding]
    weights = _stored_weights(name, directory, model, shared)
    index = None
    if options.next_item_index == "int8" and kind == "pretrain":
        index = _int8_index(name, directory, model, weights, blocked, log)
    return ServedTask(name, model, kind, framing, outputs, weights,
                      blocked if kind != "classify" else [], index)


def _output_tokens(directory, model, vocabs, items_vocab, log):
    """What the task's output ids name: the items (pre-trained models), the targets or the
    labels its directory lists, else made-up names `target_<i>` / `class_<i>`."""
    finetuned = model.task != "pretrain"
    if finetuned:
        outputs = vocabs.get("targets" if model.task == "item_rec" else "labels")
        if outputs is None:
            outputs = [f"{'target' if model.task == 'item_rec' else 'class'}_{i}"
                       for i in range(model.num_outputs)]
            log(f"  {directory} has no {'target_vocab' if model.task == 'item_rec' else 'labels'}"
                f" file: outputs are named {outputs[0]}...")
    else:
        outputs = items_vocab
    return outputs


def _int8_index(name, directory, model, weights, blocked, log):
    """`candidate_index.Int8CandidateIndex` over a next-item task's head, read from the
    variables the export stores for it (`weights`), never answering id 0 or `blocked`."""
    from peterrec_tf.serving.candidate_index import Int8CandidateIndex

    stored = {id(w): s for w, s in weights}
    try:
        index = Int8CandidateIndex(model.head, stored[id(model.head.bias)],
                                   [0, *blocked], name=f"{name}_next_item_index")
    except ValueError as error:
        raise ExportError(f"{directory}: {error}") from error
    log(f"  {name}: int8 candidate index over {index.vocab_size:,} items "
        f"({index.nbytes:,} bytes beside the head's float32 weights)")
    return index


def _parameter_report(task, default_k, log):
    """`models.parameter_report` of the task's model, with `k_answered` for a ranking task:
    the default k clipped to the outputs it can rank (said when it is clipped)."""
    from peterrec_tf.models import parameter_report

    report = parameter_report(task.model)
    if task.kind != "classify":
        rankable = len(task.outputs_vocab) - 1 - len(task.blocked_outputs)
        report["k_answered"] = min(int(default_k), rankable)
        if int(default_k) > rankable:
            log(f"  warning: {task.name}: --k={default_k} is above the {rankable} outputs it "
                f"can rank (id 0 and padding tokens are never answers), so its signatures "
                f"answer {rankable} (recorded as k_answered in the export report)")
    return report
