"""Pre-train a universal user encoder: NextItNet (next item) or GRec (masked item).

    python -m peterrec_tf.pretrain --data_dir=PREPARED/pretrain --model_dir=runs/nextitnet \
        [--objective=next_item|masked_item] [--head=full|dot] [--channels=64] ...

Writes a model directory (model.keras, config.json, vocab.txt) plus checkpoints/,
tensorboard/, flags.json and results.json into --model_dir.  From Python:
`peterrec_tf.jobs.pretraining.run_pretrain(data_dir=..., model_dir=..., **settings)` (the
same names as the flags).
"""

from peterrec_tf.jobs.pretraining import (  # noqa: F401
    ARCHITECTURES, FEED_FORWARD_ACTIVATIONS, HEADS, NORM_ORDERS, OPTIMIZERS, POSITION_ORIGINS,
    SETTINGS, run_pretrain)
from peterrec_tf.cli import training_main
from peterrec_tf.training.flags import define_common_flags, register_validators


def define_flags():
    """The job's absl flags (common training flags + architecture and objective)."""
    from absl import flags

    from peterrec_tf import objectives
    from peterrec_tf.data.candidates import RANKINGS
    from peterrec_tf.data.windows import WINDOWS

    define_common_flags(batch_size=32, learning_rate=1e-3)
    flags.DEFINE_enum("objective", objectives.default().name, list(objectives.names()), "; ".join(
        f"{name}: {objectives.get(name).summary}" for name in objectives.names()) + ".")
    flags.DEFINE_float("mask_rate", 0.3, "masked_item: share of each sequence's items masked "
                       "(80% -> [MASK], 10% kept, 10% random item).")
    flags.DEFINE_enum("architecture", "dilated_cnn", list(ARCHITECTURES), "dilated_cnn: "
                      "NextItNet/GRec residual blocks of dilated convolutions (the paper's); "
                      "self_attention: SASRec-style causal Transformer blocks (next_item only; "
                      "padding inert, learned positions). Patches, fine-tuning and export work "
                      "alike on both.")
    flags.DEFINE_integer("channels", 64, "Embedding / hidden width C.")
    flags.DEFINE_list("dilations", ["1", "4", "1", "4", "1", "4", "1", "4"],
                      "dilated_cnn: one residual block per value d, its convs at rates d and "
                      "2d (the release's convention).")
    flags.DEFINE_integer("kernel_size", 3, "dilated_cnn: convolution kernel size k.")
    flags.DEFINE_integer("num_blocks", 2, "self_attention: number of Transformer blocks.")
    flags.DEFINE_integer("heads", 1, "self_attention: attention heads per block (must "
                         "divide --channels).")
    flags.DEFINE_integer("feed_forward_dim", 0, "self_attention: inner width of each block's "
                         "feed-forward network (0: --channels, SASRec's; RecBole's SASRec "
                         "uses 4x).")
    flags.DEFINE_enum("norm_order", "pre", list(NORM_ORDERS), "self_attention: where each "
                      "block's layer norms sit. pre: in front of each residual branch, a "
                      "layer norm after the last block (SASRec's); post: after each residual "
                      "addition, a layer norm on the embedding (the Transformer's and BERT's, "
                      "RecBole's SASRec).")
    flags.DEFINE_enum("activation", "relu", list(FEED_FORWARD_ACTIVATIONS), "self_attention: "
                      "the feed-forward networks' activation (relu: SASRec's; gelu: "
                      "RecBole's SASRec, BERT's).")
    flags.DEFINE_enum("position_origin", "newest", list(POSITION_ORIGINS), "self_attention: "
                      "where position 0 is. newest: the most recent item (SASRec's); oldest: "
                      "the window's first real item (RecBole's SASRec), so each position's "
                      "state is that of its prefix alone.")
    flags.DEFINE_enum("head", "full", list(HEADS), "full: 1x1 conv on relu(h) with a full "
                      "softmax; dot: h @ W^T + b with its own W, trained with a sampled "
                      "softmax; tied: h @ E^T + b with E the input item embedding (SASRec's "
                      "tying: no second [V, C] table), sampled like dot.")
    flags.DEFINE_integer("num_sampled", -1, "dot and tied heads: sampled-softmax negatives. "
                         "-1: the release's 20% of the vocabulary, at most 8,192 (beyond that the "
                         "head outweighs the residual stack; 645K items would sample 129K); "
                         "-2: the release's 20% unbounded (parity); 0: full softmax.")
    flags.DEFINE_enum("optimizer", "adam", list(OPTIMIZERS), "adam: Adam over every "
                      "parameter each step (the release's optimizer, fused kernel); "
                      "lazy_adam: the embedding's and the sampled softmax's rows are updated "
                      "only when a batch touches them (much faster at hundreds of thousands "
                      "of items, not the release's trajectory; other weights as adam).")
    flags.DEFINE_enum("eval_ranking", "full", list(RANKINGS), "Next-item evaluation "
                      "against every item, or the true item + (num_candidates-1) sampled ones.")
    flags.DEFINE_integer("num_candidates", 100, "Candidates per example for sampled ranking.")
    flags.DEFINE_enum("train_windows", "all", list(WINDOWS), "all: cut every training "
                      "sequence longer than max_len into windows so every item is trained on "
                      "(an epoch = one pass over all windows); last: only each sequence's most "
                      "recent max_len items (the release's one example per user).")
    flags.DEFINE_integer("window_stride", 0, "next_item with --train_windows=all: cut a "
                         "window every this many items (1..max_len), each trained on its "
                         "newest window_stride targets only, so every target is trained once "
                         "with at least max_len - window_stride items of context (1: every "
                         "prefix, as per-prefix trainers do; an epoch costs about max_len / "
                         "window_stride times more windows on long histories). 0: windows "
                         "sharing one item (a target near a window's start sees little).")
    register_validators()  # after every flag: the single-flag range checks


#: flags -> run_pretrain -> the last line (exit 130 when interrupted, resumable).
main = training_main(run_pretrain, SETTINGS)


def cli():
    """The command (`python -m peterrec_tf.pretrain` and its console command)."""
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__)


if __name__ == "__main__":
    cli()
