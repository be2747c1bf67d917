"""SavedModel export for TF Serving, checked the way Serving consumes it: saved_model_cli,
the TF1 session loader run by SignatureDef tensor names, a localhost gRPC/REST server,
warm-up replay, and the converted release checkpoint against the release's own graph."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FINETUNE_CSV, FINETUNED, PRETRAIN_CSV, REPO_ROOT, needs_checkpoints
from peterrec_tf.serving.saved_model import ExportError, export
from peterrec_tf.model_dir import config_checksum, load_model_dir, save_model_dir
from peterrec_tf.models import Backbone, GRecPretrainer, NextItNet, build_finetuner
from peterrec_tf.serving import GrpcClient, RestClient, ServingError
from serving_server import SessionModel, replay_warmup, start_rest_server, start_server

VOCAB = ["<UNK>"] + [f"item{i}" for i in range(1, 40)]
TARGETS = ["<UNK>"] + [f"t{i}" for i in range(1, 9)]
MAX_LEN = 12
quiet = {"log": lambda *_: None}


def randomise_task_weights(model, rng):
    """Give trained-looking values to what the method trains (patches, LN2, head)."""
    for weight in model.trainable_weights:
        weight.assign(rng.randn(*weight.shape).astype("float32") * 0.1)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    rng = np.random.RandomState(0)
    keras.utils.set_random_seed(0)
    backbone = Backbone(len(VOCAB), channels=8, dilations=(1, 2), causal=True)
    pre = NextItNet(backbone)
    pre.build()
    out = {"root": root, "backbone": backbone, "models": {"pre": pre}}

    def save(name, model, vocabs):
        save_model_dir(str(root / name), model, {"max_len": MAX_LEN}, {"items": VOCAB, **vocabs})
        out[name], out["models"][name] = str(root / name), model

    save("pre", pre, {})
    rec = build_finetuner(backbone, "peterrec", "item_rec", len(TARGETS))
    randomise_task_weights(rec, rng)
    save("rec", rec, {"targets": TARGETS})
    cls = build_finetuner(backbone, "peterrec", "classify", 3, loss="ce", insertion="d")
    randomise_task_weights(cls, rng)
    save("cls", cls, {"labels": ["a", "b", "c"]})
    head_only = build_finetuner(backbone, "finecls", "classify", 3, loss="ce")
    randomise_task_weights(head_only, rng)
    save("head_only", head_only, {"labels": ["a", "b", "c"]})
    full = build_finetuner(backbone, "fineall", "classify", 3, loss="ce")
    randomise_task_weights(full, rng)
    save("full", full, {"labels": ["a", "b", "c"]})
    other = Backbone(len(VOCAB), channels=8, dilations=(1, 2), causal=True)  # another pre-training
    other.build()
    save("other", build_finetuner(other, "peterrec", "classify", 3, loss="ce"), {"labels": ["a", "b", "c"]})
    grec_backbone = Backbone(len(VOCAB), channels=8, dilations=(1, 2), causal=False)
    grec = GRecPretrainer(grec_backbone)
    grec.build()
    save("grec", grec, {})
    return out


@pytest.fixture(scope="module")
def exported(dirs):
    base = str(dirs["root"] / "saved_models")
    multi = export([("rec", dirs["rec"]), ("cls", dirs["cls"])], base, "tasks", k=4, **quiet)
    single = export([("next", dirs["pre"])], base, "pretrained", k=5, **quiet)
    return {"base": base, "multi": multi, "single": single,
            "multi_session": SessionModel(multi["path"]), "single_session": SessionModel(single["path"])}


def as_tokens(ids):
    return np.array([[VOCAB[i] for i in row] for row in ids]).astype(bytes)


def training_input(ids, finetuned=True):
    """What the training/evaluation input pipeline feeds the Keras model for these histories."""
    from peterrec_tf.data.framing import Framing
    ragged = tf.ragged.constant([list(row) for row in ids], dtype=tf.int32)
    return Framing("tcl" if finetuned else "history", MAX_LEN).frame(ragged).numpy()


def test_layout_models_config_and_atomic_versions(exported, dirs, monkeypatch):
    base = exported["base"]
    assert sorted(os.listdir(os.path.join(base, "tasks"))) == ["1"]
    entries = models_config(base)
    assert sorted(entries) == ["pretrained", "tasks"]
    assert entries["tasks"].base_path == f"{os.path.abspath(base)}/tasks"
    assert entries["tasks"].model_platform == "tensorflow"
    assert entries["tasks"].model_version_policy.latest.num_versions == 2
    # an entry edited by hand (another base path, labels) survives a later export
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(open(os.path.join(base, "models.config")).read(), config)
    [tasks] = [c for c in config.model_config_list.config if c.name == "tasks"]
    tasks.version_labels["stable"] = 1
    config.model_config_list.config.add(name="elsewhere", base_path="/srv/elsewhere",
                                        model_platform="tensorflow")
    with open(os.path.join(base, "models.config"), "w") as handle:
        handle.write(text_format.MessageToString(config))
    again = export([("next", dirs["pre"])], base, "pretrained", serving_base_path="/models",
                   num_versions=3, **quiet)
    assert again["version"] == 2 and os.path.isdir(os.path.join(base, "pretrained", "2"))
    entries = models_config(base)
    assert entries["pretrained"].base_path == "/models/pretrained"
    assert entries["pretrained"].model_version_policy.latest.num_versions == 3
    assert entries["tasks"].base_path == f"{os.path.abspath(base)}/tasks"  # not this call's
    assert dict(entries["tasks"].version_labels) == {"stable": 1}
    assert entries["elsewhere"].base_path == "/srv/elsewhere"
    # without --serving_base_path, the recorded one stays (it is where the server sees it)
    export([("next", dirs["pre"])], base, "pretrained", **quiet)
    assert models_config(base)["pretrained"].base_path == "/models/pretrained"
    with open(os.path.join(base, "models.config"), "a") as handle:
        handle.write("model_config_list { bogus: 1 }\n")
    with pytest.raises(ExportError, match="not a ModelServerConfig"):
        export([("next", dirs["pre"])], base, "pretrained", **quiet)
    with open(os.path.join(base, "models.config"), "w") as handle:
        handle.write(text_format.MessageToString(config))
    with pytest.raises(ExportError, match="immutable"):
        export([("next", dirs["pre"])], base, "pretrained", version=2, **quiet)
    # vocabularies are assets stored once, not graph constants
    assets = os.path.join(exported["multi"]["path"], "assets")
    assert sorted(os.listdir(assets)) == ["cls_outputs.txt", "items.txt", "rec_outputs.txt"]
    assert open(os.path.join(assets, "items.txt")).read().split("\n")[:-1] == VOCAB

    import peterrec_tf.serving.version_writer as module

    def fail(*_):
        raise OSError("disk full")
    monkeypatch.setattr(module, "write_warmup", fail)
    with pytest.raises(OSError, match="disk full"):
        export([("next", dirs["pre"])], base, "pretrained", **quiet)
    assert sorted(os.listdir(os.path.join(base, "pretrained"))) == ["1", "2", "3"]  # nothing half-written
    export_base = os.path.join(base, "pretrained")
    assert all(oct(os.stat(os.path.join(export_base, v)).st_mode)[-3:] == "755" for v in ("1", "2"))


def models_config(base):
    """{name: ModelConfig} of EXPORT_BASE/models.config, parsed as Serving parses it."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(open(os.path.join(base, "models.config")).read(), config)
    return {entry.name: entry for entry in config.model_config_list.config}


