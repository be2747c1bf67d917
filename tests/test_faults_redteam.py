"""Fault cases found by trying the commands as a new user would (printf-made release CSVs,
tiny flags), beyond the rows of tests/test_faults_data.py and test_faults_artifacts.py.

Tiny models (8 channels, dilations 1,2, two steps, no XLA) on one small release-CSV
preparation shared by the module.
"""

import os
import random

import pytest

from pipelines.dataset import split_users
from pipelines.prepare import prepare

MODEL = dict(channels=8, dilations=(1, 2), batch_size=8, eval_batch_size=64, log_every=100,
             checkpoint_every=2, num_candidates=5, ks=(1, 3), eval_ranking="sampled",
             jit_compile=False)
FINETUNE = {k: v for k, v in MODEL.items() if k not in ("channels", "dilations")}


def quiet(*_):
    pass


def release_lines(seed, users=30, finetune=False):
    """Lines of a release pre-training CSV (items 1..40), or of a fine-tuning CSV
    (targets 100..105 after ',,')."""
    rng = random.Random(seed)
    lines = []
    for _ in range(users):
        items = ",".join(str(rng.randint(1, 40)) for _ in range(rng.randint(5, 10)))
        lines.append(f"{items},,{rng.randint(100, 105)}" if finetune else items)
    return lines


