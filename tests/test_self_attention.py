"""The SASRec-style self-attention backbone behind the Backbone interface: causality, inert
padding, patches as identity, transfer methods, saving, and pretrain -> finetune -> export."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.layers import INSERTIONS
from peterrec_tf.model_dir import load_model_dir, save_model_dir
from peterrec_tf.task_artifact import relative_path
from peterrec_tf.models import (
    Backbone, FineTuner, NextItNet, SelfAttentionBackbone, build_finetuner)

VOCAB = 30
quiet = {"log": lambda *_: None}
#: The block kinds every structural property must hold for: SASRec's (pre-norm, relu,
#: positions from the newest item) and BERT's / RecBole's SASRec's (post-norm, gelu), with
#: positions from the newest item and, as RecBole counts them, from the oldest.
BLOCK_KINDS = [{}, {"norm_order": "post", "activation": "gelu"},
               {"norm_order": "post", "activation": "gelu", "position_origin": "oldest"}]
block_kinds = pytest.mark.parametrize("kind", BLOCK_KINDS,
                                      ids=["pre_relu", "post_gelu", "post_gelu_oldest"])


def tiny(**kwargs):
    keras.utils.set_random_seed(3)
    settings = dict(channels=8, num_blocks=2, heads=2, max_positions=16)
    settings.update(kwargs)
    backbone = SelfAttentionBackbone(VOCAB, **settings)
    backbone.build()
    return backbone


def perturb(layers, rng):
    """Non-trivial values in every weight of `layers` (layer norms included), so identity
    tests cannot pass by accident."""
    for layer in layers:
        for weight in layer.weights:
            weight.assign(rng.randn(*weight.shape).astype("float32") * 0.3
                          + (1.0 if weight.path.endswith("gamma") else 0.0))


@block_kinds
def test_a_changed_item_never_changes_earlier_outputs(kind, rng):
    backbone = tiny(**kind)
    ids = rng.randint(1, VOCAB, (2, 12))
    ids[0, :3] = 0  # a left-padded row too
    base = backbone(ids).numpy()
    for t in (3, 6, 11):
        changed = ids.copy()
        changed[:, t] = changed[:, t] % (VOCAB - 1) + 1
        out = backbone(changed).numpy()
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert np.abs(out[:, t] - base[:, t]).max() > 1e-4


@block_kinds
def test_padding_is_inert_and_positions_count_back_from_the_last_item(kind, rng):
    """Any amount of left padding leaves every item's state unchanged (up to float
    rounding) and the padding positions zero."""
    backbone = tiny(**kind)
    perturb(backbone.layers, rng)  # layer norm biases too: padding must not pick them up
    ids = rng.randint(1, VOCAB, (3, 7))
    base = backbone(ids).numpy()
    for pad in (1, 5):
        padded = np.concatenate([np.zeros((3, pad), ids.dtype), ids], axis=1)
        out = backbone(padded).numpy()
        np.testing.assert_allclose(out[:, pad:], base, atol=1e-5)
        assert not out[:, :pad].any()
        np.testing.assert_allclose(backbone.last_position(padded).numpy(), base[:, -1], atol=1e-5)


@pytest.mark.parametrize("kind", BLOCK_KINDS[::2], ids=["pre_relu", "post_gelu_oldest"])
def test_positions_from_the_oldest_item_make_every_state_its_prefix_state(kind, rng):
    """oldest: the state at t is the last state of `ids[:t+1]` read alone (whatever follows
    and whatever each row's left padding), so a window trained at every position trains
    every prefix; newest: it is not (the positions depend on the window's end)."""
    backbone = tiny(**kind)
    perturb(backbone.layers, rng)
    ids = rng.randint(1, VOCAB, (3, 10))
    ids[0, :3] = 0
    ids[2, :6] = 0  # rows padded by different amounts in one batch
    full = backbone(ids).numpy()
    gaps = []
    for t in range(6, 9):  # each a strict prefix
        prefix = backbone(ids[:, :t + 1]).numpy()[:, -1]
        gaps.append(np.abs(prefix - full[:, t]).max())
    rows_alone = np.concatenate([backbone(row[None, np.argmax(row != 0):]).numpy()[:, -1]
                                 for row in ids])
    if kind.get("position_origin") == "oldest":
        assert max(gaps) < 1e-5
        np.testing.assert_allclose(rows_alone, full[:, -1], atol=1e-5)
    else:
        assert min(gaps) > 1e-3


def test_position_ids_by_origin():
    """newest: back from the last column, the oldest beyond max_positions sharing the last
    id; oldest: from each row's first real item, a row longer than max_positions counting
    from its newest max_positions items."""
    ids = np.zeros((3, 20), "int32")
    ids[0, 17:] = 5  # 3 items
    ids[1, 10:] = 5  # 10 items
    ids[2, :] = 5  # 20 items, max_positions 16
    newest = tiny().positions(ids).numpy()
    np.testing.assert_array_equal(newest, [np.minimum(np.arange(19, -1, -1), 15)])
    oldest = tiny(position_origin="oldest").positions(ids).numpy()
    np.testing.assert_array_equal(oldest[0, 17:], [0, 1, 2])
    np.testing.assert_array_equal(oldest[1, 10:], np.arange(10))
    np.testing.assert_array_equal(oldest[2], [0] * 5 + list(range(1, 16)))
    assert not oldest[:2, :10].any()  # padding: position 0, masked anyway


def test_dropout_acts_in_training_only(rng):
    backbone = tiny(dropout=0.3, embedding_dropout=0.3)
    ids = rng.randint(1, VOCAB, (2, 9))
    first, second = backbone(ids).numpy(), backbone(ids).numpy()
    np.testing.assert_array_equal(first, second)
    assert np.abs(backbone(ids, training=True).numpy() - first).max() > 1e-3


def test_compiled_blocks_compute_the_same_in_both_modes(rng):
    """The XLA-compiled stack takes `training` as a Python value: a trace made in training
    (dropout on) is never reused for inference."""
    backbone = tiny(dropout=0.3)
    ids = rng.randint(1, VOCAB, (2, 9))
    plain = backbone(ids).numpy()
    backbone.compile_blocks_with_xla()
    backbone(ids, training=True)
    np.testing.assert_allclose(backbone(ids).numpy(), plain, atol=1e-5)
    backbone.compile_blocks_with_xla(False)


@block_kinds
@pytest.mark.parametrize("insertion", INSERTIONS)
def test_fresh_patches_compute_the_pretrained_backbone(insertion, kind, rng):
    backbone = tiny(**kind)
    perturb(backbone.layers, rng)
    ids = rng.randint(1, VOCAB, (2, 10))
    ids[1, :4] = 0
    patched = backbone.with_patches(insertion)
    assert len(patched.patches) == (1 if insertion == "c" else 2) * backbone.num_blocks
    np.testing.assert_allclose(patched(ids).numpy(), backbone(ids).numpy(), atol=1e-6)
    # a non-zero up-projection changes the answer: the patches are in the computation
    for patch in patched.patches:
        patch.up_kernels[0].assign(rng.randn(*patch.up_kernels[0].shape).astype("float32"))
    assert np.abs(patched(ids).numpy() - backbone(ids).numpy()).max() > 1e-3


class Halve(keras.layers.Layer):
    """A dropout stand-in that marks where dropout sits: x / 2 in training, x otherwise."""

    def call(self, x, training=None):
        return x * 0.5 if training else x


def written_out(backbone, ids, training):
    """The backbone's formula from its own weights, no padding: SASRec's pre order
    `h = x + drop(attend(LN1 x))`, `out = h + drop(W2 act(W1 LN2 h))`, a final layer norm;
    BERT's post order `x = drop(LNe(emb))`, `h = LN1(x + drop(attend(x)))`,
    `out = LN2(h + drop(W2 act(W1 h)))`; dropout as `Halve`."""
    from math import erf

    from peterrec_tf.layers.self_attention import attention_mask

    drop = (lambda v: v * 0.5) if training else (lambda v: v)
    mask = attention_mask(tf.zeros(ids.shape, bool), True)
    x = backbone.item_embedding(ids) + backbone.position_embedding(backbone.positions(ids))
    x = drop(backbone.embedding_norm(x) if backbone.norm_order == "post" else x)
    for block in backbone.blocks:
        def feed_forward(v):
            inner = block.feed_forward_in(v).numpy()
            if block.activation == "relu":
                inner = np.maximum(inner, 0.0)
            else:
                inner = 0.5 * inner * (1.0 + np.vectorize(erf)(inner / np.sqrt(2.0)))
            return block.feed_forward_out(inner.astype("float32"))

        if backbone.norm_order == "pre":
            h = x + drop(block.attention(block.layer_norm1(x), mask))
            x = h + drop(feed_forward(block.layer_norm2(h)))
        else:
            h = block.layer_norm1(x + drop(block.attention(x, mask)))
            x = block.layer_norm2(h + drop(feed_forward(h)))
    return (backbone.output_norm(x) if backbone.norm_order == "pre" else x).numpy()


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_order", ["pre", "post"])
def test_blocks_compute_their_written_out_order(norm_order, activation, rng):
    """Each norm order with each activation, two blocks, dropout's places included (a
    dropout moved past a layer norm, an activation dropped or a norm skipped fails)."""
    backbone = tiny(norm_order=norm_order, activation=activation,
                    position_origin="oldest" if norm_order == "post" else "newest")
    perturb(backbone.layers, rng)
    # built layers take no new sub-layers: set past Keras' tracking (Halve has no state)
    object.__setattr__(backbone, "embedding_dropout_layer", Halve())
    for block in backbone.blocks:  # dropout 0: the attention's own is the identity
        object.__setattr__(block, "branch_dropout", Halve())
    ids = rng.randint(1, VOCAB, (2, 6))
    for training in (False, True):
        np.testing.assert_allclose(backbone(ids, training=training).numpy(),
                                   written_out(backbone, ids, training), atol=1e-5)


def test_norm_layers_by_order():
    """post: the embedding's norm is an embedding layer, no output norm; pre: SASRec's
    final norm and none on the embedding."""
    post = tiny(norm_order="post", activation="gelu")
    assert post.output_norm is None and post.final_layers == []
    assert post.embedding_norm in post.embedding_layers
    pre = tiny()
    assert pre.embedding_norm is None and pre.final_layers == [pre.output_norm]
    with pytest.raises(ValueError, match="norm_order"):
        SelfAttentionBackbone(VOCAB, channels=8, norm_order="sandwich")
    with pytest.raises(ValueError, match="activation"):
        SelfAttentionBackbone(VOCAB, channels=8, activation="swish")


def test_configs_from_before_the_block_settings_load_as_sasrecs_block(rng):
    """A config saved before `norm_order`, `activation` and `position_origin` existed
    (none of the three keys) builds SASRec's block with the same weights, by path, and the
    same answers (checked by hand against a model saved by the code of a0de92f~1)."""
    backbone = tiny()
    perturb(backbone.layers, rng)
    config = backbone.get_config()
    for key in ("norm_order", "activation", "position_origin"):
        del config[key]
    old = SelfAttentionBackbone.from_config(config)
    old.build()
    assert [w.path for w in old.weights] == [w.path for w in backbone.weights]
    old.set_weights(backbone.get_weights())
    ids = rng.randint(0, VOCAB, (2, 9))
    np.testing.assert_array_equal(old(ids).numpy(), backbone(ids).numpy())
    assert (old.norm_order, old.activation, old.position_origin) == ("pre", "relu", "newest")


def test_norm_order_and_activation_mirrors_for_help_match_the_layer():
    from peterrec_tf.jobs import pretraining
    from peterrec_tf.layers import self_attention
    from peterrec_tf.models import attention_backbone

    assert pretraining.NORM_ORDERS == self_attention.NORM_ORDERS
    assert pretraining.FEED_FORWARD_ACTIVATIONS == self_attention.FEED_FORWARD_ACTIVATIONS
    assert pretraining.POSITION_ORIGINS == attention_backbone.POSITION_ORIGINS


def test_transfer_methods_train_what_they_say():
    backbone = tiny()

    def trainable(method, **kwargs):
        model = build_finetuner(backbone, method, "item_rec", 5, **kwargs)
        return {relative_path(w) for w in model.trainable_weights}

    peterrec = trainable("peterrec")
    assert any("/mp_1/" in p for p in peterrec) and "target_embeddings/embeddings" in peterrec
    assert not any("attention" in p or "feed_forward" in p or "embedding/" in p for p in peterrec)
    assert "backbone/output_norm/gamma" in peterrec  # with the layer norms
    finelast = trainable("finelast")
    assert any(p.startswith("backbone/block_1/attention") for p in finelast)
    assert not any(p.startswith("backbone/block_0/") for p in finelast)
    fineall = trainable("fineall")
    assert "backbone/position_embedding/embeddings" in fineall
    assert trainable("finecls") == {"target_embeddings/embeddings"}
    # the copy never changes the source
    assert all(w.trainable for w in backbone.weights)
    # post order: the embedding's layer norm is pre-trained like the embedding (frozen
    # under peterrec, trained by fineall); the blocks' norms are PeterRec's trained norms
    backbone = tiny(norm_order="post", activation="gelu")
    peterrec = trainable("peterrec")
    assert "backbone/block_1/layer_norm2/gamma" in peterrec
    assert not any("embedding" in p and "target" not in p for p in peterrec)
    assert "backbone/embedding_norm/gamma" in trainable("fineall")


def test_architectures_are_told_apart():
    attention, cnn = tiny(), Backbone(VOCAB, channels=8, dilations=(1, 2))
    assert attention.architecture_differences(cnn) == ["architecture: self_attention vs dilated_cnn"]
    assert attention.architecture_differences(tiny(heads=1)) == ["heads: 2 vs 1"]
    assert attention.architecture_differences(tiny(dropout=0.5)) == []  # training setting
    assert attention.architecture_differences(tiny(norm_order="post", activation="gelu")) == [
        "norm_order: pre vs post", "activation: relu vs gelu"]
    assert attention.architecture_differences(tiny(position_origin="oldest")) == [
        "position_origin: newest vs oldest"]
    with pytest.raises(ValueError, match="position_origin"):
        SelfAttentionBackbone(VOCAB, channels=8, position_origin="middle")
    with pytest.raises(ValueError, match="causal only"):
        SelfAttentionBackbone(VOCAB, channels=8, causal=False)
    with pytest.raises(ValueError, match="heads"):
        SelfAttentionBackbone(VOCAB, channels=8, heads=3)


@block_kinds
def test_saved_models_load_with_the_same_answers(kind, tmp_path, rng):
    backbone = tiny(dropout=0.2, **kind)
    perturb(backbone.layers, rng)
    pre = NextItNet(backbone, head="dot")
    pre.build()
    tuned = build_finetuner(backbone, "peterrec", "item_rec", 6)
    for patch in tuned.backbone.patches:
        perturb([patch], rng)
    ids = rng.randint(0, VOCAB, (3, 11))
    for name, model in (("pre", pre), ("tuned", tuned)):
        save_model_dir(str(tmp_path / name), model, {"max_len": 11})
        loaded, _, _ = load_model_dir(str(tmp_path / name))
        assert type(loaded.backbone) is SelfAttentionBackbone
        assert loaded.backbone.get_config() == model.backbone.get_config()
        np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())
    assert isinstance(tuned, FineTuner) and tuned.framing.kind == "history"


def test_pretrain_finetune_export_on_self_attention(tmp_path):
    """The jobs end to end with `architecture="self_attention"`; the exported signatures
    answer as the Keras models do."""
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain
    from peterrec_tf.serving.saved_model import export
    from peterrec_tf.data.datasets import count_windows
    from peterrec_tf.data.framing import Framing
    from pipelines.prepare import prepare

    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=12, seed=1, num_users=120, num_items=40, num_clusters=3,
            num_targets=12, **quiet)
    pre_dir, ft_dir = str(tmp_path / "pre"), str(tmp_path / "ft")
    lines = []
    settings = dict(architecture="self_attention", channels=8, num_blocks=1, heads=2,
                    feed_forward_dim=24, norm_order="post", activation="gelu",
                    position_origin="oldest", window_stride=4, batch_size=16, train_steps=6,
                    head="tied", num_sampled=0, checkpoint_every=100)
    results = run_pretrain(os.path.join(data, "pretrain"), pre_dir, log=lines.append, **settings)
    assert results["training"]["steps"] == 6
    windows = count_windows(os.path.join(data, "pretrain"), "train", 12, window_stride=4)
    assert windows > count_windows(os.path.join(data, "pretrain"), "train", 12)
    assert f"windows every 4 items, 6 steps of batch 16 ({windows} training windows" in lines[0]
    pre, config, _ = load_model_dir(pre_dir)
    assert type(pre.backbone) is SelfAttentionBackbone and pre.backbone.max_positions == 12
    assert config["backbone"]["heads"] == 2 and config["backbone"]["feed_forward_dim"] == 24
    assert (config["backbone"]["norm_order"], config["backbone"]["activation"],
            config["backbone"]["position_origin"]) == ("post", "gelu", "oldest")
    assert "1 post-norm blocks of 2 heads (gelu), positions from the oldest item" in lines[0]
    for changed in ({"norm_order": "pre"}, {"activation": "relu"},
                    {"position_origin": "newest"}):  # a resume may not change the block
        (name, value), = changed.items()
        with pytest.raises(ValueError, match=f"--{name}: '{settings[name]}' -> '{value}'"):
            run_pretrain(os.path.join(data, "pretrain"), pre_dir, **{**settings, **changed},
                         **quiet)
    assert pre.backbone.blocks[0].feed_forward_in.units == 24
    for refused, message in (({"window_stride": 4, "train_windows": "last"}, "train_windows=all"),
                             ({"window_stride": 13}, "at most --max_len"),
                             ({"window_stride": 4, "objective": "masked_item",
                               "architecture": "dilated_cnn"}, "never overlap"),
                             ({"feed_forward_dim": 16, "architecture": "dilated_cnn"},
                              "--feed_forward_dim only apply"),
                             ({"norm_order": "post", "architecture": "dilated_cnn"},
                              "--norm_order only apply"),
                             ({"position_origin": "oldest", "architecture": "dilated_cnn"},
                              "--position_origin only apply"),
                             ({"activation": "gelu", "architecture": "dilated_cnn"},
                              "--activation only apply"),
                             ({"activation": "sigmoid"}, "--activation must be one of")):
        with pytest.raises(ValueError, match=message):
            run_pretrain(os.path.join(data, "pretrain"), str(tmp_path / "refused"),
                         train_steps=2, **{"architecture": "self_attention", **refused},
                         **quiet)
    assert not os.path.exists(str(tmp_path / "refused"))
    tuned_log = []
    run_finetune(pre_dir, os.path.join(data, "coldrec"), ft_dir, method="peterrec",
                 train_steps=4, batch_size=16, num_candidates=11, checkpoint_every=100,
                 log=tuned_log.append)
    assert not any("positions" in line for line in tuned_log if line.startswith("warning"))
    tuned, _, vocabs = load_model_dir(ft_dir)
    assert tuned.framing.kind == "history" and len(tuned.backbone.patches) == 2
    said = []  # histories longer than the positions the backbone learnt: said, not silent
    run_finetune(pre_dir, os.path.join(data, "coldrec"), str(tmp_path / "long"),
                 method="peterrec", train_steps=1, batch_size=16, num_candidates=11,
                 checkpoint_every=100, max_len=20, log=said.append)
    assert any(line.startswith("warning: histories of up to 20 items over a backbone "
                               "pre-trained with 12 positions") for line in said), said
    report = export([("rec", ft_dir), ("next", pre_dir)], str(tmp_path / "export"), "m", k=3,
                    **quiet)
    signatures = tf.saved_model.load(report["path"]).signatures
    ids = np.array([[3, 5, 7, 9], [0, 0, 2, 4]])
    items = np.array([[vocabs["items"][i] if i else "" for i in row] for row in ids]).astype(bytes)
    ragged = tf.ragged.constant([[i for i in row if i] for row in ids], dtype=tf.int32)
    framed = tuned.framing.frame(ragged).numpy()
    expected = tuned(framed).numpy()[:, 1:]
    out = signatures["rec"](items=tf.constant(items))
    np.testing.assert_array_equal(out["top_k_ids"].numpy(),
                                  np.argsort(-expected, axis=1, kind="stable")[:, :3] + 1)
    np.testing.assert_allclose(out["scores"].numpy(), -np.sort(-expected, axis=1)[:, :3], atol=1e-5)
    logits = pre.next_item_logits(Framing("history", 12).frame(ragged)).numpy()[:, 1:]
    nxt = signatures["next"](items=tf.constant(items))
    np.testing.assert_array_equal(nxt["top_k_ids"].numpy(),
                                  np.argsort(-logits, axis=1, kind="stable")[:, :3] + 1)
    # on device too: the oldest origin's per-row positions (a cumulative sum) convert
    from peterrec_tf.serving.litert import run_litert, write_litert

    write_litert(pre_dir, str(tmp_path / "next.tflite"), k=3, log=lambda *_: None)
    for row, expected_logits in zip(Framing("history", 12).frame(ragged).numpy(), logits):
        top, scores = run_litert(str(tmp_path / "next.tflite"), row[None].astype("int32"))
        np.testing.assert_array_equal(top[0], np.argsort(-expected_logits, kind="stable")[:3] + 1)
        np.testing.assert_allclose(scores[0], -np.sort(-expected_logits)[:3], atol=1e-5)


def test_job_refuses_settings_of_the_other_architecture(tmp_path):
    from peterrec_tf.jobs.pretraining import run_pretrain

    with pytest.raises(ValueError, match="next_item only"):
        run_pretrain(str(tmp_path / "none"), str(tmp_path / "m"), architecture="self_attention",
                     objective="masked_item", **quiet)
    with pytest.raises(ValueError, match="--dilations only apply"):
        run_pretrain(str(tmp_path / "none"), str(tmp_path / "m"), architecture="self_attention",
                     dilations=(1, 2), **quiet)
    with pytest.raises(ValueError, match="--heads only apply"):
        run_pretrain(str(tmp_path / "none"), str(tmp_path / "m"), heads=4, **quiet)
    assert not os.path.exists(str(tmp_path / "m"))
