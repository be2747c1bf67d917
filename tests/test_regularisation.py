"""Regularisation, schedules, early stopping and inert padding: dropout only in training,
decoupled weight decay (dense and lazy), label smoothing (fused = reference), the learning
rate schedule, --patience, and answers that do not depend on the width of left padding."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.layers.fused_softmax import fused_softmax_sum, smoothed_cross_entropy
from peterrec_tf.models import Backbone, NextItNet
from peterrec_tf.training.best import BestWeights, resolve_metric
from peterrec_tf.training.optimizer import FusedAdam, LazyAdam, WarmupDecay, make_optimizer

VOCAB = 40


def tiny_next_item(randomise=False, **backbone_kwargs):
    """A tiny NextItNet; `randomise`: every weight random, biases and layer-norm offsets
    too (freshly initialised they are 0, and a zero input then stays zero by itself)."""
    keras.utils.set_random_seed(3)
    model = NextItNet(Backbone(VOCAB, channels=8, dilations=(1, 2), **backbone_kwargs))
    model.build()
    if randomise:
        rng = np.random.RandomState(4)
        for weight in model.weights:
            weight.assign(rng.randn(*weight.shape).astype("float32") * 0.5)
    return model


def test_new_models_answer_the_same_whatever_the_left_padding():
    """padding="masked" (new causal models): the history [5, 9, 3] scores the same framed at
    width 3, 6 or 20; the release's learned id 0 does not (what the converter keeps)."""
    history = [5, 9, 3]
    widths = (3, 6, 20)
    framed = [np.array([[0] * (w - len(history)) + history]) for w in widths]
    model = tiny_next_item(randomise=True)
    assert model.backbone.padding == "masked"
    answers = [model.next_item_logits(ids).numpy() for ids in framed]
    for answer in answers[1:]:
        np.testing.assert_allclose(answer, answers[0], rtol=0, atol=1e-5)
    # the whole sequence's last position too (the path training and evaluation share)
    whole = [model(ids)[:, -1].numpy() for ids in framed]
    np.testing.assert_allclose(whole[2], whole[0], rtol=0, atol=1e-5)
    learned = tiny_next_item(randomise=True, padding="learned")
    a, b = (learned.next_item_logits(ids).numpy() for ids in framed[::2])
    assert np.abs(a - b).max() > 1e-3


def test_padding_mode_is_saved_and_old_configs_load_as_learned():
    model = tiny_next_item(dropout=0.2, embedding_dropout=0.1)
    config = model.backbone.get_config()
    assert (config["padding"], config["dropout"], config["embedding_dropout"]) == (
        "masked", 0.2, 0.1)
    del config["padding"], config["dropout"], config["embedding_dropout"]
    old = Backbone.from_config(config)
    assert old.padding == "learned" and old.dropout == 0.0
    assert Backbone(VOCAB, 8, (1,), causal=False).padding == "learned"
    with pytest.raises(ValueError, match="padding"):
        Backbone(VOCAB, 8, (1,), padding="zero")


def test_dropout_acts_in_training_only():
    plain = tiny_next_item()
    dropped = tiny_next_item(dropout=0.5, embedding_dropout=0.5)
    dropped.backbone.copy_backbone_weights_from(plain.backbone)
    dropped.head.set_weights(plain.head.get_weights())
    ids = np.array([[0, 0, 4, 7, 1, 2], [3, 3, 5, 6, 8, 9]])
    np.testing.assert_allclose(dropped(ids).numpy(), plain(ids).numpy(), atol=1e-6)
    np.testing.assert_allclose(dropped.next_item_logits(ids).numpy(),
                               plain.next_item_logits(ids).numpy(), atol=1e-6)
    trained = dropped(ids, training=True).numpy()
    assert np.abs(trained - plain(ids, training=True).numpy()).max() > 1e-3
    # the residual stack compiled alone keeps training and inference apart
    dropped.backbone.compile_blocks_with_xla()
    dropped.backbone(ids, training=True)
    np.testing.assert_allclose(dropped(ids).numpy(), plain(ids).numpy(), atol=1e-5)


