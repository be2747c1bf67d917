"""Evaluate a model on a tf.data dataset with the project's metrics."""

import tensorflow as tf

from peterrec_tf.metrics import classification_metrics, ranking_metrics


def score_function(model):
    """Scores `[B, N]` for a batch of inputs: next-item logits or the FineTuner's scores."""
    if model.task == "pretrain":
        return tf.function(model.next_item_logits, reduce_retracing=True)
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def evaluate(model, dataset, task, ks=(5, 10), scorer=None):
    """{metric: value} over the whole dataset (ranking for pretrain/item_rec, accuracy else)."""
    scorer = scorer or score_function(model)
    metrics = classification_metrics() if task == "classify" else ranking_metrics(ks)
    count = 0
    for x, y in dataset:
        scores = scorer(x)
        for metric in metrics:
            metric.update_state(y, scores)
        count += int(tf.shape(y)[0])
    results = {metric.name: float(metric.result()) for metric in metrics}
    results["examples"] = count
    return results
