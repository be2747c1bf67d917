"""Models: causality, patches as identity, frozen backbone, transfer methods, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf import transfer_methods
from peterrec_tf.layers import INSERTIONS
from peterrec_tf.models import (
    Backbone, FineTuner, GRecPretrainer, NextItNet, build_finetuner, parameter_report)

VOCAB = 30


def tiny_backbone(causal=True, **kwargs):
    keras.utils.set_random_seed(7)
    backbone = Backbone(VOCAB, channels=8, dilations=(1, 2), kernel_size=3, causal=causal, **kwargs)
    backbone.build()
    return backbone


def perturb_layer_norms(backbone, rng):
    """Non-trivial LN parameters so identity tests cannot pass by accident."""
    for block in backbone.blocks:
        for ln in (block.layer_norm1, block.layer_norm2):
            ln.gamma.assign(rng.rand(*ln.gamma.shape).astype("float32") + 0.5)
            ln.beta.assign(rng.randn(*ln.beta.shape).astype("float32") * 0.1)


def test_causal_backbone_never_looks_ahead(rng):
    backbone = tiny_backbone(causal=True)
    ids = rng.randint(1, VOCAB, (2, 20))
    base = backbone(ids).numpy()
    for t in (0, 5, 13, 19):
        changed = ids.copy()
        changed[:, t] = (changed[:, t] % (VOCAB - 1)) + 1
        out = backbone(changed).numpy()
        np.testing.assert_array_equal(out[:, :t], base[:, :t])
        assert np.abs(out[:, t] - base[:, t]).max() > 1e-6


@pytest.mark.parametrize("insertion", [None, "b", "d"])
def test_last_position_computes_only_its_context_with_the_same_numbers(insertion, rng):
    """`Backbone.last_position` runs each block on the positions the last state depends
    on: equal to the whole sequence's last state for histories shorter than, equal to and
    longer than the receptive field; a slice one position too short changes it."""
    keras.utils.set_random_seed(5)
    backbone = Backbone(VOCAB, channels=8, dilations=(1, 4, 1, 2), kernel_size=3,
                        causal=True, insertion=insertion)
    backbone.build()
    perturb_layer_norms(backbone, rng)
    field = backbone.receptive_field  # 1 + 2 * 3 * (1 + 4 + 1 + 2) = 49
    for length in (1, 7, field - 1, field, field + 30):
        ids = rng.randint(1, VOCAB, (3, length))
        whole = backbone(ids)[:, -1, :].numpy()
        np.testing.assert_allclose(backbone.last_position(ids).numpy(), whole, atol=1e-6, rtol=1e-6)
    # the first block's slice one position short: the last state sees a zero instead
    ids = rng.randint(1, VOCAB, (3, field + 30))
    hidden = backbone.item_embedding(ids)[:, -(field - 1):, :]
    for block in backbone.blocks:
        hidden = block(hidden)
    assert np.abs(hidden[:, -1].numpy() - backbone(ids)[:, -1].numpy()).max() > 1e-4
    # NextItNet's user embedding is this state
    model = NextItNet(backbone)
    model.build()
    ids = rng.randint(1, VOCAB, (2, 60))
    np.testing.assert_allclose(model.user_embedding(ids).numpy(),
                               backbone(ids)[:, -1, :].numpy(), atol=1e-6, rtol=1e-6)


def test_non_causal_backbone_sees_the_future(rng):
    backbone = tiny_backbone(causal=False)
    ids = rng.randint(1, VOCAB, (2, 20))
    base = backbone(ids).numpy()
    changed = ids.copy()
    changed[:, 10] = (changed[:, 10] % (VOCAB - 1)) + 1
    out = backbone(changed).numpy()
    assert np.abs(out[:, 9] - base[:, 9]).max() > 1e-6  # t - r with r = 1
    assert np.abs(out[:, 10 - 2] - base[:, 10 - 2]).max() > 1e-6
    # the first block's conv1 alone: position t-r changes, t-2r does not (k = 3, r = 1)
    conv = backbone.blocks[0].conv1
    emb = backbone.item_embedding
    a, b = conv(emb(ids)).numpy(), conv(emb(changed)).numpy()
    assert np.abs(a[:, 9] - b[:, 9]).max() > 1e-6
    np.testing.assert_array_equal(a[:, 8], b[:, 8])


@pytest.mark.parametrize("insertion", INSERTIONS)
@pytest.mark.parametrize("causal", [True, False])
def test_patch_with_zero_up_projection_is_the_identity(insertion, causal, rng):
    backbone = tiny_backbone(causal)
    perturb_layer_norms(backbone, rng)
    patched = backbone.with_patches(insertion, {"up_initializer": "glorot_uniform"})
    ids = rng.randint(0, VOCAB, (3, 12))
    assert np.abs(patched(ids).numpy() - backbone(ids).numpy()).max() > 1e-4  # patches act
    for patch in patched.patches:
        for kernel, bias in zip(patch.up_kernels, patch.up_biases):
            kernel.assign(tf.zeros_like(kernel))
            bias.assign(tf.zeros_like(bias))
    np.testing.assert_allclose(patched(ids).numpy(), backbone(ids).numpy(), atol=1e-6)
    # the default initialiser starts patches at exactly that identity
    fresh = backbone.with_patches(insertion)
    np.testing.assert_allclose(fresh(ids).numpy(), backbone(ids).numpy(), atol=1e-6)


def test_with_patches_defaults_follow_the_release(rng):
    assert tiny_backbone(True).with_patches().insertion == "b"
    assert tiny_backbone(False).with_patches().insertion == "d"


def finetune_batches(rng, num_targets, batch=16, length=10, steps=4):
    x = np.concatenate([np.zeros((batch * steps, 1)), rng.randint(1, VOCAB, (batch * steps, length)),
                        np.zeros((batch * steps, 1))], axis=1).astype("int32")
    y = rng.randint(1, num_targets, (batch * steps,)).astype("int32")
    return x, y


@pytest.mark.parametrize("insertion", ["b", "d"])
def test_peterrec_training_changes_only_patches_head_and_ln2(insertion, rng):
    backbone = tiny_backbone(insertion == "b")
    before_pretrained = [w.numpy().copy() for w in backbone.weights]
    model = build_finetuner(backbone, "peterrec", "item_rec", 12, insertion=insertion)
    frozen = {w.path: w.numpy().copy() for w in model.non_trainable_weights}
    trained = {w.path: w.numpy().copy() for w in model.trainable_weights}
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = finetune_batches(rng, 12)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for weight in model.non_trainable_weights:
        np.testing.assert_array_equal(weight.numpy(), frozen[weight.path], err_msg=weight.path)
    changed = {w.path for w in model.trainable_weights
               if not np.array_equal(w.numpy(), trained[w.path])}
    patch_paths = {w.path for p in model.backbone.patches for w in p.weights}
    assert patch_paths <= changed  # every patch weight moved
    assert all("layer_norm1" not in p and "conv" not in p and "item_embedding" not in p
               for p in changed)
    assert any("layer_norm2" in p for p in changed)
    # the pre-trained backbone object itself was never touched
    for weight, value in zip(backbone.weights, before_pretrained):
        np.testing.assert_array_equal(weight.numpy(), value)


def trainable_layers(model):
    names = set()
    for weight in model.trainable_weights:
        names.add(weight.path.split("/")[1])  # block or layer directly below the model
    return names


def test_transfer_methods_select_the_right_weights():
    backbone = tiny_backbone()
    for method in transfer_methods.names():
        model = build_finetuner(backbone, method, "classify", 3, finelast_blocks=1, loss="ce")
        paths = [w.path for w in model.trainable_weights]
        head = [p for p in paths if "classifier" in p]
        assert head, method
        if method == "finecls":
            assert paths == head
        if method == "finelast":
            assert all(p.startswith("backbone/block_1_2/") or p in head for p in paths)
            assert any("dilated_conv1" in p for p in paths)
        if method == "fineall":
            assert len(paths) == len(model.weights)
        if method == "peterrec":
            assert all("/mp_" in p or "layer_norm2" in p or p in head for p in paths)
    model = build_finetuner(backbone, "peterrec", "item_rec", 5, train_layer_norm=False)
    assert not any("layer_norm2" in w.path for w in model.trainable_weights)
    with pytest.raises(ValueError, match="method"):
        build_finetuner(backbone, "finesome", "item_rec", 5)
    with pytest.raises(ValueError, match="finelast_blocks"):
        build_finetuner(backbone, "finelast", "item_rec", 5, finelast_blocks=3)


def test_from_scratch_keeps_architecture_not_weights(rng):
    backbone = tiny_backbone()
    pretrained = build_finetuner(backbone, "fineall", "item_rec", 5)
    scratch = build_finetuner(backbone, "fineall", "item_rec", 5, from_scratch=True, seed=3)
    assert scratch.backbone.get_config()["dilations"] == list(backbone.dilations)
    np.testing.assert_array_equal(pretrained.backbone.item_embedding.embeddings.numpy(),
                                  backbone.item_embedding.embeddings.numpy())
    assert not np.array_equal(scratch.backbone.item_embedding.embeddings.numpy(),
                              backbone.item_embedding.embeddings.numpy())


@pytest.mark.parametrize("kind", ["nextitnet_full", "nextitnet_dot", "grec", "finetune_rec",
                                  "finetune_cls"])
def test_keras_file_round_trip(kind, tmp_path, rng):
    if kind.startswith("nextitnet"):
        model = NextItNet(tiny_backbone(True), head=kind.split("_")[1])
    elif kind == "grec":
        model = GRecPretrainer(tiny_backbone(False), head="dot")
    elif kind == "finetune_rec":
        model = build_finetuner(tiny_backbone(False), "peterrec", "item_rec", 9, insertion="e",
                                patch_config={"up_initializer": "glorot_uniform"})
    else:
        model = build_finetuner(tiny_backbone(True), "finelast", "classify", 4, loss="ce")
    ids = rng.randint(0, VOCAB, (2, 9))
    out = model(ids).numpy()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(ids).numpy(), out)
    np.testing.assert_array_equal(loaded.backbone(ids).numpy(), model.backbone(ids).numpy())
    assert [w.path for w in loaded.trainable_weights] == [w.path for w in model.trainable_weights]
    longer = rng.randint(0, VOCAB, (5, 31))  # dynamic batch and length after loading
    assert loaded(longer).shape[:1] == (5,)
    jit = tf.function(loaded.__call__, jit_compile=True)
    np.testing.assert_allclose(jit(longer).numpy(), loaded(longer).numpy(), atol=1e-5)


def test_pretrainers_learn_planted_transitions(rng):
    """Next item = (item + 1) mod V: a causal model must learn it quickly (full and sampled)."""
    starts = rng.randint(1, VOCAB, (256, 1))
    seqs = (starts + np.arange(12)[None, :] - 1) % (VOCAB - 1) + 1
    x, y = seqs[:, :-1], seqs[:, 1:]
    for head, sampled in (("full", 0), ("dot", 8)):
        keras.utils.set_random_seed(0)
        backbone = Backbone(VOCAB, channels=16, dilations=(1, 2), causal=True)
        model = NextItNet(backbone, head=head, num_sampled=sampled)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(x, y, batch_size=32, epochs=8, verbose=0)
        accuracy = (model.predict(x, verbose=0).argmax(-1) == y).mean()
        assert accuracy > 0.9, (head, accuracy)


def test_masked_objective_uses_only_weighted_positions(rng):
    backbone = tiny_backbone(False)
    model = GRecPretrainer(backbone)
    ids = rng.randint(1, VOCAB, (4, 10))
    logits = model(ids)
    weights = np.zeros((4, 10), "float32")
    weights[:, 3] = 1.0
    full = model.compute_loss(ids, ids, logits, weights, training=False)
    other = ids.copy()
    other[:, 5] = (other[:, 5] % (VOCAB - 1)) + 1  # label change at an unweighted position
    assert float(model.compute_loss(ids, other, logits, weights, training=False)) == pytest.approx(float(full))
    expected = keras.losses.sparse_categorical_crossentropy(ids[:, 3], logits[:, 3], from_logits=True)
    assert float(full) == pytest.approx(float(np.mean(expected)), rel=1e-5)


def test_finetuner_losses_and_negatives(rng):
    model = build_finetuner(tiny_backbone(), "fineall", "item_rec", 6)
    labels = np.array([1, 2, 3, 4, 5] * 200, dtype="int32")
    negatives = model._sample_negatives(labels).numpy()
    assert (negatives != labels).all() and negatives.min() >= 1 and negatives.max() <= 5
    assert len(set(negatives[labels == 3])) == 4  # every other target appears
    scores = np.array([[0.0, 2.0, -1.0, 0, 0, 0]], "float32")
    y = np.array([[1, 2]])
    model.l2_reg = 0.0
    expected = np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))
    assert float(model.compute_loss(None, y, scores)) == pytest.approx(expected, rel=1e-5)
    model.loss_name = "bpr"
    assert float(model.compute_loss(None, y, scores)) == pytest.approx(np.log1p(np.exp(-3.0)), rel=1e-5)


def test_parameter_report_paper_configuration():
    """C=256, dilations [1,2,4,8] x 4 in the release's convention, k=3, bottleneck C/8."""
    backbone = Backbone(1000, channels=256, dilations=(1, 4) * 4, kernel_size=3, causal=True)
    model = build_finetuner(backbone, "peterrec", "classify", 2, loss="ce",
                            patch_config={"bottleneck_ratio": 1 / 8})
    report = parameter_report(model)
    assert len(model.backbone.blocks) * 2 == 16  # 16 conv layers
    assert report["conv"] == 16 * (3 * 256 * 256 + 256)
    assert report["patches"] == 16 * (256 * 32 + 32 + 32 * 256 + 256)
    assert report["patch_share_of_conv"] < 0.10
    assert report["trainable"] == report["patches"] + report["head"] + 8 * 2 * 256
    assert report["total"] == report["backbone"] + report["patches"] + report["head"]