def test_saved_model_cli_lists_signatures_dtypes_shapes(exported):
    from tensorflow.core.protobuf import saved_model_pb2
    expected = {
        "tasks": {"serving_default": ({"items": "DT_STRING"}, ("top_k_ids", "top_k_items", "scores")),
                  "rec": ({"items": "DT_STRING"}, ("top_k_ids", "top_k_items", "scores")),
                  "rec_ids": ({"item_ids": "DT_INT64"}, ("top_k_ids", "scores")),
                  "rec_top_k": ({"items": "DT_STRING", "k": "DT_INT32"}, ("top_k_ids", "scores")),
                  "rec_user_embedding": ({"items": "DT_STRING"}, ("user_embedding",)),
                  "cls": ({"items": "DT_STRING"}, ("probabilities", "class_ids", "class_names")),
                  "cls_ids": ({"item_ids": "DT_INT64"}, ("probabilities",)),
                  "cls_user_embedding": ({"items": "DT_STRING"}, ("user_embedding",))},
        "pretrained": {"serving_default": ({"items": "DT_STRING"}, ("top_k_items",)),
                       "next_top_k": ({"items": "DT_STRING", "k": "DT_INT32"}, ("top_k_ids",)),
                       "next_ids": ({"item_ids": "DT_INT64"}, ("top_k_ids",))},
    }
    for which, name in (("multi", "tasks"), ("single", "pretrained")):
        path = exported[which]["path"]
        done = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                               "--dir", path, "--all"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        text = done.stdout
        assert "args_0" not in text and "output_0" not in text
        for signature, (inputs, outputs) in expected[name].items():
            start = text.index(f"signature_def['{signature}']:")
            block = text[start:text.index("Method name is", start)]
            for input_name, dtype in inputs.items():
                shape = "(-1)" if input_name == "k" else "(-1, -1)"  # dynamic batch and length
                assert f"inputs['{input_name}'] tensor_info:\n        dtype: {dtype}\n        " \
                       f"shape: {shape}" in block, (signature, input_name)
            for output in outputs:
                assert f"outputs['{output}']" in block, (signature, output)
        assert "cls_top_k" not in text  # classification takes no k
        # Serving's request batching concatenates every input along its batch dimension:
        # no scalar inputs, no SignatureDef defaults
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
        for signature in proto.meta_graphs[0].signature_def.values():
            assert not signature.defaults
            assert all(i.tensor_shape.dim and i.tensor_shape.dim[0].size == -1
                       for i in signature.inputs.values())


def test_signatures_equal_the_keras_models(exported, dirs):
    session, models = exported["multi_session"], dirs["models"]
    rng = np.random.RandomState(1)
    for batch, length in ((1, 1), (1, 3), (4, 7), (2, 15)):  # 15 > max_len: most recent kept
        ids = rng.randint(1, len(VOCAB), (batch, length))
        tokens = as_tokens(ids)
        framed = training_input(ids)
        scores = models["rec"](framed).numpy()[:, 1:]
        expected_ids = np.argsort(-scores, axis=1, kind="stable")[:, :4] + 1
        out = session.run("rec", {"items": tokens})  # the export's k, 4
        np.testing.assert_array_equal(out["top_k_ids"], expected_ids)
        np.testing.assert_allclose(out["scores"], -np.sort(-scores, axis=1)[:, :4], atol=1e-5)
        assert [t.decode() for t in out["top_k_items"][0]] == [TARGETS[i] for i in expected_ids[0]]
        same = session.run("rec_ids", {"item_ids": ids.astype("int64")})
        np.testing.assert_allclose(same["scores"], out["scores"], atol=1e-6)
        top2 = session.run("rec_top_k", {"items": tokens, "k": np.full(batch, 2, np.int32)})
        np.testing.assert_array_equal(top2["top_k_ids"], expected_ids[:, :2])
        if batch > 1:  # each history its own k: columns past it are blank
            mixed = session.run("rec_top_k", {"items": tokens, "k": np.arange(1, batch + 1, dtype=np.int32)})
            assert mixed["top_k_ids"].shape == (batch, batch)
            for row, k in enumerate(range(1, batch + 1)):
                np.testing.assert_array_equal(mixed["top_k_ids"][row, :k], expected_ids[row, :k])
                assert (mixed["top_k_ids"][row, k:] == 0).all() and (mixed["top_k_items"][row, k:] == b"").all()
                assert np.isneginf(mixed["scores"][row, k:]).all()
        probs = session.run("cls", {"items": tokens})
        expected = tf.nn.softmax(models["cls"](framed)).numpy()
        np.testing.assert_allclose(probs["probabilities"], expected, atol=1e-5)
        np.testing.assert_array_equal(probs["class_ids"], expected.argmax(1))
        assert probs["class_names"][0].decode() == "abc"[expected[0].argmax()]
        user = session.run("rec_user_embedding", {"items": tokens})["user_embedding"]
        np.testing.assert_allclose(user, models["rec"].user_embedding(framed).numpy(), atol=1e-5)
    default = session.run("serving_default", {"items": tokens})
    np.testing.assert_array_equal(default["top_k_ids"], expected_ids)
    local = tf.saved_model.load(exported["multi"]["path"]).signatures["serving_default"](items=tf.constant(tokens))
    np.testing.assert_array_equal(local["top_k_ids"].numpy(), expected_ids)
    # pre-trained models: next item after the left-padded history (causal and GRec)
    nxt = exported["single_session"].run("serving_default", {"items": tokens})
    logits = models["pre"].next_item_logits(training_input(ids, finetuned=False)).numpy()[:, 1:]
    np.testing.assert_array_equal(nxt["top_k_ids"], np.argsort(-logits, axis=1, kind="stable")[:, :5] + 1)
    assert nxt["top_k_items"][0, 0].decode() == VOCAB[nxt["top_k_ids"][0, 0]]


def test_large_catalogue_served_in_slices_answers_as_whole_rows(exported, dirs, tmp_path,
                                                                monkeypatch):
    """A catalogue above `chunked_ranking.DEFAULT_CHUNK` ids is ranked slice by slice in
    the export (top-k per slice, merged): the same answers as the whole-row export."""
    from peterrec_tf.training import chunked_ranking
    monkeypatch.setattr(chunked_ranking, "DEFAULT_CHUNK", 7)  # 40 ids: 6 slices
    sliced = SessionModel(export([("next", dirs["pre"])], str(tmp_path), "sliced", k=5,
                                 **quiet)["path"])
    whole = exported["single_session"]
    rng = np.random.RandomState(4)
    for batch, length in ((1, 5), (3, 12), (0, 4)):
        tokens = as_tokens(rng.randint(1, len(VOCAB), (batch, length))).reshape(batch, length)
        for name, inputs in (("serving_default", {"items": tokens}),
                             ("next_top_k", {"items": tokens,
                                             "k": np.arange(batch, dtype=np.int32) * 13})):
            a, b = sliced.run(name, inputs), whole.run(name, inputs)
            np.testing.assert_array_equal(a["top_k_ids"], b["top_k_ids"])
            np.testing.assert_array_equal(a["top_k_items"], b["top_k_items"])
            np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
            assert len(a["top_k_ids"]) == batch


