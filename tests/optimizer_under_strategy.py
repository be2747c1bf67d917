"""Child process of tests/test_training_optimizer.py: FusedAdam and LazyAdam trained on a
toy table under tf.distribute strategies, written to an .npz for the test to compare.

    python tests/optimizer_under_strategy.py OUT.npz

Run in its own process because the two replicas of MirroredStrategy need two logical CPU
devices, which TensorFlow only lets a process configure before its runtime starts.
For each optimizer (fused, lazy) and strategy (`one`: no strategy; `mirrored`: two
replicas on two logical CPUs, each computing half of every batch; `multi_worker`: a
one-worker MultiWorkerMirroredStrategy, the collective code path), after every step:
the table (every replica's copy), its two moments (every replica's copy), the dense
weight; and how often Keras' own `Adam.update_step` ran (the dense fallback).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("TF_CONFIG", None)  # the one-worker MultiWorkerMirroredStrategy, not a cluster

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from peterrec_tf.training.optimizer import FusedAdam, LazyAdam  # noqa: E402

ROWS = 30
#: ids of each step's batch of 8 (split 4 + 4 over two replicas). Rows 0-7 only in step 1,
#: 8-13 only in step 2, 0-3 again in step 3, 20-29 never; ids repeat within a step and
#: across the replicas' halves.
STEPS = [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 8, 9], [0, 1, 2, 3, 0, 14, 15, 1],
         [16, 17, 18, 19, 16, 17, 18, 19]]

FALLBACK_CALLS = [0]


def count_fallbacks():
    """Wrap Keras' Adam.update_step (what FusedAdam/LazyAdam call when they fall back)."""
    original = keras.optimizers.Adam.update_step

    def counted(self, gradient, variable, learning_rate):
        FALLBACK_CALLS[0] += 1
        return original(self, gradient, variable, learning_rate)

    keras.optimizers.Adam.update_step = counted


def copies(variable):
    """Every replica's copy of a Keras variable, as arrays."""
    value = variable.value
    if isinstance(value, tf.distribute.DistributedValues):
        return np.stack([c.numpy() for c in value.values])
    return value.numpy()[None]


def train(strategy, make_optimizer):
    rng = np.random.RandomState(3)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        table = keras.Variable(rng.randn(ROWS, 4).astype("float32"))
        dense = keras.Variable(rng.randn(4, 3).astype("float32"))
        optimizer = make_optimizer()
        optimizer.build([table, dense])
    # pylint: disable=protected-access
    index = optimizer._get_variable_index(table)
    m, v = optimizer._momentums[index], optimizer._velocities[index]

    def replica_step(ids, x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(tf.matmul(tf.gather(table.value, ids) * x, dense.value)))
        optimizer.apply(tape.gradient(loss, [table.value, dense.value]), [table, dense])

    @tf.function
    def step(ids, x):
        def half(source):
            return strategy.experimental_distribute_values_from_function(
                lambda context: source[context.replica_id_in_sync_group::replicas])
        strategy.run(replica_step, (half(ids), half(x)))

    record = {"table": [copies(table)], "m": [copies(m)], "v": [copies(v)]}
    before = FALLBACK_CALLS[0]
    for ids in STEPS:
        step(tf.constant(ids), tf.constant(rng.randn(len(ids), 4).astype("float32")))
        for name, variable in (("table", table), ("m", m), ("v", v)):
            record[name].append(copies(variable))
    record = {name: np.stack(arrays) for name, arrays in record.items()}  # [step, replica, ...]
    record["dense"] = copies(dense)
    # a traced update_step runs once per trace, not per step: count traced calls
    record["fallback_calls"] = np.array(FALLBACK_CALLS[0] - before)
    return record


def main(out):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    count_fallbacks()
    strategies = {
        "one": tf.distribute.get_strategy(),
        "mirrored": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
        "multi_worker": tf.distribute.MultiWorkerMirroredStrategy(),
    }
    results = {}
    for opt_name, make in (("fused", lambda: FusedAdam(0.05)), ("lazy", lambda: LazyAdam(0.05))):
        for name, strategy in strategies.items():
            for key, value in train(strategy, make).items():
                results[f"{opt_name}/{name}/{key}"] = value
    results["replicas/mirrored"] = np.array(strategies["mirrored"].num_replicas_in_sync)
    results["steps"], results["rows"] = np.array(STEPS), np.array(ROWS)
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
