"""The serving module: what a SavedModel export holds and answers (built from model
directories by `module_builder`, written as a version by `version_writer`).

Signatures per task (the table `ServingModule.signatures` returns):
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

Histories are the user's items oldest first, padded with "" / id 0 on either side. Padding
is dropped; an unknown token, or in `item_ids` a 0 between two items or an id outside
[1, V) (`UNKNOWN_IN_PLACE`, -1, among them),
is kept in its place as id 0, which is how data preparation stores an item the vocabulary
lacks, so a served history reads what the model was trained and evaluated on, and the
LiteRT model (0 in place) answers the same; neither ever selects a wrong embedding row. The graph then frames what is left with the model's own `Framing`
(`peterrec_tf.data.framing`, recorded in the model's config: the last `max_len` items, padded,
with the [TCL] tokens of its family), exactly as the training input pipeline does. A
ranking never offers id 0 (`<UNK>`) or a token the model directory lists as padding
(`config.json["padding_tokens"]`, e.g. the release CSVs' literal `0`), and with
`exclude_history` never an item of the request's own history. Inputs of the wrong rank
are INVALID_ARGUMENT (`checked`).

The module is a `tf.Module` over the Keras task models: each signature calls the model's
own methods (one forward pass in the code base), with the model's variables replaced,
through `keras.StatelessScope`, by the module's plain `tf.Variable`s (`ServedTask.weights`),
so each weight is stored once.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from pipelines.vocab import write_tokens
from peterrec_tf.data.framing import UNKNOWN_IN_PLACE, unknown_between
from peterrec_tf.serving.export_options import ExportError
from peterrec_tf.training import chunked_ranking
from peterrec_tf.training.scoring import item_to_output_ids


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
        """Token -> id; "" (padding) -> 0, dropped; an unknown token -> `UNKNOWN_IN_PLACE`,
        framed as id 0 where it stands, as data preparation stores it."""
        ids = self.item_table.lookup(items)
        unknown = tf.constant(UNKNOWN_IN_PLACE, tf.int64)
        return tf.where(items == "", tf.constant(0, tf.int64),
                        tf.where(tf.equal(ids, 0), unknown, ids))

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
            return self.outputs(unknown_between(checked(item_ids, 2, HISTORIES)), task, None)

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
