"""Pre-train a universal user encoder: NextItNet (next item) or GRec (masked item).

    python -m peterrec_tf.pretrain --data_dir=PREPARED/pretrain --model_dir=runs/nextitnet \
        [--objective=next_item|masked_item] [--head=full|dot] [--channels=64] ...

Writes a model directory (model.keras, config.json, vocab.txt) plus checkpoints/,
tensorboard/, flags.json and results.json into --model_dir.  From Python:
`run_pretrain(data_dir=..., model_dir=..., **settings)` (the same names as the flags).
"""

import contextlib
import os
import time

from peterrec_tf.training.flags import COMMON, define_common_flags

NAMES = COMMON + ("objective", "mask_rate", "channels", "dilations", "kernel_size", "head",
                  "num_sampled", "eval_ranking", "num_candidates", "train_windows")
OBJECTIVES = ("next_item", "masked_item")


def run_pretrain(data_dir, model_dir, objective="next_item", mask_rate=0.3, channels=64,
                 dilations=(1, 4, 1, 4, 1, 4, 1, 4), kernel_size=3, head="full", num_sampled=-1,
                 batch_size=32, epochs=10.0, train_steps=0, learning_rate=1e-3, seed=0,
                 deterministic=False, strategy="default", mixed_precision=False,
                 checkpoint_every=500, keep_checkpoints=3, log_every=50, eval_every=0,
                 eval_batch_size=256, ks=(5, 10), max_len=0, eval_ranking="full",
                 num_candidates=100, train_windows="all", select_metric="",
                 jit_compile=True, log=print):
    """Run the pre-training job; returns the results dict also written to results.json."""
    import keras

    from pipelines import inputs
    from pipelines.locking import exclusive_lock
    from peterrec_tf.model_dir import save_model_dir
    from peterrec_tf.models import Backbone, GRecEncoder, NextItNet
    from peterrec_tf.training import best as selection
    from peterrec_tf.training import evaluation, loop, reproducibility, results, strategy as dist
    from peterrec_tf.training.flags import check_values, total_steps as count_steps
    from peterrec_tf.training.xla_policy import use_xla, xla_plan
    from peterrec_tf.training.optimizer import FusedAdam

    # everything is checked before anything is written (flags.json included)
    config = {k: v for k, v in locals().items() if k in NAMES}
    config["dilations"] = [int(d) for d in dilations]
    config["ks"] = [int(k) for k in ks]
    check_values(config)
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {OBJECTIVES}, got {objective!r}")
    if head not in ("full", "dot"):
        raise ValueError(f"--head must be full or dot, got {head!r}")
    if head == "full" and num_sampled > 0:
        raise ValueError("--num_sampled needs --head=dot (the full head has no sampled softmax)")
    selection.check_selection(select_metric, eval_every, strategy,
                              [f"{m}@{k}" for k in config["ks"] for m in ("hr", "mrr", "ndcg")])
    meta = inputs.read_metadata(data_dir)
    if meta["task"] != "pretrain":
        raise ValueError(f"{data_dir} holds {meta['task']} data; pre-training needs a pretrain "
                         "dataset (the pretrain/ folder of a preparation)")
    config["data_fingerprint"] = meta.get("fingerprint")
    vocab_size = meta["num_items"]
    if head == "dot" and num_sampled < 0:
        num_sampled = max(1, int(0.2 * vocab_size))  # the release's choice
    num_sampled = max(0, num_sampled) if head == "dot" else 0
    if num_sampled >= vocab_size:
        raise ValueError(f"--num_sampled={num_sampled} must be below the {vocab_size} items")
    inputs.check_candidates(data_dir, meta, eval_ranking, num_candidates)
    max_len = max_len or meta["max_len"]
    if train_windows not in inputs.WINDOWS:
        raise ValueError(f"--train_windows must be one of {inputs.WINDOWS}, got {train_windows!r}")
    chief = dist.is_chief()
    precision = dist.set_precision(mixed_precision)
    strategy_ = dist.make_strategy(strategy)
    dist.check_batch_size(batch_size, strategy_)
    with (exclusive_lock(model_dir) if chief else contextlib.nullcontext()), \
            inputs.reading(data_dir):
        results.record_config(model_dir, config, write=chief)
        # after the strategy: creating one may draw from Python's generator, which seeds
        # the initialisers (and the workers must initialise identically to a single process)
        reproducibility.set_seed(seed, deterministic)
        examples = (inputs.count_windows(data_dir, "train", max_len, objective)
                    if train_windows == "all" else meta["splits"]["train"])
        steps = count_steps(train_steps, epochs, examples, batch_size)
        with strategy_.scope():
            backbone = Backbone(vocab_size, channels, config["dilations"], kernel_size,
                                causal=objective == "next_item")
            cls = NextItNet if objective == "next_item" else GRecEncoder
            model = cls(backbone, head=head, num_sampled=num_sampled,
                        framing=inputs.task_framing(meta, None, max_len))
            model.build()
            plan = xla_plan(objective, num_sampled, channels)
            xla = use_xla(jit_compile, strategy, deterministic, supported=bool(plan))
            model.compile(optimizer=FusedAdam(learning_rate), xla_plan=plan if xla else ())
        log(f"pre-training {cls.__name__} ({objective}, head {head}"
            + (f", sampled softmax {num_sampled}" if num_sampled else "")
            + f"): {vocab_size} items, {channels} channels, dilations {config['dilations']}, "
            f"{steps} steps of batch {batch_size} ({examples} training windows, {precision}, "
            + (f"XLA: {' + '.join(plan)}, " if xla else "")
            + f"{strategy_.num_replicas_in_sync} replicas)")

        def make_dataset():
            return inputs.pretrain_dataset(data_dir, "train", batch_size, objective, max_len,
                                           mask_rate=mask_rate, shuffle=True, seed=seed,
                                           repeat=True, windows=train_windows,
                                           drop_remainder=strategy_.num_replicas_in_sync > 1)

        scorer = evaluation.score_function(model)

        def evaluate_split(split):
            data = inputs.eval_dataset(data_dir, split, eval_batch_size, eval_ranking,
                                       num_candidates=num_candidates, framing=model.framing,
                                       seed=seed)
            scores = evaluation.evaluate(model, data, "pretrain", config["ks"], scorer)
            inputs.check_count(data_dir, split, scores["examples"], "scored")
            return scores

        started = time.time()
        best = (selection.BestWeights(model, model_dir, select_metric, chief) if select_metric
                else None)
        trained = loop.train(model, make_dataset, steps, model_dir, batch_size, checkpoint_every,
                             keep_checkpoints, log_every, eval_every,
                             lambda: evaluate_split("validation"), log, chief, strategy_, best)
        report = {"job": "pretrain", "config": config, "training": trained,
                  "examples_per_second": trained["examples_per_second"]}
        if not trained["interrupted"]:
            report["validation"] = evaluate_split("validation")
            if best is not None:
                report["validation"], report["selected"] = selection.finish_selection(
                    best, trained["steps"], report["validation"], log)
            report["test"] = evaluate_split("test")
            log(f"test ({eval_ranking} ranking): " + "  ".join(
                f"{k} {v:.4f}" for k, v in report["test"].items() if k != "examples"))
            if chief:
                vocab = inputs.load_vocab(os.path.join(data_dir, "vocab", "items.txt"))
                save_model_dir(model_dir, model, {"objective": objective, "max_len": max_len,
                                                  "data_dir": os.path.abspath(data_dir)},
                               {"items": vocab})
        report["wall_seconds"] = time.time() - started
        if chief:
            results.write_results(model_dir, report)
        return report