def test_finetuner_rejects_inconsistent_arguments():
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match="ce"):
        FineTuner(backbone, task="classify", num_outputs=3, loss="pairwise")
    with pytest.raises(ValueError, match="pooling"):
        FineTuner(backbone, task="item_rec", num_outputs=3, pooling="max")
    with pytest.raises(ValueError, match="patches"):
        FineTuner(backbone, task="item_rec", num_outputs=3, method="peterrec").build()
    with pytest.raises(ValueError, match="causal"):
        NextItNet(tiny_backbone(False))


def test_training_loss_on_selected_positions_equals_the_full_loss(rng):
    """The head runs only where weights > 0 in training; the value must not change."""
    model = NextItNet(tiny_backbone(True))
    ids = rng.randint(0, VOCAB, (4, 9))
    labels = rng.randint(1, VOCAB, (4, 9))
    weights = (rng.rand(4, 9) > 0.5).astype("float32")
    hidden = model(ids, training=True)
    assert hidden.shape == (4, 9, 8)
    selected = model.compute_loss(ids, labels, hidden, weights, training=True)
    full = model.compute_loss(ids, labels, model(ids), weights, training=False)
    assert float(selected) == pytest.approx(float(full), rel=1e-5)
    assert float(model.compute_loss(ids, labels, hidden, np.zeros_like(weights), training=True)) == 0.0


