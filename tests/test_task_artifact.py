"""A fine-tuned task stored as only what it trained, over its pre-trained backbone."""

import os

import keras
import numpy as np
import pytest

from peterrec_tf.serving.saved_model import export
from peterrec_tf.model_dir import load_model_dir, save_model_dir
from peterrec_tf.models import Backbone, NextItNet, build_finetuner
from peterrec_tf.task_artifact import TASK_WEIGHTS_FILE, backbone_fingerprint

VOCAB = ["<UNK>"] + [f"i{n}" for n in range(1, 300)]
quiet = {"log": lambda *_: None}


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path)
               for f in files)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    keras.utils.set_random_seed(3)
    backbone = Backbone(len(VOCAB), channels=32, dilations=(1, 2, 1, 2), causal=True)
    pre = NextItNet(backbone)
    pre.build()
    save_model_dir(str(root / "pre"), pre, {"max_len": 10}, {"items": VOCAB})
    loaded, _, _ = load_model_dir(str(root / "pre"))
    models = {}
    for name, method, task, outputs in (("rec", "peterrec", "item_rec", 20),
                                        ("gender", "peterrec", "classify", 2),
                                        ("last", "finelast", "classify", 3)):
        model = build_finetuner(loaded.backbone, method, task, outputs,
                                loss="ce" if task == "classify" else "pairwise")
        rng = np.random.RandomState(len(name))
        for weight in model.trainable_weights:  # what fine-tuning moved
            weight.assign(rng.randn(*weight.shape).astype("float32") * 0.1)
        save_model_dir(str(root / name), model, {"max_len": 10}, {"items": VOCAB},
                       task_over=(str(root / "pre"), loaded.backbone))
        models[name] = model
    return root, pre, models


