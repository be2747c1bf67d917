"""Batch recommendation (`python -m peterrec_tf.recommend`): the served ranking for every
user of a split, history excluded on request; evaluate --exclude_history on the same data."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from peterrec_tf.jobs.evaluating import run_evaluate
from peterrec_tf.model_dir import save_model_dir
from peterrec_tf.models import Backbone, NextItNet, build_finetuner
from peterrec_tf.recommend import run_recommend
from peterrec_tf.serving.saved_model import export
from peterrec_tf.data import records
from pipelines import inputs, schema
from pipelines.prepare import prepare
from serving_server import SessionModel

quiet = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    prepare("synthetic", str(root / "syn"), max_len=20, seed=1, num_users=120, num_items=60,
            num_clusters=4, num_targets=20, **quiet)
    data = str(root / "syn" / "pretrain")
    vocab = inputs.load_vocab(os.path.join(data, "vocab", "items.txt"))
    keras.utils.set_random_seed(0)
    model = NextItNet(Backbone(len(vocab), channels=8, dilations=(1, 2), causal=True), head="dot")
    model.build()
    save_model_dir(str(root / "pre"), model, {"max_len": 20}, {"items": vocab})
    meta = inputs.read_metadata(data)
    batch = next(iter(records.record_batches(data, "test", 10_000, False, 0, True, False, False,
                                             None).map(records.parser("pretrain", "test"))))
    histories = [[vocab[i] for i in row] for row in batch[schema.ITEM_IDS].to_list()]
    users = [u.decode() for u in batch[schema.USER_ID].numpy()]
    return {"root": root, "data": data, "model_dir": str(root / "pre"), "vocab": vocab,
            "histories": histories, "users": users, "total": meta["splits"]["test"]}


def read_lines(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def served(setup, exclude_history, k):
    report = export([("next", setup["model_dir"])], str(setup["root"] / "sm"),
                    f"m{int(exclude_history)}", k=k, exclude_history=exclude_history, **quiet)
    width = 1 + max(len(h) for h in setup["histories"])
    items = np.array([[""] * (width - len(h)) + h for h in setup["histories"]]).astype(bytes)
    return SessionModel(report["path"]).run(
        "next_top_k", {"items": items, "k": np.full(len(items), k, np.int32)})


@pytest.mark.parametrize("exclude_history", [False, True])
def test_recommendations_are_the_served_ranking(setup, tmp_path, exclude_history):
    """Same users in record order, same ids and order as the served signature for the same
    histories (one batch both ways), never a history item when excluded, k answers each."""
    output = str(tmp_path / "recs.jsonl")
    lines = []
    result = run_recommend(setup["model_dir"], setup["data"], "test", 10, output,
                           exclude_history=exclude_history, batch_size=1000,
                           log=lines.append, every_seconds=0)
    assert result["users"] == setup["total"] and lines[-1].startswith("wrote") and output in lines[-1]
    assert "records/s" in lines[0] and "s left" in lines[0]  # progress with its time left
    recs = read_lines(output)
    assert [r["user"] for r in recs] == setup["users"]
    expected = served(setup, exclude_history, 10)
    np.testing.assert_array_equal([r["ids"] for r in recs], expected["top_k_ids"])
    np.testing.assert_allclose([r["scores"] for r in recs], expected["scores"], atol=1e-6)
    assert [r["items"] for r in recs] == [[t.decode() for t in row] for row in expected["top_k_items"]]
    overlap = sum(len(set(r["items"]) & set(h)) for r, h in zip(recs, setup["histories"]))
    assert (overlap == 0) if exclude_history else (overlap > 0)  # the option matters here
    assert all(len(r["ids"]) == 10 for r in recs)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_sliced_catalogue_and_small_batches_give_the_same_recommendations(setup, tmp_path,
                                                                          monkeypatch):
    from peterrec_tf.training import chunked_ranking
    whole = str(tmp_path / "whole.jsonl")
    run_recommend(setup["model_dir"], setup["data"], "test", 7, whole, exclude_history=True,
                  batch_size=1000, **quiet)
    monkeypatch.setattr(chunked_ranking, "DEFAULT_CHUNK", 9)
    sliced = str(tmp_path / "sliced.jsonl")
    run_recommend(setup["model_dir"], setup["data"], "test", 7, sliced, exclude_history=True,
                  batch_size=1000, **quiet)
    assert [r["ids"] for r in read_lines(sliced)] == [r["ids"] for r in read_lines(whole)]


@pytest.mark.parametrize("stopped_in", ["top_k_function", "write_recommendations"])
def test_an_interrupted_recommend_leaves_neither_output_nor_temporary(setup, tmp_path,
                                                                      monkeypatch, stopped_in):
    """Ctrl-C before or while the recommendations are written: the output is absent (or
    the previous one, whole) and no temporary is left, as its last line says."""
    import peterrec_tf.recommend as recommend

    def stop(*_, **__):
        raise KeyboardInterrupt
    output = tmp_path / "recs.jsonl"
    output.write_text("the previous file\n")
    monkeypatch.setattr(recommend, stopped_in, stop)
    with pytest.raises(KeyboardInterrupt):
        run_recommend(setup["model_dir"], setup["data"], "test", 5, str(output),
                      log=lambda *_: None)
    assert os.listdir(tmp_path) == ["recs.jsonl"]
    assert output.read_text() == "the previous file\n"


def test_evaluate_exclude_history_is_recorded_and_only_removes_competitors(setup):
    plain = run_evaluate(setup["model_dir"], setup["data"], "test", "full", ks=(5, 10), **quiet)
    excluded = run_evaluate(setup["model_dir"], setup["data"], "test", "full", ks=(5, 10),
                            exclude_history=True, **quiet)
    assert excluded["exclude_history"] is True and plain["exclude_history"] is False
    assert all(excluded[m] >= plain[m] for m in ("hr@5", "hr@10", "ndcg@10"))
    assert any(excluded[m] > plain[m] for m in ("hr@5", "hr@10", "ndcg@10"))


def run_command(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "peterrec_tf.recommend", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_command_line_one_line_errors_and_last_line(setup, tmp_path):
    done = run_command(f"--model_dir={setup['model_dir']}", f"--data_dir={setup['data']}",
                       f"--output={tmp_path / 'no_such_dir' / 'recs.jsonl'}")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in done.stderr
    output = tmp_path / "recs.jsonl"
    done = run_command(f"--model_dir={setup['model_dir']}", f"--data_dir={setup['data']}",
                       f"--output={output}", "--k=3", "--exclude_history")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("wrote top-3") and str(output) in done.stdout
    assert len(read_lines(output)) == setup["total"]


def test_complete_histories_rank_from_the_held_out_item_too(setup, tmp_path):
    """--history=complete: each test user's input plus the item the split holds out (the
    whole known sequence), ranked as the served signature ranks that history; with
    exclusion the held-out item never comes back. Refused where no item is held out."""
    data, vocab = setup["data"], setup["vocab"]
    batch = next(iter(records.record_batches(data, "test", 10_000, False, 0, True, False, False,
                                             None).map(records.parser("pretrain", "test"))))
    held_out = [vocab[i] for i in batch[schema.TARGET].numpy()]
    output = str(tmp_path / "recs.jsonl")
    said = []
    result = run_recommend(setup["model_dir"], data, "test", 5, output, exclude_history=True,
                           history="complete", log=said.append)
    assert result["history"] == "complete" and said[-1].startswith("wrote")
    recs = read_lines(output)
    assert not any(item in r["items"] for r, item in zip(recs, held_out))
    complete = dict(setup, histories=[h + [item] for h, item in zip(setup["histories"],
                                                                     held_out)])
    expected = served(complete, True, 5)
    np.testing.assert_array_equal([r["ids"] for r in recs], expected["top_k_ids"])
    # the default ranks from the record's input and says so
    said = []
    run_recommend(setup["model_dir"], data, "test", 5, str(tmp_path / "r2.jsonl"),
                  exclude_history=True, log=said.append)
    assert any("--history=complete" in line for line in said[:-1])
    assert sum(item in r["items"] for r, item in zip(read_lines(str(tmp_path / "r2.jsonl")),
                                                     held_out)) > 0  # what complete prevents
    with pytest.raises(ValueError, match="train split's records hold out none"):
        run_recommend(setup["model_dir"], data, "train", 5, str(tmp_path / "r3.jsonl"),
                      history="complete", **quiet)


def test_a_held_out_item_outside_the_vocabulary_stays_in_its_place(setup, tmp_path):
    """A frozen-vocabulary preparation can hold out id 0 (an unknown item): --history=complete
    appends it as id 0, as a served request keeps an unknown token in its place, so the
    lines equal the SavedModel's answers to the users' whole token histories."""
    rows = ["user,item,timestamp"] + [f"u{u},{setup['vocab'][1 + (u + t) % 50]},{t}"
                                      for u in range(30) for t in range(6)]
    rows += [f"u{u},NEW{u},99" for u in range(30)]  # every user's last item is unknown
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    vocab = str(tmp_path / "items.txt")
    with open(vocab, "w", encoding="utf-8") as handle:
        handle.write("\n".join(setup["vocab"]) + "\n")
    data = str(tmp_path / "frozen")
    prepare("interactions", data, str(tmp_path / "log.csv"), vocab=vocab, max_oov_share=1.0,
            **quiet)
    batch = next(iter(records.record_batches(data, "test", 10_000, False, 0, True, False, False,
                                             None).map(records.parser("pretrain", "test"))))
    assert set(batch[schema.TARGET].numpy().tolist()) == {0}  # the premise
    complete, plain = str(tmp_path / "c.jsonl"), str(tmp_path / "p.jsonl")
    run_recommend(setup["model_dir"], data, "test", 5, complete, history="complete", **quiet)
    run_recommend(setup["model_dir"], data, "test", 5, plain, **quiet)
    users = [u.decode() for u in batch[schema.USER_ID].numpy()]
    tokens = [[setup["vocab"][i] for i in row] + [f"NEW{user[1:]}"]
              for row, user in zip(batch[schema.ITEM_IDS].to_list(), users)]
    report = export([("next", setup["model_dir"])], str(tmp_path / "sm"), "frozen", k=5, **quiet)
    width = max(len(t) for t in tokens)
    items = np.array([[""] * (width - len(t)) + t for t in tokens]).astype(bytes)
    answers = SessionModel(report["path"]).run("next", {"items": items})["top_k_items"]
    lines = {line["user"]: line["items"] for line in read_lines(complete)}
    assert [lines[u] for u in users] == [[x.decode() for x in row] for row in answers]
    assert read_lines(complete) != read_lines(plain)  # the appended 0 moves the answers


def test_release_csv_padding_token_is_recorded_and_never_recommended(tmp_path):
    """The release CSVs left-pad short lines with the literal "0", which they keep as an
    item (parity with the release). prepare records it as padding, pretrain carries it into
    config.json, and a ranking over every item never offers it; with --zero_is_padding it
    is dropped as data instead and nothing is recorded."""
    from peterrec_tf.jobs.pretraining import run_pretrain

    rng = np.random.RandomState(0)
    items = [str(n) for n in range(101, 113)]
    lines = [",".join(["0"] * int(rng.randint(0, 4)) + list(rng.choice(items, 6))) for _ in range(60)]
    csv = tmp_path / "pretrain.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for zero_is_padding, recorded in ((False, ["0"]), (True, None)):
        data = str(tmp_path / f"data{int(zero_is_padding)}")
        prepare("peterrec_pretrain_csv", data, input=str(csv), max_len=8, num_shards=1,
                zero_is_padding=zero_is_padding, **quiet)
        pretrain_dir = os.path.join(data, "pretrain") if os.path.isdir(
            os.path.join(data, "pretrain")) else data
        assert inputs.read_metadata(pretrain_dir).get("padding_tokens") == recorded
        model_dir = str(tmp_path / f"model{int(zero_is_padding)}")
        run_pretrain(pretrain_dir, model_dir, channels=8, dilations=(1, 2), head="dot",
                     train_steps=3, eval_every=0, log=quiet["log"])
        config = json.load(open(os.path.join(model_dir, "config.json"), encoding="utf-8"))
        assert config.get("padding_tokens") == recorded
        vocab = inputs.load_vocab(os.path.join(pretrain_dir, "vocab", "items.txt"))
        assert ("0" in vocab) == (not zero_is_padding)
        output = str(tmp_path / f"recs{int(zero_is_padding)}.jsonl")
        run_recommend(model_dir, pretrain_dir, k=len(vocab), output=output, **quiet)
        answered = {item for line in read_lines(output) for item in line["items"]}
        assert answered == set(vocab) - {"<UNK>", "0"}  # every other item is ranked


def test_item_rec_data_with_several_targets_per_user_gives_one_line_a_user(setup, tmp_path):
    """Item-rec data holds one record per target, each with the user's whole history:
    recommend writes one line a user (at its first record, in that order), the served
    ranking of that history, and counts users, not records, in its result and last line."""
    data = str(setup["root"] / "syn" / "coldrec")
    targets = inputs.load_vocab(os.path.join(data, "vocab", "targets.txt"))
    keras.utils.set_random_seed(1)
    backbone = Backbone(len(setup["vocab"]), channels=8, dilations=(1, 2), causal=True)
    model = build_finetuner(backbone, "peterrec", "item_rec", len(targets))
    model.build()
    model_dir = str(tmp_path / "rec")
    save_model_dir(model_dir, model, {"max_len": 20}, {"items": setup["vocab"],
                                                       "targets": targets})
    batch = next(iter(records.record_batches(data, "test", 10_000, False, 0, True, False, False,
                                             None).map(records.parser("item_rec", "test"))))
    histories = {}
    for user, row in zip(batch[schema.USER_ID].numpy(), batch[schema.ITEM_IDS].to_list()):
        assert histories.setdefault(user.decode(), row) == row  # the premise: one history
    total = len(batch[schema.USER_ID])
    assert total > len(histories)  # the premise: several targets for some users
    output, said = str(tmp_path / "recs.jsonl"), []
    result = run_recommend(model_dir, data, "test", 4, output, batch_size=7, log=said.append)
    recs = read_lines(output)
    assert [r["user"] for r in recs] == list(histories)
    assert result["users"] == len(histories) and result["records"] == total
    assert said[-1].startswith(f"wrote top-4 recommendations for {len(histories):,} users of "
                               f"test, from {total:,} records")
    report = export([("rec", model_dir)], str(tmp_path / "sm"), "rec", k=4, **quiet)
    tokens = [[setup["vocab"][i] for i in row] for row in histories.values()]
    width = max(len(h) for h in tokens)
    items = np.array([[""] * (width - len(h)) + h for h in tokens]).astype(bytes)
    expected = SessionModel(report["path"]).run(
        "rec_top_k", {"items": items, "k": np.full(len(items), 4, np.int32)})
    np.testing.assert_array_equal([r["ids"] for r in recs], expected["top_k_ids"])


def test_records_of_one_user_with_different_histories_are_refused():
    """One line a user stands for all of its records only while they share the history:
    a user whose records differ is an error naming the user, not a silent choice."""
    from peterrec_tf.recommend import first_records
    seen = {}
    history = tf.ragged.constant([[1, 2], [1, 2], [3]], dtype=tf.int64)
    assert first_records(["a", "a", "b"], history, seen, "test") == [0, 2]
    assert first_records(["b"], tf.ragged.constant([[3]], dtype=tf.int64), seen, "test") == []
    with pytest.raises(ValueError, match="user 'a' has test records with different histories"):
        first_records(["a"], tf.ragged.constant([[1, 2, 5]], dtype=tf.int64), seen, "test")


def test_a_preparation_older_than_the_padding_record_still_gives_the_release_token():
    """metadata.json written before `padding_tokens` was recorded: the format and options it
    does record decide (a re-used older release-CSV preparation must not lose "0")."""
    from peterrec_tf.model_dir import padding_tokens_of

    assert padding_tokens_of({"format": "peterrec_pretrain_csv", "options": {}}) == {
        "padding_tokens": ["0"]}
    assert padding_tokens_of({"format": "peterrec_finetune_csv",
                              "options": {"zero_is_padding": True}}) == {}
    assert padding_tokens_of({"format": "interactions", "options": {}}) == {}
    assert padding_tokens_of({"format": "peterrec_pretrain_csv", "padding_tokens": []}) == {}


def test_evaluate_exclude_history_samples_negatives_outside_the_history(setup):
    """Sampled ranking under --exclude_history: every example keeps num_candidates - 1
    negatives, none from its history (before: history items were drawn and then dropped,
    so fewer competitors than --num_candidates said, and HR above chance for a random
    model); a catalogue too small for that once the history is left out is refused."""
    from peterrec_tf.data.datasets import eval_dataset
    from peterrec_tf.training.scoring import history_exclusion

    dataset = eval_dataset(setup["data"], "test", 64, "sampled", 30, max_len=20,
                           exclude=history_exclusion(None))
    for x, y in dataset:
        for history, row in zip(x.numpy(), y.numpy()):
            assert len(set(row)) == 30 and not set(row[1:]) & set(history[history > 0])
    results = run_evaluate(setup["model_dir"], setup["data"], "test", "sampled", ks=(5, 10),
                           num_candidates=30, exclude_history=True, **quiet)
    assert results["examples"] == setup["total"]
    with pytest.raises(ValueError, match="--num_candidates: 50 candidates with "
                                         "--exclude_history need 49 negatives outside a "
                                         "history of up to 20 ids"):
        run_evaluate(setup["model_dir"], setup["data"], "test", "sampled", ks=(5, 10),
                     num_candidates=50, exclude_history=True, **quiet)


def test_evaluate_exclude_history_leaves_out_the_padding_tokens_served_rankings_never_offer(
        setup, tmp_path):
    """--exclude_history ranks as the export serves, and a served ranking never offers the
    model's padding tokens (config.json `padding_tokens`: the release CSVs' literal "0"):
    they were still competitors in evaluate. A model whose padding token outscores every
    item scores as one whose token scores below every item (before: lower, the token
    taking a place in every top k)."""
    from peterrec_tf.model_dir import load_model_dir

    targets = {int(t) for batch in records.record_batches(
        setup["data"], "test", 10_000, False, 0, True, False, False, None).map(
            records.parser("pretrain", "test")) for t in batch[schema.TARGET].numpy()}
    token = next(i for i in range(1, len(setup["vocab"])) if i not in targets)
    dirs = {}
    for name, bias, padding in (("blocked", 100.0, [setup["vocab"][token]]),
                                ("buried", -1e4, [])):
        model = load_model_dir(setup["model_dir"])[0]
        model.head.bias.assign(tf.tensor_scatter_nd_update(model.head.bias, [[token]], [bias]))
        dirs[name] = str(tmp_path / name)
        save_model_dir(dirs[name], model, dict({"max_len": 20}, padding_tokens=padding),
                       {"items": setup["vocab"]})
    results = {name: run_evaluate(path, setup["data"], "test", "full", ks=(1, 5, 10),
                                  exclude_history=True, **quiet) for name, path in dirs.items()}
    for metric in ("hr@1", "hr@5", "hr@10", "ndcg@10", "mrr@10"):
        assert results["blocked"][metric] == pytest.approx(results["buried"][metric]), metric
    assert results["blocked"]["hr@1"] > 0  # the premise: the token would have taken hr@1
    plain = run_evaluate(dirs["blocked"], setup["data"], "test", "full", ks=(1,), **quiet)
    assert plain["hr@1"] == 0  # without --exclude_history it competes, as in the release


def test_sampled_exclusion_is_bounded_by_what_a_history_can_exclude(setup):
    """Item-rec targets that are no items: a history excludes nothing, so the sampled
    ranking keeps every negative and is not refused (review: refused for a history "of up
    to 22 ids", advising --num_candidates <= 1); where histories can exclude, it is."""
    from peterrec_tf.data.datasets import eval_dataset
    from peterrec_tf.training.scoring import history_exclusion, item_to_output_ids

    coldrec = os.path.join(str(setup["root"]), "syn", "coldrec")
    meta = inputs.read_metadata(coldrec)
    table = item_to_output_ids(inputs.read_data_vocab(coldrec, "items.txt", meta),
                               inputs.read_data_vocab(coldrec, "targets.txt", meta))
    assert (table < 0).all()  # the premise: no item is a target
    count = meta["num_targets"] - 1
    batches = list(eval_dataset(coldrec, "test", 64, "sampled", count,
                                exclude=history_exclusion(table)))
    assert all(len(set(row)) == count for _, y in batches for row in y.numpy())
    blocked = range(1, count - 1)  # ids every row excludes: they bound what is left
    with pytest.raises(ValueError, match=f"need 2 negatives outside a history of up to "
                                         f"{len(blocked)} ids"):
        eval_dataset(coldrec, "test", 64, "sampled", 3,
                     exclude=history_exclusion(table, blocked=blocked))
