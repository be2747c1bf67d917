"""Fault injection on the jobs and their artifacts: no job runs on nothing, no metric is
trivially perfect, every file a job reads is verified by content, a pre-trained directory
that tasks depend on is never rewritten in place, and filesystem faults are one line.

Tiny models (8 channels, dilations 1,2, a few steps, no XLA) on one small synthetic
preparation shared by the module.
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from pipelines.prepare import prepare

from test_faults import FINETUNE, MODEL, quiet  # the same tiny settings as the other faults


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic preparation, a pre-trained model (2 steps) and a task stored over it."""
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain

    root = tmp_path_factory.mktemp("artifacts")
    data = str(root / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=80, num_items=40, num_clusters=4,
            min_len=5, max_len_generated=15, num_targets=12, log=quiet)
    pre = str(root / "pre")
    run_pretrain(os.path.join(data, "pretrain"), pre, train_steps=2, log=quiet, **MODEL)
    task = str(root / "task")
    run_finetune(pre, os.path.join(data, "coldrec"), task, train_steps=20, log=quiet,
                 **FINETUNE)
    return {"root": root, "data": data, "pretrain": os.path.join(data, "pretrain"),
            "coldrec": os.path.join(data, "coldrec"), "pre": pre, "task": task}


def command(*args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=300)


def evaluate(model_dir, data_dir, **extra):
    from peterrec_tf.jobs.evaluating import run_evaluate

    return run_evaluate(model_dir, data_dir, num_candidates=11, log=quiet, **extra)


def scores(results):
    """The metrics of an evaluation (without its timings)."""
    return {k: v for k, v in results.items() if "@" in k or k == "examples"}


def swap_two_ids(path):
    """Two ids of a vocabulary file exchanged: same size, other meaning."""
    lines = open(path).read().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    open(path, "w").write("\n".join(lines) + "\n")


def copy_dir(source, target):
    shutil.copytree(source, target)
    return str(target)


# --- no job runs on nothing -----------------------------------------------------------------


def emptied(source, target, split):
    """A copy of a preparation whose `split` holds no records, as a preparation that
    dropped every user as too short records it (older code wrote such datasets)."""
    copy_dir(source, target)
    path = os.path.join(target, "metadata.json")
    meta = json.load(open(path))
    meta["splits"][split] = 0
    meta["stats"].update(users=3, users_too_short=3, min_length=3)
    for key in ("shards", "metadata_sha256", "vocab_sha256"):
        meta.pop(key, None)
    json.dump(meta, open(path, "w"))
    for name in os.listdir(target):
        if name.startswith(f"{split}-"):
            os.remove(os.path.join(target, name))
    return str(target)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_training_on_an_empty_split_is_refused_before_anything_is_written(run, tmp_path, split):
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain

    data = emptied(run["pretrain"], tmp_path / "empty", split)
    with pytest.raises(ValueError, match=f"{data}: the {split} split holds no records .*3 of 3 "
                                         "users were dropped as shorter than the minimum length 3"):
        run_pretrain(data, str(tmp_path / "pre"), train_steps=2, log=quiet, **MODEL)
    assert not os.path.exists(tmp_path / "pre")
    coldrec = emptied(run["coldrec"], tmp_path / "cold", split)
    with pytest.raises(ValueError, match=f"{coldrec}: the {split} split holds no records"):
        run_finetune(run["pre"], coldrec, str(tmp_path / "ft"), train_steps=2, log=quiet,
                     **FINETUNE)
    assert not os.path.exists(tmp_path / "ft")


def test_evaluating_an_empty_split_is_refused(run, tmp_path):
    data = emptied(run["pretrain"], tmp_path / "empty", "test")
    with pytest.raises(ValueError, match="the test split holds no records.*nothing to evaluate"):
        evaluate(run["pre"], data)
    assert evaluate(run["pre"], data, split="validation")["examples"] > 0


# --- no trivially perfect metric ------------------------------------------------------------


