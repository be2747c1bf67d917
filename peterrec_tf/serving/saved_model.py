"""Model directories as SavedModels for TensorFlow Serving (the library; the command line is
`python -m peterrec_tf.export`): `export([(task, model_dir), ...], export_base, ...)`.

Writes `EXPORT_BASE/MODEL_NAME/VERSION/` (under a temporary name, renamed when complete,
because Serving watches the base directory), with signatures per task:
  `<task>`                 input `items` (string [B, L])
  `<task>_ids`             input `item_ids` (int64 [B, L])
  `<task>_top_k`           inputs `items` and `k` (int32 [B], one k per history; ranking)
  `<task>_top_k_exclude`   inputs `items`, `k` and `exclude` (string [B, X]: output tokens
                           that history must not get, "" for none; ranking)
  `<task>_user_embedding`  input `items`: output `user_embedding` [B, C]
and `serving_default` = the first task's `<task>`. Item-ranking and pre-trained tasks
answer `top_k_ids` (int64 [B, k]), `top_k_items` (string [B, k]) and `scores` (float
[B, k]) with k = --k, or each row's own k in `<task>_top_k` (columns past a row's k, up
to the batch's largest, hold id 0, "" and -inf). Classification tasks answer
`probabilities` [B, classes], `class_ids` [B] and `class_names` [B]. Every input has a
batch dimension, so Serving's request batching (--enable_batching) can merge requests.

Histories are the user's items oldest first, padded with "" / id 0 on either side. Unknown
tokens and ids outside [1, V) are dropped like padding, so they never select a wrong
embedding row. The graph then frames what is left with the model's own `Framing`
(`peterrec_tf.data.framing`, recorded in the model's config: the last `max_len` items, padded,
with the [TCL] tokens of its family), exactly as the training input pipeline does. A
ranking never offers id 0 (`<UNK>`) or a token the model directory lists as padding
(`config.json["padding_tokens"]`, e.g. the release CSVs' literal `0`), and with
`exclude_history` (`--exclude_history`, recorded in the export report) never an item of
the request's own history. Inputs of the wrong rank are INVALID_ARGUMENT (`checked`).

The SavedModel is a `tf.Module` over the Keras task models: each signature calls the
model's own methods (one forward pass in the code base), with the model's variables
replaced, through `keras.StatelessScope`, by the module's plain `tf.Variable`s, so each
weight is stored once (Keras 3's `model.export` writes every variable twice:
keras-team/keras#23553): the frozen backbone once, as non-trainable variables shared by
every task, plus each task's patches, trained layer norms and head.
"""

import dataclasses
import json
import os
import shutil
import signal
import tempfile

import keras
import numpy as np
import tensorflow as tf

from pipelines.vocab import write_tokens
from peterrec_tf import transfer_methods
from peterrec_tf.training import chunked_ranking
from peterrec_tf.training.evaluation import item_to_output_ids

WARMUP_FILE = "tf_serving_warmup_requests"
#: --next_item_index choices: none (float32 scan) or int8 (candidate_index).
NEXT_ITEM_INDEXES = ("none", "int8")
REPORT_FILE = "export_report.json"


class ExportError(ValueError):
    """The model directories cannot be exported as asked."""


@dataclasses.dataclass
class ServedTask:
    """One task of an export: its Keras model and where each of its weights is stored."""
    name: str
    model: keras.Model        # NextItNet / GRecPretrainer / FineTuner (never tracked itself)
    kind: str                 # pretrain | item_rec | classify
    framing: object           # data.framing.Framing with a length
    outputs_vocab: list
    weights: list             # [(Keras variable of `model`, tf.Variable the export stores)]
    blocked_outputs: list     # output ids a ranking never returns (besides id 0)
    index: object = None      # candidate_index.Int8CandidateIndex of a next-item task, or None

    def scope(self):
        """Run the model on the export's variables instead of its own."""
        return keras.StatelessScope(state_mapping=self.weights)

    @property
    def num_scores(self):
        """Width of the task's score row: the catalogue (pretrain) or its outputs."""
        return self.model.head.vocab_size if self.kind == "pretrain" else self.model.num_outputs


