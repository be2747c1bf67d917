"""FusedAdam: the trajectory of Keras' Adam on dense gradients, in and out of XLA, and of
TF1's Adam on sparse ones (duplicate ids summed before squaring); LazyAdam; both under
tf.distribute strategies (the one-process update, untouched rows kept)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
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


@pytest.fixture(scope="module")
def under_strategy(tmp_path_factory):
    """tests/optimizer_under_strategy.py's records (its own process: two logical CPUs)."""
    out = str(tmp_path_factory.mktemp("strategy") / "records.npz")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests",
                                                        "optimizer_under_strategy.py"), out],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = np.load(out)
    return lambda key: records[key]


@pytest.mark.parametrize("optimizer", ["fused", "lazy"])
@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker"])
def test_adam_under_a_strategy_is_the_one_process_update(under_strategy, optimizer, strategy):
    """Two replicas each computing half of every batch (MirroredStrategy on two logical
    CPUs), and the collective path of MultiWorkerMirroredStrategy: every replica's copy of
    the weights and of the moments follows the one-process trajectory, and the update ran
    as FusedAdam's/LazyAdam's own (Keras' dense Adam formula was never called)."""
    if strategy == "mirrored":
        assert under_strategy("replicas/mirrored") == 2
    assert under_strategy(f"{optimizer}/{strategy}/fallback_calls") == 0
    for key in ("table", "m", "v", "dense"):
        # [step, replica, ...] for the table and its moments; [replica, ...] (final) for dense
        axis = 0 if key == "dense" else 1
        expected = np.take(under_strategy(f"{optimizer}/one/{key}"), 0, axis=axis)
        got = under_strategy(f"{optimizer}/{strategy}/{key}")
        for replica in range(got.shape[axis]):
            np.testing.assert_allclose(np.take(got, replica, axis=axis), expected, rtol=1e-5,
                                       atol=1e-6, err_msg=f"{key}, replica {replica}")
    # the steps move the table (the comparison is not of untrained weights)
    table = under_strategy(f"{optimizer}/{strategy}/table")
    assert np.abs(table[-1] - table[0]).max() > 1e-2


def test_lazy_adam_under_a_strategy_leaves_untouched_rows_and_moments_bit_unchanged(
        under_strategy):
    """Each step, under MirroredStrategy (2 replicas), every row no replica's half of the
    batch looked up keeps its weights and both moments bit for bit (rows 0-7 seen in step 1
    are not decayed in step 2); seen rows move. FusedAdam on the same steps does move
    rows seen earlier (momentum), so the check can tell the two apart."""
    rows, steps = int(under_strategy("rows")), under_strategy("steps").tolist()
    lazy = {k: under_strategy(f"lazy/mirrored/{k}") for k in ("table", "m", "v")}
    fused = under_strategy("fused/mirrored/table")
    for step, ids in enumerate(steps, start=1):
        untouched = sorted(set(range(rows)) - set(ids))
        seen = sorted(set(ids))
        for key, values in lazy.items():  # [step, replica, row, column]
            np.testing.assert_array_equal(values[step][:, untouched],
                                          values[step - 1][:, untouched],
                                          err_msg=f"{key}, step {step}")
            assert (values[step][:, seen] != values[step - 1][:, seen]).any(axis=-1).all()
        if step > 1:
            assert np.abs(fused[step][:, untouched] - fused[step - 1][:, untouched]).max() > 1e-4
