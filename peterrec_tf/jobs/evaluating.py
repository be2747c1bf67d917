"""The evaluation job as a library function (the command line is `peterrec_tf.evaluate`).

`run_evaluate(model_dir, data_dir, split="test", ...)`: ranking metrics (HR@k, MRR@k,
NDCG@k) for pre-trained models (next item) and item recommendation, accuracy for
classification, of any saved model directory on any split of a prepared dataset.
"""

import json
import os
import time


def run_evaluate(model_dir, data_dir, split="test", ranking="sampled", ks=(5, 10),
                 num_candidates=100, batch_size=256, seed=0, max_len=0, output=None, log=print,
                 backbone_dir=None, exclude_history=False):
    """Metrics of `model_dir` on `split` of `data_dir` (see the module docstring);
    `exclude_history` ranks as an export with --exclude_history serves: an item of the
    user's history (as the dataset holds it: the most recent max_len items) is no
    competitor, except the true item itself."""
    from pipelines import inputs
    from peterrec_tf.data.datasets import eval_dataset
    from peterrec_tf.jobs.checks import (check_classes, check_evaluated_apart, check_ranking,
                                         check_split_records)
    from peterrec_tf.filesystem import check_output_file, write_faults_reported
    from peterrec_tf.model_dir import load_model_dir, require_model_dir
    from peterrec_tf.training import scoring
    from peterrec_tf.training.flags import check_values
    from peterrec_tf.training.results import write_json

    ks = [int(k) for k in ks]
    check_values({"ks": ks, "num_candidates": num_candidates, "batch_size": batch_size,
                 "max_len": max_len})
    if output:  # found before the evaluation, not after it
        check_output_file(output, "--output")
    require_model_dir(model_dir)  # before the data's checks: a swapped pair is named as such
    meta = inputs.read_metadata(data_dir)
    inputs.check_vocabularies(data_dir)
    check_split_records(data_dir, meta, (split,))
    check_ranking(data_dir, meta, ranking, num_candidates, ks)
    check_classes(data_dir, meta, (split,))
    model, config, vocabs = load_model_dir(model_dir, backbone_dir=backbone_dir)
    own_data, seen = check_evaluated_apart(model_dir, data_dir, meta, split, log=log,
                                           vocabs=vocabs)
    task = check_model_fits_data(model, vocabs, model_dir, data_dir, meta)
    exclude = None
    if exclude_history:
        if task == "classify":
            raise ValueError("--exclude_history ranks items; a classification model ranks none")
        outputs = vocabs.get("targets") if model.task == "item_rec" else vocabs.get("items")
        if outputs is None or "items" not in vocabs:
            raise ValueError(f"{model_dir}: --exclude_history needs vocab.txt"
                             f"{' and target_vocab.txt' if model.task == 'item_rec' else ''} "
                             "to know which outputs are the history's items")
        padding = set(config.get("padding_tokens", []))
        exclude = scoring.history_exclusion(
            scoring.item_to_output_ids(vocabs["items"], outputs),
            blocked=[i for i, token in enumerate(outputs) if i > 0 and token in padding])
    dataset = eval_dataset(data_dir, split, batch_size, ranking, num_candidates, seed=seed,
                           framing=model.framing, max_len=max_len, exclude=exclude)
    started = time.monotonic()
    with inputs.reading(data_dir, (split,)):
        results = scoring.evaluate(model, dataset, task, ks, total=meta["splits"].get(split),
                                      log=log, label=f"{split} ({ranking} ranking)",
                                      exclude=exclude)
    seconds = time.monotonic() - started
    inputs.check_count(data_dir, split, results["examples"], "scored")
    results.update(model_dir=model_dir, data_dir=data_dir, split=split,
                   ranking=ranking if task != "classify" else None, seconds=seconds,
                   exclude_history=bool(exclude_history), same_preparation_as_training=own_data,
                   records_seen_in_training=seen,
                   examples_per_second=results["examples"] / max(seconds, 1e-9))
    log(json.dumps(results, indent=2))
    if output:
        with write_faults_reported(output):
            write_json(output, results)
    return results


def check_model_fits_data(model, vocabs, model_dir, data_dir, meta):
    """The data's task; `ValueError` unless `model` scores what `data_dir` holds: the same
    items, the same targets or classes (vocabularies compared by content), its task."""
    from pipelines.inputs import read_data_vocab

    if model.backbone.vocab_size != meta["num_items"]:
        raise ValueError(f"{model_dir} has {model.backbone.vocab_size} items, {data_dir} has "
                         f"{meta['num_items']}: not the same vocabulary")
    for key, data_name, model_name, ids in (("items", "items.txt", "vocab.txt", "item"),
                                            ("targets", "targets.txt", "target_vocab.txt",
                                             "target"),
                                            ("labels", "labels.txt", "labels.txt", "class")):
        data_vocab = os.path.join(data_dir, "vocab", data_name)
        if key in vocabs and os.path.exists(data_vocab) and \
                vocabs[key] != read_data_vocab(data_dir, data_name, meta):
            raise ValueError(f"{data_vocab} differs from {model_dir}/{model_name}: {ids} ids "
                             f"would mean other {'classes' if ids == 'class' else 'items'}")
    task = meta["task"]
    if model.task == "pretrain" and task != "pretrain":
        raise ValueError(f"{model_dir} is a pre-trained model; evaluate it on pre-training data")
    if model.task != "pretrain":
        expected = "classify" if model.task == "classify" else "item_rec"
        if task != expected:
            raise ValueError(f"{model_dir} is a {model.task} model but {data_dir} holds {task} data")
        size = meta.get("num_targets") or meta.get("num_classes")
        if size != model.num_outputs:
            raise ValueError(f"{model_dir} scores {model.num_outputs} outputs, {data_dir} has {size}")
    return task
