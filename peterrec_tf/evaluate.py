"""Evaluate any saved model directory on any split of a prepared dataset.

    python -m peterrec_tf.evaluate --model_dir=runs/coldrec --data_dir=PREPARED/coldrec \
        [--split=test] [--ranking=sampled|full] [--ks=5,10]

Ranking metrics (HR@k, MRR@k, NDCG@k) for pre-trained models (next item) and item
recommendation; accuracy for classification. Prints and writes JSON (--output).
Only reads --model_dir (so takes no lock on it); a corrupt or short split is an error.
"""

from peterrec_tf.jobs.evaluating import run_evaluate  # noqa: F401
from peterrec_tf.training.flags import register_validators


def define_flags():
    from absl import flags

    flags.DEFINE_string("model_dir", None, "A model directory (pretrain, finetune or convert_tf1 output).")
    flags.DEFINE_string("data_dir", None, "A prepared dataset with the same item vocabulary.")
    flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Split to evaluate.")
    from peterrec_tf.data.candidates import RANKINGS

    flags.DEFINE_enum("ranking", "sampled", list(RANKINGS), "sampled: true item + "
                      "(num_candidates-1) sampled negatives with a fixed seed (the paper's protocol); "
                      "full: against every item.")
    flags.DEFINE_list("ks", ["5", "10"], "Cut-offs k for HR@k, MRR@k, NDCG@k.")
    flags.DEFINE_integer("num_candidates", 100, "Candidates per example for sampled ranking.")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")
    flags.DEFINE_integer("seed", 0, "Seed of the sampled negatives.")
    flags.DEFINE_integer("max_len", 0, "History length (most recent items kept); 0 = the "
                         "model's own (its framing's length).")
    flags.DEFINE_string("output", None, "Write the metrics JSON here too.")
    flags.DEFINE_string("backbone_dir", None, "For a task stored alone (finetune's default): "
                        "its pre-trained model directory, when it is no longer where the task "
                        "recorded it; refused unless its backbone fingerprint matches.")
    flags.DEFINE_boolean("exclude_history", False, "Rank as an export with --exclude_history "
                         "serves: items of the user's history (the most recent max_len, as "
                         "the dataset frames it) are no competitors; the true item always "
                         "counts, even when it is in the history. Recorded in the results.")
    flags.mark_flags_as_required(["model_dir", "data_dir"])
    register_validators()  # after every flag: the single-flag range checks


def main(v):
    """flags -> run_evaluate -> the last line (the metrics JSON it wrote, export next)."""
    from pipelines.command import Done, command_line

    run_evaluate(v.model_dir, v.data_dir, v.split, v.ranking, v.ks, v.num_candidates,
                 v.batch_size, v.seed, v.max_len, v.output, backbone_dir=v.backbone_dir,
                 exclude_history=v.exclude_history)
    return Done(f"wrote {v.output}" if v.output else f"evaluated {v.model_dir} on "
                f"{v.data_dir} ({v.split}; --output writes the metrics as JSON)",
                command_line("peterrec_tf.export", model_dir=v.model_dir))


def cli():
    """The command (`python -m peterrec_tf.evaluate` and its console command)."""
    from pipelines.command import STARTS_OVER, run_command

    run_command(define_flags, main, __doc__, on_interrupt=STARTS_OVER)


if __name__ == "__main__":
    cli()
