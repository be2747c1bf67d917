"""TF1 checkpoint conversion: parity with the release's own graphs, strictness."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import (FINETUNE_CSV, FINETUNED, PRETRAIN_CSV, PRETRAINED_PREFIX, REPO_ROOT,
                      needs_checkpoints)
from peterrec_tf.convert_tf1 import ConversionError, convert_checkpoint, release_token_order
from peterrec_tf.model_dir import load_model_dir
from peterrec_tf.models import FineTuner, NextItNet, parameter_report
from peterrec_tf.tf1_oracle import run_oracle_batches

pytestmark = needs_checkpoints


def copy_without_meta(prefix, directory):
    """The checkpoint files alone, as a user without the .meta graph has them."""
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(prefix)
    for name in os.listdir(os.path.dirname(prefix)):
        if name.startswith(base) and not name.endswith(".meta"):
            shutil.copy(os.path.join(os.path.dirname(prefix), name), directory)
    return os.path.join(directory, base)


def softmax(logits):
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("converted") / "nextitnet")
    convert_checkpoint(PRETRAINED_PREFIX, directory, vocab_csv=PRETRAIN_CSV, log=lambda _: None)
    return directory


def test_pretrained_parity_with_oracle(pretrained_dir):
    model, config, vocabs = load_model_dir(pretrained_dir)
    assert isinstance(model, NextItNet) and config["kind"] == "pretrain"
    assert config["backbone"]["dilations"] == [1, 4, 1, 4, 1, 4, 1, 4]
    assert len(vocabs["items"]) == 175 and vocabs["items"][0] == "<UNK>"
    rng = np.random.RandomState(0)
    batches = [rng.randint(0, 175, (batch, length)).astype("int32")
               for batch, length in ((1, 5), (3, 9), (2, 33), (4, 17))]
    oracle = run_oracle_batches(PRETRAINED_PREFIX, batches)
    for ids, expected in zip(batches, oracle):
        inputs = ids[:, :-1]  # the graph's prediction branch drops the last column itself
        hidden = model.backbone(inputs).numpy()
        np.testing.assert_allclose(hidden, expected["hidden"], atol=1e-4)
        logits = model(inputs).numpy()
        assert logits.shape == (*inputs.shape, 175)
        np.testing.assert_allclose(softmax(logits[:, -1]), expected["next_item_probs"], atol=1e-4)


def test_converted_pretrained_model_generalises_to_xla_and_other_shapes(pretrained_dir):
    model, _, _ = load_model_dir(pretrained_dir)
    ids = np.random.RandomState(3).randint(0, 175, (2, 40))
    jit = tf.function(model.__call__, jit_compile=True)
    np.testing.assert_allclose(jit(ids).numpy(), model(ids).numpy(), atol=1e-4)


@pytest.mark.parametrize("name", sorted(FINETUNED))
@pytest.mark.parametrize("with_meta", [True, False])
def test_finetuned_parity_with_oracle(name, with_meta, tmp_path):
    prefix = FINETUNED[name]
    causal = name.startswith("cau")
    insertion = "b" if name.endswith("serial") else "d"
    source = prefix if with_meta else copy_without_meta(prefix, str(tmp_path / "ckpt"))
    out = str(tmp_path / "converted")
    kwargs = {} if with_meta else {"causal": causal, "insertion": insertion}
    convert_checkpoint(source, out, target_vocab_csv=FINETUNE_CSV, log=lambda _: None, **kwargs)
    model, config, vocabs = load_model_dir(out)
    assert isinstance(model, FineTuner)
    assert config["backbone"]["causal"] == causal and config["backbone"]["insertion"] == insertion
    assert len(vocabs["targets"]) == 32
    rng = np.random.RandomState(11)
    batches = []
    for batch, length in ((1, 6), (3, 6), (1, 17), (3, 32)):
        history = rng.randint(1, 175, (batch, length - 2))
        zeros = np.zeros((batch, 1), "int32")
        batches.append(np.concatenate([zeros, history, zeros], axis=1).astype("int32"))
    # the release feeds causal graphs [0, s.., 0, target] and they drop the target column
    feeds = [np.concatenate([ids, np.ones((len(ids), 1), "int32")], 1) if causal else ids
             for ids in batches]
    oracle = run_oracle_batches(prefix, feeds)
    for ids, expected in zip(batches, oracle):
        hidden = model.backbone(ids).numpy()
        tol = 1e-4 + 1e-5 * np.abs(expected["hidden"]).max()
        np.testing.assert_allclose(hidden, expected["hidden"], atol=tol, rtol=0)
        scores = model(ids).numpy()
        assert scores.shape == (len(ids), 32)
        tol = 1e-4 + 1e-5 * np.abs(expected["scores"]).max()
        np.testing.assert_allclose(scores, expected["scores"], atol=tol, rtol=0)
        np.testing.assert_array_equal(np.argsort(-scores, axis=1, kind="stable")[:, :5],
                                      expected["top_k"].reshape(len(ids), 5))


def test_finetuned_model_trains_like_the_release_and_can_continue(tmp_path):
    out = str(tmp_path / "converted")
    convert_checkpoint(FINETUNED["cau_serial"], out, max_len=9, log=lambda _: None)
    model, _, _ = load_model_dir(out)
    paths = [w.path for w in model.trainable_weights]
    assert all("/mp_" in p or "layer_norm2" in p or "target_embeddings" in p for p in paths)
    assert any("target_embeddings" in p for p in paths)
    assert not any("dilated_conv" in p or "item_embedding" in p for p in paths)
    report = parameter_report(model)
    assert 0 < report["trainable_share"] < 0.5
    frozen = {w.path: w.numpy().copy() for w in model.non_trainable_weights}
    model.compile(optimizer="adam")
    rng = np.random.RandomState(0)
    x = np.concatenate([np.zeros((32, 1)), rng.randint(1, 175, (32, 8)), np.zeros((32, 1))], 1)
    model.fit(x.astype("int32"), rng.randint(1, 32, (32,)), epochs=1, verbose=0)
    for weight in model.non_trainable_weights:
        np.testing.assert_array_equal(weight.numpy(), frozen[weight.path])


def test_unused_pretraining_head_is_reported_not_dropped(tmp_path):
    out = str(tmp_path / "converted")
    messages = []
    config = convert_checkpoint(FINETUNED["noncau_parallel"], out, max_len=9, log=messages.append)
    assert config["unused_variables"] == ["softmax_w"]
    assert "softmax_w" in messages[0]
    with np.load(os.path.join(out, "unused_variables.npz")) as data:
        assert data["softmax_w"].shape == (175, 64)


def test_max_len_is_recorded_from_the_release_csvs_or_the_flag(pretrained_dir, tmp_path):
    """Served histories are cut to the length the release trained on: the pre-training
    rows minus the item a causal graph drops, the fine-tuning file's source histories, or
    what --max_len says."""
    with open(PRETRAIN_CSV) as handle:
        row = max(len(line.split(",,")[0].split(",")) for line in handle if line.strip())
    with open(FINETUNE_CSV) as handle:
        history = max(len(line.split(",,")[0].split(",")) for line in handle if line.strip())
    config = json.load(open(os.path.join(pretrained_dir, "config.json")))
    assert config["max_len"] == row - 1 and config["max_len_from"] == PRETRAIN_CSV
    tuned = convert_checkpoint(FINETUNED["cau_serial"], str(tmp_path / "ft"),
                               target_vocab_csv=FINETUNE_CSV, log=lambda _: None)
    assert tuned["max_len"] == history
    explicit = convert_checkpoint(FINETUNED["cau_serial"], str(tmp_path / "ft2"), max_len=7,
                                  log=lambda _: None)
    assert explicit["max_len"] == 7 and explicit["max_len_from"] == "--max_len"
    with pytest.raises(ConversionError, match="--max_len=WIDTH or --target_vocab_csv"):
        convert_checkpoint(FINETUNED["cau_serial"], str(tmp_path / "ft3"), log=lambda _: None)


def test_release_id_order_from_the_demo_csvs():
    items = release_token_order(PRETRAIN_CSV)
    assert len(items) == 175 and items[:3] == ["<UNK>", "13373", "18120"]
    assert "0" in items[1:]  # the literal token "0" gets an id of its own, like any other
    targets = release_token_order(FINETUNE_CSV, targets=True)
    assert len(targets) == 32 and targets[:4] == ["<UNK>", "1845", "1846", "1844"]


def write_checkpoint(prefix, variables):
    """A TF1-style name-based checkpoint (what tf.compat.v1.train.Saver writes)."""
    names = sorted(variables)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(variables[n]) for n in names])


def release_variables():
    reader = tf.train.load_checkpoint(PRETRAINED_PREFIX)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def test_extra_missing_and_misshapen_variables_are_named(tmp_path):
    variables = release_variables()
    variables["mystery/weight"] = np.zeros((3,), "float32")
    del variables["nextitnet_residual_blockdecoder_layer_3_4/layer_norm1/gamma"]
    variables["nextitnet_residual_blockdecoder_layer_5_4/dilated_conv2/bias"] = np.zeros((7,), "float32")
    prefix = str(tmp_path / "broken")
    write_checkpoint(prefix, variables)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(prefix, str(tmp_path / "out"), causal=True)
    text = str(error.value)
    assert "unexpected variable mystery/weight" in text
    assert "missing variable nextitnet_residual_blockdecoder_layer_3_4/layer_norm1/gamma" in text
    # a shape problem is reported once the names fit
    del variables["mystery/weight"]
    variables["nextitnet_residual_blockdecoder_layer_3_4/layer_norm1/gamma"] = np.ones(64, "float32")
    write_checkpoint(prefix, variables)
    with pytest.raises(ConversionError, match=r"layer_5_4/dilated_conv2/bias: shape \(7,\)"):
        convert_checkpoint(prefix, str(tmp_path / "out"), causal=True)
    assert not os.path.exists(str(tmp_path / "out" / "model.keras"))


def test_non_causal_dot_head_checkpoint_without_meta(tmp_path):
    """A GRec-style checkpoint (softmax_w head, other dilations) converts by names alone."""
    rng = np.random.RandomState(0)
    vocab, channels = 40, 16
    variables = {"allitem_embeddings": rng.randn(vocab, channels).astype("float32"),
                 "softmax_w": rng.randn(vocab, channels).astype("float32"),
                 "softmax_b": rng.randn(vocab).astype("float32"),
                 "global_step": np.array(5, "int64")}
    for index, dilation in enumerate((1, 2, 4)):
        scope = f"nextitnet_residual_blockdecoder_layer_{index}_{dilation}"
        for conv in ("dilated_conv1", "dilated_conv2"):
            variables[f"{scope}/{conv}/weight"] = rng.randn(1, 5, channels, channels).astype("float32") * 0.1
            variables[f"{scope}/{conv}/bias"] = rng.randn(channels).astype("float32")
            variables[f"{scope}/{conv}/weight/Adam"] = np.zeros((1, 5, channels, channels), "float32")
        for ln in ("layer_norm1", "layer_norm2"):
            variables[f"{scope}/{ln}/gamma"] = rng.rand(channels).astype("float32")
            variables[f"{scope}/{ln}/beta"] = rng.randn(channels).astype("float32")
    prefix = str(tmp_path / "grec")
    write_checkpoint(prefix, variables)
    with pytest.raises(ConversionError, match="--causal"):
        convert_checkpoint(prefix, str(tmp_path / "out"))
    convert_checkpoint(prefix, str(tmp_path / "out"), causal=False, log=lambda _: None)
    model, config, _ = load_model_dir(str(tmp_path / "out"))
    assert config["backbone"] == {"vocab_size": 40, "channels": 16, "dilations": [1, 2, 4],
                                  "kernel_size": 5, "causal": False, "insertion": None,
                                  "patch_config": {}}
    ids = rng.randint(0, vocab, (2, 7))
    hidden = model.backbone(ids).numpy()
    np.testing.assert_allclose(model(ids).numpy(),
                               hidden @ variables["softmax_w"].T + variables["softmax_b"], atol=1e-4)
    np.testing.assert_array_equal(model.backbone.blocks[2].conv2.kernel.numpy(),
                                  variables["nextitnet_residual_blockdecoder_layer_2_4/dilated_conv2/weight"][0])


def test_patched_checkpoint_without_meta_needs_insertion(tmp_path):
    source = copy_without_meta(FINETUNED["cau_parallel"], str(tmp_path / "ckpt"))
    with pytest.raises(ConversionError, match="--insertion"):
        convert_checkpoint(source, str(tmp_path / "out"), causal=True)
    with pytest.raises(ConversionError, match="contradicts"):
        convert_checkpoint(FINETUNED["cau_parallel"], str(tmp_path / "out"), insertion="b")


def test_command_line(tmp_path):
    out = str(tmp_path / "cli")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    done = subprocess.run([sys.executable, "-m", "peterrec_tf.convert_tf1",
                           f"--checkpoint={PRETRAINED_PREFIX}", f"--output_dir={out}",
                           f"--vocab_csv={PRETRAIN_CSV}"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert os.path.exists(os.path.join(out, "model.keras"))
    assert os.path.exists(os.path.join(out, "vocab.txt"))
    bad = subprocess.run([sys.executable, "-m", "peterrec_tf.convert_tf1",
                          f"--checkpoint={tmp_path}/nothing", f"--output_dir={out}2"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "cannot read checkpoint" in bad.stderr
    keras.backend.clear_session()
