"""Evaluate a model on a tf.data dataset with the project's metrics."""

import time

import tensorflow as tf

from peterrec_tf.metrics import classification_metrics, ranking_metrics, true_ranks
from peterrec_tf.training import chunked_ranking


def score_function(model):
    """Scores `[B, N]` for a batch of inputs: next-item logits or the FineTuner's scores."""
    if model.task == "pretrain":
        return tf.function(model.next_item_logits, reduce_retracing=True)
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def rank_function(model, chunk_size=chunked_ranking.DEFAULT_CHUNK, scorer=None):
    """`(x, y) -> [B]` 0-based ranks of the true items (see `metrics.true_ranks`).

    A pre-trained model whose catalogue exceeds `chunk_size` ids is ranked slice by slice
    (`chunked_ranking`), so memory stays `[B, chunk_size]` at any catalogue size; smaller
    catalogues and fine-tuned models rank their whole score rows as before."""
    if scorer is None and model.task == "pretrain" and model.head.vocab_size > chunk_size:
        return tf.function(
            lambda x, y: chunked_ranking.next_item_ranks(model, x, y, chunk_size),
            reduce_retracing=True)
    scorer = scorer or score_function(model)
    return lambda x, y: true_ranks(y, scorer(x))


def evaluate(model, dataset, task, ks=(5, 10), scorer=None, total=None, log=None,
             every_seconds=30.0, label="evaluation", chunk_size=chunked_ranking.DEFAULT_CHUNK,
             ranker=None):
    """{metric: value} over the whole dataset (ranking for pretrain/item_rec, accuracy else).

    `scorer` (x -> `[B, N]` scores) replaces the model's own scoring, `ranker` (from
    `rank_function`, made once and reused so that its graph is traced once) its ranking;
    without either a large catalogue is ranked in slices of `chunk_size` ids. With `log`, a
    long evaluation reports progress every `every_seconds`: examples done of `total`,
    examples/s and the time left."""
    if task == "classify":
        metrics = classification_metrics()
        scorer = scorer or score_function(model)
    else:
        metrics = ranking_metrics(ks)
        ranker = ranker or rank_function(model, chunk_size, scorer)
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
