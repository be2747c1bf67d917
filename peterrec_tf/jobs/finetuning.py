"""The fine-tuning job as a library function (the command line is `peterrec_tf.finetune`).

`run_finetune(pretrained=..., data_dir=..., model_dir=..., **settings)`: transfer a
pre-trained encoder to a downstream task with PeterRec or the paper's baselines.
"""

import os

from peterrec_tf import transfer_methods
from peterrec_tf.jobs.skeleton import Built, TrainingSettings, job_settings, split_evaluator, train_job

PATCH_DEFAULTS = {"bottleneck_ratio": 0.25, "patch_activation": "gelu_tanh"}


def check_settings(method, task, causal, insertion=None, finelast_blocks=None, pooling=None,
                   loss=None, bottleneck_ratio=None, patch_activation=None):
    """Refuse flag combinations that contradict each other or the pre-trained backbone."""
    transfer_methods.check_flags(method, insertion=insertion, finelast_blocks=finelast_blocks,
                                 bottleneck_ratio=bottleneck_ratio,
                                 patch_activation=patch_activation)
    if pooling == "first_last" and causal:
        raise ValueError("--pooling=first_last needs a non-causal (masked-item) backbone: the "
                         "first position of a causal backbone sees only the [TCL] token")
    if task == "classify" and loss not in (None, "ce"):
        raise ValueError(f"classification trains with --loss=ce, not --loss={loss}")
    if bottleneck_ratio is not None and not 0 < bottleneck_ratio <= 1:
        raise ValueError(f"--bottleneck_ratio must be in (0, 1], got {bottleneck_ratio}")


