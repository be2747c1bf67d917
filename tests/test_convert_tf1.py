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
from release_loaders import demo_histories, release_feed
from release_oracle import (finetuned_parity_batches, oracle_batches, reversed_finetune_csv,
                            reversed_finetune_feed, with_short_histories)

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
    oracle = oracle_batches(PRETRAINED_PREFIX, batches)
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
    # any ids fed identically to both sides (the release framing is tested further down);
    # the causal graphs drop the last (target) column themselves
    batches, feeds = finetuned_parity_batches(causal)
    oracle = oracle_batches(prefix, feeds)
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
    # run_eagerly: the one step runs in seconds where tracing the 8-block release model's
    # train step into a graph took ~20x as long (measured); which weights move is the same
    model.compile(optimizer="adam", run_eagerly=True)
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
                                  "patch_config": {}, "padding": "learned", "dropout": 0.0,
                                  "embedding_dropout": 0.0}
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


# --- the release families' framing, measured against the release's own graphs --------------



def check_parity(key, model, prefix, histories, family, width):
    framed = model.framing.frame(tf.ragged.constant(histories, dtype=tf.int32)).numpy()
    [expected] = oracle_batches(prefix, [release_feed(histories, family, width)])
    hidden = model.backbone(framed).numpy()
    scores = model(framed).numpy()
    assert hidden.shape == expected["hidden"].shape
    diffs = (float(np.abs(hidden - expected["hidden"]).max()),
             float(np.abs(scores - expected["scores"]).max()))
    print(f"\nparity {key}: hidden max |diff| {diffs[0]:.2e} (|h| <= "
          f"{np.abs(expected['hidden']).max():.1f}), scores {diffs[1]:.2e}")
    assert diffs[0] <= 1e-4 + 1e-5 * np.abs(expected["hidden"]).max()
    assert diffs[1] <= 1e-4 + 1e-5 * np.abs(expected["scores"]).max()
    np.testing.assert_array_equal(np.argsort(-scores, axis=1, kind="stable")[:, :5],
                                  expected["top_k"].reshape(len(framed), 5))
    return framed


@pytest.mark.parametrize("name,kind,pooling", [("cau_serial", "release_causal", "last"),
                                               ("cau_parallel", "release_causal", "last"),
                                               ("noncau_parallel", "tcl", "first_last")])
def test_release_framing_of_the_shared_checkpoints_matches_the_release_loaders(
        name, kind, pooling, tmp_path):
    """The model's own framing of ragged histories gives what the release's graph gives
    when fed as the release's loader feeds it, for every user of the demo CSV (and, for
    the causal scripts, shorter histories that the loader right-pads)."""
    out = str(tmp_path / "converted")
    config = convert_checkpoint(FINETUNED[name], out, vocab_csv=PRETRAIN_CSV,
                                target_vocab_csv=FINETUNE_CSV, log=lambda _: None)
    model, saved, vocabs = load_model_dir(out)
    assert model.framing.kind == kind and model.framing.length == 9
    assert config["framing"] == saved["framing"] == {"kind": kind, "length": 9}
    assert saved["max_len"] == 9 and model.pooling == pooling and model.method == "peterrec"
    histories = demo_histories(vocabs["items"])
    assert len(histories) == 30 and {len(h) for h in histories} == {9}
    if kind == "release_causal":  # the loader right-pads shorter sources with 0
        histories = with_short_histories(histories, (1, 4, 6, 8))
    framed = check_parity(name, model, FINETUNED[name], histories,
                          "causal" if kind == "release_causal" else "noncausal", 9)
    assert framed.shape == (len(histories), 10 if kind == "release_causal" else 11)


@pytest.mark.parametrize("name,family", [("cau_serial", "causal"),
                                         ("noncau_parallel", "noncausal")])
