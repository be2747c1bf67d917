"""The pre-training job as a library function (the command line is `peterrec_tf.pretrain`).

`run_pretrain(data_dir=..., model_dir=..., **settings)`: NextItNet (next item) or GRec
(masked item) pre-training of a universal user encoder; the same names as the flags.
"""

import os

from peterrec_tf.jobs.skeleton import Built, TrainingSettings, job_settings, split_evaluator, train_job

HEADS = ("full", "dot", "tied")
#: Backbone architectures (`models.architectures`), by `--architecture`'s names.
ARCHITECTURES = ("dilated_cnn", "self_attention")
#: `training.optimizer.OPTIMIZERS`' names (kept here so that --help imports no TensorFlow).
OPTIMIZERS = ("adam", "lazy_adam")
#: The default sampled-softmax size: the release's 20% of the vocabulary, bounded. At the
#: paper's 645K items 20% is 129K candidates a step, nearly a full softmax (the 366K-item
#: probe of issue 14 ran at 9 sequences/s); with 8,192 the head's matmul (2 C N FLOPs a
#: position) stays below the 8-block residual stack's (~96 C^2: equal at N = 48 C, 12,288
#: for C = 256). `--num_sampled=-2` keeps the release's unbounded rule for parity.
MAX_DEFAULT_SAMPLED = 8192
#: The largest `[positions, items]` float32 logits tensor a full-softmax training step may
#: form. Its gradient and the softmax take as much again; at the paper's 645K items and
#: batches of 32 x 100 positions it would be 8.3 GB, which is refused (not chunked: a full
#: softmax at that size is ~3 TFLOP a step, hours per thousand steps on a CPU).
MAX_FULL_SOFTMAX_BYTES = 4 * 2 ** 30


def default_num_sampled(num_sampled, vocab_size):
    """-1: the release's 20% of the vocabulary capped at MAX_DEFAULT_SAMPLED; -2: the
    release's 20% as it is; otherwise the value given."""
    if num_sampled in (-1, -2):
        release = max(1, int(0.2 * vocab_size))
        return release if num_sampled == -2 else min(release, MAX_DEFAULT_SAMPLED)
    return num_sampled