def run_finetune(pretrained, data_dir, model_dir, task=None, method="peterrec",
                 finelast_blocks=None, from_scratch=False, insertion=None, pooling=None,
                 loss=None, bottleneck_ratio=None, patch_activation=None, train_layer_norm=True,
                 num_negatives=1, l2_reg=0.02, batch_size=512, epochs=10.0, train_steps=0,
                 learning_rate=1e-3, seed=0, deterministic=False, strategy="default",
                 mixed_precision=False, checkpoint_every=500, keep_checkpoints=3, log_every=50,
                 eval_every=-1, eval_batch_size=256, ks=(5, 10), max_len=0,
                 eval_ranking="sampled", num_candidates=100, select_metric="auto",
                 jit_compile=True, save_full_model=False, patience=0, dropout=0.0,
                 embedding_dropout=0.0, weight_decay=0.0, label_smoothing=0.0,
                 lr_schedule="constant", warmup_steps=0, log=print):
    """Run the fine-tuning job; returns the results dict also written to results.json."""
    import keras

    from pipelines import inputs
    from pipelines.framing import Framing
    from pipelines.metadata_checksum import read_data_vocab
    from peterrec_tf.jobs.checks import check_ranking, check_split_records
    from peterrec_tf.metrics import HitRate
    from peterrec_tf.model_dir import load_model_dir, save_model_dir
    from peterrec_tf.task_artifact import stores_task_only
    from peterrec_tf.models import build_finetuner, format_report, parameter_report
    from peterrec_tf.training import best as selection
    from peterrec_tf.training.flags import check_values, total_steps as count_steps
    from peterrec_tf.training.xla_policy import use_xla
    from peterrec_tf.training.optimizer import make_optimizer

    # everything is checked before anything is written (flags.json included)
    config = {k: v for k, v in locals().items() if k in SETTINGS}
    config["ks"] = [int(k) for k in ks]
    check_values(config)
    meta = inputs.read_metadata(data_dir)
    data_task = meta["task"]
    if data_task not in ("item_rec", "classify"):
        raise ValueError(f"{data_dir} holds {data_task} data; fine-tuning needs item_rec or "
                         "classify data")
    if task is not None and task != data_task:
        raise ValueError(f"--task={task} but {data_dir} holds {data_task} data")
    task = data_task
    config["data_fingerprint"] = meta.get("fingerprint")
    choices = (["accuracy"] if task == "classify"
               else [f"{m}@{k}" for k in config["ks"] for m in ("hr", "mrr", "ndcg")])
    config["select_metric"] = selection.resolve_metric(
        select_metric, eval_every, strategy, choices)
    selection.check_selection(config["select_metric"], eval_every, strategy, choices, patience,
                              explicit=select_metric != "auto")
    if os.path.abspath(pretrained) == os.path.abspath(model_dir):
        raise ValueError("--model_dir must differ from --pretrained (the pre-trained model is "
                         "never modified)")
    source, _, source_vocabs = load_model_dir(pretrained)
    backbone = source.backbone
    if pooling is None and source.task != "pretrain":
        pooling = source.pooling  # a further fine-tuning reads users as its source did
    check_settings(method, task, backbone.causal, insertion, finelast_blocks, pooling, loss,
                   bottleneck_ratio, patch_activation)
    transfer_methods.get(method).check_settings(len(backbone.blocks),
                                                finelast_blocks=finelast_blocks or 1)
    if backbone.vocab_size != meta["num_items"]:
        raise ValueError(f"{data_dir} has {meta['num_items']} items but {pretrained} was "
                         f"pre-trained with {backbone.vocab_size}: prepare the data with "
                         f"--vocab={os.path.join(pretrained, 'vocab.txt')}")
    data_vocab = read_data_vocab(data_dir, "items.txt", meta)
    data_vocabs = {"items": data_vocab}  # every vocabulary verified now, saved with the task
    for key, name in (("targets", "targets.txt"), ("labels", "labels.txt")):
        if os.path.exists(os.path.join(data_dir, "vocab", name)):
            data_vocabs[key] = read_data_vocab(data_dir, name, meta)
    if "items" in source_vocabs and source_vocabs["items"] != data_vocab:
        raise ValueError(f"{data_dir}/vocab/items.txt differs from {pretrained}/vocab.txt: item "
                         "ids would silently mean other items; prepare with --vocab")
    if "items" not in source_vocabs:
        log(f"warning: {pretrained} has no vocab.txt; only the vocabulary size "
            f"({backbone.vocab_size}) could be checked against {data_dir}")
    num_outputs = meta["num_targets"] if task == "item_rec" else meta["num_classes"]
    loss = loss or ("pairwise" if task == "item_rec" else "ce")
    if label_smoothing and loss != "ce":
        raise ValueError(f"--label_smoothing applies to softmax losses (--loss=ce), not "
                         f"--loss={loss}")
    if task == "item_rec" and loss != "ce" and num_negatives and num_outputs < 3:
        raise ValueError(f"{data_dir}: --loss={loss} samples negatives and needs at least 2 "
                         f"real targets, the data has {num_outputs - 1}")
    check_split_records(data_dir, meta, ("train", "validation", "test"))
    check_ranking(data_dir, meta, eval_ranking, num_candidates, config["ks"])
    # a further fine-tuning keeps its source's framing (a converted release model's family)
    framing = inputs.task_framing(
        meta, source.framing if source.task != "pretrain" else Framing(backbone.FINE_TUNING_FRAMING),
        max_len)
    settings = TrainingSettings.of(config)

    def prepare(strategy_, precision):
        nonlocal backbone
        if source.task != "pretrain":
            log(f"{pretrained} is a fine-tuned model; transferring its backbone (without "
                "patches)")
            if backbone.patches:
                backbone = backbone.plain_copy()
        steps = count_steps(train_steps, epochs, meta["splits"]["train"], batch_size)
        patch_config = {"bottleneck_ratio": bottleneck_ratio or PATCH_DEFAULTS["bottleneck_ratio"],
                        "activation": patch_activation or PATCH_DEFAULTS["patch_activation"]}
        negatives = num_negatives if (task == "item_rec" and loss != "ce") else 0
        with strategy_.scope():
            model = build_finetuner(backbone, method, task, num_outputs, insertion=insertion,
                                    patch_config=patch_config, from_scratch=from_scratch,
                                    seed=seed, pooling=pooling, loss=loss, l2_reg=l2_reg,
                                    finelast_blocks=finelast_blocks or 1,
                                    train_layer_norm=train_layer_norm, framing=framing,
                                    label_smoothing=label_smoothing,
                                    regularisation={"dropout": dropout,
                                                    "embedding_dropout": embedding_dropout})
            # fit-time metrics: accuracy, or how often the positive outscores its negatives
            fit_metrics = ([keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
                           if task == "classify" else [HitRate(1, name="pos_beats_neg")]
                           if negatives else [])
            xla = use_xla(jit_compile, strategy, deterministic)
            model.compile(optimizer=make_optimizer("adam", learning_rate, steps, lr_schedule,
                                                   warmup_steps, weight_decay),
                          metrics=fit_metrics, jit_compile=xla)
        report = parameter_report(model)
        log(f"fine-tuning {task} ({num_outputs} outputs) with {method}"
            + (" from scratch" if from_scratch else "")
            + (f", insertion {model.backbone.insertion}" if model.backbone.insertion else "")
            + f": {steps} steps of batch {batch_size}" + (" (XLA)" if xla else ""))
        log("  " + format_report(report, "parameters"))

        def make_dataset():
            return inputs.finetune_dataset(data_dir, "train", batch_size, negatives,
                                           framing=framing, shuffle=True, seed=seed, repeat=True,
                                           drop_remainder=strategy_.num_replicas_in_sync > 1)

        def save():
            vocabs = dict(data_vocabs)
            alone = not (save_full_model or from_scratch) and stores_task_only(model)
            save_model_dir(model_dir, model, {"pretrained": os.path.abspath(pretrained),
                                              "data_dir": os.path.abspath(data_dir),
                                              "max_len": framing.length}, vocabs,
                           task_over=(pretrained, backbone) if alone else None)

        evaluate_split = split_evaluator(model, data_dir, task, config["ks"], eval_batch_size,
                                         eval_ranking, num_candidates, seed, framing, log)
        return Built(model, steps, make_dataset, evaluate_split, save,
                     report={"parameters": report},
                     steps_per_epoch=meta["splits"]["train"] // batch_size)

    return train_job("finetune", config, settings, prepare, log)


SETTINGS = job_settings(run_finetune)