def test_task_directory_holds_only_the_task_and_loads_to_the_same_model(setup):
    root, pre, models = setup
    ids = np.random.RandomState(0).randint(1, len(VOCAB), (4, 12)).astype("int32")
    for name, model in models.items():
        directory = str(root / name)
        assert not os.path.exists(os.path.join(directory, "model.keras"))
        loaded, config, vocabs = load_model_dir(directory)
        assert config["backbone_fingerprint"] == backbone_fingerprint(pre.backbone)
        assert loaded.method == model.method and vocabs["items"] == VOCAB
        np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())
        for mine, theirs in zip(loaded.weights, model.weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    # bytes: a PeterRec task is a few per cent of the pre-trained model
    share = directory_bytes(str(root / "rec")) / directory_bytes(str(root / "pre"))
    assert share < 0.25, share
    stored = np.load(os.path.join(root, "rec", TASK_WEIGHTS_FILE))
    assert not [k for k in stored.files if "item_embedding" in k or "dilated_conv" in k]


def test_another_backbone_is_refused_and_a_moved_one_is_found_by_flag(setup, tmp_path):
    root, pre, _ = setup
    keras.utils.set_random_seed(4)
    other = NextItNet(Backbone(len(VOCAB), channels=32, dilations=(1, 2, 1, 2), causal=True))
    other.build()
    save_model_dir(str(tmp_path / "other"), other, {"max_len": 10}, {"items": VOCAB})
    with pytest.raises(ValueError, match="is not the one .* was fine-tuned on"):
        load_model_dir(str(root / "rec"), backbone_dir=str(tmp_path / "other"))
    os.rename(root / "pre", tmp_path / "moved")
    try:
        with pytest.raises(FileNotFoundError, match="--backbone_dir"):
            load_model_dir(str(root / "rec"))
        model, _, _ = load_model_dir(str(root / "rec"), backbone_dir=str(tmp_path / "moved"))
        assert model.method == "peterrec"
    finally:
        os.rename(tmp_path / "moved", root / "pre")


def test_a_changed_frozen_weight_cannot_be_stored_as_a_task(setup, tmp_path):
    root, pre, models = setup
    loaded, _, _ = load_model_dir(str(root / "pre"))
    model = build_finetuner(loaded.backbone, "peterrec", "classify", 2, loss="ce")
    model.backbone.blocks[0].conv1.kernel.assign(model.backbone.blocks[0].conv1.kernel + 1e-6)
    with pytest.raises(ValueError, match="frozen weights differ"):
        save_model_dir(str(tmp_path / "bad"), model, {}, {}, task_over=(str(root / "pre"),
                                                                        loaded.backbone))


def test_task_directories_export_over_one_backbone(setup, tmp_path):
    root, pre, models = setup
    report = export([("rec", str(root / "rec")), ("gender", str(root / "gender"))],
                    str(tmp_path / "sm"), "tasks", **quiet)
    assert report["variables_bytes"] <= 1.1 * report["weight_bytes"] + 20_000
    assert report["weight_bytes"] < 0.6 * report["separate_full_models_bytes"]


def test_a_trained_task_exports_from_a_fresh_process(setup, tmp_path):
    """A task saved by a job is compiled (FusedAdam in its stored compile config): the
    export command, a process that imports no training code, must still load it."""
    import subprocess
    import sys
    from conftest import REPO_ROOT
    from peterrec_tf.training.optimizer import FusedAdam
    root, pre, _ = setup
    loaded, _, _ = load_model_dir(str(root / "pre"))
    model = build_finetuner(loaded.backbone, "peterrec", "classify", 2, loss="ce")
    model.compile(optimizer=FusedAdam(1e-3))
    save_model_dir(str(tmp_path / "task"), model, {"max_len": 10}, {"items": VOCAB},
                   task_over=(str(root / "pre"), loaded.backbone))
    done = subprocess.run(
        [sys.executable, "-m", "peterrec_tf.export", f"--tasks=t={tmp_path / 'task'}",
         f"--export_base={tmp_path / 'sm'}", "--max_len=10"],
        cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT), capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.isdir(tmp_path / "sm" / "peterrec" / "1" / "variables")


def test_an_export_of_several_tasks_loads_their_backbone_once(setup, tmp_path, monkeypatch):
    """At 645K items each load of the pre-trained directory is 1.3 GB: N tasks over it load
    it once per export (and each process that loads one task still loads it itself)."""
    import peterrec_tf.model_dir as model_dir
    import peterrec_tf.model_files as model_files
    root, pre, models = setup
    calls = []
    real = model_files.load_model_file  # every whole model.keras is read through it

    def counting(directory, *args, **kwargs):
        calls.append(os.path.realpath(directory))
        return real(directory, *args, **kwargs)
    monkeypatch.setattr(model_files, "load_model_file", counting)
    report = export([("rec", str(root / "rec")), ("gender", str(root / "gender"))],
                    str(tmp_path / "sm"), "tasks", **quiet)
    assert calls.count(os.path.realpath(root / "pre")) == 1, calls
    assert sorted(report["tasks"]) == ["gender", "rec"]
    calls.clear()
    for _ in range(2):  # outside an export nothing is kept between loads
        model_dir.load_model_dir(str(root / "rec"))
    assert calls.count(os.path.realpath(root / "pre")) == 2, calls


FRESH_LOAD = r"""
import sys
import keras
import numpy as np
import peterrec_tf  # all the README's Python API asks for
import peterrec_tf.model_dir  # the loader it names; nothing that registers metrics
task, full = sys.argv[1:]
model, _, _ = peterrec_tf.model_dir.load_model_dir(task)
whole = keras.saving.load_model(full + "/model.keras")  # compiled: its metrics too
ids = np.array([[1, 2, 3]], "int32")
print(model(ids).shape[-1], whole(ids).shape[-1], type(whole.compiled_metrics).__name__)
"""


def test_a_task_compiled_with_ranking_metrics_loads_after_import_peterrec_tf(setup, tmp_path):
    """A fine-tuned item-rec task's stored compile config names `HitRate` (fine-tuning
    with negatives compiles it): in a fresh process that imports only `peterrec_tf`,
    `load_model_dir` (task stored alone) and `keras.saving.load_model` (whole model.keras)
    both load it; earlier imports of this test process cannot hide a missing registration."""
    import subprocess
    import sys
    from conftest import REPO_ROOT
    from peterrec_tf.metrics import HitRate
    root, pre, _ = setup
    loaded, _, _ = load_model_dir(str(root / "pre"))
    for name, task_over in (("task", (str(root / "pre"), loaded.backbone)), ("full", None)):
        model = build_finetuner(loaded.backbone, "peterrec", "item_rec", 7, loss="pairwise")
        model.compile(optimizer="adam", metrics=[HitRate(1, name="pos_beats_neg")])
        save_model_dir(str(tmp_path / name), model, {"max_len": 10}, {"items": VOCAB},
                       task_over=task_over)
    done = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path / "task"), str(tmp_path / "full")],
        cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:2] == ["7", "7"], done.stdout