@pytest.mark.parametrize("ranking,candidates,ks,count", [
    ("sampled", 10, (10, 20), 10), ("sampled", 11, (5, 11), 11), ("full", 11, (5, None), None)])
def test_a_cut_off_at_or_above_the_items_ranked_is_refused(run, tmp_path, ranking, candidates,
                                                            ks, count):
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain

    if count is None:  # full ranking: every item but id 0
        count = json.load(open(os.path.join(run["pretrain"], "metadata.json")))["num_items"] - 1
        ks = (5, count)
    message = rf"k={max(k for k in ks if k >= count)}|k={min(k for k in ks if k >= count)}"
    with pytest.raises(ValueError, match=rf"--ks=.*({message}) is not below the {count} items "
                                         r"ranked.*HR@\d+ = 1.0 for any model"):
        run_evaluate(run["pre"], run["pretrain"], ranking=ranking, num_candidates=candidates,
                     ks=ks, log=quiet)
    settings = dict(MODEL, eval_ranking=ranking, num_candidates=candidates, ks=ks)
    with pytest.raises(ValueError, match="is not below the"):
        run_pretrain(run["pretrain"], str(tmp_path / "pre"), train_steps=2, log=quiet,
                     **settings)
    assert not os.path.exists(tmp_path / "pre")
    if ranking == "sampled":  # 12 targets: 11 can be ranked
        with pytest.raises(ValueError, match="is not below the"):
            run_finetune(run["pre"], run["coldrec"], str(tmp_path / "ft"), train_steps=2,
                         log=quiet, **{k: v for k, v in settings.items()
                                       if k not in ("channels", "dilations")})
        assert not os.path.exists(tmp_path / "ft")


def test_the_largest_cut_off_below_the_items_ranked_is_accepted(run):
    results = evaluate(run["pre"], run["pretrain"], ks=(10,))  # 11 candidates
    assert 0 <= results["hr@10"] <= 1 and results["examples"] > 0


def test_advice_for_too_many_candidates_never_leads_to_a_trivial_metric(run):
    from peterrec_tf.jobs.checks import check_ranking

    meta = {"task": "item_rec", "num_targets": 12}
    with pytest.raises(ValueError, match="use --num_candidates between 11 and 11, or full"):
        check_ranking("D", meta, "sampled", 50, (5, 10))
    meta = {"task": "item_rec", "num_targets": 8}  # 7 rankable: ks 5,10 cannot all fit
    with pytest.raises(ValueError, match="every --ks must be below 7: lower --ks"):
        check_ranking("D", meta, "sampled", 50, (5, 10))
    with pytest.raises(ValueError, match=r"k=7 is not below the 7 items.*use --ks below 7 "
                                         r"\(the data has too few ids"):
        check_ranking("D", meta, "sampled", 7, (5, 7))
    with pytest.raises(ValueError, match="k=10 is not below the 7 items ranked .full ranking"):
        check_ranking("D", meta, "full", 100, (5, 10))
    check_ranking("D", meta, "full", 100, (5, 6))
    check_ranking("D", {"task": "classify", "num_classes": 2}, "sampled", 100, (50,))
    with pytest.raises(ValueError, match="D has 1 class.es.: accuracy would be 1.0"):
        check_ranking("D", {"task": "classify", "num_classes": 1}, "sampled", 100, (5,))


def test_select_metric_can_only_name_a_metric_that_is_not_trivial(run, tmp_path):
    from peterrec_tf.jobs.finetuning import run_finetune

    with pytest.raises(ValueError, match="k=11 is not below the 11 items"):
        run_finetune(run["pre"], run["coldrec"], str(tmp_path / "ft"), train_steps=2,
                     eval_every=1, select_metric="hr@11", log=quiet,
                     **dict(FINETUNE, ks=(5, 11)))
    assert not os.path.exists(tmp_path / "ft")


# --- every artifact verified by content -----------------------------------------------------


