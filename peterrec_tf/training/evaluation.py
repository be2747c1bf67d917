"""Evaluate a model on a tf.data dataset with the project's metrics."""

import time

import tensorflow as tf

from peterrec_tf.metrics import classification_metrics, ranking_metrics


def score_function(model):
    """Scores `[B, N]` for a batch of inputs: next-item logits or the FineTuner's scores."""
    if model.task == "pretrain":
        return tf.function(model.next_item_logits, reduce_retracing=True)
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def evaluate(model, dataset, task, ks=(5, 10), scorer=None, total=None, log=None,
             every_seconds=30.0, label="evaluation"):
    """{metric: value} over the whole dataset (ranking for pretrain/item_rec, accuracy else).

    With `log`, a long evaluation (full ranking over a large catalogue) reports progress
    every `every_seconds`: examples done of `total`, examples/s and the time left."""
    scorer = scorer or score_function(model)
    metrics = classification_metrics() if task == "classify" else ranking_metrics(ks)
    count = 0
    started = last = time.monotonic()
    for x, y in dataset:
        scores = scorer(x)
        for metric in metrics:
            metric.update_state(y, scores)
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
