"""Transfer a pre-trained encoder to a downstream task (PeterRec and the paper's baselines).

    python -m peterrec_tf.finetune --pretrained=runs/nextitnet --data_dir=PREPARED/coldrec \
        --model_dir=runs/coldrec [--method=peterrec|fineall|finecls|finelast] [--insertion=b]

--pretrained is a pre-training model directory or a convert_tf1 output; it is only read.
From Python: `peterrec_tf.jobs.finetuning.run_finetune(pretrained=..., data_dir=...,
model_dir=..., **settings)`.
"""

from peterrec_tf.jobs.finetuning import (PATCH_DEFAULTS, SETTINGS, check_settings,  # noqa: F401
                                         run_finetune)
from peterrec_tf.cli import training_main
from peterrec_tf.training.flags import define_common_flags, register_validators


def define_flags():
    """The job's absl flags (common training flags + transfer method, patches, loss)."""
    from absl import flags

    from peterrec_tf.layers.residual_block import INSERTIONS
    from peterrec_tf.models.finetuner import LOSSES, POOLINGS, TASKS
    from peterrec_tf import transfer_methods
    from peterrec_tf.data.candidates import RANKINGS

    define_common_flags(batch_size=512, learning_rate=1e-3)
    flags.DEFINE_string("pretrained", None, "Pre-trained model directory (a pretrain job's "
                        "--model_dir or a convert_tf1 --output_dir). Only read, never written.")
    flags.DEFINE_enum("task", None, list(TASKS), "Downstream task; by default the "
                      "task named in the dataset's metadata.json (another one is an error).")
    flags.DEFINE_enum("method", "peterrec", transfer_methods.names(), "; ".join(
        f"{name}: {transfer_methods.get(name).summary}" for name in transfer_methods.names()))
    flags.DEFINE_integer("finelast_blocks", None, "finelast: how many of the last residual "
                         "blocks train (default 1).")
    flags.DEFINE_bool("from_scratch", False, "Random initialisation instead of the pre-trained "
                      "weights (the paper's PeterZero / FineZero baselines).")
    flags.DEFINE_enum("insertion", None, list(INSERTIONS), "peterrec: patch insertion "
                      "(paper Figure 3); default b for causal, d for non-causal backbones.")
    flags.DEFINE_enum("pooling", None, list(POOLINGS), "User vector; "
                      "default last (causal) or first_last (non-causal), as the release.")
    flags.DEFINE_enum("loss", None, list(LOSSES), "Default pairwise (item_rec, the "
                      "release's -log s(pos) - log(1 - s(neg))) or ce (classify).")
    flags.DEFINE_float("bottleneck_ratio", None, "peterrec: patch width as a share of C "
                       "(default 0.25, the release's C/4; the paper describes C/8).")
    flags.DEFINE_string("patch_activation", None, "peterrec: patch activation (default "
                        "gelu_tanh, the release's; or any Keras activation name).")
    flags.DEFINE_bool("train_layer_norm", True, "peterrec: also train each block's second "
                      "layer norm (the release does).")
    flags.DEFINE_integer("num_negatives", 1, "item_rec: sampled negative targets per positive.")
    flags.DEFINE_float("l2_reg", 0.02, "item_rec: L2 on the looked-up target embeddings.")
    flags.DEFINE_enum("eval_ranking", "sampled", list(RANKINGS), "item_rec: true target + "
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
    register_validators()  # after every flag: the single-flag range checks


#: flags -> run_finetune -> the last line (exit 130 when interrupted, resumable).
main = training_main(run_finetune, SETTINGS)


def cli():
    """The command (`python -m peterrec_tf.finetune` and its console command)."""
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__)


if __name__ == "__main__":
    cli()