def test_a_task_weights_archive_lacking_a_weight_is_refused(run, tmp_path):
    from peterrec_tf.model_dir import CONFIG_FILE, config_checksum, file_checksum, load_model_dir
    from peterrec_tf.task_artifact import TASK_WEIGHTS_FILE

    task = copy_dir(run["task"], tmp_path / "task")
    path = os.path.join(task, TASK_WEIGHTS_FILE)
    with np.load(path) as stored:
        values = {key: stored[key] for key in stored.files}
    head = [key for key in values if "target" in key or "head" in key][0]
    del values[head]
    np.savez(path, **values)
    with pytest.raises(ValueError, match=f"{path}: SHA-256 differs from config.json's record"):
        load_model_dir(task)
    config = json.load(open(os.path.join(task, CONFIG_FILE)))
    config["checksums"][TASK_WEIGHTS_FILE] = file_checksum(path)  # a consistent forgery
    config["config_sha256"] = config_checksum(config)
    json.dump(config, open(os.path.join(task, CONFIG_FILE), "w"))
    with pytest.raises(ValueError, match=rf"holds {len(values)} weights, config.json records "
                                         rf"{len(values) + 1}"):
        load_model_dir(task)
    for key in ("checksums", "config_sha256", "task_weights"):  # a directory of older code
        config.pop(key)
    json.dump(config, open(os.path.join(task, CONFIG_FILE), "w"))
    with pytest.raises(ValueError, match=rf"{path}: lacks 1 weight\(s\) the task declares "
                                         rf"\(\['{head.replace('|', '/')}'\]\); they would "
                                         "keep a random initialisation"):
        load_model_dir(task)


def test_a_task_weights_archive_with_a_foreign_weight_is_refused(run, tmp_path):
    from peterrec_tf.model_dir import CONFIG_FILE, load_model_dir
    from peterrec_tf.task_artifact import TASK_WEIGHTS_FILE

    task = copy_dir(run["task"], tmp_path / "task")
    path = os.path.join(task, TASK_WEIGHTS_FILE)
    with np.load(path) as stored:
        values = {key: stored[key] for key in stored.files}
    np.savez(path, **values, **{"stray|kernel": np.zeros(3, np.float32)})
    config = json.load(open(os.path.join(task, CONFIG_FILE)))
    for key in ("checksums", "config_sha256", "task_weights"):
        config.pop(key)
    json.dump(config, open(os.path.join(task, CONFIG_FILE), "w"))
    with pytest.raises(ValueError, match=r"weights \['stray/kernel'\] have no place"):
        load_model_dir(task)


def test_a_truncated_task_weights_archive_is_one_line(run, tmp_path):
    from peterrec_tf.model_dir import CONFIG_FILE, load_model_dir
    from peterrec_tf.task_artifact import TASK_WEIGHTS_FILE

    task = copy_dir(run["task"], tmp_path / "task")
    path = os.path.join(task, TASK_WEIGHTS_FILE)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    with pytest.raises(ValueError, match=f"{path}: SHA-256 differs"):
        load_model_dir(task)
    config = json.load(open(os.path.join(task, CONFIG_FILE)))
    config.pop("checksums"), config.pop("config_sha256")
    json.dump(config, open(os.path.join(task, CONFIG_FILE), "w"))
    with pytest.raises(ValueError, match=f"{path}: damaged archive"):
        load_model_dir(task)
    result = command("peterrec_tf.evaluate", f"--model_dir={task}",
                     f"--data_dir={run['coldrec']}", "--num_candidates=11")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: {path}: damaged archive" in result.stderr


@pytest.mark.parametrize("which,name", [("pre", "vocab.txt"), ("pre", "config.json"),
                                        ("pre", "model.keras"), ("task", "task_model.json"),
                                        ("task", "target_vocab.txt"), ("task", "config.json")])
