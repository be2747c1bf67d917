"""The on-disk record: one `tf.train.Example` per sequence (unpadded)."""

import tensorflow as tf

ITEM_IDS = "item_ids"
USER_ID = "user_id"
TARGET = "target"
LABEL = "label"


def encode(item_ids, user_id, target=None, label=None):
    """Serialized Example: item ids oldest first, plus the target item or class label."""
    feature = {
        ITEM_IDS: tf.train.Feature(int64_list=tf.train.Int64List(value=list(item_ids))),
        USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(user_id).encode()])),
    }
    if target is not None:
        feature[TARGET] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(target)]))
    if label is not None:
        feature[LABEL] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
    # deterministic: map entries by key, so equal records are equal bytes on every path
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def feature_spec(task, split):
    """parse_example spec for a batch of serialized records of this task/split."""
    spec = {ITEM_IDS: tf.io.RaggedFeature(tf.int64),
            USER_ID: tf.io.FixedLenFeature([], tf.string)}
    if task == "item_rec" or (task == "pretrain" and split != "train"):
        spec[TARGET] = tf.io.FixedLenFeature([], tf.int64)
    if task == "classify":
        spec[LABEL] = tf.io.FixedLenFeature([], tf.int64)
    return spec