def define_flags():
    """The job's absl flags (common training flags + architecture and objective)."""
    from absl import flags

    define_common_flags(batch_size=32, learning_rate=1e-3)
    flags.DEFINE_enum("objective", "next_item", list(OBJECTIVES),
                      "next_item: causal NextItNet; masked_item: non-causal GRec encoder.")
    flags.DEFINE_float("mask_rate", 0.3, "masked_item: share of each sequence's items masked "
                       "(80% -> [MASK], 10% kept, 10% random item).")
    flags.DEFINE_integer("channels", 64, "Embedding / hidden width C.")
    flags.DEFINE_list("dilations", ["1", "4", "1", "4", "1", "4", "1", "4"],
                      "One residual block per value d, its convs at rates d and 2d (the "
                      "release's convention).")
    flags.DEFINE_integer("kernel_size", 3, "Convolution kernel size k.")
    flags.DEFINE_enum("head", "full", ["full", "dot"], "full: 1x1 conv on relu(h) with a full "
                      "softmax; dot: h @ W^T + b, trained with a sampled softmax.")
    flags.DEFINE_integer("num_sampled", -1, "dot head: sampled-softmax negatives (-1 = 20%% of "
                         "the vocabulary, like the release; 0 = full softmax).")
    flags.DEFINE_enum("eval_ranking", "full", ["full", "sampled"], "Next-item evaluation "
                      "against every item, or the true item + (num_candidates-1) sampled ones.")
    flags.DEFINE_integer("num_candidates", 100, "Candidates per example for sampled ranking.")
    flags.DEFINE_enum("train_windows", "all", ["all", "last"], "all: cut every training "
                      "sequence longer than max_len into windows so every item is trained on "
                      "(an epoch = one pass over all windows); last: only each sequence's most "
                      "recent max_len items (the release's one example per user).")


def main(argv):
    """absl entry: flags -> run_pretrain; exit 2 on a usage error, 130 when interrupted."""
    from peterrec_tf.cli import run_training_job

    return run_training_job(argv, run_pretrain, NAMES)


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