def test_int8_next_item_index_answers_as_the_float32_export(exported, dirs, tmp_path, monkeypatch):
    """`--next_item_index=int8`: XLA-compiled candidates, loaded through the TF1 session
    path as Serving does, answer the same ids as the plain export for one user (the index),
    batches above MAX_BATCH and k above the candidates (the exact path); the report counts
    the index's bytes apart from the weights; a task-only export refuses the option."""
    from peterrec_tf.serving import candidate_index
    monkeypatch.setattr(candidate_index, "CANDIDATES", 8)  # 40 ids: the index really selects
    report = export([("next", dirs["pre"])], str(tmp_path), "indexed", k=5,
                    next_item_index="int8", **quiet)
    index = report["next_item_index"]
    assert index["kind"] == "int8" and index["candidates"] == 8
    assert index["bytes"] == len(VOCAB) * 8 + 3 * 4 * len(VOCAB)  # int8 rows + 3 floats a row
    # the index is stored once, beside weights stored once (a few KB of checkpoint keys)
    extra = report["variables_bytes"] - exported["single"]["variables_bytes"]
    assert index["bytes"] <= extra <= index["bytes"] + 4096, extra
    indexed, whole = SessionModel(report["path"]), exported["single_session"]
    rng = np.random.RandomState(5)
    for batch, length in ((1, 5), (2, 12), (candidate_index.MAX_BATCH + 2, 7), (0, 3)):
        tokens = as_tokens(rng.randint(1, len(VOCAB), (batch, length))).reshape(batch, length)
        for name, inputs in (("serving_default", {"items": tokens}),
                             ("next_top_k", {"items": tokens,
                                             "k": (np.arange(batch, dtype=np.int32) * 7) % 12})):
            a, b = indexed.run(name, inputs), whole.run(name, inputs)
            np.testing.assert_array_equal(a["top_k_ids"], b["top_k_ids"])
            np.testing.assert_array_equal(a["top_k_items"], b["top_k_items"])
            np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    with pytest.raises(ExportError, match="none of the tasks is one"):
        export([("rec", dirs["rec"])], str(tmp_path), "no_next", next_item_index="int8", **quiet)


def test_grec_encoder_export_predicts_the_masked_next_item(dirs, tmp_path):
    report = export([("grec", dirs["grec"])], str(tmp_path), "grec", k=3, **quiet)
    ids = np.random.RandomState(2).randint(1, len(VOCAB), (2, 6))
    served = SessionModel(report["path"]).run("serving_default", {"items": as_tokens(ids)})
    logits = dirs["models"]["grec"].next_item_logits(training_input(ids, finetuned=False)).numpy()
    np.testing.assert_allclose(served["scores"], -np.sort(-logits[:, 1:], axis=1)[:, :3], atol=1e-5)


def test_padding_unknown_tokens_bad_ids_and_k_never_crash_or_pick_wrong_rows(exported, dirs):
    session = exported["multi_session"]
    # padding on either side is dropped; an unknown token stays in its place as id 0, as
    # prepared data stores it, and so does an id outside [1, V) (2**32 + 5 is not item 5)
    clean = session.run("rec", {"items": np.array([[b"item3", b"item5"]])})
    padded = session.run("rec", {"items": np.array([[b"", b"item3", b"", b"item5", b""]])})
    np.testing.assert_allclose(padded["scores"], clean["scores"], atol=1e-6)
    ids = session.run("rec_ids", {"item_ids": np.array([[0, -4, 3, 10**12, 2**32 + 5, 0, 5, 40]],
                                                       dtype="int64")})
    unknown = session.run("rec", {"items": np.array([[b"", b"x", b"item3", b"y", b"z", b"v",
                                                      b"item5", b"w"]])})  # 0 between: unknown
    np.testing.assert_allclose(ids["scores"], unknown["scores"], atol=1e-6)
    assert not np.allclose(ids["scores"], clean["scores"], atol=1e-4)
    messy = session.run("rec", {"items": np.array([[b"", b"item3", "n\u00e9".encode(), b"", b"item5", b""]])})
    model = dirs["models"]["rec"]
    in_place = model(training_input([[3, 0, 5]])).numpy()[:, 1:]
    assert not np.allclose(in_place, model(training_input([[3, 5]])).numpy()[:, 1:], atol=1e-4)
    np.testing.assert_allclose(messy["scores"], -np.sort(-in_place, axis=1)[:, :4], atol=1e-5)
    sentinel = session.run("rec_ids", {"item_ids": np.array([[0, 3, -1, 5]], dtype="int64")})
    np.testing.assert_allclose(sentinel["scores"], messy["scores"], atol=1e-6)
    nothing = session.run("rec", {"items": np.zeros((2, 0), dtype=bytes)})  # empty histories
    assert nothing["top_k_ids"].shape == (2, 4)
    unknown_only = session.run("rec", {"items": np.array([[b"nope", b"??"]])})
    np.testing.assert_allclose(unknown_only["scores"], nothing["scores"][:1], atol=1e-6)
    huge = session.run("rec_top_k", {"items": np.array([[b"item1"]]), "k": np.array([10**6], np.int32)})
    assert huge["top_k_ids"].shape == (1, len(TARGETS) - 1) and 0 not in huge["top_k_ids"]  # never id 0
    negative = session.run("rec_top_k", {"items": np.array([[b"item1"]] * 2), "k": np.array([-3, 0], np.int32)})
    assert negative["top_k_ids"].shape == (2, 0)
    # a batch of no histories answers no rows, in every signature
    for name, inputs in (("rec", {"items": np.zeros((0, 3), dtype=bytes)}),
                         ("rec_top_k", {"items": np.zeros((0, 3), dtype=bytes), "k": np.zeros(0, np.int32)}),
                         ("cls", {"items": np.zeros((0, 0), dtype=bytes)}),
                         ("rec_user_embedding", {"items": np.zeros((0, 2), dtype=bytes)})):
        outputs = session.run(name, inputs)
        assert all(value.shape[0] == 0 for value in outputs.values()), (name, outputs)
    # k must be one value per history, never broadcast
    for k in ([3], [3, 3, 3]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="one value per history"):
            session.run("rec_top_k", {"items": np.array([[b"item1"]] * 2), "k": np.array(k, np.int32)})


def test_padding_tokens_are_never_recommended(dirs, tmp_path):
    """The release CSVs' literal "0" is an item for the model (parity) but padding for a
    user: a directory listing it in padding_tokens never has it, nor <UNK>, in a ranking."""
    directory = tmp_path / "pre_with_zero"
    shutil.copytree(dirs["pre"], directory)
    config = json.load(open(directory / "config.json"))
    config["padding_tokens"] = ["item3", "item7"]
    config["config_sha256"] = config_checksum(config)  # config.json is verified when read
    json.dump(config, open(directory / "config.json", "w"))
    report = export([("next", str(directory))], str(tmp_path / "sm"), "zero", k=len(VOCAB), **quiet)
    served = SessionModel(report["path"]).run("next", {"items": as_tokens([[1, 2, 3]])})
    ranked = [t.decode() for t in served["top_k_items"][0] if t]
    assert len(ranked) == len(VOCAB) - 3 and not {"<UNK>", "item3", "item7"} & set(ranked)


def test_frozen_backbone_non_trainable_bit_exact_and_stored_once(exported, dirs):
    from tensorflow.core.protobuf import saved_model_pb2
    path = exported["multi"]["path"]
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    saved = [n.variable for n in proto.meta_graphs[0].object_graph_def.nodes if n.WhichOneof("kind") == "variable"]
    assert len({v.name for v in saved}) == len(saved)  # every variable stored once

    loaded = tf.saved_model.load(path)
    variables = {v.name.split(":")[0]: v for v in tf.train.TrackableView(loaded).descendants()
                 if isinstance(v, tf.Variable)}
    assert len(variables) == len(saved)
    backbone = {n: v for n, v in variables.items() if "backbone/" in n and "/mp" not in n}
    assert backbone and not [n for n, v in backbone.items() if v.trainable]
    assert all(v.trainable for n, v in variables.items() if "/mp" in n or "/head/" in n)
    # the shared copy is the pre-trained backbone, bit for bit; weights a task trained
    # (PeterRec's second layer norms) are that task's own copies
    pretrained = {w.path[w.path.index("backbone/"):]: w.numpy() for w in dirs["backbone"].weights}
    shared = {n: v for n, v in backbone.items() if not n.startswith("tasks/")}
    assert set(shared) == {p for p in pretrained if "layer_norm2" not in p}
    for name, variable in shared.items():
        assert np.array_equal(variable.numpy(), pretrained[name]), name
    for task in ("rec", "cls"):
        model = dirs["models"][task]
        for weight in model.backbone.weights:
            name = weight.path[weight.path.index("backbone/"):]
            if "layer_norm2" in name:
                assert np.array_equal(variables[f"tasks/{task}/{name}"].numpy(), weight.numpy())

    report = json.load(open(os.path.join(path, "assets.extra", "export_report.json")))
    assert report["variables_bytes"] <= 1.1 * report["weight_bytes"] + 20_000  # fixed index/graph overhead
    assert report["weight_bytes"] < report["separate_full_models_bytes"]
    assert 0 < report["tasks"]["rec"]["trainable_share"] < 1
    assert report["warmup_requests"] == 3 * len(report["signatures"])


