"""tf.data plumbing shared by the dataset builders: a prepared split's serialized records in
batches (sharded per input pipeline, interleaved, shuffled), their vectorised parse, a
stateless seed per batch and the finishing options.

Randomness is drawn from stateless ops keyed by the seed, the batch index and the input
pipeline id, so the same seed gives the same batches and the workers of a distributed job
draw differently.
"""

import tensorflow as tf

from pipelines import schema
from pipelines.inputs import shard_files

AUTOTUNE = tf.data.AUTOTUNE


def _sharded_files(files, input_context):
    """(dataset of shard paths, the input context still to shard records by): files are
    sharded per input pipeline when there are enough of them, else the records are."""
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if input_context is None or input_context.num_input_pipelines <= 1:
        return dataset, None
    if len(files) >= input_context.num_input_pipelines:
        return dataset.shard(input_context.num_input_pipelines,
                             input_context.input_pipeline_id), None
    return dataset, input_context


def record_batches(data_dir, split, batch_size, shuffle, seed, deterministic, repeat,
                   drop_remainder, input_context, shuffle_buffer=10_000):
    """Batches of serialized records: files sharded per input pipeline, interleaved,
    shuffled; parsing happens after batching (one vectorised parse per batch)."""
    files = shard_files(data_dir, split)
    dataset, per_file = _sharded_files(files, input_context)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
        cycle_length=min(len(files), 4), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if per_file is not None:
        dataset = dataset.shard(per_file.num_input_pipelines, per_file.input_pipeline_id)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=drop_remainder)


def parser(task, split):
    """Serialized records `[B]` -> their features (`schema.feature_spec` of the task's split)."""
    spec = schema.feature_spec(task, split)
    return lambda serialized: tf.io.parse_example(serialized, spec)


def with_batch_seeds(dataset, seed, input_context=None):
    """Attach a stateless seed `[2]` per batch: (seed, batch index x pipelines + pipeline id),
    so workers of a distributed job draw different masks/negatives."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline = input_context.input_pipeline_id if input_context else 0
    return dataset.enumerate().map(
        lambda index, batch: (tf.stack([tf.cast(seed, tf.int64), index * pipelines + pipeline]),
                              batch))


def finish(dataset, deterministic):
    """The dataset with its determinism, auto-sharding by file, and prefetching."""
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    return dataset.with_options(options).prefetch(AUTOTUNE)
