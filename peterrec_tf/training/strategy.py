"""tf.distribute strategy, the chief of a cluster, precision policy and data sharding."""

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name):
    """default (one device), mirrored (all local devices), multi_worker (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             "(cluster addresses and this worker's task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")


def task_of_this_process():
    """(type, index) from TF_CONFIG, or (None, 0) when there is no cluster."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return task.get("type"), int(task.get("index", 0))


def is_chief():
    """True unless TF_CONFIG names this process a non-chief worker.

    The chief is the `chief` task when the cluster has one, else worker 0: it alone
    writes flags.json, results.json, TensorBoard and the final model directory.
    """
    kind, index = task_of_this_process()
    if kind is None:
        return True
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return kind == "chief"
    return kind == "worker" and index == 0


def set_precision(mixed):
    """`mixed_float16` on a GPU, `mixed_bfloat16` elsewhere; float32 when off."""
    if not mixed:
        keras.mixed_precision.set_global_policy("float32")
        return "float32"
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def for_strategy(dataset, strategy):
    """Shard a global-batch dataset by DATA across workers.

    Every worker reads the same stream and keeps its slice of each global batch, so a
    step of N workers sees exactly the batch a single process would (and the stateless
    per-batch seeds of masking/negatives stay the same).  The input functions default to
    FILE sharding, which would give each worker other examples.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        dataset = dataset.with_options(options)
    return dataset


def check_batch_size(batch_size, strategy):
    """The global batch must split evenly over the replicas (batches are drop-remainder
    under a distribution strategy)."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"--batch_size={batch_size} must be divisible by the {replicas} "
                         "replicas of the distribution strategy")