def test_large_model_variables_within_1_1x(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = Backbone(20000, channels=64, dilations=(1, 4) * 2, causal=True)
    rec = build_finetuner(backbone, "peterrec", "item_rec", 500)
    save_model_dir(str(tmp_path / "m"), rec, {}, {"items": ["<UNK>"] + [str(i) for i in range(1, 20000)]})
    with pytest.raises(ExportError, match="no history length: give --max_len"):
        export([("rec", str(tmp_path / "m"))], str(tmp_path / "sm"), "big", **quiet)
    with pytest.raises(ExportError, match="max_len must be at least 1"):
        export([("rec", str(tmp_path / "m"))], str(tmp_path / "sm"), "big", max_len=0, **quiet)
    report = export([("rec", str(tmp_path / "m"))], str(tmp_path / "sm"), "big", max_len=20, **quiet)
    raw = sum(int(np.prod(w.shape)) * 4 for w in rec.weights)
    assert report["weight_bytes"] == raw
    assert report["variables_bytes"] <= 1.1 * raw, report


def test_multi_task_shares_only_an_identical_frozen_backbone(dirs, tmp_path):
    with pytest.raises(ExportError, match="fineall"):
        export([("rec", dirs["rec"]), ("full", dirs["full"])], str(tmp_path), "x", **quiet)
    with pytest.raises(ExportError, match="not over the same frozen backbone"):
        export([("rec", dirs["rec"]), ("other", dirs["other"])], str(tmp_path), "x", **quiet)
    with pytest.raises(ExportError, match="architecture"):
        export([("rec", dirs["rec"]), ("grec", dirs["grec"])], str(tmp_path), "x", **quiet)
    with pytest.raises(ExportError, match="unique"):
        export([("rec", dirs["rec"]), ("rec", dirs["cls"])], str(tmp_path), "x", **quiet)
    assert not os.path.exists(os.path.join(tmp_path, "x"))
    # PeterRec trains LN2, FineCLS keeps the pre-trained one: both over one backbone copy
    report = export([("rec", dirs["rec"]), ("head_only", dirs["head_only"]), ("next", dirs["pre"])],
                    str(tmp_path), "three", **quiet)
    session = SessionModel(report["path"])
    ids = np.random.RandomState(3).randint(1, len(VOCAB), (2, 5))
    expected = tf.nn.softmax(dirs["models"]["head_only"](training_input(ids))).numpy()
    np.testing.assert_allclose(session.run("head_only", {"items": as_tokens(ids)})["probabilities"],
                               expected, atol=1e-5)
    export([("full", dirs["full"])], str(tmp_path), "alone", **quiet)  # alone it exports


def test_warmup_file_parses_and_replays(exported):
    from tensorflow_serving.apis import prediction_log_pb2
    for which in ("multi", "single"):
        path = os.path.join(exported[which]["path"], "assets.extra", "tf_serving_warmup_requests")
        records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
                   for r in tf.data.TFRecordDataset(path)]
        names = {r.predict_log.request.model_spec.signature_name for r in records}
        assert names == set(exported[which]["signatures"])
        assert {r.predict_log.request.inputs["items"].tensor_shape.dim[0].size
                for r in records if "items" in r.predict_log.request.inputs} == {1, 2}  # batch sizes
        assert replay_warmup(exported[f"{which}_session"], path) == len(records)


def test_requests_merge_under_servings_request_batching(exported):
    """With --enable_batching and pad_variable_length_inputs, Serving concatenates requests
    and pads shorter histories on the right with their first element; the client's leading
    "" makes that padding, so merged answers equal the requests run alone."""
    from peterrec_tf.serving import pad_histories
    from serving_server import run_batched_like_serving
    session = exported["multi_session"]
    requests = [{"items": pad_histories([["item1", "item2", "item3", "item9"], ["item4"]]).astype(bytes),
                 "k": np.array([2, 2], np.int32)},
                {"items": pad_histories([["item7"]]).astype(bytes), "k": np.array([5], np.int32)}]
    merged = run_batched_like_serving(session, "rec_top_k", requests)
    for request, answer in zip(requests, merged):
        alone = session.run("rec_top_k", request)
        k = int(request["k"][0])
        np.testing.assert_array_equal(answer["top_k_ids"][:, :k], alone["top_k_ids"])
        np.testing.assert_allclose(answer["scores"][:, :k], alone["scores"], atol=1e-6)
    for signature in ("rec", "cls", "rec_user_embedding"):
        merged = run_batched_like_serving(session, signature, [{"items": r["items"]} for r in requests])
        for request, answer in zip(requests, merged):
            for name, value in session.run(signature, {"items": request["items"]}).items():
                np.testing.assert_allclose(answer[name], value, atol=1e-6) if value.dtype.kind == "f" \
                    else np.testing.assert_array_equal(answer[name], value)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpc_client_end_to_end(exported):
    models = {"tasks": {1: exported["multi_session"]}, "slow": {1: exported["single_session"]}}
    server, port = start_server(models, delays={"slow": 5.0})
    try:
        with GrpcClient(f"127.0.0.1:{port}", "tasks", signature="rec", timeout=5) as client:
            out = client.predict([["item1", "item2"], ["item7"]])
            direct = exported["multi_session"].run("rec", {"items": np.array([[b"item1", b"item2"], [b"", b"item7"]])})
            np.testing.assert_allclose(out["scores"], direct["scores"], atol=1e-6)
            assert out["top_k_items"].shape == (2, 4)
            assert client.predict([["item4"]], k=2, signature="rec_top_k")["top_k_ids"].shape == (1, 2)
            with pytest.raises(ValueError, match="_top_k"):
                client.predict([["item4"]], k=2)
            by_ids = client.predict_ids([[1, 2], [0, 7]], signature="rec_ids")
            np.testing.assert_allclose(by_ids["scores"], direct["scores"], atol=1e-6)
            user = client.predict([["item1"]], signature="rec_user_embedding")["user_embedding"]
            assert user.shape == (1, 8)
            with pytest.raises(ServingError, match="INVALID_ARGUMENT.*missing but required.*items"):
                client.call({"item_ids": np.array([[1]], dtype=np.int64)})  # wrong input for 'rec'
            with pytest.raises(ServingError, match="INVALID_ARGUMENT"):
                client.call({"items": np.array([[1.5]], dtype=np.float32)})  # wrong dtype
            with pytest.raises(ServingError, match="FAILED_PRECONDITION.*no_such"):
                client.predict([["item1"]], signature="no_such")
        with pytest.raises(ServingError, match="NOT_FOUND.*nosuchmodel"):
            GrpcClient(f"127.0.0.1:{port}", "nosuchmodel", timeout=5).predict([["item1"]])
        with pytest.raises(ServingError, match="NOT_FOUND"):
            GrpcClient(f"127.0.0.1:{port}", "tasks", version=7, timeout=5).predict([["item1"]])
        started = time.monotonic()
        with pytest.raises(ServingError, match="DEADLINE_EXCEEDED"):
            GrpcClient(f"127.0.0.1:{port}", "slow", timeout=0.2).predict([["item1"]])
        assert time.monotonic() - started < 4.0  # the deadline, not the server's 5 s, ended it
    finally:
        server.stop(0)