def test_every_file_of_a_model_directory_is_verified_by_content(run, tmp_path, which, name):
    from peterrec_tf.model_dir import load_model_dir

    model_dir = copy_dir(run[which], tmp_path / which)
    path = os.path.join(model_dir, name)
    if name.endswith(".txt"):
        swap_two_ids(path)
    elif name == "config.json":
        config = json.load(open(path))
        config["data_dir"] = config["data_dir"] + "x"  # still valid JSON, another source
        json.dump(config, open(path, "w"))
    elif name == "model.keras":
        with open(path, "ab") as handle:
            handle.write(b"\0")
    else:
        config = json.load(open(path))
        json.dump(config, open(path, "w"), indent=1)  # same content, other bytes
    expected = ("content differs from its recorded checksum" if name == "config.json"
                else "size differs" if name == "model.keras" else "SHA-256 differs")
    with pytest.raises(ValueError, match=f"{path}: {expected}"):
        load_model_dir(model_dir)


def test_a_vocabulary_the_model_was_not_saved_with_is_refused(run, tmp_path):
    from peterrec_tf.model_dir import load_model_dir

    model_dir = copy_dir(run["pre"], tmp_path / "pre")
    open(os.path.join(model_dir, "labels.txt"), "w").write("a\nb\n")
    with pytest.raises(ValueError, match="labels.txt: not written with this model"):
        load_model_dir(model_dir)


def test_the_backbones_vocabulary_a_task_shares_is_verified(run, tmp_path):
    from peterrec_tf.model_dir import config_checksum, file_checksum, load_model_dir

    root = tmp_path / "moved"
    pre = copy_dir(run["pre"], root / "pre")
    task = copy_dir(run["task"], root / "task")
    assert json.load(open(os.path.join(task, "config.json")))["items_vocab_of_backbone"]
    path = os.path.join(pre, "vocab.txt")
    swap_two_ids(path)
    with pytest.raises(ValueError, match=f"{path}: SHA-256 differs"):  # the backbone's record
        load_model_dir(task, backbone_dir=pre)
    config = json.load(open(os.path.join(pre, "config.json")))  # re-saved with that vocabulary
    config["checksums"]["vocab.txt"] = file_checksum(path)
    config["config_sha256"] = config_checksum(config)
    json.dump(config, open(os.path.join(pre, "config.json"), "w"))
    with pytest.raises(ValueError, match=f"{path}: differs from the item vocabulary {task} was "
                                         "saved with"):  # the task's own record
        load_model_dir(task, backbone_dir=pre)


def test_older_model_directories_without_checksums_still_load(run, tmp_path):
    from peterrec_tf.model_dir import load_model_dir

    for which in ("pre", "task"):
        model_dir = copy_dir(run[which], tmp_path / which)
        path = os.path.join(model_dir, "config.json")
        config = json.load(open(path))
        for key in ("checksums", "config_sha256", "backbone_items_vocab_sha256",
                    "pretrained_fingerprint"):
            config.pop(key, None)
        json.dump(config, open(path, "w"))
        load_model_dir(model_dir, backbone_dir=run["pre"] if which == "task" else None)


# --- nothing others depend on is overwritten ------------------------------------------------


def test_pretraining_further_keeps_the_backbone_its_tasks_were_tuned_on(run, tmp_path):
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain
    from peterrec_tf.model_dir import load_model_dir
    from peterrec_tf.task_artifact import backbone_fingerprint, backbone_version_dir

    pre, task = str(tmp_path / "pre"), str(tmp_path / "task")
    # no validation-based selection: the re-run's last weights (a new backbone) are saved
    last = dict(MODEL, eval_every=0)
    run_pretrain(run["pretrain"], pre, train_steps=2, log=quiet, **last)
    run_pretrain(run["pretrain"], pre, train_steps=2, log=quiet, **last)  # same: nothing kept
    assert not os.path.exists(os.path.join(pre, "versions"))
    run_finetune(pre, run["coldrec"], task, train_steps=6, log=quiet, **FINETUNE)
    before = evaluate(task, run["coldrec"])
    first = json.load(open(os.path.join(task, "config.json")))["backbone_fingerprint"]
    said = []
    run_pretrain(run["pretrain"], pre, train_steps=4, log=said.append, **last)  # re-run: more
    kept = backbone_version_dir(pre, first)
    assert any(f"kept in {kept}" in line for line in said), said
    model, _, _ = load_model_dir(pre)
    assert backbone_fingerprint(model.backbone) != first  # the directory holds the new one
    assert scores(evaluate(task, run["coldrec"])) == scores(before)  # the task still loads
    again = str(tmp_path / "task2")  # a new task is tuned on the new backbone
    run_finetune(pre, run["coldrec"], again, train_steps=2, log=quiet, **FINETUNE)
    assert json.load(open(os.path.join(again, "config.json")))["backbone_fingerprint"] == \
        backbone_fingerprint(model.backbone)
    evaluate(again, run["coldrec"])


