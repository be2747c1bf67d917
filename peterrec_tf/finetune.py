"""Transfer a pre-trained encoder to a downstream task (PeterRec and the paper's baselines).

    python -m peterrec_tf.finetune --pretrained=runs/nextitnet --data_dir=PREPARED/coldrec \
        --model_dir=runs/coldrec [--method=peterrec|fineall|finecls|finelast] [--insertion=b]

--pretrained is a pre-training model directory or a convert_tf1 output; it is only read.
From Python: `run_finetune(pretrained=..., data_dir=..., model_dir=..., **settings)`.
"""

import contextlib
import os
import time

from peterrec_tf.training.flags import COMMON, define_common_flags

NAMES = COMMON + ("pretrained", "task", "method", "finelast_blocks", "from_scratch",
                  "insertion", "pooling", "loss", "bottleneck_ratio", "patch_activation",
                  "train_layer_norm", "num_negatives", "l2_reg", "eval_ranking",
                  "num_candidates", "save_full_model")
PATCH_DEFAULTS = {"bottleneck_ratio": 0.25, "patch_activation": "gelu_tanh"}


def check_settings(method, task, causal, insertion=None, finelast_blocks=None, pooling=None,
                   loss=None, bottleneck_ratio=None, patch_activation=None):
    """Refuse flag combinations that contradict each other or the pre-trained backbone."""
    if method != "peterrec":
        given = [name for name, value in (("--insertion", insertion),
                                          ("--bottleneck_ratio", bottleneck_ratio),
                                          ("--patch_activation", patch_activation))
                 if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --method=peterrec (model "
                             f"patches), not --method={method}")
    if method != "finelast" and finelast_blocks is not None:
        raise ValueError(f"--finelast_blocks only applies to --method=finelast, not {method}")
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
                 eval_every=0, eval_batch_size=256, ks=(5, 10), max_len=0,
                 eval_ranking="sampled", num_candidates=100, select_metric="", jit_compile=True,
                 save_full_model=False, log=print):
    """Run the fine-tuning job; returns the results dict also written to results.json."""
    import keras

    from pipelines import inputs
    from pipelines.locking import exclusive_lock
    from peterrec_tf.metrics import HitRate
    from peterrec_tf.model_dir import load_model_dir, save_model_dir
    from peterrec_tf.task_artifact import stores_task_only
    from peterrec_tf.models import build_finetuner, format_report, parameter_report
    from peterrec_tf.models.transfer import check_method
    from peterrec_tf.training import best as selection
    from peterrec_tf.training import evaluation, loop, reproducibility, results, strategy as dist
    from peterrec_tf.training.flags import check_values, total_steps as count_steps
    from peterrec_tf.training.xla_policy import use_xla
    from peterrec_tf.training.optimizer import FusedAdam

    # everything is checked before anything is written (flags.json included)
    config = {k: v for k, v in locals().items() if k in NAMES}
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
    selection.check_selection(select_metric, eval_every, strategy, choices)
    if os.path.abspath(pretrained) == os.path.abspath(model_dir):
        raise ValueError("--model_dir must differ from --pretrained (the pre-trained model is "
                         "never modified)")
    source, _, source_vocabs = load_model_dir(pretrained)
    backbone = source.backbone
    if pooling is None and source.task != "pretrain":
        pooling = source.pooling  # a further fine-tuning reads users as its source did
    check_settings(method, task, backbone.causal, insertion, finelast_blocks, pooling, loss,
                   bottleneck_ratio, patch_activation)
    check_method(method, finelast_blocks or 1, len(backbone.dilations))
    if backbone.vocab_size != meta["num_items"]:
        raise ValueError(f"{data_dir} has {meta['num_items']} items but {pretrained} was "
                         f"pre-trained with {backbone.vocab_size}: prepare the data with "
                         f"--vocab={os.path.join(pretrained, 'vocab.txt')}")
    data_vocab = inputs.load_vocab(os.path.join(data_dir, "vocab", "items.txt"))
    if "items" in source_vocabs and source_vocabs["items"] != data_vocab:
        raise ValueError(f"{data_dir}/vocab/items.txt differs from {pretrained}/vocab.txt: item "
                         "ids would silently mean other items; prepare with --vocab")
    if "items" not in source_vocabs:
        log(f"warning: {pretrained} has no vocab.txt; only the vocabulary size "
            f"({backbone.vocab_size}) could be checked against {data_dir}")
    num_outputs = meta["num_targets"] if task == "item_rec" else meta["num_classes"]
    loss = loss or ("pairwise" if task == "item_rec" else "ce")
    if task == "item_rec" and loss != "ce" and num_negatives and num_outputs < 3:
        raise ValueError(f"{data_dir}: --loss={loss} samples negatives and needs at least 2 "
                         f"real targets, the data has {num_outputs - 1}")
    inputs.check_candidates(data_dir, meta, eval_ranking, num_candidates)
    # a further fine-tuning keeps its source's framing (a converted release model's family)
    framing = inputs.task_framing(meta, source.framing if source.task != "pretrain" else None,
                                  max_len)
    chief = dist.is_chief()
    dist.set_precision(mixed_precision)
    strategy_ = dist.make_strategy(strategy)
    dist.check_batch_size(batch_size, strategy_)
    with (exclusive_lock(model_dir) if chief else contextlib.nullcontext()), \
            inputs.reading(data_dir):
        results.record_config(model_dir, config, write=chief)
        # after the strategy: creating one may draw from Python's generator, which seeds
        # the initialisers (and the workers must initialise identically to a single process)
        reproducibility.set_seed(seed, deterministic)
        if source.task != "pretrain":
            log(f"{pretrained} is a fine-tuned model; transferring its backbone (without "
                "patches)")
            if backbone.patches:
                backbone = _unpatched_copy(backbone)
        steps = count_steps(train_steps, epochs, meta["splits"]["train"], batch_size)
        patch_config = {"bottleneck_ratio": bottleneck_ratio or PATCH_DEFAULTS["bottleneck_ratio"],
                        "activation": patch_activation or PATCH_DEFAULTS["patch_activation"]}
        negatives = num_negatives if (task == "item_rec" and loss != "ce") else 0
        with strategy_.scope():
            model = build_finetuner(backbone, method, task, num_outputs, insertion=insertion,
                                    patch_config=patch_config, from_scratch=from_scratch, seed=seed,
                                    pooling=pooling, loss=loss, l2_reg=l2_reg,
                                    finelast_blocks=finelast_blocks or 1,
                                    train_layer_norm=train_layer_norm, framing=framing)
            # fit-time metrics: accuracy, or how often the positive outscores its sampled negatives
            fit_metrics = ([keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
                           if task == "classify" else [HitRate(1, name="pos_beats_neg")]
                           if negatives else [])
            xla = use_xla(jit_compile, strategy, deterministic)
            model.compile(optimizer=FusedAdam(learning_rate), metrics=fit_metrics,
                          jit_compile=xla)
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

        scorer = evaluation.score_function(model)

        def evaluate_split(split):
            data = inputs.eval_dataset(data_dir, split, eval_batch_size, eval_ranking,
                                       num_candidates, seed=seed, framing=framing)
            scores = evaluation.evaluate(model, data, task, config["ks"], scorer)
            inputs.check_count(data_dir, split, scores["examples"], "scored")
            return scores

        started = time.time()
        best = (selection.BestWeights(model, model_dir, select_metric, chief) if select_metric
                else None)
        trained = loop.train(model, make_dataset, steps, model_dir, batch_size, checkpoint_every,
                             keep_checkpoints, log_every, eval_every,
                             lambda: evaluate_split("validation"), log, chief, strategy_, best)
        summary = {"job": "finetune", "config": config, "training": trained, "parameters": report,
                   "examples_per_second": trained["examples_per_second"]}
        if not trained["interrupted"]:
            summary["validation"] = evaluate_split("validation")
            if best is not None:
                summary["validation"], summary["selected"] = selection.finish_selection(
                    best, trained["steps"], summary["validation"], log)
            summary["test"] = evaluate_split("test")
            log("test: " + "  ".join(f"{k} {v:.4f}" for k, v in summary["test"].items()
                                     if k != "examples"))
            if chief:
                vocabs = {"items": data_vocab}
                for key, name in (("targets", "targets.txt"), ("labels", "labels.txt")):
                    path = os.path.join(data_dir, "vocab", name)
                    if os.path.exists(path):
                        vocabs[key] = inputs.load_vocab(path)
                alone = not (save_full_model or from_scratch) and stores_task_only(model)
                save_model_dir(model_dir, model, {"pretrained": os.path.abspath(pretrained),
                                                  "data_dir": os.path.abspath(data_dir),
                                                  "max_len": framing.length}, vocabs,
                               task_over=(pretrained, backbone) if alone else None)
        summary["wall_seconds"] = time.time() - started
        if chief:
            results.write_results(model_dir, summary)
        return summary


def _unpatched_copy(backbone):
    from peterrec_tf.models import Backbone

    plain = Backbone(**backbone.architecture())
    plain.build()
    plain.copy_backbone_weights_from(backbone)
    return plain


def define_flags():
    """The job's absl flags (common training flags + transfer method, patches, loss)."""
    from absl import flags

    define_common_flags(batch_size=512, learning_rate=1e-3)
    flags.DEFINE_string("pretrained", None, "Pre-trained model directory (a pretrain job's "
                        "--model_dir or a convert_tf1 --output_dir). Only read, never written.")
    flags.DEFINE_enum("task", None, ["item_rec", "classify"], "Downstream task; by default the "
                      "task named in the dataset's metadata.json (another one is an error).")
    flags.DEFINE_enum("method", "peterrec", ["peterrec", "fineall", "finecls", "finelast"],
                      "peterrec: patches + head (+ layer norms), backbone frozen; fineall: all "
                      "weights; finecls: head only; finelast: last --finelast_blocks blocks + head.")
    flags.DEFINE_integer("finelast_blocks", None, "finelast: how many of the last residual "
                         "blocks train (default 1).")
    flags.DEFINE_bool("from_scratch", False, "Random initialisation instead of the pre-trained "
                      "weights (the paper's PeterZero / FineZero baselines).")
    flags.DEFINE_enum("insertion", None, ["b", "c", "d", "e"], "peterrec: patch insertion "
                      "(paper Figure 3); default b for causal, d for non-causal backbones.")
    flags.DEFINE_enum("pooling", None, ["last", "first_last", "sum", "mean"], "User vector; "
                      "default last (causal) or first_last (non-causal), as the release.")
    flags.DEFINE_enum("loss", None, ["pairwise", "bpr", "ce"], "Default pairwise (item_rec, the "
                      "release's -log s(pos) - log(1 - s(neg))) or ce (classify).")
    flags.DEFINE_float("bottleneck_ratio", None, "peterrec: patch width as a share of C "
                       "(default 0.25, the release's C/4; the paper describes C/8).")
    flags.DEFINE_string("patch_activation", None, "peterrec: patch activation (default "
                        "gelu_tanh, the release's; or any Keras activation name).")
    flags.DEFINE_bool("train_layer_norm", True, "peterrec: also train each block's second "
                      "layer norm (the release does).")
    flags.DEFINE_integer("num_negatives", 1, "item_rec: sampled negative targets per positive.")
    flags.DEFINE_float("l2_reg", 0.02, "item_rec: L2 on the looked-up target embeddings.")
    flags.DEFINE_enum("eval_ranking", "sampled", ["sampled", "full"], "item_rec: true target + "
                      "(num_candidates-1) sampled ones (the paper), or all targets.")
    flags.DEFINE_integer("num_candidates", 100, "item_rec sampled ranking: candidates per example.")
    flags.DEFINE_bool("save_full_model", False, "Store the whole model in --model_dir. By "
                      "default a task fine-tuned over the pre-trained backbone (every method "
                      "but fineall, not --from_scratch) stores only what it trained (patches, "
                      "head, trained layer norms / blocks: task_weights.npz) plus the "
                      "--pretrained directory and its backbone's fingerprint; evaluate, "
                      "export and further fine-tuning load it over that directory and refuse "
                      "a backbone whose fingerprint differs.")
    flags.mark_flags_as_required(["pretrained"])


def main(argv):
    """absl entry: flags -> run_finetune; exit 2 on a usage error, 130 when interrupted."""
    from peterrec_tf.cli import run_training_job

    return run_training_job(argv, run_finetune, NAMES)


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