def test_finetuned_release_checkpoint_reads_ids_in_its_finetuning_csvs_order(name, family,
                                                                            tmp_path):
    """A release fine-tuning script fits its own vocabulary on the fine-tuning CSV's
    sources, so its graph reads item ids in that file's first-appearance order, not the
    pre-training CSV's. With a fine-tuning CSV whose order differs (the demo's lines
    reversed), raw source tokens through the converted, exported model give the answers
    (target tokens) of the release graph fed by the release's loader."""
    from peterrec_tf.serving.saved_model import export
    from serving_server import SessionModel

    reordered = reversed_finetune_csv(str(tmp_path / "finetune_reversed.csv"))
    items, targets, sources, feed = reversed_finetune_feed(reordered, family)
    pretraining = release_token_order(PRETRAIN_CSV)
    assert len(items) == len(pretraining) == 175 and sorted(items) == sorted(pretraining)
    assert sum(a != b for a, b in zip(items, pretraining)) > 100  # the orders really differ

    out = str(tmp_path / "converted")
    with pytest.raises(ConversionError, match="orders the items differently"):
        convert_checkpoint(FINETUNED[name], out, vocab_csv=PRETRAIN_CSV,
                           target_vocab_csv=reordered, log=lambda _: None)
    with pytest.raises(ConversionError, match="--target_vocab_csv=FINETUNE_CSV"):
        convert_checkpoint(FINETUNED[name], out, vocab_csv=PRETRAIN_CSV, max_len=9,
                           log=lambda _: None)
    convert_checkpoint(FINETUNED[name], out, target_vocab_csv=reordered, log=lambda _: None)
    _, _, vocabs = load_model_dir(out)
    assert vocabs["items"] == items and vocabs["targets"] == targets

    # sources: the file's users and, causal, shorter ones (the loader right-pads them with 0)
    [oracle] = oracle_batches(FINETUNED[name], [feed])
    best = np.argsort(-oracle["scores"][:, 1:], axis=1, kind="stable")[:, :5] + 1  # no <UNK>
    expected = np.array([[targets[i] for i in row] for row in best])

    report = export([("coldrec", out)], str(tmp_path / "sm"), "release", k=5,
                    log=lambda *_: None)
    width = max(len(s) for s in sources)
    tokens = np.array([[""] * (width - len(s)) + s for s in sources]).astype(bytes)
    served = SessionModel(report["path"]).run("serving_default", {"items": tokens})
    np.testing.assert_array_equal(served["top_k_items"].astype(str), expected)


# --- FineAll checkpoints (no patches, Adam2 slots) --------------------------------------------

def fineall_parity_histories(items):
    """The demo users as ids of `items` and three of them cut shorter."""
    return with_short_histories(demo_histories(items), (1, 5, 8))


def fineall_served_feed(family):
    """(raw sources, what the release's FineAll loader feeds for them): the demo users and
    three of them cut shorter, ids of the pre-training CSV's order."""
    from release_loaders import demo_sources
    sources = with_short_histories(demo_sources(), (1, 5, 8))
    index = {token: i for i, token in enumerate(release_token_order(PRETRAIN_CSV))}
    return sources, release_feed([[index[t] for t in s] for s in sources],
                                 f"{family}_fineall", 9)


@pytest.fixture(scope="module")
def fineall_checkpoints(tmp_path_factory):
    from release_fineall import make_fineall_checkpoint
    from release_oracle import plan
    base = tmp_path_factory.mktemp("fineall")
    prefixes = {family: make_fineall_checkpoint(str(base / family / "model.ckpt"), family)
                for family in ("nextitnet", "grec")}
    items = release_token_order(PRETRAIN_CSV)
    for family, prefix in prefixes.items():  # each graph's feeds below, in one process
        plan(prefix, [release_feed(fineall_parity_histories(items), f"{family}_fineall", 9),
                      fineall_served_feed(family)[1]])
    return prefixes


@pytest.mark.parametrize("family,pooling,causal", [("nextitnet", "last", True),
                                                   ("grec", "mean", False)])