def test_grpc_client_retries_while_the_server_starts_within_its_deadline(exported):
    """The channel's service config retries UNAVAILABLE while the server starts; a server
    that never comes ends the call at its deadline (the signature is run once first: its
    first run, graph optimisation included, is not what this test times)."""
    exported["multi_session"].run("cls", {"items": np.array([[b"item2"]])})
    port = free_port()
    holder = {}
    timer = threading.Timer(0.5, lambda: holder.update(
        server=start_server({"tasks": {1: exported["multi_session"]}}, port=port)[0]))
    timer.start()
    try:
        client = GrpcClient(f"127.0.0.1:{port}", "tasks", signature="cls", timeout=3, retries=6)
        assert client.predict([["item2"]])["probabilities"].shape == (1, 3)
    finally:
        timer.join()
        holder["server"].stop(0)
    # A server that never comes: the same call without a deadline retries for 1.35-1.66 s
    # here (gRPC's attempts and reconnect backoff, measured over 8 calls); with a deadline
    # of 0.05 s it ends in about 0.05 s. The bound sits far from both.
    started = time.monotonic()
    with pytest.raises(ServingError, match="DEADLINE_EXCEEDED"):
        GrpcClient(f"127.0.0.1:{free_port()}", "tasks", timeout=0.05, retries=50).predict([["item1"]])
    assert time.monotonic() - started < 0.6  # the deadline bounds the retries
    with pytest.raises(ServingError, match="UNAVAILABLE.*up to 2 attempts"):
        GrpcClient(f"127.0.0.1:{free_port()}", "tasks", timeout=10, retries=1).predict([["item1"]])


def test_rest_client_both_request_forms(exported):
    server, port = start_rest_server({"tasks": {1: exported["multi_session"]}})
    url = f"http://127.0.0.1:{port}"
    try:
        client = RestClient(url, "tasks", signature="rec", timeout=5)
        columnar = client.predict([["item1", "item2"], ["item7"]], form="inputs")
        rows = client.predict([["item1", "item2"], ["item7"]], form="instances")
        np.testing.assert_allclose(columnar["scores"], rows["scores"], atol=1e-6)
        assert columnar["top_k_items"][0][0].startswith("t")
        versioned = RestClient(url, "tasks", signature="rec_top_k", version=1)
        assert versioned.predict([["item3"]], k=2)["top_k_ids"].shape == (1, 2)
        assert versioned.predict([["item3"], ["item4"]], k=3, form="instances")["top_k_ids"].shape == (2, 3)
        user = client.predict([["item1"]], signature="rec_user_embedding", form="instances")
        assert user["user_embedding"].shape == (1, 8)
        with pytest.raises(ServingError, match="404"):
            RestClient(url, "nope").predict([["item1"]])
        with pytest.raises(ServingError, match="400.*no_such_signature"):
            RestClient(url, "tasks", signature="no_such_signature").predict([["item1"]])
    finally:
        server.shutdown()
    with pytest.raises(ServingError, match="UNAVAILABLE"):
        RestClient(f"http://127.0.0.1:{free_port()}", "tasks", timeout=0.5, retries=2).predict([["item1"]])


def run_command(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "peterrec_tf.export", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_command_line(dirs, tmp_path):
    helped = run_command("--helpfull")
    assert helped.returncode in (0, 1), helped.stderr[-1000:]  # absl exits 1 after --helpfull
    for flag in ("model_dir", "tasks", "task_name", "export_base", "model_name", "version", "k",
                 "max_len", "serving_base_path", "num_versions"):
        assert f"--{flag}:" in helped.stdout, flag
    refused = run_command(f"--export_base={tmp_path}")
    assert refused.returncode == 2 and "exactly one of --model_dir or --tasks" in refused.stderr
    done = run_command(f"--tasks=rec={dirs['rec']},bad={tmp_path / 'missing'}", f"--export_base={tmp_path}")
    assert done.returncode == 2 and "\nerror: " in done.stderr and "missing" in done.stderr, done.stderr[-500:]
    assert "Traceback" not in done.stderr and not os.path.exists(tmp_path / "peterrec")
    done = run_command(f"--model_dir={dirs['cls']}", f"--export_base={tmp_path}", "--model_name=cli",
                       "--version=7")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trainable share" in done.stdout
    assert os.path.isdir(tmp_path / "cli" / "7" / "variables")
    done = run_command(f"--model_dir={dirs['pre']}", f"--item_embeddings={tmp_path / 'emb'}",
                       f"--litert={tmp_path / 'pre.tflite'}", "--k=3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith(
        f"wrote {tmp_path / 'emb'}, {tmp_path / 'pre.tflite'}; next: ")
    assert os.path.exists(tmp_path / "emb" / "embeddings.npy") and os.path.exists(tmp_path / "pre.tflite")
    done = run_command(f"--model_dir={dirs['pre']}", f"--item_embeddings={tmp_path / 'emb'}")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not empty" in done.stderr and "Traceback" not in done.stderr


@needs_checkpoints
@pytest.mark.parametrize("name, family", [("cau_serial", "causal"), ("cau_parallel", "causal"),
                                          ("noncau_parallel", "noncausal")])
def test_converted_release_checkpoint_serves_the_releases_answers(name, family, tmp_path):
    """Every user of the release's demo fine-tuning CSV, sent as raw tokens (literal "0"
    padding tokens included) to the exported signature, gets the release graph's top-5
    targets (target id 0, the padding target, excluded) and scores, the graph fed exactly as
    the release's loader feeds it; the model's recorded framing does the rest."""
    from peterrec_tf.convert_tf1 import convert_checkpoint, release_token_order
    from release_loaders import demo_histories, demo_sources, release_feed
    from release_oracle import oracle as run_oracle
    out = str(tmp_path / "converted")
    convert_checkpoint(FINETUNED[name], out, vocab_csv=PRETRAIN_CSV,
                       target_vocab_csv=FINETUNE_CSV, log=lambda _: None)
    report = export([("coldrec", out)], str(tmp_path / "sm"), "release", k=5, **quiet)
    items = release_token_order(PRETRAIN_CSV)
    sources = demo_sources()
    oracle = run_oracle(FINETUNED[name], release_feed(demo_histories(items), family, 9))
    scores = oracle["scores"][:, 1:]  # target 0 is padding, never an answer
    expected_ids = np.argsort(-scores, axis=1, kind="stable")[:, :5] + 1
    expected_scores = -np.sort(-scores, axis=1)[:, :5]
    served = SessionModel(report["path"]).run(
        "serving_default", {"items": np.array([[""] + s for s in sources]).astype(bytes)})
    np.testing.assert_array_equal(served["top_k_ids"], expected_ids)
    tolerance = 1e-4 + 1e-5 * np.abs(oracle["scores"]).max()
    assert np.abs(served["scores"] - expected_scores).max() <= tolerance
    targets = release_token_order(FINETUNE_CSV, targets=True)
    assert [[t.decode() for t in row] for row in served["top_k_items"]] == \
        [[targets[i] for i in row] for row in expected_ids]


def test_non_finite_weights_are_never_exported(dirs, tmp_path):
    directory = tmp_path / "diverged"
    shutil.copytree(dirs["rec"], directory)
    model, _, _ = load_model_dir(str(directory))
    weight = model.backbone.patches[0].weights[0]
    weight.assign(np.full(weight.shape, np.nan, "float32"))
    model.save(str(directory / "model.keras"))  # as a diverged run would have, bypassing the guard
    # ... and recorded, as that run's save would have (so the NaN, not the record, is what
    # the export meets)
    from peterrec_tf.model_files import config_checksum
    config = json.loads((directory / "config.json").read_text())
    config["checksums"]["model.keras"] = f"bytes:{os.path.getsize(directory / 'model.keras')}"
    config["config_sha256"] = config_checksum(config)
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="holds NaN or Inf .* never exported"):
        export([("rec", str(directory))], str(tmp_path / "sm"), "nan", **quiet)
    assert not os.path.exists(tmp_path / "sm" / "nan" / "1")


