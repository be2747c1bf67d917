"""FusedAdam: the trajectory of Keras' Adam on dense gradients, in and out of XLA, and of
TF1's Adam on sparse ones (duplicate ids summed before squaring)."""

import keras
import numpy as np
import tensorflow as tf

from peterrec_tf.training.optimizer import FusedAdam


def trajectory(optimizer, jit, rng_seed=5, densify=False):
    rng = np.random.RandomState(rng_seed)
    table = keras.Variable(rng.randn(50, 4).astype("float32"))
    dense = keras.Variable(rng.randn(4, 3).astype("float32"))
    optimizer.build([table, dense])

    @tf.function(jit_compile=jit)
    def step(ids, x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(tf.matmul(tf.gather(table.value, ids) * x, dense.value)))
        grads = tape.gradient(loss, [table.value, dense.value])
        if densify:
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply(grads, [table, dense])
        return loss

    for i in range(6):
        # the embedding's gradient is sparse outside XLA (tf.IndexedSlices)
        step(tf.constant(rng.randint(0, 50, 7)), tf.constant(rng.randn(7, 4).astype("float32")))
    return table.numpy(), dense.numpy(), int(optimizer.iterations.numpy())


def test_fused_adam_follows_keras_adam():
    """On sparse gradients with a repeated id Keras' Adam squares the rows before summing
    them (v grows by sum(g_i^2), not (sum g_i)^2); TF1's Adam, hence the release, and
    FusedAdam sum first. Keras' Adam on the densified gradients is the reference."""
    for jit in (False, True):
        expected = trajectory(keras.optimizers.Adam(0.05), jit, densify=True)
        got = trajectory(FusedAdam(0.05), jit)
        assert got[2] == expected[2] == 6
        assert np.abs(got[0] - trajectory(FusedAdam(0.05), jit, rng_seed=6)[0]).max() > 1e-3
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-6)
    sparse_keras = trajectory(keras.optimizers.Adam(0.05), False)
    assert np.abs(sparse_keras[0] - trajectory(FusedAdam(0.05), False)[0]).max() > 1e-3


def test_fused_adam_sums_repeated_ids_like_tf1_adam():
    """One step, one id gathered twice: the release's TF1 Adam and FusedAdam agree."""
    def one_step(make, apply):
        table = tf.Variable(np.ones((3, 2), "float32"))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, [1, 1]) * [[1.0, 2.0], [3.0, -5.0]])
        gradient = tape.gradient(loss, table)
        assert isinstance(gradient, tf.IndexedSlices)
        apply(make(), gradient, table)
        return table.numpy()

    tf1 = one_step(lambda: tf.compat.v1.train.AdamOptimizer(0.1, epsilon=1e-7),
                   lambda opt, g, v: opt.apply_gradients([(g, v)]))

    def keras_apply(opt, g, v):
        wrapped = keras.Variable(v.numpy())
        opt.apply([g], [wrapped])
        v.assign(wrapped.numpy())
    np.testing.assert_allclose(one_step(lambda: FusedAdam(0.1), keras_apply), tf1, rtol=1e-6)


def test_fused_adam_round_trips_its_config():
    optimizer = FusedAdam(0.01, beta_1=0.8)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert isinstance(again, FusedAdam) and again.get_config() == optimizer.get_config()


def lazy_trajectory(optimizer, ids_per_step, rng_seed=5):
    """Rows of a table trained by `optimizer` on sparse gradients of the given ids."""
    from peterrec_tf.training.optimizer import LazyAdam  # noqa: F401
    rng = np.random.RandomState(rng_seed)
    table = keras.Variable(rng.randn(20, 3).astype("float32"))
    optimizer.build([table])
    for ids in ids_per_step:
        with tf.GradientTape() as tape:
            rows = tf.gather(table.value, tf.constant(ids))
            loss = tf.reduce_sum(tf.sin(rows * rng.randn(len(ids), 3).astype("float32")))
        gradient = tape.gradient(loss, table.value)
        assert isinstance(gradient, tf.IndexedSlices)
        optimizer.apply([gradient], [table])
    return table.numpy(), optimizer


def test_lazy_adam_is_adam_on_rows_seen_and_leaves_the_others_alone():
    from peterrec_tf.training.optimizer import LazyAdam
    # every row in every step (one repeated): the same trajectory as FusedAdam
    full = [list(range(20)) + [3, 3, 7] for _ in range(5)]
    lazy, _ = lazy_trajectory(LazyAdam(0.05), full)
    dense, _ = lazy_trajectory(FusedAdam(0.05), full)
    np.testing.assert_allclose(lazy, dense, rtol=1e-5, atol=1e-6)
    # rows 10..19 never seen: untouched, and their moments stay zero; FusedAdam moves rows
    # seen earlier on every later step (momentum), LazyAdam only when they are seen again
    start = np.random.RandomState(5).randn(20, 3).astype("float32")
    steps = [[0, 1, 2, 2], [3, 4], [0, 5]]
    lazy, optimizer = lazy_trajectory(LazyAdam(0.05), steps)
    dense, _ = lazy_trajectory(FusedAdam(0.05), steps)
    np.testing.assert_array_equal(lazy[6:], start[6:])
    assert not optimizer._momentums[0].numpy()[6:].any()
    assert np.abs(lazy[:6] - start[:6]).min() > 1e-4  # every seen row moved
    assert np.abs(dense[1:3] - lazy[1:3]).max() > 1e-4  # Adam kept moving rows 1, 2
    # its config round-trips, under its own name
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert type(again) is LazyAdam