@pytest.mark.parametrize("with_meta", [True, False])
def test_fineall_checkpoint_converts_with_parity(fineall_checkpoints, family, pooling, causal,
                                                 with_meta, tmp_path):
    prefix = fineall_checkpoints[family]
    reader = tf.train.load_checkpoint(prefix)
    names = set(reader.get_variable_to_shape_map())
    assert {"allitem_embeddings/Adam2", "allitem_embeddings/Adam2_1", "beta1_power_1",
            "beta2_power_1", "allitem_embeddings/Adam", "beta1_power"} <= names
    source = prefix if with_meta else copy_without_meta(prefix, str(tmp_path / "ckpt"))
    out = str(tmp_path / "converted")
    kwargs = {} if with_meta else {"causal": causal, "pooling": pooling}
    if not with_meta:
        with pytest.raises(ConversionError, match="--pooling=last .* --pooling=mean"):
            convert_checkpoint(source, out, causal=causal, target_vocab_csv=FINETUNE_CSV)
    config = convert_checkpoint(source, out, vocab_csv=PRETRAIN_CSV,
                                target_vocab_csv=FINETUNE_CSV, log=lambda _: None, **kwargs)
    model, saved, vocabs = load_model_dir(out)
    assert isinstance(model, FineTuner) and model.method == "fineall"
    assert not model.backbone.patches and model.backbone.causal == causal
    assert model.pooling == pooling and saved["framing"] == {"kind": "release_plain", "length": 9}
    head = ["logits/bias", "logits/weight"] if causal else ["softmax_b", "softmax_w"]
    assert config["unused_variables"] == head
    assert config["skipped_training_state"] == len([n for n in names if "Adam" in n]) + 4
    assert len(model.trainable_weights) == len(model.weights)  # FineAll: the backbone trains
    histories = fineall_parity_histories(vocabs["items"])
    framed = check_parity(f"{family}_fineall{'' if with_meta else '_no_meta'}", model, prefix,
                          histories, f"{family}_fineall", 9)
    assert framed.shape == (len(histories), 9)
    # it trains further like a project FineAll model: the backbone moves too
    before = model.backbone.blocks[0].conv1.kernel.numpy().copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)  # one step: no trace
    model.fit(framed, np.arange(len(framed)) % 31 + 1, epochs=1, verbose=0)
    assert not np.allclose(before, model.backbone.blocks[0].conv1.kernel.numpy())


def test_converted_fineall_model_evaluates_finetunes_and_exports_alone(fineall_checkpoints,
                                                                       tmp_path):
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.serving.saved_model import export
    from peterrec_tf.jobs.finetuning import run_finetune
    from pipelines.prepare import prepare

    out = str(tmp_path / "converted")
    convert_checkpoint(fineall_checkpoints["grec"], out, vocab_csv=PRETRAIN_CSV,
                       target_vocab_csv=FINETUNE_CSV, log=lambda _: None)
    quiet = {"log": lambda *_: None}
    prepare("peterrec_pretrain_csv", str(tmp_path / "pre"), PRETRAIN_CSV, **quiet)
    data = str(tmp_path / "coldrec")
    prepare("peterrec_finetune_csv", data, FINETUNE_CSV, split_by="instance",
            vocab=str(tmp_path / "pre" / "vocab" / "items.txt"), **quiet)
    results = run_evaluate(out, data, split="train", ks=(5,), num_candidates=10, **quiet)
    assert 0 <= results["hr@5"] <= 1
    tuned = str(tmp_path / "tuned")
    run_finetune(out, data, tuned, method="fineall", train_steps=2, batch_size=8,
                 eval_batch_size=64, num_candidates=11, jit_compile=False, **quiet)
    model, _, _ = load_model_dir(tuned)
    assert model.method == "fineall" and model.framing.kind == "release_plain"
    assert model.framing.length == 9
    report = export([("fineall", out)], str(tmp_path / "sm"), "release", k=5, **quiet)
    assert os.path.isdir(report["path"])


