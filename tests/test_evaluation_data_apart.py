"""A model is not scored on users it trained on: a training job records which table and
seed split its data (flags.json `data_split`), and `evaluate` refuses a preparation of the
same user table split with another seed (most of its test users were training users), warns
on data that is not the model's own, and says in its results which it was."""

import json
import os
import shutil

import pytest

from pipelines import inputs
from pipelines.dataset import file_checksum
from pipelines.dataset import hash_split_users
from pipelines.prepare import prepare
from test_one_class_labels import TINY, USERS, label_table, pretrained  # noqa: F401 (fixture)
from test_pipelines_user_tables import logs, options, quiet  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def task(logs, pretrained, tmp_path_factory):  # noqa: F811 (the imported fixtures)
    """A label table prepared with seeds 0 and 1, and a task fine-tuned on seed 0's."""
    from peterrec_tf.jobs.finetuning import run_finetune

    root = tmp_path_factory.mktemp("apart")
    table = label_table(root / "labels.csv", lambda user: "ab"[int(user[1:]) % 2])
    data = {seed: str(root / f"seed{seed}") for seed in (0, 1)}
    for seed, directory in data.items():
        prepare("user_labels", directory, table, label_col="tier", seed=seed, **options(logs))
    model_dir = str(root / "task")
    run_finetune(pretrained, data[0], model_dir, train_steps=2, **TINY, **quiet)
    return {"root": root, "table": table, "data": data, "model": model_dir}


def test_the_training_job_records_what_split_its_data(task):
    flags = json.load(open(os.path.join(task["model"], "flags.json")))
    assert flags["data_split"]["split_seed"] == 0
    assert flags["data_split"]["split_by"] == "user"
    assert flags["data_split"]["table_checksums"] == [file_checksum(task["table"])]
    assert "data_split" not in open(os.path.join(task["model"], "flags.txt")).read()


def test_the_same_table_split_with_another_seed_is_refused(logs, task):  # noqa: F811
    from peterrec_tf.jobs.evaluating import run_evaluate

    # the premise: many of seed 1's test users are seed 0's training users
    train0 = {u for u, s in hash_split_users(USERS, 0).items() if s == "train"}
    test1 = {u for u, s in hash_split_users(USERS, 1).items() if s == "test"}
    assert len(train0 & test1) > len(test1) / 2
    with pytest.raises(ValueError, match=r"splits the users of the table .* with --seed=1, "
                                         r"the model's training data with --seed=0"):
        run_evaluate(task["model"], task["data"][1], split="test", **quiet)
    # the same table under another name is the same users
    renamed = task["root"] / "renamed.csv"
    shutil.copy(task["table"], renamed)
    moved = str(task["root"] / "renamed_seed1")
    prepare("user_labels", moved, str(renamed), label_col="tier", seed=1, **options(logs))
    with pytest.raises(ValueError, match="with --seed=1, the model's training data with"):
        run_evaluate(task["model"], moved, split="test", **quiet)
    own = run_evaluate(task["model"], task["data"][0], split="test", **quiet)
    assert own["same_preparation_as_training"] is True
    assert own["examples"] == inputs.read_metadata(task["data"][0])["splits"]["test"]


def test_other_data_is_evaluated_with_a_warning(logs, task):  # noqa: F811
    from peterrec_tf.jobs.evaluating import run_evaluate

    other = str(task["root"] / "other")
    fewer = label_table(task["root"] / "fewer.csv", lambda user: "ab"[int(user[1:]) % 2])
    with open(fewer, "a") as handle:
        handle.write("zed,a\n")  # another table: not provably the same users re-drawn
    prepare("user_labels", other, fewer, label_col="tier", seed=1, **options(logs))
    said = []
    results = run_evaluate(task["model"], other, split="test", log=said.append)
    assert results["same_preparation_as_training"] is False
    assert any(line.startswith(f"warning: {other}") and "is not the preparation" in line
               for line in said)


def test_a_further_fine_tuning_on_the_users_re_drawn_is_refused(task, tmp_path):
    """Fine-tuning a task further on its table split with another seed would train on its
    own test users' labels and report them as held out."""
    from peterrec_tf.jobs.finetuning import run_finetune

    with pytest.raises(ValueError, match="with --seed=1, the model's training data with"):
        run_finetune(task["model"], task["data"][1], str(tmp_path / "further"), train_steps=2,
                     **TINY, **quiet)
    assert not os.path.exists(tmp_path / "further")
