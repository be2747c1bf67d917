"""Keras habits on a saved model, in a fresh process: `keras.saving.load_model` gives a
model that summarises, predicts as the job's model did, exports (`model.export`) a
SavedModel that answers the same, and trains on with `fit`, without Keras warnings."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from peterrec_tf.jobs.finetuning import run_finetune
from peterrec_tf.jobs.pretraining import run_pretrain
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}
STEPS = {"batch_size": 16, "train_steps": 3, "checkpoint_every": 3, "log_every": 3}

ROUND_TRIP = r"""
import json, sys, warnings
import numpy as np
import keras
import peterrec_tf  # registers the models (and the optimizer a compile config names)
import tensorflow as tf

path, ids_file, export_dir = sys.argv[1:]
ids = np.load(ids_file)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = keras.saving.load_model(path)
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    predicted = model.predict(ids, verbose=0)
    model.export(export_dir, verbose=False)
    exported = tf.saved_model.load(export_dir)  # held: its variables live with it
    served = exported.serve(tf.constant(ids)).numpy()
    before = [w.copy() for w in model.get_weights()]
    if model.task == "pretrain":
        history = model.fit(ids[:, :-1], ids[:, 1:], epochs=1, verbose=0)
    else:
        history = model.fit(ids, np.arange(len(ids)) % model.num_outputs, epochs=1, verbose=0)
    changed = sum(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
np.save(ids_file + ".predicted.npy", predicted)
print(json.dumps({"summary": "\n".join(lines), "served_vs_predicted":
                  float(np.abs(served - predicted).max()),
                  "loss": history.history["loss"], "changed": changed,
                  "warnings": [str(w.message) for w in caught
                               if "keras" in (w.filename or "")]}))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("round_trip")
    data = str(root / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=80, num_items=40, num_clusters=4,
            num_targets=20, **quiet)
    pre = str(root / "pre")
    run_pretrain(os.path.join(data, "pretrain"), pre, channels=8, dilations=(1, 2), **STEPS,
                 **quiet)
    task = str(root / "task")
    run_finetune(pre, os.path.join(data, "attribute"), task, save_full_model=True, **STEPS,
                 **quiet)
    return {"pre": pre, "task": task}


@pytest.mark.parametrize("which", ["pre", "task"])
def test_a_loaded_model_summarises_predicts_exports_and_trains(saved, which, tmp_path):
    import keras

    model_dir = saved[which]
    ids = np.random.RandomState(0).randint(1, 40, (4, 12)).astype("int32")
    ids_file = str(tmp_path / "ids.npy")
    np.save(ids_file, ids)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP, os.path.join(model_dir, "model.keras"),
                           ids_file, str(tmp_path / "exported")], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Total params" in result["summary"], result["summary"]
    assert result["warnings"] == []
    # what the job's model answers, loaded here in this process
    expected = keras.saving.load_model(os.path.join(model_dir, "model.keras"),
                                       compile=False).predict(ids, verbose=0)
    np.testing.assert_allclose(np.load(ids_file + ".predicted.npy"), expected, atol=1e-5)
    assert result["served_vs_predicted"] < 1e-5
    assert np.isfinite(result["loss"]).all() and result["changed"] > 0