def run_pretrain(data_dir, model_dir, objective="next_item", mask_rate=0.3, channels=64,
                 dilations=(1, 4, 1, 4, 1, 4, 1, 4), kernel_size=3, head="full", num_sampled=-1,
                 batch_size=32, epochs=10.0, train_steps=0, learning_rate=1e-3, seed=0,
                 deterministic=False, strategy="default", mixed_precision=False,
                 checkpoint_every=500, keep_checkpoints=3, log_every=50, eval_every=-1,
                 eval_batch_size=256, ks=(5, 10), max_len=0, eval_ranking="full",
                 num_candidates=100, train_windows="all", select_metric="auto",
                 jit_compile=True, optimizer="adam", patience=0, dropout=0.0,
                 embedding_dropout=0.0, weight_decay=0.0, label_smoothing=0.0,
                 lr_schedule="constant", warmup_steps=0, architecture="dilated_cnn",
                 num_blocks=2, heads=1, log=print):
    """Run the pre-training job; returns the results dict also written to results.json."""
    from pipelines import inputs
    from pipelines.inputs import read_data_vocab
    from peterrec_tf import objectives
    from peterrec_tf.data import datasets
    from peterrec_tf.data.framing import resolve_length
    from peterrec_tf.data.windows import WINDOWS
    from peterrec_tf.jobs.checks import check_ranking, check_split_records
    from peterrec_tf.model_dir import save_model_dir
    from peterrec_tf.task_artifact import (PRETRAINED_FINGERPRINT, backbone_fingerprint,
                                           keep_replaced_backbone)
    from peterrec_tf.models.architectures import backbone_for, check_architecture_settings
    from peterrec_tf.training import best as selection
    from peterrec_tf.training.flags import check_values, total_steps as count_steps
    from peterrec_tf.training.xla_policy import target_fill, use_xla
    from peterrec_tf.training.optimizer import make_optimizer

    # everything is checked before anything is written (flags.json included)
    config = {k: v for k, v in locals().items() if k in SETTINGS}
    config["dilations"] = [int(d) for d in dilations]
    config["ks"] = [int(k) for k in ks]
    check_values(config)
    objective = objectives.get(objective)  # its model, preprocessor and XLA plan
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    check_architecture_settings(architecture, objective, config)
    if head not in HEADS:
        raise ValueError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    if head == "full" and num_sampled > 0:
        raise ValueError("--num_sampled needs --head=dot or tied (the full head has no sampled "
                         "softmax)")
    metrics = [f"{m}@{k}" for k in config["ks"] for m in ("hr", "mrr", "ndcg")]
    config["select_metric"] = selection.resolve_metric(
        select_metric, eval_every, strategy, metrics)
    selection.check_selection(config["select_metric"], eval_every, strategy, metrics, patience,
                              explicit=select_metric != "auto")
    meta = inputs.read_metadata(data_dir)
    if meta["task"] != "pretrain":
        raise ValueError(f"{data_dir} holds {meta['task']} data; pre-training needs a pretrain "
                         "dataset (the pretrain/ folder of a preparation)")
    config["data_fingerprint"] = meta.get("fingerprint")
    vocab_size = meta["num_items"]
    if head != "full":
        num_sampled = default_num_sampled(num_sampled, vocab_size)
    num_sampled = max(0, num_sampled) if head != "full" else 0
    if label_smoothing and num_sampled:
        raise ValueError("--label_smoothing needs the full softmax: --head=full, or --head=dot "
                         "or tied with --num_sampled=0")
    if num_sampled >= vocab_size:
        raise ValueError(f"--num_sampled={num_sampled} must be below the {vocab_size} items")
    check_split_records(data_dir, meta, ("train", "validation", "test"))
    check_ranking(data_dir, meta, eval_ranking, num_candidates, config["ks"])
    vocab = read_data_vocab(data_dir, "items.txt", meta)  # verified before any training
    max_len = resolve_length(max_len, metadata=meta)
    logits_bytes = batch_size * max_len * vocab_size * 4
    if not num_sampled and logits_bytes > MAX_FULL_SOFTMAX_BYTES:
        raise ValueError(
            f"a full softmax over {vocab_size:,} items for batches of {batch_size} x {max_len} "
            f"positions forms [{batch_size * max_len:,}, {vocab_size:,}] logits "
            f"({logits_bytes / 1e9:.1f} GB, about three times that with the softmax and its "
            f"gradient; the limit is {MAX_FULL_SOFTMAX_BYTES / 1e9:.1f} GB): use --head=dot "
            "with the bounded sampled softmax (--num_sampled=-1, the default) or a smaller "
            "--batch_size / --max_len")
    if train_windows not in WINDOWS:
        raise ValueError(f"--train_windows must be one of {WINDOWS}, got {train_windows!r}")
    settings = TrainingSettings.of(config)

    def prepare(strategy_, precision):
        examples = (datasets.count_windows(data_dir, "train", max_len, objective)
                    if train_windows == "all" else meta["splits"]["train"])
        steps = count_steps(train_steps, epochs, examples, batch_size)
        with strategy_.scope():
            backbone = backbone_for(architecture, vocab_size, channels,
                                    causal=objective.causal, max_len=max_len,
                                    dilations=config["dilations"], kernel_size=kernel_size,
                                    num_blocks=num_blocks, heads=heads, dropout=dropout,
                                    embedding_dropout=embedding_dropout)
            model = objective.build_model(backbone, head=head, num_sampled=num_sampled,
                                          framing=datasets.data_framing(meta, None, max_len),
                                          label_smoothing=label_smoothing)
            model.build()
            xla = use_xla(jit_compile, strategy, deterministic)
            plan = objective.xla_plan(num_sampled, channels, fill=lambda: target_fill(
                datasets.pretrain_dataset(data_dir, "train", batch_size, objective, max_len,
                                          mask_rate=mask_rate, shuffle=False, seed=seed,
                                          windows=train_windows))) if xla else ()
            model.compile(optimizer=make_optimizer(optimizer, learning_rate, steps, lr_schedule,
                                                   warmup_steps, weight_decay),
                          xla_plan=plan if xla else ())
        log(f"pre-training {type(model).__name__} ({objective.name}, head {head}"
            + (f", sampled softmax {num_sampled}" if num_sampled else "")
            + f"): {vocab_size} items, {channels} channels, "
            + (f"dilations {config['dilations']}, " if architecture == "dilated_cnn" else
               f"self-attention, {num_blocks} blocks of {heads} heads, ")
            + f"{steps} steps of batch {batch_size} ({examples} training windows, {precision}, "
            + (f"XLA: {' + '.join(plan)}, " if xla else "")
            + f"{strategy_.num_replicas_in_sync} replicas)")

        def make_dataset():
            return datasets.pretrain_dataset(data_dir, "train", batch_size, objective, max_len,
                                             mask_rate=mask_rate, shuffle=True, seed=seed,
                                             repeat=True, windows=train_windows,
                                             drop_remainder=strategy_.num_replicas_in_sync > 1)

        def save():
            # a finished model this run replaces stays loadable for the tasks over it
            keep_replaced_backbone(model_dir, model.backbone, log)
            save_model_dir(model_dir, model, {"objective": objective.name,
                                              "data_dir": os.path.abspath(data_dir),
                                              PRETRAINED_FINGERPRINT:
                                                  backbone_fingerprint(model.backbone)},
                           {"items": vocab})

        evaluate_split = split_evaluator(model, data_dir, "pretrain", config["ks"],
                                         eval_batch_size, eval_ranking, num_candidates, seed,
                                         model.framing, log)
        return Built(model, steps, make_dataset, evaluate_split, save,
                     test_label=f"test ({eval_ranking} ranking)",
                     steps_per_epoch=examples // batch_size)

    return train_job("pretrain", config, settings, prepare, log)


SETTINGS = job_settings(run_pretrain)