@pytest.mark.parametrize("vocab_major", [False, True])
def test_fused_label_smoothing_matches_the_reference(vocab_major):
    rng = np.random.RandomState(0)
    inputs = tf.constant(rng.randn(6, 5).astype("float32"))
    kernel = tf.constant(rng.randn(*((VOCAB, 5) if vocab_major else (5, VOCAB))).astype("float32"))
    bias = tf.constant(rng.randn(VOCAB).astype("float32"))
    labels = tf.constant(rng.randint(0, VOCAB, 6))
    weights = tf.constant([1.0, 1.0, 0.0, 1.0, 0.5, 1.0])

    def reference():
        logits = tf.matmul(inputs, kernel, transpose_b=vocab_major) + bias
        return tf.reduce_sum(smoothed_cross_entropy(labels, logits, 0.1) * weights)

    results = []
    for loss_fn in (reference, lambda: fused_softmax_sum(
            inputs, labels, weights, kernel, bias, vocab_major, label_smoothing=0.1)):
        with tf.GradientTape() as tape:
            tape.watch([inputs, kernel, bias])
            loss = loss_fn()
        results.append([loss, *tape.gradient(loss, [inputs, kernel, bias])])
    for mine, theirs in zip(results[1], results[0]):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-5)
    unsmoothed = tf.reduce_sum(smoothed_cross_entropy(
        labels, tf.matmul(inputs, kernel, transpose_b=vocab_major) + bias) * weights)
    assert abs(float(unsmoothed) - float(results[0][0])) > 1e-3


def _one_step(optimizer, sparse):
    rng = np.random.RandomState(1)
    table = keras.Variable(rng.randn(10, 3).astype("float32"), name="table")
    bias = keras.Variable(rng.randn(3).astype("float32"), name="bias")
    optimizer.build([table, bias])
    ids = tf.constant([2, 5, 2])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table.value, ids) * bias.value)
    grads = tape.gradient(loss, [table.value, bias.value])
    if not sparse:
        grads = [tf.convert_to_tensor(g) for g in grads]
    before = table.numpy(), bias.numpy()
    optimizer.apply(grads, [table, bias])
    return before, (table.numpy(), bias.numpy())


@pytest.mark.parametrize("cls,sparse", [(FusedAdam, False), (FusedAdam, True),
                                        (LazyAdam, True)])
def test_decoupled_weight_decay(cls, sparse):
    """AdamW's decay: `lr * wd * w` off every matrix (LazyAdam: touched rows only), on top of
    the Adam update of the same optimizer without decay; biases never decay."""
    (table, bias), (plain_table, plain_bias) = _one_step(cls(0.1), sparse)
    _, (decayed_table, decayed_bias) = _one_step(cls(0.1, weight_decay=0.5), sparse)
    np.testing.assert_array_equal(decayed_bias, plain_bias)
    touched = [2, 5]
    shrink = 0.1 * 0.5 * table
    expected = plain_table - shrink
    if cls is LazyAdam:
        untouched = [r for r in range(10) if r not in touched]
        expected[untouched] = table[untouched]
    np.testing.assert_allclose(decayed_table, expected, rtol=1e-6, atol=1e-6)