@pytest.mark.parametrize("family", ["nextitnet", "grec"])
def test_exported_fineall_checkpoint_serves_the_releases_answers(fineall_checkpoints, family,
                                                                 tmp_path):
    """Raw demo users (and right-padded shorter ones) to the exported signature: the
    FineAll graph's top-5 and scores, the graph fed as its loader feeds it."""
    from peterrec_tf.serving.saved_model import export
    from serving_server import SessionModel
    out = str(tmp_path / "converted")
    convert_checkpoint(fineall_checkpoints[family], out, vocab_csv=PRETRAIN_CSV,
                       target_vocab_csv=FINETUNE_CSV, log=lambda _: None)
    report = export([("fineall", out)], str(tmp_path / "sm"), "release", k=5, log=lambda *_: None)
    sources, feed = fineall_served_feed(family)
    [oracle] = oracle_batches(fineall_checkpoints[family], [feed])
    scores = oracle["scores"][:, 1:]
    width = 1 + max(len(s) for s in sources)
    tokens = np.array([[""] * (width - len(s)) + s for s in sources]).astype(bytes)
    served = SessionModel(report["path"]).run("serving_default", {"items": tokens})
    np.testing.assert_array_equal(served["top_k_ids"],
                                  np.argsort(-scores, axis=1, kind="stable")[:, :5] + 1)
    assert np.abs(served["scores"] - -np.sort(-scores, axis=1)[:, :5]).max() <= \
        1e-4 + 1e-5 * np.abs(oracle["scores"]).max()


# --- structural optimizer state, pooling ------------------------------------------------------

def test_optimizer_state_is_recognised_by_structure_not_by_name(tmp_path):
    variables = release_variables()
    embedding = variables["allitem_embeddings"]
    variables["allitem_embeddings/Adam2"] = np.zeros_like(embedding)
    variables["allitem_embeddings/Momentum"] = np.zeros_like(embedding)
    variables["beta1_power_3"] = np.array(0.9, "float32")
    prefix = str(tmp_path / "slots")
    write_checkpoint(prefix, variables)
    config = convert_checkpoint(prefix, str(tmp_path / "ok"), causal=True, log=lambda _: None)
    assert config["converted_variables"] == 67
    # a "slot" of the wrong shape, of no model variable, or a non-scalar beta power: refused
    variables["allitem_embeddings/Adam3"] = np.zeros((3, 64), "float32")
    variables["mystery/Adam2"] = np.zeros((4,), "float32")
    variables["beta2_power_2"] = np.zeros((2,), "float32")
    write_checkpoint(prefix, variables)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(prefix, str(tmp_path / "bad"), causal=True)
    for name in ("allitem_embeddings/Adam3", "mystery/Adam2", "beta2_power_2"):
        assert f"unexpected variable {name}" in str(error.value)


def test_pooling_is_read_from_the_graph_and_contradictions_refused(tmp_path):
    with pytest.raises(ConversionError, match="--pooling=mean contradicts .*pooling=last"):
        convert_checkpoint(FINETUNED["cau_serial"], str(tmp_path / "a"), max_len=9,
                           pooling="mean")
    with pytest.raises(ConversionError, match="pre-trained"):
        convert_checkpoint(PRETRAINED_PREFIX, str(tmp_path / "b"), pooling="last")
    source = copy_without_meta(FINETUNED["noncau_parallel"], str(tmp_path / "ckpt"))
    config = convert_checkpoint(source, str(tmp_path / "c"), causal=False, insertion="d",
                                pooling="mean", max_len=5, log=lambda _: None)
    model, _, _ = load_model_dir(str(tmp_path / "c"))
    assert model.pooling == "mean" and config["framing"] == {"kind": "tcl", "length": 5}


# --- malformed inputs, output directory, non-finite weights -----------------------------------