# ---- --exclude_history, the `exclude` list, and what signatures accept ------------------

ITEM_TARGETS = VOCAB[:12]  # an item-rec task whose targets are items: <UNK>, item1..item11


def hand_masked_top_k(scores, rows_excluded, k, blocked=(0,)):
    """What a ranking with exclusion must answer: the scores with every blocked and every
    excluded id at -inf, top k by score, the lower id first among equals (ids of -inf
    rows are not answers)."""
    answers = []
    for row, excluded in zip(scores, rows_excluded):
        row = np.array(row, np.float64)
        row[list(blocked) + [i for i in excluded if 0 <= i < len(row)]] = -np.inf
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))
        answers.append([i for i in order if np.isfinite(row[i])][:k])
    return answers


@pytest.fixture(scope="module")
def excluding(dirs):
    rng = np.random.RandomState(11)
    rec = build_finetuner(dirs["backbone"], "peterrec", "item_rec", len(ITEM_TARGETS))
    randomise_task_weights(rec, rng)
    save_model_dir(str(dirs["root"] / "rec_items"), rec, {"max_len": MAX_LEN},
                   {"items": VOCAB, "targets": ITEM_TARGETS})
    dirs["models"]["rec_items"] = rec
    base = str(dirs["root"] / "saved_models_excluding")
    report = export([("next", dirs["pre"]), ("items", str(dirs["root"] / "rec_items"))], base,
                    "excluding", k=5, exclude_history=True, **quiet)
    return {"report": report, "session": SessionModel(report["path"]), "base": base}


def test_exclude_history_answers_as_hand_masked_logits(excluding, dirs, exported):
    """Under --exclude_history no returned id is in the request's history (all of it, also
    beyond max_len), k answers still come back from a long history, and the answers equal
    masking the logits by hand; `<task>_top_k_exclude` also drops the request's own list;
    an item-rec task over target tokens that are items excludes them by token."""
    session, models = excluding["session"], dirs["models"]
    assert excluding["report"]["exclude_history"] is True
    assert exported["single"]["exclude_history"] is False
    rng = np.random.RandomState(12)
    for batch, length in ((1, 3), (3, 30), (2, 36)):  # 36 of 39 items: few answers left
        ids = np.stack([rng.permutation(np.arange(1, len(VOCAB)))[:length] for _ in range(batch)])
        tokens = as_tokens(ids)
        logits = models["pre"].next_item_logits(training_input(ids, finetuned=False)).numpy()
        for k in (5, 20):
            expected = hand_masked_top_k(logits, ids, k)
            out = session.run("next_top_k", {"items": tokens, "k": np.full(batch, k, np.int32)})
            for row in range(batch):
                got = [i for i in out["top_k_ids"][row] if i]
                assert got == expected[row]  # same ids, same order
                assert not set(got) & set(ids[row])
                assert len(got) == min(k, len(VOCAB) - 1 - length)  # k whenever k are left
                answered = len(got)
                assert (out["top_k_items"][row, answered:] == b"").all()
                np.testing.assert_allclose(out["scores"][row, :answered],
                                           logits[row, got], atol=1e-5)
        # the per-request list: excluded on top of the history, "" and unknown tokens ignored
        extra = rng.randint(1, len(VOCAB), (batch, 4))
        asked = np.concatenate([np.full((batch, 1), b""), as_tokens(extra),
                                np.full((batch, 1), b"nope")], axis=1)
        out = session.run("next_top_k_exclude", {"items": tokens, "k": np.full(batch, 6, np.int32),
                                                 "exclude": asked})
        expected = hand_masked_top_k(logits, np.concatenate([ids, extra], axis=1), 6)
        assert [[i for i in row if i] for row in out["top_k_ids"]] == expected
        # item-rec targets that are items: excluded by token
        scores = models["rec_items"](training_input(ids)).numpy()
        out = session.run("items_top_k", {"items": tokens, "k": np.full(batch, 11, np.int32)})
        expected = hand_masked_top_k(scores, ids, 11)
        assert [[i for i in row if i] for row in out["top_k_ids"]] == expected
    # without --exclude_history, only the request's own list is excluded
    plain = exported["single_session"].run("next_top_k_exclude", {
        "items": as_tokens([[1, 2]]), "k": np.array([5], np.int32),
        "exclude": np.array([[b"", b"item7"]])})
    logits = models["pre"].next_item_logits(training_input([[1, 2]], finetuned=False)).numpy()
    assert list(plain["top_k_ids"][0]) == hand_masked_top_k(logits, [[7]], 5)[0]


def test_exclusion_is_the_same_in_slices_and_with_the_int8_index(excluding, dirs, tmp_path,
                                                                  monkeypatch):
    """The sliced ranking of a large catalogue and the int8 index exclude the history as
    the whole-row ranking does (same ids, same order)."""
    from peterrec_tf.serving import candidate_index
    from peterrec_tf.training import chunked_ranking
    monkeypatch.setattr(chunked_ranking, "DEFAULT_CHUNK", 7)
    monkeypatch.setattr(candidate_index, "CANDIDATES", 8)
    sliced = SessionModel(export([("next", dirs["pre"])], str(tmp_path), "sliced", k=5,
                                 exclude_history=True, **quiet)["path"])
    indexed = SessionModel(export([("next", dirs["pre"])], str(tmp_path), "indexed", k=5,
                                  exclude_history=True, next_item_index="int8", **quiet)["path"])
    rng = np.random.RandomState(13)
    for batch, length in ((1, 4), (2, 20), (1, 35)):
        ids = np.stack([rng.permutation(np.arange(1, len(VOCAB)))[:length] for _ in range(batch)])
        inputs = {"items": as_tokens(ids), "k": np.full(batch, 6, np.int32)}
        whole = excluding["session"].run("next_top_k", inputs)
        for other in (sliced, indexed):
            out = other.run("next_top_k", inputs)
            np.testing.assert_array_equal(out["top_k_ids"], whole["top_k_ids"])
            np.testing.assert_allclose(out["scores"], whole["scores"], atol=1e-5)


