"""How a model is scored on a tf.data dataset: its score rows, the true items' ranks (with
a user's history excluded as the export serves it) and the project's metrics over every
batch. The jobs (`jobs.training_job`, `jobs.evaluating`) and the recommender use it.
"""

import time

import numpy as np
import tensorflow as tf

from peterrec_tf.metrics import classification_metrics, ranking_metrics, true_ranks
from peterrec_tf.training import chunked_ranking


def score_function(model):
    """Scores `[B, N]` for a batch of inputs: next-item logits or the FineTuner's scores."""
    if model.task == "pretrain":
        return tf.function(model.next_item_logits, reduce_retracing=True)
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def item_to_output_ids(items, outputs):
    """int32 `[len(items)]`: the output id of each item id, matched by token (-1 for an
    item that is no output and for id 0); None when the outputs are the items (a
    pre-trained model, or targets in the same vocabulary), where the identity applies."""
    items, outputs = list(items), list(outputs)
    if outputs == items:
        return None
    position = {token: i for i, token in enumerate(outputs) if i > 0}
    return np.array([-1] + [position.get(token, -1) for token in items[1:]], np.int32)


def history_exclusion(item_to_output, blocked=()):
    """`x -> [B, T + len(blocked)]` output ids of the history items in `x` (-1 where none),
    then the `blocked` output ids (the model's padding tokens, which no served ranking
    offers), for ranking with `--exclude_history` as the export serves it:
    `item_to_output[i]` is the output id of item id i (-1 for an item that is no output,
    and for id 0, padding/[TCL]). A pre-trained model's outputs are its items: the
    identity (`item_to_output=None`)."""
    table = None if item_to_output is None else tf.constant(item_to_output, tf.int32)
    always = tf.constant(sorted(blocked), tf.int32)

    def excluded(x):
        x = tf.cast(x, tf.int32)
        if table is None:
            ids = tf.where(x > 0, x, -1)
        else:
            inside = (x > 0) & (x < tf.shape(table)[0])
            ids = tf.where(inside, tf.gather(table, tf.where(inside, x, 0)), -1)
        return tf.concat([ids, tf.tile(always[None, :], [tf.shape(ids)[0], 1])], axis=1)
    # the most distinct ids a row can exclude, where the table bounds it (item-rec targets
    # that are items): a sampled ranking needs that many fewer negatives, not a whole row
    excluded.most = (None if item_to_output is None else
                     int(np.unique(np.asarray(item_to_output)[np.asarray(item_to_output) >= 0])
                         .size) + len(set(blocked)))
    return excluded


def rank_function(model, chunk_size=chunked_ranking.DEFAULT_CHUNK, scorer=None,
                  exclude=None):
    """`(x, y) -> [B]` 0-based ranks of the true items (see `metrics.true_ranks`).

    A pre-trained model whose catalogue exceeds `chunk_size` ids is ranked slice by slice
    (`chunked_ranking`), so memory stays `[B, chunk_size]` at any catalogue size; smaller
    catalogues and fine-tuned models rank their whole score rows as before. `exclude`
    (`history_exclusion(...)`, --exclude_history) maps `x` to ids `[B, E]` that are no
    competitor of that row, as the export excludes a request's history; the true item is
    never excluded (it was in the history: it still counts, as RecBole masks the history
    but the target)."""
    if scorer is None and model.task == "pretrain" and model.head.vocab_size > chunk_size:
        return tf.function(
            lambda x, y: chunked_ranking.next_item_ranks(
                model, x, y, chunk_size, None if exclude is None else exclude(x)),
            reduce_retracing=True)
    scorer = scorer or score_function(model)
    if exclude is None:
        return lambda x, y: true_ranks(y, scorer(x))

    def ranks(x, y):
        truth = y[:, 0] if len(y.shape) == 2 else y
        excluded = chunked_ranking.excluded_but_truth(exclude(x), truth)
        return true_ranks(y, chunked_ranking.mask_excluded(
            tf.cast(scorer(x), tf.float32), excluded))
    return ranks


def evaluate(model, dataset, task, ks=(5, 10), scorer=None, total=None, log=None,
             every_seconds=30.0, label="evaluation", chunk_size=chunked_ranking.DEFAULT_CHUNK,
             ranker=None, exclude=None):
    """{metric: value} over the whole dataset (ranking for pretrain/item_rec, accuracy else).

    `scorer` (x -> `[B, N]` scores) replaces the model's own scoring, `ranker` (from
    `rank_function`, made once and reused so that its graph is traced once) its ranking;
    without either a large catalogue is ranked in slices of `chunk_size` ids; `exclude`: see
    `rank_function` (--exclude_history). With `log`, a
    long evaluation reports progress every `every_seconds`: examples done of `total`,
    examples/s and the time left."""
    if task == "classify":
        metrics = classification_metrics()
        scorer = scorer or score_function(model)
    else:
        metrics = ranking_metrics(ks)
        ranker = ranker or rank_function(model, chunk_size, scorer, exclude)
    count = 0
    started = last = time.monotonic()
    for x, y in dataset:
        if task == "classify":
            scores = scorer(x)
            for metric in metrics:
                metric.update_state(y, scores)
        else:
            ranks = ranker(x, y)
            for metric in metrics:
                metric.update_ranks(ranks)
        count += int(tf.shape(y)[0])
        now = time.monotonic()
        if log is not None and now - last >= every_seconds:
            last = now
            rate = count / max(now - started, 1e-9)
            left = (f" of {total:,}, {(total - count) / rate:.0f} s left" if total else "")
            log(f"  {label}: {count:,} examples{left} ({rate:,.0f} examples/s)")
    results = {metric.name: float(metric.result()) for metric in metrics}
    results["examples"] = count
    return results