def test_fine_tuning_a_task_further_keeps_the_task_other_tasks_were_tuned_over(run, tmp_path):
    """A task fine-tuned over another task (`--pretrained=TASK`) depends on that task's
    backbone (with the layer norms it trained). Re-running the first task's job with more
    steps replaced it in place, and the second task stopped loading ("not the one ... was
    fine-tuned on"); it is kept in versions/<fingerprint>/, as a pre-training re-run keeps
    the backbone it replaces."""
    from peterrec_tf.jobs.finetuning import run_finetune

    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    settings = dict(FINETUNE, eval_every=0)  # the re-run's last weights are saved
    run_finetune(run["pre"], run["coldrec"], first, train_steps=4, log=quiet, **settings)
    run_finetune(first, run["coldrec"], second, train_steps=2, log=quiet, **settings)
    before = evaluate(second, run["coldrec"])
    said = []
    run_finetune(run["pre"], run["coldrec"], first, train_steps=8, log=said.append, **settings)
    assert any("kept in" in line for line in said), said
    assert scores(evaluate(second, run["coldrec"])) == scores(before)  # the task still loads
    evaluate(first, run["coldrec"])  # and the re-run's own model is the new one


# --- filesystem faults are one line ---------------------------------------------------------


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/full/disk/file")


def leftovers(directory):
    return sorted(name for name in os.listdir(directory) if name.startswith(".tmp"))


def test_an_unwritable_model_dir_is_refused_before_any_work(run, tmp_path):
    from peterrec_tf.filesystem import WriteFault
    from peterrec_tf.jobs.pretraining import run_pretrain

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WriteFault, match=f"{blocker}: not a directory, so --model_dir="):
        run_pretrain(run["pretrain"], str(blocker / "pre"), train_steps=2, log=quiet, **MODEL)
    result = command("peterrec_tf.finetune", f"--pretrained={run['pre']}",
                     f"--data_dir={run['coldrec']}", f"--model_dir={blocker / 'ft'}",
                     "--train_steps=1", "--num_candidates=11", "--jit_compile=false")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: {blocker}: not a directory" in result.stderr
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(WriteFault, match=f"{locked}: cannot write --model_dir there"):
            run_pretrain(run["pretrain"], str(locked / "pre"), train_steps=2, log=quiet, **MODEL)


def test_a_full_disk_while_saving_publishes_nothing_and_the_rerun_finishes(run, tmp_path,
                                                                          monkeypatch):
    from peterrec_tf import model_dir as model_dir_module
    from peterrec_tf.filesystem import WriteFault
    from peterrec_tf.jobs.pretraining import run_pretrain
    from peterrec_tf.model_dir import load_model_dir

    pre = str(tmp_path / "pre")
    monkeypatch.setattr(model_dir_module, "write_lines", no_space)
    with pytest.raises(WriteFault, match="/full/disk/file: No space left on device"):
        run_pretrain(run["pretrain"], pre, train_steps=2, log=quiet, **MODEL)
    assert not {"model.keras", "config.json", "vocab.txt", "results.json"} & set(os.listdir(pre))
    assert leftovers(pre) == []
    monkeypatch.undo()
    said = []
    run_pretrain(run["pretrain"], pre, train_steps=2, log=said.append, **MODEL)
    assert any("already trained 2 >= 2 steps" in line for line in said)
    load_model_dir(pre)


