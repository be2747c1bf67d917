"""The paper's transfer comparison (Tables 2, 3, 7; Figures 4-6) as one command.

    python -m peterrec_tf.experiments.transfer --dataset=DIR --seeds=3 --output_dir=WORK

DIR is a multi-task preparation (`pipelines.prepare --format=synthetic|movielens_100k`)
with `datasets.json`. For each pre-training objective (causal next-item, masked-item) and
seed it pre-trains once (recording the next-item metrics over the whole item pool), then
for every downstream task runs the simple baselines (LabelCS; Popularity for item
recommendation; naive Bayes on a bag of items for classification, its smoothing chosen by
cross-validation on training users) and the neural methods: FineZero and PeterZero (no
pre-training), FineCLS, FineLast, FineAll, PeterRec with insertions b, c, d, e. Every
neural run has the same fixed budget (nothing is selected on any split) and records a
learning curve; a limited-data run repeats some methods on 10% / 30% of the training users.

Evaluation is the experiment's own, on saved models: sampled ranking against candidates
fixed by `--eval_seed` (the same for every method and training seed, so the std over
seeds is training noise only; the user's other held-out targets are never negatives),
full ranking over every target next to it, accuracy plus balanced accuracy and macro-F1
for classification, 95% bootstrap intervals over test users (paired for differences).

Writes into WORK: results.json (provenance: commit, dirty flag, configuration, versions;
pre-training per seed; every run; the summary with intervals), results.md, results.svg,
learning_curves.svg, limited_data.svg; models/, data subsets and per-example outputs stay
in WORK (never copy those into the repository: they derive from the data). A dirty work
tree is refused unless --allow_dirty.
"""

import os
import sys

from peterrec_tf.experiments.transfer.plan import METHODS, PATCH_PRESETS, method_key
from peterrec_tf.experiments.transfer.runner import Interrupted, run


def define_flags():
    """The command's absl flags."""
    from absl import flags

    flags.DEFINE_string("dataset", None, "A multi-task prepared directory (with datasets.json): "
                        "python -m pipelines.prepare --format=synthetic|movielens_100k.")
    flags.DEFINE_string("output_dir", None, "Work directory: models/, data subsets, per-example "
                        "outputs and results.json/.md/.svg; re-running skips the runs already "
                        "recorded (resumable). Copy only results.* and *.svg into a report.")
    flags.DEFINE_integer("seeds", 3, "Training seeds per configuration (0..seeds-1); tables "
                         "show mean +- sample std over them.")
    flags.DEFINE_list("objectives", ["next_item", "masked_item"], "Pre-training objectives to "
                      "compare: next_item (causal NextItNet), masked_item (GRec).")
    flags.DEFINE_list("tasks", [], "Downstream tasks to run (names in datasets.json); default "
                      "all of them.")
    flags.DEFINE_integer("channels", 32, "Backbone width C of every pre-trained model.")
    flags.DEFINE_list("dilations", ["1", "4", "1", "4"], "Backbone dilation list (one residual "
                      "block per value).")
    flags.DEFINE_integer("pretrain_steps", 800, "Pre-training steps per objective and seed "
                         "(batch 64, learning rate 2e-3).")
    flags.DEFINE_bool("select_pretrained", True, "Keep the pre-trained weights of the best of "
                      "8 periodic validations (next-item NDCG@10 on the validation split, full "
                      "ranking); false: the last step's weights. Both current reports used true.")
    flags.DEFINE_integer("finetune_steps", 300, "Fine-tuning steps per run: one fixed budget "
                         "for every method (nothing is selected on any split).")
    flags.DEFINE_integer("batch_size", 128, "Fine-tuning batch size of every run.")
    flags.DEFINE_float("learning_rate", 5e-3, "Fine-tuning Adam learning rate of every run.")
    flags.DEFINE_enum("patch_preset", "release", sorted(PATCH_PRESETS), "PeterRec patch width: "
                      "release = C/4 (the original code's, the project default), paper = C/8 "
                      "(the paper's text). The share table lists both either way.")
    flags.DEFINE_integer("eval_seed", 0, "Seed of the sampled-ranking candidates, the limited-"
                         "data subsets, naive Bayes' CV folds and the bootstrap; independent of "
                         "the training seeds.")
    flags.DEFINE_integer("num_candidates", 100, "Sampled ranking: the true target + this many "
                         "minus one negatives.")
    flags.DEFINE_bool("exclude_other_targets", True, "Never draw a user's other held-out "
                      "targets as negatives (nor rank against them in full ranking).")
    flags.DEFINE_integer("curve_points", 10, "Learning-curve points per run (checkpoints "
                         "evaluated on validation and test); 0: none.")
    flags.DEFINE_list("limited_fractions", ["0.1", "0.3"], "Shares of the training users for "
                      "the limited-data runs (the main runs are 100%); empty: none.")
    flags.DEFINE_list("limited_methods", ["popularity", "naivebayes", "finezero", "fineall",
                                          "peterrec_b"], "Methods of the limited-data runs "
                      "(keys: " + ", ".join(method_key(m) for m, _ in METHODS) + ").")
    flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples of the test users.")
    flags.DEFINE_list("methods", [], "Main-run methods (keys as --limited_methods); default "
                      "all.")
    flags.DEFINE_bool("allow_dirty", False, "Write a report from a work tree with uncommitted "
                      "changes (recorded in results.json); refused otherwise.")
    flags.mark_flags_as_required(["dataset", "output_dir"])


def main(argv):
    from absl import flags

    del argv
    v = flags.FLAGS
    try:
        _run_from_flags(v)
    except Interrupted as stopped:
        print(f"interrupted at {stopped}; run the same command again to resume", file=sys.stderr)
        return 130
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(open(os.path.join(v.output_dir, "results.md")).read())
    return 0


def _run_from_flags(v):
    run(v.dataset, v.output_dir, v.seeds, tuple(v.objectives), v.channels,
        tuple(int(d) for d in v.dilations), v.pretrain_steps, v.finetune_steps, v.batch_size,
        v.learning_rate, v.tasks or None, select_pretrained=v.select_pretrained,
        eval_seed=v.eval_seed, num_candidates=v.num_candidates,
        exclude_other_targets=v.exclude_other_targets, patch_preset=v.patch_preset,
        curve_points=v.curve_points, limited_fractions=[float(f) for f in v.limited_fractions],
        limited_methods=v.limited_methods, bootstrap=v.bootstrap, allow_dirty=v.allow_dirty,
        methods=v.methods or None)


if __name__ == "__main__":
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__)