def test_schedule_warms_up_then_decays():
    cosine = WarmupDecay(1.0, total_steps=12, warmup_steps=2, kind="cosine")
    rates = [float(cosine(step)) for step in range(13)]
    np.testing.assert_allclose(rates[:3], [0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(rates[7], 0.5, atol=1e-6)
    assert rates[12] == pytest.approx(0.0, abs=1e-6)
    linear = WarmupDecay(1.0, total_steps=10, kind="linear")
    assert float(linear(5)) == pytest.approx(0.5)
    assert isinstance(make_optimizer("adam", 0.01).learning_rate, keras.Variable)  # a float
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(cosine))
    assert float(restored(7)) == pytest.approx(rates[7])


def test_patience_counts_validations_without_a_better_one(tmp_path):
    model = tiny_next_item()
    best = BestWeights(model, str(tmp_path), "ndcg@10")
    for step, value in ((10, 0.2), (20, 0.3), (30, 0.3), (40, 0.25)):
        best.offer(step, {"ndcg@10": value})
    assert best.record["step"] == 20 and best.since_best() == 2
    assert best.exhausted(2) and not best.exhausted(3) and not best.exhausted(0)
    again = BestWeights(model, str(tmp_path), "ndcg@10")  # as a resumed run finds it
    assert again.since_best() == 2
    again.resume_at(30)  # its checkpoint was at step 30: the validation at 40 is repeated
    assert again.since_best() == 1
    assert resolve_metric("auto", -1, "default", ["hr@5", "ndcg@5", "hr@10", "ndcg@10"]) == \
        "ndcg@10"
    assert resolve_metric("auto", 0, "default", ["ndcg@10"]) == ""
    assert resolve_metric("auto", 5, "default", ["accuracy"]) == "accuracy"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pipelines.prepare import prepare

    out = str(tmp_path_factory.mktemp("data") / "syn")
    prepare("synthetic", out, max_len=12, seed=1, num_users=120, num_items=40, num_clusters=4,
            num_targets=10, log=lambda *_: None)
    return os.path.join(out, "pretrain")


def test_pretrain_stops_early_and_keeps_the_best_weights(data, tmp_path):
    """A learning rate too small to change hr@10: no validation after the first is better,
    so --patience=2 stops two validations later, recorded in results.json."""
    from peterrec_tf.jobs.pretraining import run_pretrain

    model_dir = str(tmp_path / "run")
    settings = dict(channels=8, dilations=(1,), batch_size=16, train_steps=30, eval_every=4,
                    select_metric="hr@10", patience=2, learning_rate=1e-12, log_every=100,
                    checkpoint_every=100, dropout=0.1, weight_decay=0.01, lr_schedule="cosine",
                    warmup_steps=2, jit_compile=False, log=lambda *_: None)
    results = run_pretrain(data, model_dir, **settings)
    assert results["stopped_early"] and results["best_step"] == 4
    assert results["training"]["steps"] == 12 and results["evaluations"] == 3
    with open(os.path.join(model_dir, "results.json"), encoding="utf-8") as handle:
        assert json.load(handle)["stopped_early"]
    # run again: it finds patience exhausted and trains no further
    again = run_pretrain(data, model_dir, **settings)
    assert again["training"]["steps"] == 12 and again["stopped_early"]
    with pytest.raises(ValueError, match="patience"):
        run_pretrain(data, str(tmp_path / "x"), channels=8, dilations=(1,), train_steps=2,
                     eval_every=0, patience=2, log=lambda *_: None)


def test_time_budget_stops_training_keeps_the_best_and_continues(data, tmp_path, monkeypatch):
    """A budget found spent after step 10 (the training loop's clock jumps there) stops
    training after that step: the final validation joins the periodic ones, the best of
    them is restored, tested and saved, results.json says why it stopped, and the same
    command without the budget continues from that step's checkpoint."""
    import time as real_time

    from peterrec_tf.jobs.pretraining import run_pretrain
    from peterrec_tf.training import loop

    class JumpingClock:
        """The loop's `time`: real, except that monotonic() jumps a day ahead from its
        10th call (the deadline check runs once per step)."""
        calls = 0

        @classmethod
        def monotonic(cls):
            cls.calls += 1
            return real_time.monotonic() + (86400.0 if cls.calls >= 10 else 0.0)

        time = staticmethod(real_time.time)

    monkeypatch.setattr(loop, "time", JumpingClock)
    model_dir = str(tmp_path / "run")
    settings = dict(channels=8, dilations=(1,), batch_size=16, train_steps=40, eval_every=4,
                    select_metric="hr@10", log_every=100, checkpoint_every=100,
                    learning_rate=1e-12, log=lambda *_: None)
    results = run_pretrain(data, model_dir, time_budget_minutes=60, **settings)
    assert results["stopped_by_time_budget"] and not results["stopped_early"]
    assert results["training"]["steps"] == 10 and results["evaluations"] == 3  # 4, 8, 10
    with open(os.path.join(model_dir, "best", "best.json"), encoding="utf-8") as handle:
        history = json.load(handle)["history"]  # [step, value] pairs by step
    assert [step for step, _ in history] == [4, 8, 10]
    # a learning rate too small to change hr@10: the first of the equal validations is
    # kept, not the stop step's
    assert results["best_step"] == 4 and results["selected"]["step"] == 4
    assert results["validation"]["hr@10"] == pytest.approx(history[0][1])
    assert "test" in results and os.path.exists(os.path.join(model_dir, "model.keras"))
    with open(os.path.join(model_dir, "results.json"), encoding="utf-8") as handle:
        assert json.load(handle)["stopped_by_time_budget"]
    monkeypatch.undo()
    again = run_pretrain(data, model_dir, **settings)
    assert again["training"]["resumed_from"] == 10 and again["training"]["steps"] == 40
    assert not again["stopped_by_time_budget"]
    with open(os.path.join(model_dir, "best", "best.json"), encoding="utf-8") as handle:
        history = json.load(handle)["history"]
    # the stop step's off-cadence validation is forgotten on resume: --patience counts the
    # periodic validations the uninterrupted run makes, no more
    assert [step for step, _ in history] == list(range(4, 41, 4))
    for bad, strategy in ((float("nan"), "default"), (1.0, "multi_worker")):
        with pytest.raises(ValueError, match="time_budget_minutes"):
            run_pretrain(data, str(tmp_path / "x"), time_budget_minutes=bad,
                         **dict(settings, strategy=strategy, select_metric=""))


def test_compact_sizes():
    from peterrec_tf.models.pretrainer import compact_sizes

    assert compact_sizes(1600) == (256, 512, 768, 1024, 1280, 1536, 1600)
    assert compact_sizes(40) == (40,) and compact_sizes(None) == ()


@pytest.mark.parametrize("fused", [False, True])
def test_xla_step_on_target_rows_only_trains_as_the_gathering_one(fused):
    """Short histories in long windows: the whole-step XLA computation (head on the target
    rows moved to the front, at a static bucket size) takes the step the plain gather does."""
    rng = np.random.RandomState(2)
    batch, width = 8, 40
    lengths = [3, 5, 1, 7, 2, 9, 4, 6]  # 37 targets in 320 positions: the 64-row bucket
    x = np.zeros((batch, width), "int32")
    y = np.zeros((batch, width), "int32")
    for row, length in enumerate(lengths):
        items = rng.randint(1, VOCAB, length + 1)
        x[row, width - length:], y[row, width - length:] = items[:-1], items[1:]
    weights = (y > 0).astype("float32")
    after = []
    for plan in (("step",), ()):
        model = tiny_next_item(randomise=True)
        model.compile(optimizer=keras.optimizers.SGD(1.0),
                      xla_plan=plan + (("softmax",) if fused else ()))
        model.train_on_batch(x, y, sample_weight=weights)
        after.append([w.numpy() for w in model.trainable_weights])
    for compiled, plain in zip(*after):
        np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-5)


def test_xla_plan_follows_the_share_of_target_positions():
    from peterrec_tf import objectives

    next_item, masked_item = objectives.get("next_item"), objectives.get("masked_item")
    assert next_item.xla_plan(0, 64, fill=0.9) == ("step", "softmax")
    assert next_item.xla_plan(0, 64, fill=0.2) == ("blocks", "softmax")
    assert masked_item.xla_plan(0, 64, fill=0.2) == ("softmax",)