def test_a_full_disk_while_checkpointing_is_one_line(run, tmp_path, monkeypatch):
    import tensorflow as tf

    from peterrec_tf.filesystem import WriteFault
    from peterrec_tf.jobs.pretraining import run_pretrain
    from peterrec_tf.training.checkpointing import TrainingState

    def full(self):
        raise tf.errors.ResourceExhaustedError(
            None, None, "/x/checkpoints/ckpt-2_temp/part-0.tempstate1; No space left on device")
    monkeypatch.setattr(TrainingState, "save", full)
    pre = str(tmp_path / "pre")
    with pytest.raises(WriteFault, match=f"{pre}: /x/checkpoints/.*No space left on device"):
        run_pretrain(run["pretrain"], pre, train_steps=2, log=quiet, **MODEL)


def test_an_unwritable_evaluation_output_is_found_before_the_evaluation(run, tmp_path,
                                                                        monkeypatch):
    from peterrec_tf.filesystem import WriteFault
    from peterrec_tf.training import results, scoring

    def never(*args, **kwargs):
        raise AssertionError("evaluated although the output cannot be written")
    monkeypatch.setattr(scoring, "evaluate", never)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WriteFault, match=f"{blocker}: not a directory, so --output="):
        evaluate(run["pre"], run["pretrain"], output=str(blocker / "out.json"))
    with pytest.raises(WriteFault, match=f"{tmp_path}: --output names a directory"):
        evaluate(run["pre"], run["pretrain"], output=str(tmp_path))
    monkeypatch.undo()
    monkeypatch.setattr(results.json, "dump", no_space)  # the disk fills meanwhile
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(WriteFault, match="No space left on device"):
        evaluate(run["pre"], run["pretrain"], output=str(out / "results.json"))
    assert os.listdir(out) == []


def test_export_to_an_unwritable_or_full_place_is_one_line(run, tmp_path, monkeypatch):
    import tensorflow as tf

    from peterrec_tf.export import export_checked
    from peterrec_tf.filesystem import WriteFault

    blocker = tmp_path / "file"
    blocker.write_text("")
    result = command("peterrec_tf.export", f"--model_dir={run['task']}",
                     f"--export_base={blocker / 'sm'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: {blocker}: not a directory, so --export_base=" in result.stderr
    monkeypatch.setattr(tf.saved_model, "save", no_space)
    base = tmp_path / "sm"
    with pytest.raises(WriteFault, match="/full/disk/file: No space left on device"):
        export_checked([("task", run["task"])], str(base), "m", log=quiet)
    assert not [name for name in os.listdir(base / "m") if not name.startswith(".lock")]


def test_a_preparation_is_verified_by_content(run, tmp_path):
    from pipelines.errors import DataError
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain

    data = copy_dir(run["coldrec"], tmp_path / "cold")
    path = os.path.join(data, "vocab", "targets.txt")
    swap_two_ids(path)
    with pytest.raises(DataError, match=f"{path}: SHA-256 differs from metadata.json's record"):
        run_finetune(run["pre"], data, str(tmp_path / "ft"), train_steps=1, log=quiet,
                     **FINETUNE)
    assert not os.path.exists(tmp_path / "ft")
    data = copy_dir(run["pretrain"], tmp_path / "items")
    path = os.path.join(data, "vocab", "items.txt")
    swap_two_ids(path)
    with pytest.raises(DataError, match=f"{path}: SHA-256 differs from metadata.json's record"):
        run_pretrain(data, str(tmp_path / "p"), train_steps=1, log=quiet, **MODEL)
    assert not os.path.exists(tmp_path / "p")
    data = copy_dir(run["pretrain"], tmp_path / "pre")
    path = os.path.join(data, "metadata.json")
    text = open(path).read()
    meta = json.loads(text)
    meta["max_len"] += 1  # valid JSON, another framing
    json.dump(meta, open(path, "w"))
    with pytest.raises(DataError, match=f"{path}: content differs from its recorded checksum"):
        evaluate(run["pre"], data)
    open(path, "w").write(text[:len(text) // 2])
    with pytest.raises(DataError, match=f"{path}: not valid JSON"):
        evaluate(run["pre"], data)