def test_xla_paths_compute_what_the_plain_ones_do(rng):
    """The XLA-compiled residual stack (outputs and gradients) and the static-shape loss
    used under a jit-compiled train step equal the plain computations."""
    plain = tiny_backbone(True, insertion="b")
    compiled = tiny_backbone(True, insertion="b")
    compiled.compile_blocks_with_xla()
    ids = tf.constant(rng.randint(0, VOCAB, (3, 11)), tf.int32)
    for length in (11, 6):  # a new shape recompiles, still equal
        with tf.GradientTape(persistent=True) as tape:
            a, b = plain(ids[:, :length]), compiled(ids[:, :length])
            la, lb = tf.reduce_sum(tf.sin(a)), tf.reduce_sum(tf.sin(b))
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
        for ga, gb in zip(tape.gradient(la, plain.trainable_variables),
                          tape.gradient(lb, compiled.trainable_variables)):
            np.testing.assert_allclose(tf.convert_to_tensor(ga).numpy(),  # float32 order
                                       tf.convert_to_tensor(gb).numpy(), rtol=1e-4, atol=1e-4)
    compiled.compile_blocks_with_xla(False)
    np.testing.assert_allclose(compiled(ids).numpy(), plain(ids).numpy(), atol=1e-6)
    # the jit-compiled train step's loss (head at every position, weighted) = the gather one
    model = NextItNet(tiny_backbone(True))
    # set directly: compile() falls back to False when an earlier test in this process
    # enabled op determinism, and the dense path would then go untested
    model._jit_compile = True
    assert model.jit_compile is True
    labels = rng.randint(1, VOCAB, (4, 9))
    weights = (rng.rand(4, 9) > 0.5).astype("float32")
    x = rng.randint(0, VOCAB, (4, 9))
    hidden = model(x, training=True)
    dense = model.compute_loss(x, labels, hidden, weights, training=True)
    model._jit_compile = False
    gathered = model.compute_loss(x, labels, hidden, weights, training=True)
    assert float(dense) == pytest.approx(float(gathered), rel=1e-5)


