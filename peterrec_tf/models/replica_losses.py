"""Loss reductions that give N replicas of tf.distribute exactly one process's step."""

import tensorflow as tf
from keras import ops


def scale_for_replicas(loss):
    """Divide a replica's loss by the replica count, as Keras' compiled losses do.

    Under tf.distribute the replicas' gradients are summed (and `fit` multiplies the
    reported loss back); without this an N-replica run would take N-times larger steps.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


def weighted_mean(weighted_sum, weight_sum):
    """`sum(loss * w) / sum(w)` over the global batch, also when it is split over replicas.

    With N replicas the weight total is summed across them and the result multiplied by N
    (Keras divides by N when it sums the replicas' gradients), so N replicas take exactly
    the step one process takes on the whole batch.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    context = tf.distribute.get_replica_context()
    if replicas > 1 and context is not None:
        weight_sum = context.all_reduce("SUM", weight_sum)
        return weighted_sum * replicas / ops.maximum(weight_sum, 1.0)
    return weighted_sum / ops.maximum(weight_sum, 1.0)
