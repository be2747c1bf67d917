"""The transfer-method registry: a method is one registered object, and every consumer
(factory, FineTuner, the job's flag checks, task artifacts, serving's shared-backbone check)
asks it, so a method defined here works end to end without another edit."""

import os

import keras
import numpy as np
import pytest

from peterrec_tf import transfer_methods
from peterrec_tf.jobs.finetuning import check_settings
from peterrec_tf.model_dir import MODEL_FILE, load_model_dir, save_model_dir
from peterrec_tf.models import Backbone, NextItNet, build_finetuner
from peterrec_tf.serving.saved_model import ExportError, export
from peterrec_tf.task_artifact import TASK_WEIGHTS_FILE, relative_path, stores_task_only
from peterrec_tf.transfer_methods import TransferMethod, set_trainable

VOCAB = ["<UNK>"] + [f"i{n}" for n in range(1, 40)]
quiet = {"log": lambda *_: None}


class LastNorm(TransferMethod):
    """A toy method: the head and the last block's layer norm train, nothing else; it
    declares that it changes the backbone (so serving must refuse to share one) and that
    its task is stored alone."""

    name = "lastnorm"
    summary = "head + the last block's layer norm"
    grafts_patches = False
    changes_backbone = True
    stored_alone = True

    def mark_trainable(self, model):
        set_trainable(model)
        for norm in model.backbone.blocks[-1].trained_norms:
            norm.trainable = True


@pytest.fixture
def registry(monkeypatch):
    """The registry as the package filled it; what a test registers goes with the test."""
    monkeypatch.setattr(transfer_methods.REGISTRY, "_entries",
                        dict(transfer_methods.REGISTRY._entries))
    return transfer_methods


@pytest.fixture
def pretrained(tmp_path):
    keras.utils.set_random_seed(5)
    model = NextItNet(Backbone(len(VOCAB), channels=8, dilations=(1, 2), causal=True))
    model.build()
    directory = str(tmp_path / "pre")
    save_model_dir(directory, model, {"max_len": 8}, {"items": VOCAB})
    return directory, load_model_dir(directory)[0].backbone


def test_a_method_defined_in_one_place_goes_through_every_consumer(registry, pretrained,
                                                                  tmp_path):
    registry.register(LastNorm)
    assert "lastnorm" in registry.names() and registry.module_of("lastnorm") == __name__
    pre_dir, backbone = pretrained
    model = build_finetuner(backbone, "lastnorm", "classify", 3, loss="ce")
    last_norm = {relative_path(w) for w in model.backbone.blocks[-1].layer_norm2.weights}
    trained = {relative_path(w) for w in model.trainable_weights}
    assert trained == last_norm | {"classifier/kernel", "classifier/bias"}
    assert not model.backbone.patches  # a plain copy: the method grafts nothing

    before = {relative_path(w): w.numpy() for w in model.weights}
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=False)
    rng = np.random.RandomState(0)
    model.fit(rng.randint(1, len(VOCAB), (4, 8)).astype("int32"), np.array([0, 1, 2, 1]),
              batch_size=4, epochs=1, verbose=0)
    after = {relative_path(w): w.numpy() for w in model.weights}
    moved = {path for path, value in before.items() if not np.array_equal(value, after[path])}
    assert moved == trained  # every trained weight moved, every frozen one is bit-equal

    # stored alone over the pre-trained directory, as the method declares
    assert stores_task_only(model)
    task_dir = str(tmp_path / "task")
    save_model_dir(task_dir, model, {"max_len": 8}, {"items": VOCAB},
                   task_over=(pre_dir, backbone))
    assert not os.path.exists(os.path.join(task_dir, MODEL_FILE))
    with np.load(os.path.join(task_dir, TASK_WEIGHTS_FILE)) as stored:
        assert {key.replace("|", "/") for key in stored.files} == trained
    loaded, config, _ = load_model_dir(task_dir)
    assert loaded.method == config["method"] == "lastnorm"
    ids = rng.randint(1, len(VOCAB), (3, 8)).astype("int32")
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())

    # it changes the backbone: serving refuses it over a backbone shared with another task
    with pytest.raises(ExportError, match="lastnorm, which changes the backbone"):
        export([("a", task_dir), ("b", task_dir)], str(tmp_path / "served"), **quiet)
    assert not os.path.exists(tmp_path / "served" / "peterrec")

    # the job's flags: patch settings are refused for a method that grafts no patches
    check_settings("lastnorm", "classify", True)
    with pytest.raises(ValueError, match="only apply to --method=peterrec, not "
                                         "--method=lastnorm"):
        check_settings("lastnorm", "classify", True, insertion="b")