HISTORIES = "histories: a matrix [B, L], one row per user (a 1-D input is no batch of histories)"


def checked(tensor, rank, meaning):
    """`tensor` once it is known at run time to have `rank` dimensions, else
    INVALID_ARGUMENT naming `meaning`. The signature's TensorSpec does not do this where
    Serving runs it: the C++ session feeds a placeholder whatever shape it is given (a
    1-D `items` would be read as B one-item histories), and a check on the static rank
    is folded away at tracing."""
    valid = tf.equal(tf.raw_ops.Rank(input=tensor), rank)
    with tf.control_dependencies([tf.debugging.Assert(valid, [f"expected {meaning}"])]):
        return tf.identity(tensor)


def _backbone_path(weight):
    """'backbone/block_0_1/dilated_conv1/kernel' whatever the enclosing model is called."""
    path = weight.path
    return path[path.index("backbone/"):] if "backbone/" in path else path


class ServingModule(tf.Module):
    """Frozen backbone variables + per-task variables; tf.functions that Serving calls."""

    def __init__(self, tasks, items_vocab, default_k, asset_dir, exclude_history=False):
        """Vocabularies become asset files (`assets/*.txt`, one token a line, copied into the
        export once) behind lookup tables, instead of graph constants repeated in every
        signature's function. `exclude_history`: ranking signatures never return an item
        of the request's own history."""
        super().__init__(name="peterrec_serving")
        self.exclude_history = bool(exclude_history)
        self.tasks = tasks  # plain objects: their Keras models are not saved, only ...
        self.task_variables = [[stored for _, stored in t.weights] for t in tasks]  # ... these
        self.indexes = [t.index for t in tasks if t.index is not None]  # and their int8 copies
        self.item_tokens = list(items_vocab)
        self.default_k = int(default_k)
        self.vocab_size = tasks[0].model.backbone.vocab_size
        seen = set()
        for token in self.item_tokens:
            if token in seen:
                raise ExportError(f"item token {token!r} appears twice in vocab.txt: ids would be ambiguous")
            seen.add(token)
        self.assets = {}
        self.item_table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            self._asset(asset_dir, "items", self.item_tokens), tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER),
            default_value=0)
        self.output_tables = {}
        self.output_id_tables = {}  # token -> output id, for a request's `exclude` list
        self.outputs_by_token = {}  # task -> whether its outputs are another vocabulary
        for task in tasks:
            name = "items" if task.outputs_vocab == self.item_tokens else f"{task.name}_outputs"
            self.output_tables[task.name] = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                self._asset(asset_dir, name, task.outputs_vocab), tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE),
                default_value="")
            if task.kind != "classify":
                self.output_id_tables[task.name] = self.item_table if name == "items" else \
                    tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                        self.assets[name], tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                        tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
                self.outputs_by_token[task.name] = item_to_output_ids(
                    self.item_tokens, task.outputs_vocab) is not None
        # id -> item token, for a history's items as another vocabulary's ids (by token:
        # two asset-backed lookups instead of a [V] constant copied into every signature)
        self.item_token_table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
            self.assets["items"], tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")

    def _asset(self, asset_dir, name, tokens):
        if name not in self.assets:
            path = os.path.join(asset_dir, f"{name}.txt")
            try:
                write_tokens(path, tokens)
            except ValueError as error:
                raise ExportError(f"vocabulary {name} cannot be served: {error}") from error
            self.assets[name] = tf.saved_model.Asset(path)
        return self.assets[name]

    # ---- what the signatures compute --------------------------------------------------
    def ids_from_tokens(self, items):
        """Token -> id; "" (padding) and unknown tokens -> 0."""
        return tf.where(items == "", tf.constant(0, tf.int64), self.item_table.lookup(items))

    def framed(self, item_ids, task):
        """Raw histories (padding anywhere) -> the ids the model is trained on, with one
        all-padding row appended to a batch of none (TF's dilated convolution mis-shapes a
        batch of no rows in a graph); callers keep the first `len(item_ids)` rows."""
        ids = task.framing.frame_padded(item_ids, self.vocab_size)
        empty = tf.cast(tf.equal(tf.shape(ids)[0], 0), tf.int32)
        return tf.pad(ids, [[0, empty], [0, 0]])

    def user_vector(self, item_ids, task):
        ids = self.framed(item_ids, task)
        with task.scope():
            return task.model.user_embedding(ids)[:tf.shape(item_ids)[0]]

    def scores(self, item_ids, task):
        ids = self.framed(item_ids, task)
        with task.scope():
            if task.kind == "pretrain":
                scores = task.model.next_item_logits(ids)
            else:
                scores = task.model(ids)
        return scores[:tf.shape(item_ids)[0]]

    def excluded_ids(self, item_ids, task, exclude=None):
        """Output ids `[B, E]` (-1: none) no ranking of this request may return: its
        history's items (under `exclude_history`; an item that is no output of the task,
        e.g. a target vocabulary of other items, excludes nothing) and the output tokens
        of `exclude` `[B, X]` (unknown and "" tokens exclude nothing); None when neither."""
        parts = []
        if self.exclude_history:
            ids = tf.cast(item_ids, tf.int64)
            known = (ids > 0) & (ids < self.vocab_size)
            if not self.outputs_by_token[task.name]:  # the outputs are the items
                parts.append(tf.where(known, ids, -1))
            else:  # item id -> token -> output id (-1 when no output has that token)
                tokens = self.item_token_table.lookup(tf.where(known, ids, 0))
                mapped = self.output_id_tables[task.name].lookup(tokens)
                parts.append(tf.where(known, mapped, -1))
        if exclude is not None:
            ids = self.output_id_tables[task.name].lookup(exclude)
            parts.append(tf.where(exclude == "", tf.constant(-1, tf.int64), ids))
        if not parts:
            return None
        return tf.cast(tf.concat(parts, axis=1) if len(parts) > 1 else parts[0], tf.int32)

    def outputs(self, item_ids, task, k, exclude=None):
        if task.kind == "classify":
            scores = self.scores(item_ids, task)
            probabilities = tf.nn.softmax(scores, axis=-1)
            class_ids = tf.argmax(probabilities, axis=-1)
            names = self.output_tables[task.name].lookup(class_ids)
            return {"probabilities": probabilities, "class_ids": class_ids, "class_names": names}
        if k is None:
            k = tf.fill(tf.shape(item_ids)[:1], self.default_k)
        else:
            tf.debugging.assert_equal(tf.shape(k)[0], tf.shape(item_ids)[0], message=(
                "k must hold one value per history (its length must equal the batch's)"))
        if exclude is not None:
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(exclude)[0], tf.shape(item_ids)[0], message=(
                        "exclude must hold one row per history (its length must equal the "
                        "batch's)"))]):
                exclude = tf.identity(exclude)
        excluded = self.excluded_ids(item_ids, task, exclude)
        # one k per history (Serving's batching needs a batch dimension on every input):
        # the batch's largest k is computed, each row's columns beyond its own k are blanked
        blocked = [0, *task.blocked_outputs]  # id 0 (and padding tokens) is no answer
        k = tf.clip_by_value(tf.cast(k, tf.int32), 0, task.num_scores - len(blocked))
        largest = tf.reduce_max(tf.concat([k, [0]], 0))
        if task.index is not None:
            # int8 candidates, re-scored exactly, or the whole catalogue when not proven
            # the same hidden state as the float32 export (not XLA-compiled: XLA's
            # backbone differs in the last bits, which reorders near-equal items)
            hidden = self.user_vector(item_ids, task)
            with task.scope():
                top_scores, top_ids = task.index.top_k(
                    task.model.head, hidden, largest,
                    lambda: chunked_ranking.top_k_in_chunks(
                        task.model.head, hidden, largest, blocked, chunked_ranking.DEFAULT_CHUNK,
                        excluded), excluded)
        elif task.kind == "pretrain" and task.num_scores > chunked_ranking.DEFAULT_CHUNK:
            # a large catalogue: top-k per vocabulary slice, merged; never a [B, V] row
            hidden = self.user_vector(item_ids, task)
            with task.scope():
                top_scores, top_ids = chunked_ranking.top_k_in_chunks(
                    task.model.head, hidden, largest, blocked, chunked_ranking.DEFAULT_CHUNK,
                    excluded)
        else:
            scores = self.scores(item_ids, task)
            answerable = np.ones(int(scores.shape[1]), dtype=bool)
            answerable[blocked] = False
            scores = tf.where(tf.constant(answerable)[None, :], scores, -np.inf)
            scores = chunked_ranking.mask_excluded(scores, excluded)
            top_scores, top_ids = tf.math.top_k(scores, largest)
        # columns past a row's k, and past its last answer (all else excluded), are blank
        keep = ((tf.range(tf.shape(top_ids)[1])[None, :] < k[:, None])
                & tf.logical_not(tf.equal(top_scores, -np.inf)))
        top_ids = tf.where(keep, top_ids, 0)
        tokens = tf.where(keep, self.output_tables[task.name].lookup(tf.cast(top_ids, tf.int64)), "")
        return {"top_k_ids": tf.cast(top_ids, tf.int64), "top_k_items": tokens,
                "scores": tf.where(keep, top_scores, -np.inf)}

    def _task_functions(self, task):
        """[(signature suffix, python function, input specs)] for one task. Every input has
        a leading batch dimension, which Serving's request batching requires (a scalar `k`,
        or a SignatureDef default, cannot be concatenated across requests): so the
        per-request `exclude` list is a signature of its own, `<task>_top_k_exclude`,
        rather than an optional input of `<task>_top_k`."""
        items = tf.TensorSpec([None, None], tf.string, name="items")
        item_ids = tf.TensorSpec([None, None], tf.int64, name="item_ids")
        k_spec = tf.TensorSpec([None], tf.int32, name="k")
        exclude_spec = tf.TensorSpec([None, None], tf.string, name="exclude")

        def by_tokens(items):
            return self.outputs(self.ids_from_tokens(checked(items, 2, HISTORIES)), task, None)

        def by_ids(item_ids):
            return self.outputs(checked(item_ids, 2, HISTORIES), task, None)

        def embedding(items):
            return {"user_embedding": self.user_vector(
                self.ids_from_tokens(checked(items, 2, HISTORIES)), task)}

        functions = [("", by_tokens, [items]), ("_ids", by_ids, [item_ids])]
        if task.kind != "classify":
            def with_k(items, k):
                return self.outputs(self.ids_from_tokens(checked(items, 2, HISTORIES)), task,
                                    checked(k, 1, "k: one value per history [B]"))

            def with_k_excluding(items, k, exclude):
                return self.outputs(self.ids_from_tokens(checked(items, 2, HISTORIES)), task,
                                    checked(k, 1, "k: one value per history [B]"),
                                    checked(exclude, 2, "exclude: one row of output tokens "
                                                        "per history [B, X], \"\" for none"))
            functions.append(("_top_k", with_k, [items, k_spec]))
            functions.append(("_top_k_exclude", with_k_excluding, [items, k_spec, exclude_spec]))
        return functions + [("_user_embedding", embedding, [items])]

    def signatures(self):
        """{signature name: tf.function with an input signature} for every task."""
        result = {}
        for task in self.tasks:
            for suffix, function, specs in self._task_functions(task):
                name = task.name + suffix
                if name in result:
                    raise ExportError(f"two tasks would both define signature {name!r}: rename one")
                result[name] = tf.function(function, input_signature=specs)
        result["serving_default"] = result[self.tasks[0].name]
        return result


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