def test_int8_index_returns_the_float32_ids_in_the_float32_order_on_near_ties(tmp_path,
                                                                             monkeypatch):
    """A head of near-equal rows (groups differing by ~1e-7): the int8 index re-scores with
    the float32 export's own hidden state and product, so ids and order are those of the
    float32 export for every history and batch size it serves."""
    from peterrec_tf.serving import candidate_index
    monkeypatch.setattr(candidate_index, "CANDIDATES", 64)
    vocab = ["<UNK>"] + [f"x{i}" for i in range(1, 400)]
    for head in ("dot", "full"):
        keras.utils.set_random_seed(1)
        model = NextItNet(Backbone(len(vocab), channels=16, dilations=(1, 2), causal=True),
                          head=head)
        model.build()
        rng = np.random.RandomState(2)
        kernel = model.head.kernel.numpy()
        rows = kernel if head == "dot" else kernel.T
        groups = np.repeat(rng.randn(len(vocab) // 8 + 1, rows.shape[1]) * 0.1, 8, axis=0)
        near = (groups[:len(vocab)] + rng.randn(*rows.shape) * 1e-7).astype("float32")
        model.head.kernel.assign(near if head == "dot" else near.T)
        directory = str(tmp_path / head)
        save_model_dir(directory, model, {"max_len": 10}, {"items": vocab})
        plain = SessionModel(export([("next", directory)], str(tmp_path / "sm"), f"p{head}", k=10,
                                    **quiet)["path"])
        indexed = SessionModel(export([("next", directory)], str(tmp_path / "sm"), f"i{head}",
                                      k=10, next_item_index="int8", **quiet)["path"])
        for batch in (1, 2, 4, 1, 3, 1, 1, 2):
            tokens = np.array([[vocab[i] for i in row] for row in
                               rng.randint(1, len(vocab), (batch, 8))]).astype(bytes)
            a = indexed.run("serving_default", {"items": tokens})
            b = plain.run("serving_default", {"items": tokens})
            np.testing.assert_array_equal(a["top_k_ids"], b["top_k_ids"])
            np.testing.assert_array_equal(a["scores"], b["scores"])


def test_signatures_refuse_inputs_of_the_wrong_rank_as_serving_runs_them(excluding):
    """Fed to the C++ session as tensorflow_model_server feeds it (no Python shape check),
    a 1-D `items` is INVALID_ARGUMENT, not B one-item histories; so is a 2-D `k` and a
    1-D `exclude`; a wrong dtype is refused too."""
    session = excluding["session"]
    good = session.run_in_cxx("next", {"items": np.array([[b"item1", b"item2"]])})
    assert good["top_k_ids"].shape == (1, 5)
    cases = [("next", {"items": np.array([b"item1", b"item2"])}, "histories: a matrix"),
             ("next_ids", {"item_ids": np.array([1, 2], np.int64)}, "histories: a matrix"),
             ("next_user_embedding", {"items": np.array([b"item1"])}, "histories: a matrix"),
             ("next_top_k", {"items": np.array([[b"item1"]]), "k": np.array([[3]], np.int32)},
              "one value per history"),
             ("next_top_k_exclude", {"items": np.array([[b"item1"]]), "k": np.array([3], np.int32),
                                     "exclude": np.array([b"item2"])}, "exclude: one row"),
             ("next_top_k_exclude", {"items": np.array([[b"item1"]] * 2), "k": np.array([3, 3], np.int32),
                                     "exclude": np.array([[b"item2"]])}, "one row per history")]
    for name, inputs, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            session.run_in_cxx(name, inputs)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError, TypeError)):
        session.run_in_cxx("next", {"items": np.array([[1, 2]], np.int64)})


# ---- item embeddings for an external index, and the on-device model ---------------------

def exact_inner_product_top_k(directory, users, k):
    """What an exact ANN index over the exported rows answers: the largest
    [query(user) | 1] . [embeddings | bias], blocked ids removed, lower id first on ties."""
    info = json.load(open(os.path.join(directory, "item_embeddings.json")))
    rows = np.load(os.path.join(directory, "embeddings.npy"))
    bias = np.load(os.path.join(directory, "bias.npy"))
    query = np.maximum(users, 0) if info["query"] == "relu(user_embedding)" else users
    augmented = np.concatenate([rows, bias[:, None]], axis=1).astype(np.float64)
    scores = np.concatenate([query, np.ones((len(query), 1))], axis=1) @ augmented.T
    scores[:, info["blocked"]] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_item_embeddings_reproduce_the_served_ranking_per_head_kind(dirs, tmp_path):
    """full head (relu(h) . W[:, i] + b), dot head (h . W[i] + b) and item recommendation
    (u . E[i]): the exported rows with the served user embedding rank as the export."""
    from peterrec_tf.serving.item_embeddings import write_item_embeddings
    keras.utils.set_random_seed(5)
    dot = NextItNet(Backbone(len(VOCAB), channels=8, dilations=(1, 2), causal=True), head="dot")
    dot.build()
    save_model_dir(str(tmp_path / "dot"), dot, {"max_len": MAX_LEN}, {"items": VOCAB})
    rec = build_finetuner(dirs["backbone"], "peterrec", "item_rec", len(TARGETS))
    randomise_task_weights(rec, np.random.RandomState(6))
    save_model_dir(str(tmp_path / "rec"), rec, {"max_len": MAX_LEN}, {"items": VOCAB, "targets": TARGETS})
    rng = np.random.RandomState(7)
    for kind, directory, outputs, query in (("full", dirs["pre"], VOCAB, "relu(user_embedding)"),
                                            ("dot", str(tmp_path / "dot"), VOCAB, "user_embedding"),
                                            ("item_rec", str(tmp_path / "rec"), TARGETS, "user_embedding")):
        out = tmp_path / f"emb_{kind}"
        write_item_embeddings(directory, str(out), log=lambda *_: None)
        info = json.load(open(out / "item_embeddings.json"))
        assert info["query"] == query and info["blocked"] == [0]
        rows = np.load(out / "embeddings.npy")
        assert rows.dtype == np.float32 and rows.shape == (len(outputs), 8)
        assert open(out / "vocab.tsv").read().split("\n")[:-1] == outputs
        config = open(out / "projector_config.pbtxt").read()
        assert 'metadata_path: "vocab.tsv"' in config and "item_embeddings" in config
        served = SessionModel(export([("t", directory)], str(tmp_path / "sm"), f"m{kind}",
                                     k=len(outputs) - 1, **quiet)["path"])
        tokens = as_tokens(rng.randint(1, len(VOCAB), (5, 9)))
        users = served.run("t_user_embedding", {"items": tokens})["user_embedding"]
        ranked = served.run("t", {"items": tokens})["top_k_ids"]
        k = min(10, len(outputs) - 1)
        np.testing.assert_array_equal(exact_inner_product_top_k(str(out), users, k), ranked[:, :k])
    with pytest.raises(ValueError, match="not empty"):
        write_item_embeddings(dirs["pre"], str(tmp_path / "emb_full"), log=lambda *_: None)
    with pytest.raises(ValueError, match="classification"):
        write_item_embeddings(dirs["cls"], str(tmp_path / "emb_cls"), log=lambda *_: None)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_litert_model_answers_as_the_saved_model(dirs, exported, tmp_path):
    """The on-device model (int32 ids in, top-k ids and scores out), run by the LiteRT
    interpreter: float32 gives the SavedModel's ids and scores; dynamic-range int8 too on
    this tiny head (too small to be quantized: the recall of a real one is measured by
    benchmarks/litert_recall.py); --exclude_history drops the items of the max_len ids
    given, the window FILE.json records."""
    from peterrec_tf.serving.litert import run_litert, write_litert
    rng = np.random.RandomState(8)
    paths = {}
    for quantize in ("none", "dynamic_int8"):
        paths[quantize] = str(tmp_path / f"next_{quantize}.tflite")
        info = write_litert(dirs["pre"], paths[quantize], k=5, quantize=quantize, log=lambda *_: None)
        assert info["inputs"]["item_ids"]["shape"] == [1, MAX_LEN]
        assert open(paths[quantize] + ".vocab.txt").read().split("\n")[:-1] == VOCAB
        assert info["exclude_history"] is False
    said = []
    info = write_litert(dirs["pre"], str(tmp_path / "excluding.tflite"), k=5,
                        exclude_history=True, log=said.append)
    # the window it excludes is its input, said where it is read (never a bare `true`)
    recorded = json.load(open(tmp_path / "excluding.tflite.json"))["exclude_history"]
    assert recorded == info["exclude_history"] and recorded["window"] == MAX_LEN
    assert f"the {MAX_LEN} ids given" in recorded["excludes"] and "app side" in recorded["excludes"]
    assert any(f"only the {MAX_LEN} ids given" in line for line in said), said
    for length in (1, 5, MAX_LEN):
        ids = rng.randint(1, len(VOCAB), (1, length))
        padded = np.concatenate([np.zeros((1, MAX_LEN - length), np.int32), ids], axis=1)
        served = exported["single_session"].run("serving_default", {"items": as_tokens(ids)})
        for quantize, path in paths.items():
            top, scores = run_litert(path, padded)
            np.testing.assert_array_equal(top, served["top_k_ids"])
            np.testing.assert_allclose(scores, served["scores"], atol=1e-5)
        top, _ = run_litert(str(tmp_path / "excluding.tflite"), padded)
        logits = dirs["models"]["pre"].next_item_logits(training_input(ids, finetuned=False)).numpy()
        assert list(top[0]) == hand_masked_top_k(logits, ids, 5)[0]
    # an id outside the vocabulary, and a 0 between two items, is an unknown item in its
    # place on both (before: the SavedModel's _ids signature dropped them, the LiteRT model
    # read them as 0 in place)
    odd = np.array([[0] * (MAX_LEN - 6) + [3, len(VOCAB) + 7, 0, 5, -9, 2]], np.int32)
    served = exported["single_session"].run("next_ids", {"item_ids": odd.astype("int64")})
    top, scores = run_litert(paths["none"], odd)
    np.testing.assert_array_equal(top, served["top_k_ids"])
    known = np.concatenate([np.zeros((1, MAX_LEN - 3), np.int32), odd[:, [6, 9, 11]]], axis=1)
    _, dropped = run_litert(paths["none"], known)  # the premise: dropping them differs
    assert not np.allclose(scores, dropped, atol=1e-4)
    with pytest.raises(ValueError, match="classification"):
        write_litert(dirs["cls"], str(tmp_path / "cls.tflite"), log=lambda *_: None)