@pytest.mark.parametrize("head,sampled,causal,jit", [
    ("dot", 10, True, False), ("full", 0, True, False), ("dot", 0, False, False),
    ("full", 0, True, True)])
def test_fused_softmax_trains_what_tf_ops_do(head, sampled, causal, jit, rng):
    """The fused losses give the loss and gradients of TF's softmax cross-entropy /
    `tf.nn.sampled_softmax_loss` (same seed): with the kept positions gathered and padded
    to a multiple of FUSED_ROWS_MULTIPLE rows, and inlined in an XLA-compiled step (every
    position, weights zeroing the rest)."""
    model = (NextItNet if causal else GRecPretrainer)(
        tiny_backbone(causal), head=head, num_sampled=sampled)
    model.build()
    model.head.bias.assign(rng.normal(0, 0.5, model.head.bias.shape))  # not the zero init
    model._jit_compile = jit
    x = rng.randint(0, VOCAB, (5, 9))
    labels = rng.randint(1, VOCAB, (5, 9))
    weights = (rng.rand(5, 9) > 0.4).astype("float32")

    def loss_and_gradients():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x, labels, model(x, training=True), weights,
                                      training=True)
        return loss, tape.gradient(loss, model.trainable_variables)
    results = []
    for fused in (False, True):
        model.fuse_softmax_with_xla(fused)
        tf.random.set_seed(11)  # the same candidates on both paths
        # traced anew for each setting (a tf.function does not see the model's attributes)
        run = tf.function(loss_and_gradients, jit_compile=True) if jit else loss_and_gradients
        loss, gradients = run()
        results.append((float(loss), gradients))
    assert model.fused_softmax
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(tf.convert_to_tensor(b).numpy(), tf.convert_to_tensor(a).numpy(),
                                   rtol=1e-4, atol=1e-6)
    tf.random.set_seed(11)
    zero = model.compute_loss(x, labels, model(x, training=True), np.zeros_like(weights),
                              training=True)
    assert float(zero) == 0.0