def build_serving_module(model_dirs, asset_dir, default_k=10, log=print, max_len=None,
                         backbone_dir=None, next_item_index="none", exclude_history=False):
    """(ServingModule, parameter reports, bytes of the separate full models) over
    [(task name, model dir), ...]. The frozen backbone is stored once and must be the same
    architecture and bit-identical across tasks; `max_len` overrides the models' own
    history length; `backbone_dir` is where tasks stored alone find their backbone when
    it moved; `next_item_index="int8"` adds `candidate_index.Int8CandidateIndex` to
    every next-item task (see there: exact answers, needs XLA where served)."""
    from peterrec_tf.model_dir import load_model_dir

    if next_item_index not in NEXT_ITEM_INDEXES:
        raise ExportError(f"next_item_index must be one of {NEXT_ITEM_INDEXES}, got {next_item_index!r}")
    from peterrec_tf.models import parameter_report

    from peterrec_tf.task_artifact import sharing_backbones

    shared, tasks, items_vocab, reports = {}, [], None, {}
    full_model_bytes = 0
    with sharing_backbones():  # N tasks over one pre-trained directory load it once
        loaded = [(name, directory, *load_model_dir(directory, backbone_dir=backbone_dir))
                  for name, directory in model_dirs]
    for name, directory, model, config, vocabs in loaded:
        if "items" not in vocabs:
            raise ExportError(f"{directory} has no vocab.txt: the export needs the item tokens")
        if items_vocab is None:
            items_vocab = vocabs["items"]
        elif vocabs["items"] != items_vocab:
            raise ExportError(f"{directory}: its item vocabulary differs from the first task's")
        if len(items_vocab) != model.backbone.vocab_size:
            raise ExportError(f"{directory}: vocab.txt holds {len(items_vocab)} tokens but the "
                              f"model has {model.backbone.vocab_size} items")
        finetuned = model.task != "pretrain"
        if tasks:
            differs = model.backbone.architecture_differences(tasks[0].model.backbone)
            if differs:
                raise ExportError(f"task {name} ({directory}) has another backbone architecture "
                                  f"than task {tasks[0].name}: {'; '.join(differs)}")
        if (len(model_dirs) > 1 and finetuned
                and transfer_methods.get(model.method).changes_backbone):
            raise ExportError(f"task {name} ({directory}) was fine-tuned with {model.method}, which "
                              "changes the backbone: export it on its own, not over a shared backbone")
        framing = model.framing.resolved(max_len)
        if not framing.length:
            raise ExportError(f"{directory} records no history length: give --max_len (served "
                              "answers must not depend on how much padding a request carries)")
        kind = model.task
        if finetuned:
            outputs = vocabs.get("targets" if model.task == "item_rec" else "labels")
            if outputs is None:
                outputs = [f"{'target' if model.task == 'item_rec' else 'class'}_{i}"
                           for i in range(model.num_outputs)]
                log(f"  {directory} has no {'target_vocab' if model.task == 'item_rec' else 'labels'}"
                    f" file: outputs are named {outputs[0]}...")
        else:
            outputs = items_vocab
        padding = set(config.get("padding_tokens", []))
        blocked = [i for i, token in enumerate(outputs) if i > 0 and token in padding]
        weights = _stored_weights(name, directory, model, shared)
        index = None
        if next_item_index == "int8" and kind == "pretrain":
            from peterrec_tf.serving.candidate_index import Int8CandidateIndex

            stored = {id(w): s for w, s in weights}
            try:
                index = Int8CandidateIndex(model.head, stored[id(model.head.bias)],
                                           [0, *blocked], name=f"{name}_next_item_index")
            except ValueError as error:
                raise ExportError(f"{directory}: {error}") from error
            log(f"  {name}: int8 candidate index over {index.vocab_size:,} items "
                f"({index.nbytes:,} bytes beside the head's float32 weights)")
        tasks.append(ServedTask(name, model, kind, framing, outputs, weights,
                                blocked if kind != "classify" else [], index))
        reports[name] = parameter_report(model)
        if kind != "classify":
            rankable = len(outputs) - 1 - len(blocked)
            reports[name]["k_answered"] = min(int(default_k), rankable)
            if int(default_k) > rankable:
                log(f"  warning: {name}: --k={default_k} is above the {rankable} outputs it "
                    f"can rank (id 0 and padding tokens are never answers), so its signatures "
                    f"answer {rankable} (recorded as k_answered in the export report)")
        full_model_bytes += sum(int(np.prod(w.shape)) * 4 for w in model.weights)
    if next_item_index != "none" and not any(t.index is not None for t in tasks):
        raise ExportError(f"--next_item_index={next_item_index} indexes next-item (pre-trained "
                          "model) tasks, and none of the tasks is one")
    module = ServingModule(tasks, items_vocab, default_k, asset_dir, exclude_history)
    return module, reports, full_model_bytes


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def next_version(model_base):
    versions = [int(d) for d in os.listdir(model_base) if d.isdigit()] if os.path.isdir(model_base) else []
    return max(versions, default=0) + 1


