"""The fine-tuning job as a library function (the command line is `peterrec_tf.finetune`).

`run_finetune(pretrained=..., data_dir=..., model_dir=..., **settings)`: transfer a
pre-trained encoder to a downstream task with PeterRec or the paper's baselines.
"""

import os

from peterrec_tf import transfer_methods
from peterrec_tf.jobs.training_job import (TrainingJob, job_defaults, job_settings,
                                           ranking_metric_names, run_training)

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
                 lr_schedule="constant", warmup_steps=0, time_budget_minutes=0.0, log=print):
    """Run the fine-tuning job; returns the results dict also written to results.json."""
    config = {k: v for k, v in locals().items() if k in SETTINGS}
    return run_training(FinetuningJob(config, log))


class FinetuningJob(TrainingJob):
    """Transfer of a pre-trained encoder to a downstream task (`run_finetune`'s settings as
    `config`). What the settings leave open is resolved into attributes (`task`, `pooling`,
    `loss`), while `config` keeps them as given (flags.json, the resume comparison)."""

    kind = "finetune"

    def check(self):
        """Every setting, the pre-trained model and the data, before anything is written
        (flags.json included)."""
        from pipelines import inputs
        from peterrec_tf.data import datasets
        from peterrec_tf.data.framing import Framing
        from peterrec_tf.jobs.checks import (check_classes, check_evaluated_apart,
                                             check_ranking, check_split_records,
                                             split_identity)
        from peterrec_tf.model_dir import load_model_dir
        from peterrec_tf.task_artifact import backbone_fingerprint
        from peterrec_tf.training.flags import check_values

        c = self.config
        c["ks"] = [int(k) for k in c["ks"]]
        check_values(c)
        data_dir, pretrained = c["data_dir"], c["pretrained"]
        self.meta = meta = inputs.read_metadata(data_dir)
        data_task = meta["task"]
        if data_task not in ("item_rec", "classify"):
            raise ValueError(f"{data_dir} holds {data_task} data; fine-tuning needs item_rec "
                             "or classify data")
        if c["task"] is not None and c["task"] != data_task:
            raise ValueError(f"--task={c['task']} but {data_dir} holds {data_task} data")
        self.task = task = data_task
        c["data_fingerprint"] = meta.get("fingerprint")
        c["data_split"] = split_identity(meta)
        self.resolve_selection(["accuracy"] if task == "classify"
                               else ranking_metric_names(c["ks"]))
        if os.path.abspath(pretrained) == os.path.abspath(c["model_dir"]):
            raise ValueError("--model_dir must differ from --pretrained (the pre-trained model "
                             "is never modified)")
        self.source, _, source_vocabs = load_model_dir(pretrained)
        if self.source.task != "pretrain":  # a further fine-tuning: its source saw users too
            check_evaluated_apart(pretrained, data_dir, meta, "test", log=self.log,
                                  vocabs=source_vocabs)
        self.backbone = backbone = self.source.backbone
        # a resume rebuilds the frozen backbone from --pretrained (the checkpoints leave it
        # out): pre-trained further meanwhile, it is another one, refused by the comparison
        c["backbone_fingerprint"] = backbone_fingerprint(backbone)
        self.pooling = c["pooling"]
        if self.pooling is None and self.source.task != "pretrain":
            self.pooling = self.source.pooling  # a further fine-tuning reads users as before
        check_settings(c["method"], task, backbone.causal, c["insertion"], c["finelast_blocks"],
                       self.pooling, c["loss"], c["bottleneck_ratio"], c["patch_activation"])
        transfer_methods.get(c["method"]).check_settings(
            len(backbone.blocks), finelast_blocks=c["finelast_blocks"] or 1)
        self.data_vocabs = self.check_vocabularies(source_vocabs)
        self.num_outputs = meta["num_targets"] if task == "item_rec" else meta["num_classes"]
        self.loss = c["loss"] or ("pairwise" if task == "item_rec" else "ce")
        self.check_loss()
        check_split_records(data_dir, meta, ("train", "validation", "test"))
        check_ranking(data_dir, meta, c["eval_ranking"], c["num_candidates"], c["ks"])
        check_classes(data_dir, meta, ("train", "validation", "test"), log=self.log,
                      warn_only=("validation",))
        # a further fine-tuning keeps its source's framing (a converted release model's family)
        self.framing = datasets.data_framing(
            meta, self.source.framing if self.source.task != "pretrain"
            else Framing(backbone.FINE_TUNING_FRAMING), c["max_len"])
        positions = getattr(backbone, "max_positions", None)
        if positions and (self.framing.length or 0) + self.framing.extra_positions > positions:
            self.log(f"warning: histories of up to {self.framing.length} items over a backbone "
                     f"pre-trained with {positions} positions: the items past the "
                     f"{positions} newest share one position, as no pre-training window "
                     f"had them; --max_len={positions} keeps what the backbone learnt")

    def check_vocabularies(self, source_vocabs):
        """The data's vocabularies (verified now, saved with the task), the items the same
        as the pre-trained model's."""
        from pipelines.inputs import read_data_vocab

        data_dir, pretrained, meta = self.config["data_dir"], self.config["pretrained"], self.meta
        vocab_size = self.backbone.vocab_size
        if vocab_size != meta["num_items"]:
            raise ValueError(f"{data_dir} has {meta['num_items']} items but {pretrained} was "
                             f"pre-trained with {vocab_size}: prepare the data with "
                             f"--vocab={os.path.join(pretrained, 'vocab.txt')}")
        data_vocab = read_data_vocab(data_dir, "items.txt", meta)
        data_vocabs = {"items": data_vocab}
        for key, name in (("targets", "targets.txt"), ("labels", "labels.txt")):
            if os.path.exists(os.path.join(data_dir, "vocab", name)):
                data_vocabs[key] = read_data_vocab(data_dir, name, meta)
        if "items" in source_vocabs and source_vocabs["items"] != data_vocab:
            raise ValueError(f"{data_dir}/vocab/items.txt differs from {pretrained}/vocab.txt: "
                             "item ids would silently mean other items; prepare with --vocab")
        if "items" not in source_vocabs:
            self.log(f"warning: {pretrained} has no vocab.txt; only the vocabulary size "
                     f"({vocab_size}) could be checked against {data_dir}")
        return data_vocabs

    def check_loss(self):
        """The loss fits the task and the data's targets."""
        c, loss = self.config, self.loss
        if c["label_smoothing"] and loss != "ce":
            raise ValueError(f"--label_smoothing applies to softmax losses (--loss=ce), not "
                             f"--loss={loss}")
        if self.task == "item_rec" and loss != "ce" and c["num_negatives"] \
                and self.num_outputs < 3:
            raise ValueError(f"{c['data_dir']}: --loss={loss} samples negatives and needs at "
                             f"least 2 real targets, the data has {self.num_outputs - 1}")

    @property
    def negatives(self):
        """Sampled negative targets per positive (pairwise item_rec losses only)."""
        return self.config["num_negatives"] if (self.task == "item_rec"
                                                and self.loss != "ce") else 0

    def build_model(self, strategy, precision):
        """The method's fine-tuning model over the pre-trained backbone, compiled."""
        from peterrec_tf.models import build_finetuner, format_report, parameter_report
        from peterrec_tf.training.flags import total_steps as count_steps
        from peterrec_tf.training.optimizer import make_optimizer
        from peterrec_tf.training.xla_policy import use_xla

        c, task = self.config, self.task
        if self.source.task != "pretrain":
            self.log(f"{c['pretrained']} is a fine-tuned model; transferring its backbone "
                     "(without patches)")
            if self.backbone.patches:
                self.backbone = self.backbone.plain_copy()
        train_examples = self.meta["splits"]["train"]
        self.steps = count_steps(c["train_steps"], c["epochs"], train_examples, c["batch_size"])
        self.steps_per_epoch = train_examples // c["batch_size"]
        patch_config = {
            "bottleneck_ratio": c["bottleneck_ratio"] or PATCH_DEFAULTS["bottleneck_ratio"],
            "activation": c["patch_activation"] or PATCH_DEFAULTS["patch_activation"]}
        with strategy.scope():
            self.model = model = build_finetuner(
                self.backbone, c["method"], task, self.num_outputs, insertion=c["insertion"],
                patch_config=patch_config, from_scratch=c["from_scratch"], seed=c["seed"],
                pooling=self.pooling, loss=self.loss, l2_reg=c["l2_reg"],
                finelast_blocks=c["finelast_blocks"] or 1,
                train_layer_norm=c["train_layer_norm"], framing=self.framing,
                label_smoothing=c["label_smoothing"],
                regularisation={"dropout": c["dropout"],
                                "embedding_dropout": c["embedding_dropout"]})
            xla = use_xla(c["jit_compile"], c["strategy"], c["deterministic"])
            model.compile(optimizer=make_optimizer("adam", c["learning_rate"], self.steps,
                                                   c["lr_schedule"], c["warmup_steps"],
                                                   c["weight_decay"]),
                          metrics=self.fit_metrics(), jit_compile=xla)
        self.report = {"parameters": parameter_report(model)}
        self.log(f"fine-tuning {task} ({self.num_outputs} outputs) with {c['method']}"
                 + (" from scratch" if c["from_scratch"] else "")
                 + (f", insertion {model.backbone.insertion}" if model.backbone.insertion
                    else "")
                 + f": {self.steps} steps of batch {c['batch_size']}" + (" (XLA)" if xla else ""))
        self.log("  " + format_report(self.report["parameters"], "parameters"))

    def fit_metrics(self):
        """Fit-time metrics: accuracy, or how often the positive outscores its negatives."""
        from peterrec_tf.metrics import HitRate, classification_metrics

        if self.task == "classify":
            return classification_metrics()
        return [HitRate(1, name="pos_beats_neg")] if self.negatives else []

    def build_inputs(self, strategy):
        """Training examples (with sampled negatives for pairwise losses), repeated."""
        from peterrec_tf.data import datasets

        c = self.config
        return datasets.finetune_dataset(c["data_dir"], "train", c["batch_size"], self.negatives,
                                         framing=self.framing, shuffle=True, seed=c["seed"],
                                         repeat=True,
                                         drop_remainder=strategy.num_replicas_in_sync > 1)

    def save(self):
        """The task's model directory: by default only what it trained, over --pretrained
        (`task_artifact`), the whole model with --save_full_model or --from_scratch. A
        finished task this run replaces stays loadable for the tasks tuned over it."""
        import functools

        from peterrec_tf.jobs.record_overlap import TRAINING_RECORDS_FILE, write_training_records
        from peterrec_tf.model_dir import padding_tokens_of, save_model_dir
        from peterrec_tf.task_artifact import (PRETRAINED_FINGERPRINT, backbone_fingerprint,
                                               keep_replaced_backbone, stores_task_only)

        c, model = self.config, self.model
        alone = not (c["save_full_model"] or c["from_scratch"]) and stores_task_only(model)
        try:
            keep_replaced_backbone(c["model_dir"], model.backbone, self.log)
        except (OSError, ValueError) as error:  # an older task whose backbone moved on
            self.log(f"warning: the finished task in {c['model_dir']} could not be read "
                     f"({error}), so it is not kept before this run replaces it")
        save_model_dir(c["model_dir"], model, dict(
                           {"pretrained": os.path.abspath(c["pretrained"]),
                            "data_dir": os.path.abspath(c["data_dir"]),
                            PRETRAINED_FINGERPRINT: backbone_fingerprint(model.backbone)},
                           **padding_tokens_of(self.meta)),
                       dict(self.data_vocabs),
                       task_over=(c["pretrained"], self.backbone) if alone else None,
                       extra_files={TRAINING_RECORDS_FILE: functools.partial(
                           write_training_records, data_dir=c["data_dir"], meta=self.meta)})


SETTINGS = job_settings(run_finetune)
FinetuningJob.defaults = job_defaults(run_finetune)
