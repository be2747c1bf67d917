"""Fault injection (issue 13): every fault gives a clear error or a warning, never a wrong
answer with exit 0, and the last good checkpoint / dataset stays intact and usable.

Tiny models (8 channels, dilations 1,2, batch 16, a few steps, no XLA) on one small
synthetic preparation shared by the module; command-line runs only where the exit code
and message are the point, and those run in parallel.
"""

import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from pipelines import inputs
from pipelines.errors import DataError
from pipelines.locking import DirectoryInUse, exclusive_lock
from pipelines.prepare import prepare
from peterrec_tf.metrics import HitRate, NDCG, true_ranks
from peterrec_tf.model_dir import config_checksum
from peterrec_tf.training import results
from peterrec_tf.training.checkpointing import TrainingState
from peterrec_tf.training.finite import NonFiniteError

MODEL = dict(channels=8, dilations=(1, 2), batch_size=16, eval_batch_size=64, log_every=100,
             checkpoint_every=2, num_candidates=11, eval_ranking="sampled", jit_compile=False)
FINETUNE = {k: v for k, v in MODEL.items() if k not in ("channels", "dilations")}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A prepared synthetic dataset and a pre-trained run (checkpoints at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("faults")
    data = str(root / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=80, num_items=40, num_clusters=4,
            min_len=5, max_len_generated=15, num_targets=12, log=quiet)
    from peterrec_tf.jobs.pretraining import run_pretrain

    model_dir = str(root / "pre")
    run_pretrain(os.path.join(data, "pretrain"), model_dir, train_steps=4, log=quiet, **MODEL)
    return {"root": root, "data": data, "pretrain": os.path.join(data, "pretrain"),
            "coldrec": os.path.join(data, "coldrec"), "model_dir": model_dir}


def command(*args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def tiny_flags(data_dir, model_dir, **extra):
    flags = {"data_dir": data_dir, "model_dir": model_dir, "channels": 8, "dilations": "1,2",
             "batch_size": 16, "train_steps": 4, "checkpoint_every": 1, "eval_ranking": "sampled",
             "num_candidates": 11, "jit_compile": "false", **extra}
    return [f"--{k}={v}" for k, v in flags.items()]


def truncate(path, size):
    with open(path, "r+b") as handle:
        handle.truncate(size)


def copy_dataset(source, target):
    shutil.copytree(source, target)
    return target


# --- NaN / Inf ------------------------------------------------------------------------------

def test_non_finite_scores_never_hit():
    nan, inf = float("nan"), float("inf")
    # sampled: [truth, competitors...]
    scores = tf.constant([[nan, 1.0, 2.0, 3.0], [5.0, nan, 1.0, 2.0], [inf, 1.0, 2.0, 3.0],
                          [5.0, 1.0, 2.0, 3.0], [nan] * 4], tf.float32)
    candidates = tf.constant([[0, 1, 2, 3]] * 5)
    ranks = true_ranks(candidates, scores).numpy()
    assert ranks[0] > 10 and ranks[2] > 10 and ranks[4] > 10  # non-finite truth: a miss
    assert ranks[1] == 1 and ranks[3] == 0                    # NaN competitor beats it
    hr = HitRate(10)
    hr.update_state(candidates, scores)
    assert math.isclose(float(hr.result()), 2 / 5, rel_tol=1e-6)
    # full ranking (id 0 excluded) with an all-NaN model: nothing, not a perfect score
    ndcg = NDCG(10)
    ndcg.update_state(tf.constant([1, 2]), tf.fill([2, 5], nan))
    assert float(ndcg.result()) == 0.0
    assert true_ranks(tf.constant([1]), tf.constant([[0.0, 1.0, nan, 0.5]])).numpy()[0] == 1


@pytest.mark.parametrize("setting", [{"learning_rate": float("nan")},
                                     {"learning_rate": float("inf")}, {"learning_rate": 0.0},
                                     {"epochs": float("nan")}, {"batch_size": -1},
                                     {"channels": 0}, {"dilations": ()}, {"mask_rate": 1.5},
                                     {"checkpoint_every": 0}, {"ks": (0,)}])
def test_bad_settings_are_refused_before_anything_is_written(run, tmp_path, setting):
    from peterrec_tf.jobs.pretraining import run_pretrain

    model_dir = str(tmp_path / "never")
    name = next(iter(setting))
    with pytest.raises(ValueError, match=f"--{name}"):
        run_pretrain(run["pretrain"], model_dir, **{**MODEL, **setting}, log=quiet)
    assert not os.path.exists(model_dir)


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    from peterrec_tf.training import loop

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.ones((40, 2), "float32")
    x[8:12] = np.nan  # the third batch of 4 poisons the loss

    def make_dataset():
        return tf.data.Dataset.from_tensor_slices((x, np.ones((40, 1), "float32"))).batch(4) \
            .repeat()

    with pytest.raises(NonFiniteError, match="loss is nan at step 3.*step 2"):
        loop.train(model, make_dataset, 6, str(tmp_path), batch_size=4, checkpoint_every=1, log=quiet)
    state = TrainingState(model, str(tmp_path))
    assert state.manager.latest_checkpoint.endswith("ckpt-2")
    state.restore(quiet)
    assert state.current_step == 2
    assert all(np.isfinite(v.numpy()).all() for v in model.variables)


def test_non_finite_weights_are_never_saved(tmp_path):
    from peterrec_tf.model_dir import save_model_dir
    from peterrec_tf.models import Backbone, NextItNet

    model = NextItNet(Backbone(20, 8, (1, 2)))
    model.build()
    variable = model.backbone.trainable_variables[0]
    variable.assign(tf.fill(variable.shape, float("nan")))
    with pytest.raises(NonFiniteError, match=variable.path):
        save_model_dir(str(tmp_path / "out"), model)
    assert not os.path.exists(tmp_path / "out")


# --- checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_checkpoint_that_fails_to_restore_falls_back_to_the_previous_one(tmp_path, damage):
    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse")
    state = TrainingState(model, str(tmp_path))
    state.step.assign(1)
    state.save()
    kept = [v.numpy().copy() for v in model.variables]
    for variable in model.variables:
        variable.assign(variable + 1.0)
    state.step.assign(2)
    state.save()
    (data,) = glob.glob(str(tmp_path / "checkpoints" / "ckpt-2.data-*"))
    if damage == "truncate":
        truncate(data, os.path.getsize(data) // 2)
    else:
        raw = bytearray(open(data, "rb").read())
        raw[len(raw) // 2] ^= 0xFF
        open(data, "wb").write(bytes(raw))
    for variable in model.variables:
        variable.assign(tf.zeros_like(variable))
    said = []
    fallback = TrainingState(model, str(tmp_path))
    assert fallback.restore(said.append).endswith("ckpt-1") and fallback.current_step == 1
    assert "ckpt-2" in said[0] and "does not restore" in said[0]
    for value, variable in zip(kept, model.variables):
        np.testing.assert_array_equal(value, variable.numpy())
    truncate(glob.glob(str(tmp_path / "checkpoints" / "ckpt-1.data-*"))[0], 1)
    with pytest.raises(ValueError, match="no checkpoint .* restores"):
        TrainingState(model, str(tmp_path)).restore(quiet)


def test_a_copied_run_directory_resumes(run, tmp_path):
    from peterrec_tf.jobs.pretraining import run_pretrain

    copy = str(tmp_path / "copied")
    shutil.copytree(run["model_dir"], copy)
    moved_data = copy_dataset(run["pretrain"], str(tmp_path / "moved-data"))
    said = []
    report = run_pretrain(moved_data, copy, train_steps=4, log=said.append, **MODEL)
    assert report["training"]["resumed_from"] == 4
    assert any("already trained" in line for line in said)


def test_the_resume_comparison_ignores_paths_and_evaluation_only_settings(tmp_path):
    stored = {"model_dir": "/a", "data_dir": "/d", "data_fingerprint": "f1",
              "num_candidates": 200, "ks": [5], "select_metric": "", "channels": 8}
    results.record_config(str(tmp_path), stored)
    results.record_config(str(tmp_path), dict(stored, model_dir="/b", data_dir="/e",
                                               num_candidates=50, ks=[10]))
    with pytest.raises(ValueError, match=r"the data \(metadata.json fingerprint\): .f1. -> .f2."):
        results.record_config(str(tmp_path), dict(stored, data_fingerprint="f2"))
    selecting = str(tmp_path / "selecting")
    results.record_config(selecting, dict(stored, select_metric="hr@5"))
    with pytest.raises(ValueError, match="num_candidates"):
        results.record_config(selecting, dict(stored, select_metric="hr@5", num_candidates=50))


def test_a_setting_newer_than_the_stored_run_compares_with_its_default(run, tmp_path):
    """A run recorded before a setting existed ran at the setting's default: resuming it
    with another value changes what is trained, so it is refused; the default resumes."""
    from peterrec_tf.jobs.pretraining import PretrainingJob, run_pretrain

    stored = {"model_dir": "/a", "channels": 8, "select_metric": ""}
    results.record_config(str(tmp_path), stored)
    defaults = {"channels": 64, "window_stride": 0, "feed_forward_dim": 0}
    results.record_config(str(tmp_path), dict(stored, window_stride=0), defaults=defaults)
    with pytest.raises(ValueError, match=r"window_stride: 0 -> 4"):
        results.record_config(str(tmp_path), dict(stored, window_stride=4), defaults=defaults)
    assert PretrainingJob.defaults["window_stride"] == 0
    # through the job: a copy of a finished run whose flags.json predates --window_stride
    old = str(tmp_path / "old")
    shutil.copytree(run["model_dir"], old)
    flags = os.path.join(old, "flags.json")
    recorded = json.load(open(flags))
    del recorded["window_stride"]
    with open(flags, "w", encoding="utf-8") as handle:
        json.dump(recorded, handle)
    with pytest.raises(ValueError, match="window_stride: 0 -> 2"):
        run_pretrain(run["pretrain"], old, train_steps=4, window_stride=2, log=quiet, **MODEL)
    report = run_pretrain(run["pretrain"], old, train_steps=4, log=quiet, **MODEL)
    assert report["training"]["resumed_from"] == 4


# --- one job per directory ------------------------------------------------------------------

def test_a_second_job_on_a_model_dir_in_use_is_refused(run):
    from peterrec_tf.jobs.pretraining import run_pretrain

    flags = os.path.join(run["model_dir"], "flags.json")
    before = open(flags).read()
    with exclusive_lock(run["model_dir"]):
        with pytest.raises(DirectoryInUse, match=f"is in use by pid {os.getpid()}"):
            run_pretrain(run["pretrain"], run["model_dir"], train_steps=4, log=quiet, **MODEL)
    assert open(flags).read() == before


def test_a_second_preparation_of_an_output_dir_in_use_is_refused(tmp_path):
    stale = tmp_path / ".out.tmp-running"
    stale.mkdir()
    with exclusive_lock(str(tmp_path), ".out.lock"):
        with pytest.raises(DirectoryInUse, match="out is in use by pid"):
            prepare("synthetic", str(tmp_path / "out"), log=quiet, num_users=20, num_items=20)
    assert stale.exists()  # it belongs to the running job
    prepare("synthetic", str(tmp_path / "out"), log=quiet, num_users=20, num_items=20,
            num_clusters=2, num_targets=5)
    assert not stale.exists()  # left by a killed job: removed by the next one
    assert not glob.glob(str(tmp_path / ".out.tmp-*"))


# --- data integrity -------------------------------------------------------------------------

def test_metadata_records_every_shard(run):
    meta = inputs.read_metadata(run["pretrain"])
    for split, count in meta["splits"].items():
        listed = {k: v for k, v in meta["shards"].items() if k.startswith(split + "-")}
        assert sum(v["records"] for v in listed.values()) == count
        assert inputs.verify_split(run["pretrain"], split) == count
    assert all(len(v["sha256"]) == 64 for v in meta["shards"].values())


def test_a_truncated_shard_is_an_error_naming_it(run, tmp_path):
    from peterrec_tf.jobs.evaluating import run_evaluate

    data = copy_dataset(run["pretrain"], str(tmp_path / "data"))
    shard = inputs.shard_files(data, "test")[0]
    truncate(shard, os.path.getsize(shard) // 2)
    with pytest.raises(DataError, match=f"{shard}: .*truncated"):
        run_evaluate(run["model_dir"], data, num_candidates=11, log=quiet)
    with pytest.raises(DataError, match=shard):
        inputs.verify_split(data, "test")
    assert inputs.verify_split(run["pretrain"], "test") == 80  # the original is untouched


def cut_points(shard):
    """(a size at which the shard raises, a size at which it reads short) for this shard."""
    raw = open(shard, "rb").read()
    full = sum(1 for _ in tf.data.TFRecordDataset(shard, compression_type="GZIP"))
    raising = short = None
    for size in range(len(raw) // 4, len(raw), 7):
        with open(shard + ".cut", "wb") as handle:
            handle.write(raw[:size])
        try:
            count = sum(1 for _ in tf.data.TFRecordDataset(shard + ".cut", compression_type="GZIP"))
        except tf.errors.DataLossError:
            raising = raising or size
        else:
            short = short or (size if count < full else None)
        if raising and short:
            break
    os.remove(shard + ".cut")
    return raising, short


def test_old_preparations_without_shard_records_are_still_verified_by_count(run, tmp_path):
    from peterrec_tf.jobs.evaluating import run_evaluate

    data = copy_dataset(run["pretrain"], str(tmp_path / "old"))
    path = os.path.join(data, "metadata.json")
    meta = json.load(open(path))
    del meta["shards"], meta["metadata_sha256"], meta["vocab_sha256"]
    json.dump(meta, open(path, "w"))
    assert run_evaluate(run["model_dir"], data, num_candidates=11, log=quiet)["examples"] == 80
    shard = inputs.shard_files(data, "test")[0]
    raising, short = cut_points(shard)
    original = open(shard, "rb").read()
    truncate(shard, raising)  # TF's DataLossError names no file: the message must
    with pytest.raises(DataError, match=f"{shard}: corrupt or truncated"):
        run_evaluate(run["model_dir"], data, num_candidates=11, log=quiet)
    open(shard, "wb").write(original)
    truncate(shard, short)  # reads short without any TF error
    with pytest.raises(DataError, match=r"scored \d+ test records, metadata.json records 80"):
        run_evaluate(run["model_dir"], data, num_candidates=11, log=quiet)


def test_data_loss_during_training_names_the_shard(run, tmp_path):
    from peterrec_tf.jobs.finetuning import run_finetune

    data = copy_dataset(run["coldrec"], str(tmp_path / "old"))
    path = os.path.join(data, "metadata.json")
    meta = json.load(open(path))
    del meta["shards"], meta["metadata_sha256"], meta["vocab_sha256"]  # an old preparation:
    json.dump(meta, open(path, "w"))  # nothing to check sizes against
    shard = inputs.shard_files(data, "train")[0]
    truncate(shard, cut_points(shard)[0])
    with pytest.raises(DataError, match=f"{shard}: corrupt or truncated"):
        run_finetune(run["model_dir"], data, str(tmp_path / "ft"), **FINETUNE, train_steps=30,
                     log=quiet)


# --- validate first, then touch disk --------------------------------------------------------

def test_finetune_candidates_beyond_the_targets_are_refused_before_training(run, tmp_path):
    from peterrec_tf.jobs.finetuning import run_finetune

    model_dir = str(tmp_path / "ft")
    with pytest.raises(ValueError, match="--num_candidates: 50 candidates need"):
        run_finetune(run["model_dir"], run["coldrec"], model_dir,
                     **{**FINETUNE, "num_candidates": 50}, train_steps=2, log=quiet)
    assert not os.path.exists(model_dir)


def test_vocabularies_are_compared_by_size_and_content(run, tmp_path):
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.jobs.finetuning import run_finetune

    data = copy_dataset(run["pretrain"], str(tmp_path / "other-vocab"))
    vocab = os.path.join(data, "vocab", "items.txt")
    tokens = open(vocab).read().splitlines()
    tokens[1], tokens[2] = tokens[2], tokens[1]  # same size, other ids
    open(vocab, "w").write("\n".join(tokens) + "\n")
    with pytest.raises(ValueError, match="differs from"):
        run_evaluate(run["model_dir"], data, num_candidates=11, log=quiet)
    bare = shutil.copytree(run["model_dir"], str(tmp_path / "no-vocab"),
                           ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    os.remove(os.path.join(bare, "vocab.txt"))  # as a conversion without --vocab_csv writes
    config = results.read_json(os.path.join(bare, "config.json"))
    del config["checksums"]["vocab.txt"], config["vocab_files"]
    config["config_sha256"] = config_checksum(config)
    results.write_json(os.path.join(bare, "config.json"), config)
    said = []
    run_finetune(bare, run["coldrec"], str(tmp_path / "ft"), **FINETUNE, train_steps=1,
                 log=said.append)
    assert any("no vocab.txt; only the vocabulary size" in line for line in said)


# --- prepare --------------------------------------------------------------------------------

def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf"])
def test_non_finite_timestamps_are_bad_lines(tmp_path, stamp):
    log = write(tmp_path / "log.csv", f"user,item,timestamp\nu,a,1\nu,b,{stamp}\nu,c,3\n")
    with pytest.raises(DataError, match=f"log.csv:3: timestamp '{stamp}' is not a finite"):
        prepare("interactions", str(tmp_path / "out"), log, log=quiet)
    assert not os.path.exists(tmp_path / "out")


def test_duplicates_oov_and_unseen_targets_are_counted_and_warned(run, tmp_path):
    rows = ["user,item,timestamp"]
    for user in range(10):
        rows += [f"u{user},{1 + user % 3},1", f"u{user},{1 + user % 3},1",
                 f"u{user},{2 + user % 3},2", f"u{user},unknown{user},3", f"u{user},x{user},4"]
    said = []
    prepare("interactions", str(tmp_path / "out"), write(tmp_path / "log.csv", "\n".join(rows)),
            vocab=os.path.join(run["pretrain"], "vocab", "items.txt"), log=said.append)
    summary = inputs.read_metadata(str(tmp_path / "out"))["summary"]
    assert summary["duplicate_interactions"] == 10
    assert summary["oov_share"] > 0.05 and summary["unseen_test_target_share"] == 1.0
    assert len(summary["warnings"]) == 3
    warnings = [line for line in said if line.startswith("warning: ")]
    assert len(warnings) == 3 and any("10 duplicate" in line for line in warnings)
    assert any("of test targets (10) never occur in training" in line for line in warnings)


def test_a_killed_preparation_leaves_the_old_dataset_and_its_temporaries_are_removed(tmp_path):
    out = str(tmp_path / "out")
    small = dict(num_clusters=2, num_targets=5, log=quiet)
    prepare("synthetic", out, num_users=30, num_items=20, **small)
    before = inputs.read_metadata(os.path.join(out, "pretrain"))["fingerprint"]
    job = command("pipelines.prepare", "--format=synthetic", f"--output_dir={out}",
                  "--overwrite", "--synthetic_users=6000", "--synthetic_items=200")
    while job.poll() is None and not glob.glob(str(tmp_path / ".out.tmp-*")):
        time.sleep(0.005)
    job.kill()  # SIGKILL while it writes
    job.communicate()
    assert glob.glob(str(tmp_path / ".out.tmp-*")), "the job finished before it was killed"
    assert inputs.read_metadata(os.path.join(out, "pretrain"))["fingerprint"] == before
    assert inputs.verify_split(os.path.join(out, "pretrain"), "test") == 30
    said = []
    prepare("synthetic", out, num_users=30, num_items=20, num_clusters=2, num_targets=5,
            log=said.append)  # the same preparation: nothing to do but clean up
    assert not glob.glob(str(tmp_path / ".out.tmp-*"))
    assert any("left by an interrupted preparation" in line for line in said)


def test_a_one_field_header_hints_at_the_delimiter(tmp_path):
    log = write(tmp_path / "log.csv", "user;item;timestamp\nu;a;1\n")
    with pytest.raises(DataError, match="set --delimiter"):
        prepare("interactions", str(tmp_path / "out"), log, log=quiet)


def test_an_unwritable_output_is_refused_before_the_input_is_read(tmp_path):
    blocker = write(tmp_path / "file", "")
    with pytest.raises(DataError, match="file: not a directory"):  # the input is never read
        prepare("interactions", os.path.join(blocker, "out"), str(tmp_path / "missing.csv"),
                log=quiet)


# --- the command line: exit codes and messages ----------------------------------------------

def test_the_commands_fail_with_one_line_and_exit_2(run, tmp_path):
    bad_data = copy_dataset(run["pretrain"], str(tmp_path / "bad"))
    shard = inputs.shard_files(bad_data, "test")[0]
    truncate(shard, os.path.getsize(shard) // 2)
    diverge = str(tmp_path / "diverge")
    with exclusive_lock(run["model_dir"]):
        jobs = {
            "diverge": command("peterrec_tf.pretrain",
                               *tiny_flags(run["pretrain"], diverge, learning_rate=1e38)),
            "batch": command("peterrec_tf.pretrain",
                             *tiny_flags(run["pretrain"], str(tmp_path / "b"), batch_size=-1)),
            "locked": command("peterrec_tf.pretrain",
                              *tiny_flags(run["pretrain"], run["model_dir"])),
            "shard": command("peterrec_tf.evaluate", f"--model_dir={run['model_dir']}",
                             f"--data_dir={bad_data}", "--num_candidates=11"),
        }
        done = {name: (job.communicate(timeout=300), job.returncode) for name, job in jobs.items()}
    for name, ((out, err), code) in done.items():
        assert code == 2 and "Traceback" not in err, (name, code, err[-3000:])
    assert "training diverged" in done["diverge"][0][1]
    for index in glob.glob(os.path.join(diverge, "checkpoints", "ckpt-*.index")):
        reader = tf.train.load_checkpoint(index[:-len(".index")])  # only finite ones written
        assert all(np.isfinite(reader.get_tensor(name)).all()
                   for name, dtype in reader.get_variable_to_dtype_map().items()
                   if dtype.is_floating)
    assert not os.path.exists(os.path.join(diverge, "model.keras"))
    assert "error: --batch_size must be >= 1, got -1" in done["batch"][0][1]
    assert not os.path.exists(tmp_path / "b")
    assert f"is in use by pid {os.getpid()}" in done["locked"][0][1]
    assert f"error: {shard}: " in done["shard"][0][1]


def test_a_full_softmax_that_cannot_fit_is_refused_before_anything_is_written(tmp_path):
    """At a catalogue of 400K items a full softmax over batches of 32 x 100 positions would
    form 5 GB of logits: refused with what to do instead, nothing written. The bounded
    sampled softmax (the dot head's default) is the way through."""
    from pipelines.paper_log import write_paper_log
    from pipelines.vocab import UNK, write_tokens
    from peterrec_tf.jobs.pretraining import run_pretrain
    catalogue = str(tmp_path / "catalogue.txt")
    write_tokens(catalogue, [UNK] + [str(i + 1) for i in range(400_000)])
    log_path = str(tmp_path / "events.tsv")
    write_paper_log(log_path, 3_000, num_items=400_000, history=100, prefix="")
    prepare("interactions", str(tmp_path / "data"), input=log_path, vocab=catalogue,
            max_len=100, log=lambda *_: None)
    data = str(tmp_path / "data")
    for head, sampled in (("full", 0), ("dot", 0)):
        model_dir = tmp_path / f"model_{head}"
        with pytest.raises(ValueError, match=r"full softmax over 400,001 items .* GB.*--head=dot"):
            run_pretrain(data, str(model_dir), head=head, num_sampled=sampled, channels=8,
                         dilations=(1,), train_steps=1, log=lambda *_: None)
        assert not model_dir.exists()


class _StopWhileWritten:
    """A value whose JSON form (default=str) is Ctrl-C arriving mid-write."""

    def __str__(self):
        raise KeyboardInterrupt


@pytest.mark.parametrize("writer", ["training.results.write_json",
                                    "experiments.transfer.runner.save_results"])
def test_an_interrupted_json_write_leaves_the_previous_file_whole(tmp_path, writer):
    """evaluate's results, every job's results.json and the transfer report are written
    this way: a stop mid-write leaves the previous file as it was and no temporary."""
    import importlib

    module, name = writer.rsplit(".", 1)
    write = getattr(importlib.import_module(f"peterrec_tf.{module}"), name)
    path = tmp_path / "results.json"
    path.write_text('{"previous": 1}')
    with pytest.raises(KeyboardInterrupt):
        write(str(path), {"a": list(range(1000)), "z": _StopWhileWritten()})
    assert os.listdir(tmp_path) == ["results.json"]
    assert path.read_text() == '{"previous": 1}'