def test_what_a_method_declares_decides_how_its_task_is_stored(registry, pretrained):
    registry.register(LastNorm)
    registry.register(type("WholeLastNorm", (LastNorm,),
                           {"name": "wholelastnorm", "stored_alone": False}))
    _, backbone = pretrained
    for name, alone in (("lastnorm", True), ("wholelastnorm", False)):
        model = build_finetuner(backbone, name, "classify", 3, loss="ce")
        assert stores_task_only(model) is alone, name


def test_the_registry_refuses_unknown_duplicate_and_undeclared_methods(registry):
    with pytest.raises(ValueError, match="unknown transfer method 'finesome': --method must be "
                                         "one of fineall, finecls, finelast, peterrec"):
        registry.get("finesome")
    with pytest.raises(ValueError, match="unknown transfer method"):
        build_finetuner(Backbone(len(VOCAB), channels=8, dilations=(1,)), "finesome",
                        "classify", 3, loss="ce")
    registry.register(LastNorm)
    with pytest.raises(ValueError, match="'lastnorm' is already registered .*test_transfer"):
        registry.register(LastNorm)
    clash = type("Clash", (LastNorm,), {"name": "peterrec"})
    with pytest.raises(ValueError, match="by peterrec_tf.transfer_methods.peterrec"):
        registry.register(clash)
    undeclared = type("Undeclared", (TransferMethod,), {"name": "undeclared",
                                                        "grafts_patches": False})
    with pytest.raises(ValueError, match="must declare changes_backbone, stored_alone"):
        registry.register(undeclared)
    with pytest.raises(ValueError, match="identifier"):
        registry.register(type("Nameless", (LastNorm,), {"name": "two words"}))
    assert registry.get("peterrec").name == "peterrec"  # the refused ones replaced nothing
    assert "undeclared" not in registry.names()


def test_the_built_in_methods_declare_what_the_consumers_once_hard_coded():
    declared = {name: (transfer_methods.get(name).grafts_patches,
                       transfer_methods.get(name).changes_backbone,
                       transfer_methods.get(name).stored_alone)
                for name in transfer_methods.names()}
    assert declared == {"peterrec": (True, False, True), "fineall": (False, True, False),
                        "finecls": (False, False, True), "finelast": (False, True, True)}
    for name in transfer_methods.names():
        assert transfer_methods.module_of(name) == f"peterrec_tf.transfer_methods.{name}"


def test_a_method_must_say_what_trains_and_read_the_patch_flags_iff_it_grafts(registry):
    silent = type("Silent", (TransferMethod,), {
        "name": "silent", "grafts_patches": False, "changes_backbone": False,
        "stored_alone": True})
    with pytest.raises(ValueError, match="'silent' must define mark_trainable"):
        registry.register(silent)
    grafting_deaf = type("GraftingDeaf", (LastNorm,), {"name": "graftingdeaf",
                                                       "grafts_patches": True})
    with pytest.raises(ValueError, match="grafts patches reads all of insertion"):
        registry.register(grafting_deaf)
    plain_listening = type("PlainListening", (LastNorm,), {
        "name": "plainlistening", "settings": transfer_methods.PATCH_SETTINGS})
    with pytest.raises(ValueError, match="one that does not reads none of them"):
        registry.register(plain_listening)
    assert not {"silent", "graftingdeaf", "plainlistening"} & set(registry.names())

