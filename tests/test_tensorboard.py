"""TensorBoard as a job leaves it, read back from the event files: train and validation
as separate runs, the learning rate, the final validation (the --select_metric choice) and
test metrics equal to results.json's, and the HParams session with the settings."""

import collections
import glob
import os

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import plugin_data_pb2

from peterrec_tf.jobs.pretraining import run_pretrain
from pipelines.prepare import prepare


def read_runs(model_dir):
    """{run: {tag: [(step, value or plugin data)]}} ("." is the session directory)."""
    root = os.path.join(model_dir, "tensorboard")
    runs = collections.defaultdict(lambda: collections.defaultdict(list))
    for path in glob.glob(os.path.join(root, "**", "events.out.tfevents.*"), recursive=True):
        run = os.path.relpath(os.path.dirname(path), root)
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data
                if plugin.plugin_name == "hparams":
                    runs[run][value.tag].append((event.step, plugin.content))
                else:
                    runs[run][value.tag].append(
                        (event.step, float(tf.make_ndarray(value.tensor))))
    return runs


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("tensorboard")
    data = str(root / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=80, num_items=40, num_clusters=4,
            num_targets=20, log=lambda *_: None)
    model_dir = str(root / "pre")
    report = run_pretrain(os.path.join(data, "pretrain"), model_dir, channels=8,
                          dilations=(1, 2), batch_size=16, train_steps=6, log_every=2,
                          eval_every=2, checkpoint_every=6, select_metric="ndcg@10",
                          learning_rate=2e-3, jit_compile=False, log=lambda *_: None)
    return model_dir, report, read_runs(model_dir)


def test_train_and_validation_are_separate_runs(job):
    _, report, runs = job
    assert {"train", "validation", "test"} <= set(runs)
    train = runs["train"]
    assert [step for step, _ in train["loss"]] == [2, 4, 6]
    assert [value for _, value in train["learning_rate"]] == pytest.approx([2e-3] * 3)
    assert train["loss"][-1][1] == pytest.approx(report["training"]["last_loss"], rel=1e-5)
    periodic = runs["validation"]["ndcg@10"]
    assert [step for step, _ in periodic] == [2, 4]  # the last step's is the final one
    assert "loss" not in runs["validation"] and "ndcg@10" not in train


def test_final_validation_and_test_metrics_are_the_results(job):
    _, report, runs = job
    for run, expected in (("validation", report["validation"]), ("test", report["test"])):
        for metric in ("hr@5", "mrr@10", "ndcg@10"):
            assert runs[run][f"final/{metric}"] == [
                (6, pytest.approx(expected[metric], rel=1e-6))], (run, metric)
        assert "final/examples" not in runs[run]


def test_hparams_session_names_the_settings_and_the_selected_metric(job):
    model_dir, _, runs = job
    session = runs["."]
    (_, experiment_bytes), = session["_hparams_/experiment"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(experiment_bytes).experiment
    metrics = [(m.name.group, m.name.tag) for m in experiment.metric_infos]
    assert metrics[0] == ("validation", "final/ndcg@10")
    assert ("test", "final/hr@5") in metrics
    assert {"channels", "learning_rate", "select_metric", "dilations"} <= {
        h.name for h in experiment.hparam_infos}
    (_, start_bytes), = session["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(start_bytes).session_start_info
    assert start.hparams["channels"].number_value == 8
    assert start.hparams["dilations"].string_value == "1,2"
    assert start.hparams["select_metric"].string_value == "ndcg@10"
    assert "data_dir" in start.hparams