def warmup_requests(model_name, module, signatures):
    """PredictRequests for warm-up: per signature three, with batch sizes 2, 1 and 2 and
    history lengths 6, 3 and 6, made of real item tokens (and k = 2, 3, 4 where taken)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2

    known = module.item_tokens[1:6] or [""]
    histories = [np.array([[""] + known, [""] * len(known) + known[:1]], dtype=bytes),
                 np.array([[""] + known[-2:]], dtype=bytes)]
    histories.append(histories[0])
    requests = []
    for name, function in sorted(signatures.items()):
        for example, history in enumerate(histories):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=name))
            for spec in function.input_signature:
                if spec.name == "items":
                    value = history
                elif spec.name == "item_ids":
                    value = np.array([[module.item_tokens.index(t.decode()) if t else 0 for t in row]
                                      for row in history], dtype=np.int64)
                elif spec.name == "exclude":  # a leading "" column, as the client sends
                    value = np.array([["", known[0]]] * len(history), dtype=bytes)
                else:  # k, one per history
                    value = np.full(len(history), 2 + example, dtype=np.int32)
                request.inputs[spec.name].CopyFrom(tf.make_tensor_proto(value))
            requests.append(request)
    return requests


def write_warmup(path, requests):
    """`assets.extra/tf_serving_warmup_requests`: PredictionLog records Serving replays at load."""
    from tensorflow_serving.apis import prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def read_models_config(path):
    """The `ModelServerConfig` in `path` (empty when there is none); ExportError when it
    is not one, or lists no models (a `custom_model_config`)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as error:
            raise ExportError(f"{path}: not a ModelServerConfig ({error}); fix or remove it: "
                              "it is merged with, never overwritten") from error
        if config.WhichOneof("config") == "custom_model_config":
            raise ExportError(f"{path} holds a custom_model_config: it cannot list models")
    return config


