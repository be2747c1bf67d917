"""No classification figure is trivially perfect: a class only users without history hold
is no class (prepare numbers the classes and targets from the users it keeps, on the local
and the Beam runner), and a split whose records hold one class only is refused by its
content where it is consumed (finetune: train and test; evaluate: the split it scores), since
a model that always answers that class scores accuracy 1.0 there."""

import os

import pytest

from pipelines import inputs
from pipelines.dataset import hash_split_users
from pipelines.prepare import prepare
from test_pipelines_user_tables import BEAM, logs, options, quiet, write  # noqa: F401 (fixture)

USERS = [f"m{user:03d}" for user in range(60)]  # every one has events in the fixture's log
TINY = {"batch_size": 8, "log_every": 5, "jit_compile": False}


@pytest.fixture(scope="module")
def pretrained(logs, tmp_path_factory):  # noqa: F811 (the imported fixture)
    from peterrec_tf.jobs.pretraining import run_pretrain

    model_dir = str(tmp_path_factory.mktemp("one_class") / "pre")
    run_pretrain(logs["pre"], model_dir, train_steps=2, seed=0, channels=8, dilations=(1, 2),
                 batch_size=16, log_every=5, checkpoint_every=10, jit_compile=False, **quiet)
    return model_dir


def label_table(path, label_of):
    return write(path, "member,tier\n" + "".join(f"{u},{label_of(u)}\n" for u in USERS)
                 + "ghost1,odd\nghost2,odd\n")  # two users the log does not hold


def test_a_label_only_dropped_users_hold_is_no_class(logs, pretrained, tmp_path):  # noqa: F811
    from peterrec_tf.jobs.finetuning import run_finetune

    table = label_table(tmp_path / "labels.csv", lambda user: "even")
    targets = write(tmp_path / "targets.tsv", "member\tsku\tts\n" + "".join(
        f"{u}\tT-{i % 3}\t{i}\n" for i, u in enumerate(USERS)) + "ghost1\tT-ghost\t5\n")
    for name, runner in (("local", {}), ("beam", BEAM)):
        labelled = str(tmp_path / f"labels_{name}")
        prepare("user_labels", labelled, table, label_col="tier", **options(logs), **runner)
        assert inputs.read_data_vocab(labelled, "labels.txt") == ["even"], name
        assert inputs.read_metadata(labelled)["num_classes"] == 1
        targeted = str(tmp_path / f"targets_{name}")
        prepare("user_targets", targeted, targets, **options(logs), **runner)
        assert "T-ghost" not in inputs.read_data_vocab(targeted, "targets.txt"), name
    with pytest.raises(ValueError, match="1 class"):
        run_finetune(pretrained, labelled, str(tmp_path / "ft"), train_steps=2, **TINY, **quiet)
    assert not os.path.exists(tmp_path / "ft")


def split_labels(path, test, validation, train=lambda i: "ab"[i % 2], seed=0):
    """A table whose users' labels follow the split `hash_split_users` puts them in."""
    assignment = hash_split_users(USERS, seed)
    order = {u: i for i, u in enumerate(USERS)}
    chooser = {"train": train, "validation": validation, "test": test}
    return label_table(path, lambda u: chooser[assignment[u]](order[u]))


def test_a_test_split_of_one_class_is_refused_by_its_records(logs, pretrained, tmp_path):  # noqa: F811
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.jobs.finetuning import run_finetune

    data = str(tmp_path / "data")
    prepare("user_labels", data, split_labels(tmp_path / "t.csv", test=lambda i: "a",
                                             validation=lambda i: "ab"[i % 2]),
            label_col="tier", seed=0, **options(logs))
    assert inputs.read_data_vocab(data, "labels.txt") == ["a", "b"]  # two classes overall
    tests = inputs.read_metadata(data)["splits"]["test"]
    one_class = rf"the test split holds one class only \(a \({tests} records\)\)"
    with pytest.raises(ValueError, match=one_class + ".*accuracy would be 1.0"):
        run_finetune(pretrained, data, str(tmp_path / "ft"), train_steps=2, **TINY, **quiet)
    assert not os.path.exists(tmp_path / "ft")
    with pytest.raises(ValueError, match=one_class):
        run_evaluate(pretrained, data, split="test", **quiet)


def test_a_validation_split_of_one_class_is_a_warning(logs, pretrained, tmp_path):  # noqa: F811
    from peterrec_tf.jobs.finetuning import run_finetune

    data = str(tmp_path / "data")
    prepare("user_labels", data, split_labels(tmp_path / "t.csv", test=lambda i: "ab"[i % 2],
                                             validation=lambda i: "b"),
            label_col="tier", seed=0, **options(logs))
    said = []
    results = run_finetune(pretrained, data, str(tmp_path / "ft"), train_steps=2, **TINY,
                           log=said.append)
    assert any("warning" in line and "the validation split holds one class only (b" in line
               for line in said)
    assert results["test"]["examples"] == inputs.read_metadata(data)["splits"]["test"]


def test_an_item_rec_test_split_of_one_target_is_refused(logs, pretrained, tmp_path):  # noqa: F811
    """Item recommendation: a test split whose records all hold one target scores HR@1 1.0
    for a model that always ranks it first."""
    from peterrec_tf.jobs.finetuning import run_finetune

    assignment = hash_split_users(USERS, 0)
    rows = "".join(f"{u}\t{'T-only' if assignment[u] == 'test' else f'T-{i % 3}'}\t{i}\n"
                   for i, u in enumerate(USERS))
    data = str(tmp_path / "data")
    prepare("user_targets", data, write(tmp_path / "t.tsv", "member\tsku\tts\n" + rows),
            seed=0, **options(logs))
    with pytest.raises(ValueError, match=r"the test split holds one target only \(T-only "
                                         r"\(\d+ records\)\): HR@1 would be 1.0"):
        run_finetune(pretrained, data, str(tmp_path / "ft"), train_steps=2, num_candidates=3,
                     ks=(1,), **TINY, **quiet)


def test_a_label_of_each_users_own_is_refused(logs, pretrained, tmp_path):  # noqa: F811
    """A label column holding a value of each user's own (red team: --label_col naming the
    user column, 300 classes of one user each, rc 0): the test split's classes are none of
    the train split's, so no model can answer one of them; refused before anything is
    written, naming the classes."""
    from peterrec_tf.jobs.finetuning import run_finetune

    data = str(tmp_path / "data")
    prepare("user_labels", data, label_table(tmp_path / "t.csv", lambda user: f"id-{user}"),
            label_col="tier", seed=0, **options(logs))
    with pytest.raises(ValueError, match=r"none of the test split's \d+ classes \('id-m"):
        run_finetune(pretrained, data, str(tmp_path / "ft"), train_steps=2, **TINY, **quiet)
    assert not os.path.exists(tmp_path / "ft")
    # one test class the train split holds is enough to leave the data to the user
    assignment = hash_split_users(USERS, 0)
    shared = next(u for u in USERS if assignment[u] == "train")
    first_test = next(u for u in USERS if assignment[u] == "test")
    data = str(tmp_path / "data2")
    prepare("user_labels", data, label_table(
        tmp_path / "t2.csv", lambda user: f"id-{shared if user == first_test else user}"),
            label_col="tier", seed=0, **options(logs))
    run_finetune(pretrained, data, str(tmp_path / "ft2"), train_steps=2, **TINY, **quiet)
