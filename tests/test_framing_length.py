"""One rule decides a model's history length (asked for, recorded in the model, the
prepared data's), and the length is recorded once, in the model's framing; models saved
when config.json carried it still load at that length."""

import json
import os

import pytest

from peterrec_tf.data import datasets
from peterrec_tf.data.framing import Framing, resolve_length
from peterrec_tf.model_dir import load_model_dir, save_model_dir
from peterrec_tf.models import Backbone, NextItNet


def test_the_length_asked_for_wins_then_the_models_then_the_datas():
    meta = {"max_len": 50, "task": "item_rec"}
    assert resolve_length(7, 9, meta) == 7
    assert resolve_length(0, 9, meta) == 9 and resolve_length(None, None, meta) == 50
    assert resolve_length() is None and resolve_length(0, None, {}) is None
    assert Framing("tcl", 9).resolved(None, meta) == Framing("tcl", 9)
    assert Framing("tcl", 9).resolved(4, meta) == Framing("tcl", 4)
    assert Framing("history").resolved(metadata=meta) == Framing("history", 50)
    assert datasets.data_framing(meta) == Framing("tcl", 50)
    assert datasets.data_framing({"max_len": 20, "task": "pretrain"}, None, 8) == Framing("history", 8)
    assert datasets.data_framing(meta, Framing("release_plain", 9).get_config()) == \
        Framing("release_plain", 9)


def tiny_model(length):
    model = NextItNet(Backbone(12, channels=4, dilations=(1,), causal=True),
                      framing=Framing("history", length))
    model.build()
    return model


def test_a_model_saved_with_its_length_in_config_json_loads_at_that_length(tmp_path):
    old = str(tmp_path / "old")
    save_model_dir(old, tiny_model(None), {"max_len": 7})  # the layout before the framing had it
    model, config, _ = load_model_dir(old)
    assert model.framing == Framing("history", 7) and config["max_len"] == 7

    new = str(tmp_path / "new")
    save_model_dir(new, tiny_model(9))
    model, config, _ = load_model_dir(new)
    assert model.framing == Framing("history", 9) and "max_len" not in config
    with open(os.path.join(new, "config.json"), encoding="utf-8") as handle:
        assert "max_len" not in json.load(handle)

    none = str(tmp_path / "none")
    save_model_dir(none, tiny_model(None))  # no length anywhere: serving asks for one
    model, _, _ = load_model_dir(none)
    assert model.framing.length is None
    assert model.framing.resolved(5).length == 5


def test_the_jobs_record_the_length_in_the_model_only(tmp_path):
    from peterrec_tf.jobs.pretraining import run_pretrain
    from pipelines.prepare import prepare

    quiet = {"log": lambda *_: None}
    prepare("synthetic", str(tmp_path / "syn"), max_len=10, seed=1, num_users=60, num_items=30,
            num_clusters=3, num_targets=10, **quiet)
    model_dir = str(tmp_path / "pre")
    run_pretrain(os.path.join(str(tmp_path / "syn"), "pretrain"), model_dir, channels=4,
                 dilations=(1,), batch_size=16, train_steps=1, max_len=6, jit_compile=False,
                 **quiet)
    model, config, _ = load_model_dir(model_dir)
    assert model.framing == Framing("history", 6) and "max_len" not in config