def write_models_config(export_base, num_versions=2, serving_base_path=None, model_name=None):
    """`EXPORT_BASE/models.config` for tensorflow_model_server --model_config_file, as a
    `ModelServerConfig` protobuf (parsed and written with `text_format`), merged with the
    file already there: every entry it holds is kept as it is (another model's
    `base_path`, a hand-edited version policy or labels), except `model_name`'s (the model
    just exported), whose `latest { num_versions }` policy is set and whose `base_path` is
    set when `serving_base_path` is given; a model under the base without an entry gets
    one. `serving_base_path` is where the server sees EXPORT_BASE (e.g. /models inside the
    tensorflow/serving container); default for new entries: its absolute path here. A
    blocking lock beside it serialises concurrent exports into one base."""
    import fcntl

    from google.protobuf import text_format

    path = os.path.join(export_base, "models.config")
    root = serving_base_path.rstrip("/") if serving_base_path else os.path.abspath(export_base)
    lock = os.open(os.path.join(export_base, ".models.config.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = read_models_config(path)
        entries = {entry.name: entry for entry in config.model_config_list.config}
        for name in sorted(os.listdir(export_base)):
            local = os.path.join(export_base, name)
            if not (os.path.isdir(local) and any(d.isdigit() for d in os.listdir(local))):
                continue
            entry = entries.get(name)
            if entry is None:
                entry = entries[name] = config.model_config_list.config.add(
                    name=name, base_path=f"{root}/{name}", model_platform="tensorflow")
                entry.model_version_policy.latest.num_versions = int(num_versions)
            elif name == model_name:
                if serving_base_path:
                    entry.base_path = f"{root}/{name}"
                entry.model_version_policy.latest.num_versions = int(num_versions)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(text_format.MessageToString(config))
        os.replace(path + ".tmp", path)
    finally:
        os.close(lock)  # releases the lock
    return path


def export(model_dirs, export_base="saved_models", model_name="peterrec", version=None, k=10,
           log=print, max_len=None, serving_base_path=None, num_versions=2, backbone_dir=None,
           next_item_index="none", exclude_history=False):
    """Export [(task, dir), ...] to EXPORT_BASE/MODEL_NAME/VERSION; returns the report dict
    (also written to `assets.extra/export_report.json`) with the version's `path`.
    `exclude_history`: ranking signatures never return an item of the request's history."""
    if not model_dirs:
        raise ExportError("nothing to export: give --model_dir or --tasks")
    names = [name for name, _ in model_dirs]
    if len(set(names)) != len(names):
        raise ExportError(f"task names must be unique, got {names}")
    for name in names:
        if not name.replace("_", "").isalnum() or name == "serving_default":
            raise ExportError(f"task name {name!r}: use letters, digits and _ (it names signatures)")
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ExportError(f"model name {model_name!r}: one directory name, not a path")
    if version is not None and int(version) < 1:
        raise ExportError(f"version must be a positive integer, got {version}")
    if int(k) < 1:
        raise ExportError(f"k must be at least 1, got {k}")
    if int(num_versions) < 1:
        raise ExportError(f"num_versions must be at least 1, got {num_versions}")
    if max_len is not None and int(max_len) < 1:
        raise ExportError(f"max_len must be at least 1 (or unset: each model's own), got {max_len}: "
                          "an uncut, unpadded history would make answers depend on how much "
                          "padding a request carries and on what Serving batches it with")
    read_models_config(os.path.join(export_base, "models.config"))  # merged later: refuse now
    with _sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="peterrec-export-assets-") as asset_dir:
        return _export(model_dirs, asset_dir, export_base, model_name, version, k, log, max_len,
                       serving_base_path, num_versions, backbone_dir, next_item_index,
                       exclude_history)


class _sigterm_as_exit:
    """SIGTERM raises SystemExit while exporting (main thread only), so the half-written
    version's temporary directory is removed as on any other failure."""

    def __enter__(self):
        self.previous = None
        import threading
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _export(model_dirs, asset_dir, export_base, model_name, version, k, log, max_len,
            serving_base_path, num_versions, backbone_dir, next_item_index="none",
            exclude_history=False):
    names = [name for name, _ in model_dirs]
    from pipelines.locking import exclusive_lock

    module, reports, full_bytes = build_serving_module(model_dirs, asset_dir, k, log, max_len,
                                                       backbone_dir, next_item_index,
                                                       exclude_history)
    model_base = os.path.join(export_base, model_name)
    with exclusive_lock(model_base):  # one export into a model's versions at a time
        for name in sorted(os.listdir(model_base)):
            if name.startswith(".tmp-"):  # no live export owns it while we hold the lock
                log(f"removing {os.path.join(model_base, name)}, left by an interrupted export")
                shutil.rmtree(os.path.join(model_base, name), ignore_errors=True)
        return _write_version(module, reports, full_bytes, model_dirs, names, model_base,
                              export_base, model_name, version, k, log, serving_base_path,
                              num_versions)


def _write_version(module, reports, full_bytes, model_dirs, names, model_base, export_base,
                   model_name, version, k, log, serving_base_path, num_versions):
    """Save the module as the next version of `model_base` (its lock held)."""
    version = int(version or next_version(model_base))
    final = os.path.join(model_base, str(version))
    if os.path.exists(final):
        raise ExportError(f"{final} exists: versions are immutable once Serving may have loaded them")
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_base)
    try:
        signatures = module.signatures()
        tf.saved_model.save(module, tmp, signatures=signatures)
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        requests = warmup_requests(model_name, module, signatures)
        write_warmup(os.path.join(extra, WARMUP_FILE), requests)
        weight_bytes = sum(int(np.prod(v.shape)) * v.dtype.size
                           for v in {id(v): v for t in module.task_variables for v in t}.values())
        report = {
            "model_name": model_name, "version": version,
            "tasks": {name: {"model_dir": os.path.abspath(d), "max_len": task.framing.length,
                             "framing": task.framing.get_config(),
                             "trainable_share": reports[name].get("trainable_share"),
                             "parameters": reports[name]}
                      for (name, d), task in zip(model_dirs, module.tasks)},
            "signatures": sorted(signatures),
            "default_k": int(k),
            "exclude_history": module.exclude_history,
            "warmup_requests": len(requests),
            "variables_bytes": directory_bytes(os.path.join(tmp, "variables")),
            "weight_bytes": weight_bytes,
            "separate_full_models_bytes": full_bytes,
        }
        index_bytes = sum(index.nbytes for index in module.indexes)
        report["next_item_index"] = ({"kind": "int8", "bytes": index_bytes,
                                      "candidates": module.indexes[0].candidates,
                                      "needs": "XLA (tensorflow_model_server "
                                               "--xla_cpu_compilation_enabled=true)"}
                                     if module.indexes else None)
        report["variables_to_weights_ratio"] = report["variables_bytes"] / max(1, weight_bytes)
        # what the variables hold beyond the model's weights and a deliberate index
        report["variables_to_weights_and_index_ratio"] = (
            report["variables_bytes"] / max(1, weight_bytes + index_bytes))
        report["saving_vs_separate_models"] = 1 - weight_bytes / max(1, full_bytes)
        report["export_bytes"] = directory_bytes(tmp)  # before the report itself
        with open(os.path.join(extra, REPORT_FILE), "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        for root, dirs, _ in os.walk(tmp):  # mkdtemp is private (0700); Serving may run as another user
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        os.chmod(tmp, 0o755)
        if os.path.exists(final):  # another export took the version meanwhile
            raise ExportError(f"{final} appeared while exporting: run again for the next version")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    config_path = write_models_config(export_base, num_versions, serving_base_path, model_name)
    log(f"exported {len(model_dirs)} task(s) to {final}: signatures {', '.join(report['signatures'])}")
    if index_bytes:
        log(f"  int8 next-item index: {index_bytes:,} bytes; serve with XLA enabled "
            "(tensorflow_model_server --xla_cpu_compilation_enabled=true)")
    log(f"  variables/ {report['variables_bytes']:,} bytes for {weight_bytes:,} bytes of weights "
        f"({report['variables_to_weights_ratio']:.3f}x{' with the index' if index_bytes else ''}); "
        f"{len(model_dirs)} separate full models "
        f"hold {full_bytes:,} bytes of weights ({100 * report['saving_vs_separate_models']:.1f}% "
        f"saved); whole export {report['export_bytes']:,} bytes")
    for name in names:
        share = reports[name].get("trainable_share")
        if share is not None:
            log(f"  task {name}: trainable share {100 * share:.2f}% of its model")
    log(f"  TF Serving config: {config_path}")
    report["path"] = final
    return report