def test_a_litert_file_is_always_beside_the_files_written_with_it(tmp_path, monkeypatch):
    """A stop while the files are written or at the renames leaves nothing: no model, no
    companion renamed before it (never a model beside vocabularies it was not written
    with) and no temporary, so the same command runs again."""
    import peterrec_tf.serving.litert as litert

    path = str(tmp_path / "m.tflite")

    def write(model, token):
        litert._write_files(path, model, ["<pad>", token], ["<pad>", "t"], {"bytes": len(model)})

    def contents():
        return {name: open(tmp_path / name, "rb").read() for name in sorted(os.listdir(tmp_path))}

    def stop(*_, **__):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:  # while the JSON is written
        patch.setattr(litert.json, "dump", stop)
        with pytest.raises(KeyboardInterrupt):
            write(b"new", "new")
    assert contents() == {}
    real_replace, renamed = os.replace, []

    def replace_then_stop(source, target):  # the model's own rename, the last, never happens
        if target == path:
            raise KeyboardInterrupt
        renamed.append(target)
        real_replace(source, target)
    with monkeypatch.context() as patch:
        patch.setattr(litert.os, "replace", replace_then_stop)
        with pytest.raises(KeyboardInterrupt):
            write(b"new", "new")
    assert len(renamed) == 3 and contents() == {}
    write(b"new", "new")
    assert set(contents()) == {"m.tflite", "m.tflite.vocab.txt", "m.tflite.outputs.txt",
                               "m.tflite.json"}
    assert contents()["m.tflite"] == b"new" and b"new" in contents()["m.tflite.vocab.txt"]


def test_an_existing_litert_file_or_sidecar_is_refused_never_replaced(dirs, tmp_path):
    """--litert never overwrites (as --version and --item_embeddings): an existing FILE, or
    a sidecar left without it (an item-rec export's .outputs.txt, which a next-item model
    would leave stale beside its own), is refused by name, with what to do, before the model
    is loaded; the files there are untouched. Checked again just before the renames."""
    import peterrec_tf.serving.litert as litert
    from peterrec_tf.serving.litert import write_litert

    path = str(tmp_path / "m.tflite")
    write_litert(dirs["rec"], path, k=3, log=lambda *_: None)
    before = {name: open(tmp_path / name, "rb").read() for name in os.listdir(tmp_path)}
    assert "m.tflite.outputs.txt" in before
    with pytest.raises(ValueError, match=r"m\.tflite, .*already exist.*new path or remove"):
        write_litert(dirs["pre"], path, k=3, log=lambda *_: None)
    os.remove(path)  # the model removed, its item-rec outputs left
    with pytest.raises(ValueError, match=r"m\.tflite\.outputs\.txt.*already exist"):
        write_litert(dirs["pre"], path, k=3, log=lambda *_: None)
    assert all(open(tmp_path / name, "rb").read() == data for name, data in before.items()
               if name != "m.tflite")
    fresh = str(tmp_path / "fresh.tflite")
    open(fresh, "wb").write(b"arrived meanwhile")
    with pytest.raises(ValueError, match="fresh.tflite already exists"):
        litert._write_files(fresh, b"new", ["<pad>"], ["<pad>"], {})
    assert open(fresh, "rb").read() == b"arrived meanwhile"
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]
    # --item_embeddings with a refused --litert: neither is written, so the same command
    # runs again once the path is fixed
    import types
    from peterrec_tf.export import export_artifacts

    flags = types.SimpleNamespace(tasks=None, item_embeddings=str(tmp_path / "emb"),
                                  litert=fresh, model_dir=dirs["pre"], backbone_dir=None, k=3,
                                  litert_quantize="none", max_len=0, exclude_history=False)
    with pytest.raises(ValueError, match="fresh.tflite"):
        export_artifacts(flags)
    assert not os.path.exists(tmp_path / "emb")


def test_client_retry_policies_and_the_exclude_list_over_grpc(excluding):
    """The retry policies are the libraries' (gRPC service config, urllib3 Retry): only
    UNAVAILABLE / 503 and refused connections; the gRPC client sends `exclude` lists with a
    leading "" (never an empty tensor, and Serving's batching pads with it)."""
    from peterrec_tf.serving.client import grpc_service_config, rest_retry
    policy = json.loads(grpc_service_config(9))["methodConfig"][0]["retryPolicy"]
    assert policy["maxAttempts"] == 5 and policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert "retryPolicy" not in json.loads(grpc_service_config(0))["methodConfig"][0]
    retry = rest_retry(3)
    assert retry.is_retry("POST", 503) and not retry.is_retry("POST", 500)
    assert not retry.is_retry("POST", 400)
    server, port = start_server({"excluding": {1: excluding["session"]}})
    try:
        with GrpcClient(f"127.0.0.1:{port}", "excluding", timeout=10) as client:
            out = client.predict_excluding([["item1", "item2"], ["item3"]],
                                           [["item5", "item6"], []], k=4,
                                           signature="next_top_k_exclude")
            assert out["top_k_ids"].shape == (2, 4)
            assert not {5, 6, 1, 2} & set(out["top_k_ids"][0]) and 3 not in out["top_k_ids"][1]
            with pytest.raises(ValueError, match="one list per history"):
                client.predict_excluding([["item1"]], [], k=2, signature="next_top_k_exclude")
            # through the test server (the TF1 session loader) a 1-D history is refused too
            with pytest.raises(ServingError, match="INVALID_ARGUMENT"):
                client.call({"items": np.array([b"item1", b"item2"])}, "next")
    finally:
        server.stop(0)


def test_k_above_what_a_task_can_rank_is_said_and_recorded(dirs, tmp_path):
    """--k above the outputs a ranking task can answer was clipped silently (the signature
    answered fewer than k with exit 0): it is printed and recorded in the report."""
    from peterrec_tf.serving.export_options import ExportOptions
    from peterrec_tf.serving.module_builder import build_serving_module

    said = []
    big = len(TARGETS) + 5
    _, reports, _ = build_serving_module([("rec", dirs["rec"])], str(tmp_path),
                                         ExportOptions(k=big), log=said.append)
    assert reports["rec"]["k_answered"] == len(TARGETS) - 1  # id 0 is never an answer
    assert any(f"--k={big} is above the {len(TARGETS) - 1} outputs" in line for line in said)
    said.clear()
    _, reports, _ = build_serving_module([("rec", dirs["rec"])], str(tmp_path),
                                         ExportOptions(k=2), log=said.append)
    assert reports["rec"]["k_answered"] == 2 and not any("warning" in line for line in said)