def write(path, lines):
    with open(path, "w") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A release-CSV preparation (pre-training and fine-tuning), a pre-trained model (2
    steps) and a task stored over it."""
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain

    root = tmp_path_factory.mktemp("redteam")
    pre_csv = write(root / "pre.csv", release_lines(1))
    ft_lines = release_lines(2, finetune=True)
    ft_csv = write(root / "ft.csv", ft_lines)
    data_pre, data_ft = str(root / "d_pre"), str(root / "d_ft")
    prepare("peterrec_pretrain_csv", data_pre, input=pre_csv, log=quiet)
    vocab = os.path.join(data_pre, "vocab", "items.txt")
    prepare("peterrec_finetune_csv", data_ft, input=ft_csv, vocab=vocab, log=quiet)
    pre, task = str(root / "pre"), str(root / "task")
    run_pretrain(data_pre, pre, train_steps=2, log=quiet, **MODEL)
    run_finetune(pre, data_ft, task, train_steps=2, log=quiet, **FINETUNE)
    return {"root": root, "pre_csv": pre_csv, "ft_lines": ft_lines, "vocab": vocab,
            "data_pre": data_pre, "data_ft": data_ft, "pre": pre, "task": task}


def evaluate(model_dir, data_dir, **extra):
    from peterrec_tf.jobs.evaluating import run_evaluate

    extra = {"num_candidates": 5, "ks": (1, 3), **extra}
    return run_evaluate(model_dir, data_dir, log=quiet, **extra)


def test_a_task_evaluated_on_data_whose_target_ids_mean_other_items_is_refused(run, tmp_path):
    """The same fine-tuning lines in another order, prepared again: as many targets, but
    numbered by first appearance in another order, so target id i names another item than
    the task's target_vocab.txt says (before: scored silently, rc 0). Each history gets one
    more item, so no record is one the task trained on (those are refused before)."""
    lines = [f"1,{line}" for line in run["ft_lines"]]
    random.Random(5).shuffle(lines)
    shuffled = str(tmp_path / "d_ft_shuffled")
    prepare("peterrec_finetune_csv", shuffled, input=write(tmp_path / "ft.csv", lines),
            vocab=run["vocab"], log=quiet)
    targets = os.path.join(shuffled, "vocab", "targets.txt")
    assert open(targets).read() != open(os.path.join(run["data_ft"], "vocab",
                                                     "targets.txt")).read()
    with pytest.raises(ValueError, match=f"{targets} differs from {run['task']}/"
                                         "target_vocab.txt: target ids would mean other items"):
        evaluate(run["task"], shuffled)
    assert evaluate(run["task"], run["data_ft"])["examples"] > 0


def test_a_reordered_copy_of_the_fine_tuning_lines_is_compared_without_line_numbers(
        run, tmp_path):
    """The same fine-tuning lines reordered past the point where every target has appeared
    (so targets.txt and the task's target vocabulary agree) and prepared with the same
    seed: a line's user id is its line number, so the split draws other lines into test
    and most test records are records the task trained on. Compared with the user id they
    all looked new (before: rc 0 and a warning "none of its ... test records")."""
    lines = list(run["ft_lines"])
    head = next(n for n in range(len(lines)) if {line.split(",,")[1] for line in
                                                  lines[:n]} >= {l.split(",,")[1] for l in lines})
    reordered = str(tmp_path / "d_ft_reordered")
    prepare("peterrec_finetune_csv", reordered, input=write(
        tmp_path / "ft.csv", lines[:head] + lines[head:][::-1]), vocab=run["vocab"], log=quiet)
    split = split_users([f"line{n}" for n in range(1, len(lines) + 1)], 0)  # both seeds 0
    trained = {line for n, line in enumerate(lines, 1) if split[f"line{n}"] == "train"}
    tests = [line for n, line in enumerate(lines[:head] + lines[head:][::-1], 1)
             if split[f"line{n}"] == "test"]
    seen = sum(line in trained for line in tests)
    assert seen > len(tests) / 2  # the premise: most of the copy's test lines trained the task
    with pytest.raises(ValueError, match=rf"{seen} of its {len(tests)} test records .* \(the "
                                         "same history and target\)"):
        evaluate(run["task"], reordered)


def test_an_input_inside_the_output_dir_is_refused_even_with_overwrite(run, tmp_path):
    """--input kept in the preparation it replaces: --overwrite deleted the user's own
    file with the old preparation (lost work, rc 0)."""
    output = str(tmp_path / "prep")
    prepare("peterrec_pretrain_csv", output, input=run["pre_csv"], log=quiet)
    kept = write(tmp_path / "prep" / "mine.csv", release_lines(3))
    with pytest.raises(ValueError, match=f"{kept}: --input lies inside --output_dir {output}"):
        prepare("peterrec_pretrain_csv", output, input=kept, overwrite=True, log=quiet)
    assert os.path.exists(kept)
    vocab = os.path.join(output, "vocab", "items.txt")
    with pytest.raises(ValueError, match="--vocab lies inside --output_dir"):
        prepare("peterrec_finetune_csv", output, input=write(tmp_path / "ft.csv",
                                                             run["ft_lines"]),
                vocab=vocab, overwrite=True, log=quiet)
    assert os.path.exists(vocab)


@pytest.mark.parametrize("where", ["same", "inside"])
def test_a_model_dir_in_the_data_dir_is_refused_before_anything_is_written(run, tmp_path, where):
    """--model_dir=--data_dir trained and saved the model among the shards (rc 0); preparing
    that data again with --overwrite would then delete the model."""
    import shutil

    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain

    data = str(tmp_path / "data")
    shutil.copytree(run["data_pre"], data)
    before = sorted(os.listdir(data))
    model_dir = data if where == "same" else os.path.join(data, "model")
    message = f"--model_dir={model_dir} is {'inside ' if where == 'inside' else ''}--data_dir"
    with pytest.raises(ValueError, match=message):
        run_pretrain(data, model_dir, train_steps=2, log=quiet, **MODEL)
    assert sorted(os.listdir(data)) == before
    ft_data = str(tmp_path / "ft")
    shutil.copytree(run["data_ft"], ft_data)
    with pytest.raises(ValueError, match="--model_dir=.* is .*--data_dir"):
        run_finetune(run["pre"], ft_data, ft_data, train_steps=2, log=quiet, **FINETUNE)


@pytest.mark.parametrize("edit,line,message", [
    (lambda t: [t[0] + "\r"] + t[1:], 1, "holds a carriage return"),
    (lambda t: ["\ufeff" + t[0]] + t[1:], 1, "holds a byte order mark"),
    (lambda t: t[:1] + [x + " " for x in t[1:]], 2, "has whitespace around the token"),
    (lambda t: t[:5] + [""] + t[5:], 6, "is blank"),
    (lambda t: t + [""], None, "is blank"),
    (lambda t: [], 1, "must be <UNK> .*got an empty file")])
def test_a_hand_edited_vocab_is_refused_with_its_line(run, tmp_path, edit, line, message):
    """A --vocab saved with CRLF ends, a BOM, trailing spaces or a blank line: before, a
    trailing space made every item out of vocabulary (100%, rc 0 with a warning) and a
    blank line shifted every later id (rc 0); a CRLF or BOM file was 'line 1 must be
    <UNK>' with the path twice."""
    tokens = open(run["vocab"]).read().splitlines()
    vocab = tmp_path / "vocab.txt"
    with open(vocab, "w", newline="") as handle:
        handle.write("".join(f"{t}\n" for t in edit(tokens)))
    line = len(tokens) + 1 if line is None else line
    with pytest.raises(ValueError, match=f"^{vocab}:{line}: {message}"):
        prepare("peterrec_finetune_csv", str(tmp_path / "out"),
                input=write(tmp_path / "ft.csv", run["ft_lines"]), vocab=str(vocab), log=quiet)
    assert not os.path.exists(tmp_path / "out")


def test_checkpoints_copied_into_a_new_model_dir_are_refused(run, tmp_path):
    """Checkpoints copied from another run (another dataset of the same size) into a fresh
    --model_dir: before, 'resuming from ckpt-2' continued the foreign weights on data whose
    ids mean other items, rc 0. A run records flags.json before its first checkpoint, so
    checkpoints without it are not this directory's."""
    import shutil

    from peterrec_tf.jobs.pretraining import run_pretrain

    model_dir = tmp_path / "copied"
    shutil.copytree(os.path.join(run["pre"], "checkpoints"), model_dir / "checkpoints")
    with pytest.raises(ValueError, match=f"{model_dir}/checkpoints holds checkpoints but "
                                         f"{model_dir}/flags.json is missing"):
        run_pretrain(run["data_pre"], str(model_dir), train_steps=4, log=quiet, **MODEL)
    assert sorted(os.listdir(model_dir)) == ["checkpoints"]


def test_integer_timestamps_float64_cannot_hold_are_refused(tmp_path):
    """Nanosecond-style stamps above 2**53: 2**53 + 1 rounds to 2**53, so 'mid' tied with
    'early' and file order put it first (rc 0, a wrong history order)."""
    base = 2 ** 53
    rows = ["user,item,timestamp"]
    for user in range(8):
        rows += [f"u{user},late,{base + 2}", f"u{user},mid,{base + 1}",
                 f"u{user},early,{base}", f"u{user},first,{base - 10}"]
    log = write(tmp_path / "log.csv", rows)
    with pytest.raises(ValueError, match=f"{log}:2: timestamp '{base + 2}' is above 2\\*\\*53"):
        prepare("interactions", str(tmp_path / "out"), input=log, log=quiet)
    small = write(tmp_path / "ms.csv", [r.replace(str(base)[:3], "", 1) if "," in r and
                                        r[0] == "u" else r for r in rows])
    prepare("interactions", str(tmp_path / "ok"), input=small, log=quiet)  # below: accepted


def test_a_symlinked_output_dir_is_written_where_it_points(run, tmp_path):
    """--output_dir a symbolic link to a directory on a data disk: the publishing rename
    replaced the link by a new directory beside it (the data on the wrong disk, the link
    gone, rc 0)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    link = tmp_path / "data"
    link.symlink_to(disk)
    prepare("peterrec_pretrain_csv", str(link), input=run["pre_csv"], log=quiet)
    assert link.is_symlink() and (disk / "metadata.json").exists()


@pytest.mark.parametrize("min_length", [1, 2, -5])
def test_a_minimum_length_leave_last_out_cannot_use_is_refused(tmp_path, min_length):
    """--min_seq_len below 3: 1 (or less) was an IndexError traceback; 2 wrote training
    records with no item and validation histories with none (rc 0)."""
    csv = write(tmp_path / "short.csv", ["1,2", "3", "4,5,6", "7,8,9,10", "1,2,3"])
    with pytest.raises(ValueError, match=f"--min_seq_len must be >= 3 .*got {min_length}"):
        prepare("peterrec_pretrain_csv", str(tmp_path / "out"), input=csv, log=quiet,
                min_length=min_length)
    assert not os.path.exists(tmp_path / "out")


def test_a_data_vocabulary_edited_after_the_preparation_is_refused(run, tmp_path):
    """Two lines of DATA/vocab/items.txt swapped (or the file of another preparation of the
    same size copied in): pretrain trained and saved a model whose vocab.txt named other
    items than its embeddings learned (rc 0), and a fine-tuning preparation took it as
    --vocab. metadata.json now records each vocabulary's SHA-256."""
    import json
    import shutil

    from peterrec_tf.jobs.pretraining import run_pretrain

    data = str(tmp_path / "data")
    shutil.copytree(run["data_pre"], data)
    vocab = os.path.join(data, "vocab", "items.txt")
    recorded = json.load(open(os.path.join(data, "metadata.json")))["vocab_sha256"]
    assert set(recorded) == {"items.txt"}
    tokens = open(vocab).read().splitlines()
    tokens[1], tokens[2] = tokens[2], tokens[1]
    write(vocab, tokens)
    message = f"{vocab}: SHA-256 differs from metadata.json's record"
    with pytest.raises(ValueError, match=message):
        run_pretrain(data, str(tmp_path / "model"), train_steps=2, log=quiet, **MODEL)
    assert not os.path.exists(tmp_path / "model")
    with pytest.raises(ValueError, match=message):
        prepare("peterrec_finetune_csv", str(tmp_path / "ft"), vocab=vocab, log=quiet,
                input=write(tmp_path / "ft.csv", run["ft_lines"]))
    with pytest.raises(ValueError, match=message):
        evaluate(run["pre"], data)


def test_a_metadata_size_edited_by_hand_is_refused(run, tmp_path):
    """metadata.json's num_items raised by hand (41 -> 45): pretrain built a model of 45
    items over a 41-line vocabulary and ranked 4 ids that name no item (rc 0)."""
    import json
    import shutil

    from peterrec_tf.jobs.pretraining import run_pretrain

    data = str(tmp_path / "data")
    shutil.copytree(run["data_pre"], data)
    path = os.path.join(data, "metadata.json")
    meta = json.load(open(path))
    meta["num_items"] += 4
    json.dump(meta, open(path, "w"))
    with pytest.raises(ValueError, match="content differs from its recorded checksum"):
        run_pretrain(data, str(tmp_path / "model"), train_steps=2, log=quiet, **MODEL)
    # a preparation without metadata.json's own checksum: the sizes are still compared
    from pipelines import metadata_checksum
    meta.pop(metadata_checksum.KEY)
    json.dump(meta, open(path, "w"))
    message = f"{path}: num_items is {meta['num_items']} but .*items.txt holds"
    with pytest.raises(ValueError, match=message):
        run_pretrain(data, str(tmp_path / "model"), train_steps=2, log=quiet, **MODEL)
    assert not os.path.exists(tmp_path / "model")
    with pytest.raises(ValueError, match=message):
        evaluate(run["pre"], data)


def test_a_dataset_given_as_the_model_is_named_as_such(run):
    """evaluate --model_dir=DATA (the pair swapped): the error was about --num_candidates
    against DATA's items, not that DATA is no model."""
    with pytest.raises(FileNotFoundError, match="is a prepared dataset .* not a peterrec-tf "
                                                "model directory"):
        evaluate(run["data_pre"], run["data_pre"], num_candidates=500)