def damaged_copy(directory, damage):
    """A copy of the cau_serial checkpoint with one file damaged; returns (prefix, file)."""
    prefix = copy_without_meta(FINETUNED["cau_serial"], directory)
    shutil.copy(FINETUNED["cau_serial"] + ".meta", directory)
    [data] = [n for n in os.listdir(directory) if ".data-" in n]
    files = {"data": os.path.join(directory, data), "index": prefix + ".index",
             "meta": prefix + ".meta"}
    kind, how = damage.split("_", 1)
    path = files[kind]
    os.chmod(path, 0o644)
    raw = bytearray(open(path, "rb").read())
    if how == "truncated":
        raw = raw[:len(raw) // 2]
    else:  # flipped bytes: a checksum error (.data) or a corrupt table (.index)
        for offset in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[offset] ^= 0x5A
    open(path, "wb").write(bytes(raw))
    return prefix, path


DAMAGES = ["data_truncated", "data_flipped", "index_truncated", "index_flipped",
           "meta_truncated"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_checkpoint_files_are_named_errors_not_tracebacks(damage, tmp_path):
    prefix, damaged = damaged_copy(str(tmp_path / "ckpt"), damage)
    out = str(tmp_path / "out")
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(prefix, out, max_len=9, log=lambda _: None)
    assert str(error.value).startswith(f"{damaged}: ")
    assert os.listdir(str(tmp_path)) == ["ckpt"]  # no output, no staging directory
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    done = subprocess.run([sys.executable, "-m", "peterrec_tf.convert_tf1",
                           f"--checkpoint={prefix}", f"--output_dir={out}", "--max_len=9"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: {damaged}: " in done.stderr and "Traceback" not in done.stderr


def test_non_finite_weights_are_refused_by_name(tmp_path):
    variables = release_variables()
    variables["nextitnet_residual_blockdecoder_layer_2_1/layer_norm1/beta"][3] = np.nan
    variables["logits/bias"][:2] = np.inf
    prefix = str(tmp_path / "nan")
    write_checkpoint(prefix, variables)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(prefix, str(tmp_path / "out"), causal=True)
    assert "layer_2_1/layer_norm1/beta: 1 non-finite value" in str(error.value)
    assert "logits/bias: 2 non-finite values" in str(error.value)


def test_output_dir_is_refused_when_not_empty_and_replaced_whole_with_overwrite(tmp_path):
    out = tmp_path / "model"
    convert_checkpoint(FINETUNED["cau_serial"], str(out), target_vocab_csv=FINETUNE_CSV,
                       log=lambda _: None)
    assert (out / "target_vocab.txt").exists()
    before = sorted(os.listdir(str(out)))
    with pytest.raises(ConversionError, match="not empty.*--overwrite"):
        convert_checkpoint(PRETRAINED_PREFIX, str(out), log=lambda _: None)
    assert sorted(os.listdir(str(out))) == before
    # a failing conversion with --overwrite leaves the old directory as it was
    with pytest.raises(ConversionError):
        convert_checkpoint(str(tmp_path / "nothing"), str(out), overwrite=True)
    assert sorted(os.listdir(str(out))) == before
    convert_checkpoint(PRETRAINED_PREFIX, str(out), overwrite=True, log=lambda _: None)
    # no stale vocabulary; the replaced model (another backbone) kept for tasks over it
    assert sorted(os.listdir(str(out))) == ["config.json", "model.keras", "versions"]
    (kept,) = os.listdir(str(out / "versions"))
    assert sorted(os.listdir(str(out / "versions" / kept))) == before
    config = json.load(open(str(out / "config.json")))
    assert config["kind"] == "pretrain" and config["framing"]["kind"] == "history"
    assert sorted(os.listdir(str(tmp_path))) == ["model"]  # no staging directory left
    (tmp_path / "empty").mkdir()
    convert_checkpoint(PRETRAINED_PREFIX, str(tmp_path / "empty"), log=lambda _: None)
    assert (tmp_path / "empty" / "model.keras").exists()


def test_overwriting_a_conversion_keeps_the_backbone_tasks_were_tuned_over(tmp_path):
    """A task fine-tuned over a converted directory is stored over it (its backbone is not
    copied). `convert_tf1 --overwrite` with another checkpoint replaced the directory whole
    and the task stopped loading; the replaced model is kept in versions/<fingerprint>/, as
    a pre-training re-run keeps its backbone, and the versions kept so far move with it."""
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.jobs.finetuning import run_finetune
    from pipelines.prepare import prepare

    quiet = {"log": lambda *_: None}
    out, tuned = str(tmp_path / "converted"), str(tmp_path / "tuned")
    convert_checkpoint(PRETRAINED_PREFIX, out, **quiet)
    prepare("peterrec_pretrain_csv", str(tmp_path / "pre"), PRETRAIN_CSV, **quiet)
    data = str(tmp_path / "coldrec")
    prepare("peterrec_finetune_csv", data, FINETUNE_CSV, split_by="instance",
            vocab=str(tmp_path / "pre" / "vocab" / "items.txt"), **quiet)
    settings = dict(train_steps=2, batch_size=8, eval_batch_size=64, num_candidates=11,
                    jit_compile=False, eval_every=0)
    run_finetune(out, data, tuned, **settings, **quiet)
    scores = {k: v for k, v in run_evaluate(tuned, data, num_candidates=11, **quiet).items()
              if k.startswith(("hr@", "ndcg@", "mrr@"))}
    said = []
    convert_checkpoint(FINETUNED["cau_serial"], out, target_vocab_csv=FINETUNE_CSV,
                       overwrite=True, log=said.append)
    assert any("kept in" in line for line in said), said
    after = run_evaluate(tuned, data, num_candidates=11, **quiet)
    assert {k: after[k] for k in scores} == scores
    convert_checkpoint(PRETRAINED_PREFIX, out, overwrite=True, **quiet)  # and back again:
    assert len(os.listdir(os.path.join(out, "versions"))) == 2  # both kept versions stay
    assert {k: v for k, v in run_evaluate(tuned, data, num_candidates=11, **quiet).items()
            if k in scores} == scores


@pytest.mark.parametrize("source,dropped", [
    (PRETRAINED_PREFIX, "nextitnet_residual_blockdecoder_layer_7_4/"),  # a whole block
    (FINETUNED["cau_serial"], "/mp_")])                                  # every patch
def test_a_checkpoint_lacking_variables_its_graph_has_is_refused(source, dropped, tmp_path):
    """Red team: a partial save beside its .meta graph (the last block left out, or every
    model patch) converted without error into a 7-block NextItNet, or a FineAll model,
    answering otherwise than the graph. Only graph variables the checkpoint has were
    checked; now the checkpoint must hold every model variable of the graph too."""
    reader = tf.train.load_checkpoint(source)
    variables = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
                 if dropped not in n}
    prefix = str(tmp_path / "partial")
    write_checkpoint(prefix, variables)
    shutil.copy(source + ".meta", prefix + ".meta")
    with pytest.raises(ConversionError, match=rf"{prefix}: the checkpoint lacks \d+ model "
                                              rf"variables of its graph {prefix}.meta: .*"
                                              + dropped.strip("/")):
        convert_checkpoint(prefix, str(tmp_path / "out"), max_len=10, log=lambda _: None)
    assert not os.path.exists(tmp_path / "out")


def test_a_checkpoint_directory_is_refused_naming_its_checkpoints(tmp_path):
    """--checkpoint=DIR holding several checkpoints: the error named DIR.index, a file
    nobody gave; it now says DIR is a directory, which prefix its `checkpoint` file names
    and which checkpoints it holds, and converts none of them by guess."""
    folder = tmp_path / "run"
    folder.mkdir()
    variables = release_variables()
    for step in (100, 200):
        write_checkpoint(str(folder / f"model.ckpt-{step}"), variables)
    (folder / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/model.ckpt-100"\n'
                                       'all_model_checkpoint_paths: "/elsewhere/model.ckpt-200"\n')
    with pytest.raises(ConversionError, match=(
            rf"{folder}: is a directory; --checkpoint is the prefix of one checkpoint .*"
            rf"{folder}/checkpoint names {folder}/model.ckpt-100; checkpoints there: "
            rf"{folder}/model.ckpt-100, {folder}/model.ckpt-200")):
        convert_checkpoint(str(folder), str(tmp_path / "out"), causal=True)