def test_model_files_saved_under_the_old_grec_name_still_load(tmp_path):
    from peterrec_tf.models import GRecEncoder, GRecPretrainer
    old = GRecEncoder(Backbone(30, channels=8, dilations=(1,), causal=False))
    old.build()
    old.save(str(tmp_path / "old.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "old.keras"))
    assert isinstance(loaded, GRecPretrainer)
    ids = np.arange(1, 7, dtype="int32")[None, :]
    np.testing.assert_array_equal(loaded.next_item_logits(ids), old.next_item_logits(ids))


def test_model_directory_stores_the_model_without_optimizer_state(tmp_path, rng):
    """A trained model's directory holds its weights only (Keras would add both Adam
    moments: 3x the bytes, and a 645K-item model then peaked at 11 GB when loaded); the
    loaded model scores the same and the saved one keeps training."""
    import zipfile
    from peterrec_tf.model_dir import load_model_dir, save_model_dir
    from peterrec_tf.training.optimizer import FusedAdam
    keras.utils.set_random_seed(1)
    model = NextItNet(Backbone(5000, channels=16, dilations=(1, 2)))
    model.build()
    model.compile(optimizer=FusedAdam(1e-2))
    x = rng.randint(1, 5000, (8, 6)).astype("int32")
    model.fit(x, x, epochs=1, verbose=0)
    assert len(model.optimizer.variables) > 2  # the moments exist
    save_model_dir(str(tmp_path / "m"), model, {"max_len": 6},
                   {"items": ["<UNK>"] + [f"i{i}" for i in range(4999)]})
    with zipfile.ZipFile(tmp_path / "m" / "model.keras") as archive:
        stored = archive.getinfo("model.weights.h5").file_size
    weights = sum(np.asarray(w.numpy()).nbytes for w in model.weights)
    assert stored < 1.2 * weights, (stored, weights)
    loaded, _, _ = load_model_dir(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.next_item_logits(x), model.next_item_logits(x))
    model.fit(x, x, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2
