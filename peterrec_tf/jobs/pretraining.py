"""The pre-training job as a library function (the command line is `peterrec_tf.pretrain`).

`run_pretrain(data_dir=..., model_dir=..., **settings)`: NextItNet (next item) or GRec
(masked item) pre-training of a universal user encoder; the same names as the flags.
"""

import os

from peterrec_tf.jobs.training_job import (TrainingJob, job_defaults, job_settings,
                                           ranking_metric_names, run_training)

HEADS = ("full", "dot", "tied")
#: Backbone architectures (`models.architectures`), by `--architecture`'s names.
ARCHITECTURES = ("dilated_cnn", "self_attention")
#: `training.optimizer.OPTIMIZERS`' names (kept here so that --help imports no TensorFlow).
OPTIMIZERS = ("adam", "lazy_adam")
#: `layers.self_attention`'s NORM_ORDERS and FEED_FORWARD_ACTIVATIONS and
#: `models.attention_backbone`'s POSITION_ORIGINS (kept here for --help likewise; a test
#: holds them equal).
NORM_ORDERS = ("pre", "post")
FEED_FORWARD_ACTIVATIONS = ("relu", "gelu")
POSITION_ORIGINS = ("newest", "oldest")
#: The default sampled-softmax size: the release's 20% of the vocabulary, bounded. At the
#: paper's 645K items 20% is nearly a full softmax; with 8,192 the head's matmul (2 C N
#: FLOPs a position) stays below the 8-block residual stack's (~96 C^2: equal at N = 48 C,
#: 12,288 for C = 256). `--num_sampled=-2` keeps the release's unbounded rule for parity.
MAX_DEFAULT_SAMPLED = 8192
#: The largest `[positions, items]` float32 logits tensor a full-softmax training step may
#: form. Its gradient and the softmax take as much again; at the paper's 645K items and
#: batches of 32 x 100 positions it would be 8.3 GB, which is refused (not chunked: a full
#: softmax at that size is ~3 TFLOP a step).
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
                 num_blocks=2, heads=1, feed_forward_dim=0, norm_order="pre",
                 activation="relu", position_origin="newest", window_stride=0,
                 time_budget_minutes=0.0, log=print):
    """Run the pre-training job; returns the results dict also written to results.json."""
    config = {k: v for k, v in locals().items() if k in SETTINGS}
    return run_training(PretrainingJob(config, log))


class PretrainingJob(TrainingJob):
    """Pre-training of a universal user encoder (`run_pretrain`'s settings as `config`)."""

    kind = task = "pretrain"

    def check(self):
        """Every setting and the data, before anything is written (flags.json included)."""
        from pipelines import inputs
        from pipelines.inputs import read_data_vocab
        from peterrec_tf import objectives
        from peterrec_tf.data.framing import resolve_length
        from peterrec_tf.data.windows import WINDOWS
        from peterrec_tf.jobs.checks import check_ranking, check_split_records, split_identity
        from peterrec_tf.models.architectures import check_architecture_settings
        from peterrec_tf.training.flags import check_values

        c = self.config
        c["dilations"] = [int(d) for d in c["dilations"]]
        c["ks"] = [int(k) for k in c["ks"]]
        check_values(c)
        self.objective = objectives.get(c["objective"])  # its model, preprocessor, XLA plan
        if c["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {c['optimizer']!r}")
        check_architecture_settings(c["architecture"], self.objective, c)
        for name, allowed in (("norm_order", NORM_ORDERS),
                              ("activation", FEED_FORWARD_ACTIVATIONS),
                              ("position_origin", POSITION_ORIGINS)):
            if c[name] not in allowed:
                raise ValueError(f"--{name} must be one of {allowed}, got {c[name]!r}")
        if c["head"] not in HEADS:
            raise ValueError(f"--head must be one of {', '.join(HEADS)}, got {c['head']!r}")
        if c["head"] == "full" and c["num_sampled"] > 0:
            raise ValueError("--num_sampled needs --head=dot or tied (the full head has no "
                             "sampled softmax)")
        self.resolve_selection(ranking_metric_names(c["ks"]))
        data_dir = c["data_dir"]
        self.meta = meta = inputs.read_metadata(data_dir)
        if meta["task"] != "pretrain":
            raise ValueError(f"{data_dir} holds {meta['task']} data; pre-training needs a "
                             "pretrain dataset (the pretrain/ folder of a preparation)")
        c["data_fingerprint"] = meta.get("fingerprint")
        c["data_split"] = split_identity(meta)
        self.vocab_size = meta["num_items"]
        self.num_sampled = self.check_softmax()
        check_split_records(data_dir, meta, ("train", "validation", "test"))
        check_ranking(data_dir, meta, c["eval_ranking"], c["num_candidates"], c["ks"])
        self.vocab = read_data_vocab(data_dir, "items.txt", meta)  # verified before training
        self.max_len = resolve_length(c["max_len"], metadata=meta)
        self.check_logits_size()
        if c["train_windows"] not in WINDOWS:
            raise ValueError(f"--train_windows must be one of {WINDOWS}, got "
                             f"{c['train_windows']!r}")
        if c["window_stride"]:
            if c["train_windows"] != "all":
                raise ValueError("--window_stride cuts every window of a sequence: it needs "
                                 "--train_windows=all")
            if c["window_stride"] > self.max_len:
                raise ValueError(f"--window_stride={c['window_stride']} must be at most "
                                 f"--max_len ({self.max_len})")
            self.objective.preprocessor(  # refuses a stride it cannot cut
                self.max_len, self.vocab_size,
                **self.objective.stride_keyword(c["window_stride"]))
        self.test_label = f"test ({c['eval_ranking']} ranking)"

    def check_softmax(self):
        """The sampled softmax's negatives the head trains with (0: a full softmax)."""
        c, vocab_size = self.config, self.vocab_size
        num_sampled = c["num_sampled"]
        if c["head"] != "full":
            num_sampled = default_num_sampled(num_sampled, vocab_size)
        num_sampled = max(0, num_sampled) if c["head"] != "full" else 0
        if c["label_smoothing"] and num_sampled:
            raise ValueError("--label_smoothing needs the full softmax: --head=full, or "
                             "--head=dot or tied with --num_sampled=0")
        if num_sampled >= vocab_size:
            raise ValueError(f"--num_sampled={num_sampled} must be below the {vocab_size} items")
        return num_sampled

    def check_logits_size(self):
        """A full softmax's logits of one batch must stay below MAX_FULL_SOFTMAX_BYTES."""
        batch_size, max_len, vocab_size = self.config["batch_size"], self.max_len, self.vocab_size
        logits_bytes = batch_size * max_len * vocab_size * 4
        if not self.num_sampled and logits_bytes > MAX_FULL_SOFTMAX_BYTES:
            raise ValueError(
                f"a full softmax over {vocab_size:,} items for batches of {batch_size} x "
                f"{max_len} positions forms [{batch_size * max_len:,}, {vocab_size:,}] logits "
                f"({logits_bytes / 1e9:.1f} GB, about three times that with the softmax and "
                f"its gradient; the limit is {MAX_FULL_SOFTMAX_BYTES / 1e9:.1f} GB): use "
                "--head=dot with the bounded sampled softmax (--num_sampled=-1, the default) "
                "or a smaller --batch_size / --max_len")

    def build_model(self, strategy, precision):
        """NextItNet (next item) or GRecPretrainer (masked item) over the chosen backbone,
        compiled with the job's optimizer and XLA plan."""
        from peterrec_tf.data import datasets
        from peterrec_tf.models.architectures import backbone_for
        from peterrec_tf.training.flags import total_steps as count_steps
        from peterrec_tf.training.optimizer import make_optimizer
        from peterrec_tf.training.xla_policy import use_xla

        c = self.config
        objective = self.objective
        self.examples = (datasets.count_windows(c["data_dir"], "train", self.max_len, objective,
                                                c["window_stride"])
                         if c["train_windows"] == "all" else self.meta["splits"]["train"])
        self.steps = count_steps(c["train_steps"], c["epochs"], self.examples, c["batch_size"])
        self.steps_per_epoch = self.examples // c["batch_size"]
        with strategy.scope():
            backbone = backbone_for(c["architecture"], self.vocab_size, c["channels"],
                                    causal=objective.causal, max_len=self.max_len,
                                    dilations=c["dilations"], kernel_size=c["kernel_size"],
                                    num_blocks=c["num_blocks"], heads=c["heads"],
                                    feed_forward_dim=c["feed_forward_dim"] or None,
                                    norm_order=c["norm_order"], activation=c["activation"],
                                    position_origin=c["position_origin"],
                                    dropout=c["dropout"],
                                    embedding_dropout=c["embedding_dropout"])
            self.model = model = objective.build_model(
                backbone, head=c["head"], num_sampled=self.num_sampled,
                framing=datasets.data_framing(self.meta, None, self.max_len),
                label_smoothing=c["label_smoothing"])
            model.build()
            xla = use_xla(c["jit_compile"], c["strategy"], c["deterministic"])
            plan = self.xla_plan() if xla else None
            model.compile(optimizer=make_optimizer(c["optimizer"], c["learning_rate"],
                                                   self.steps, c["lr_schedule"],
                                                   c["warmup_steps"], c["weight_decay"]),
                          xla_plan=plan if xla else ())
        self.framing = model.framing
        self.log(self.describe(type(model).__name__, plan, precision, strategy))

    def xla_plan(self):
        """What of the training step XLA compiles (`training.xla_policy`)."""
        from peterrec_tf.data import datasets
        from peterrec_tf.training.xla_policy import target_fill

        c = self.config
        return self.objective.xla_plan(self.num_sampled, c["channels"], fill=lambda: target_fill(
            datasets.pretrain_dataset(c["data_dir"], "train", c["batch_size"], self.objective,
                                      self.max_len, mask_rate=c["mask_rate"], shuffle=False,
                                      seed=c["seed"], windows=c["train_windows"],
                                      window_stride=c["window_stride"])))

    def describe(self, model_name, plan, precision, strategy):
        """The log line saying what is trained, how long and how (`plan` None: no XLA)."""
        c = self.config
        return (f"pre-training {model_name} ({c['objective']}, head {c['head']}"
                + (f", sampled softmax {self.num_sampled}" if self.num_sampled else "")
                + f"): {self.vocab_size} items, {c['channels']} channels, "
                + (f"dilations {c['dilations']}, " if c["architecture"] == "dilated_cnn" else
                   f"self-attention, {c['num_blocks']} {c['norm_order']}-norm blocks of "
                   f"{c['heads']} heads ({c['activation']}), positions from the "
                   f"{c['position_origin']} item, ")
                + (f"windows every {c['window_stride']} items, " if c["window_stride"] else "")
                + f"{self.steps} steps of batch {c['batch_size']} ({self.examples} training "
                f"windows, {precision}, "
                + (f"XLA: {' + '.join(plan)}, " if plan is not None else "")
                + f"{strategy.num_replicas_in_sync} replicas)")

    def build_inputs(self, strategy):
        """Training windows (shuffled, masked for masked_item), repeated."""
        from peterrec_tf.data import datasets

        c = self.config
        return datasets.pretrain_dataset(c["data_dir"], "train", c["batch_size"], self.objective,
                                         self.max_len, mask_rate=c["mask_rate"], shuffle=True,
                                         seed=c["seed"], repeat=True, windows=c["train_windows"],
                                         window_stride=c["window_stride"],
                                         drop_remainder=strategy.num_replicas_in_sync > 1)

    def save(self):
        """The model directory; a finished model this run replaces stays loadable for the
        tasks over it."""
        from peterrec_tf.model_dir import padding_tokens_of, save_model_dir
        from peterrec_tf.task_artifact import (PRETRAINED_FINGERPRINT, backbone_fingerprint,
                                               keep_replaced_backbone)

        c, model = self.config, self.model
        keep_replaced_backbone(c["model_dir"], model.backbone, self.log)
        save_model_dir(c["model_dir"], model, dict(
            {"objective": self.objective.name, "data_dir": os.path.abspath(c["data_dir"]),
             PRETRAINED_FINGERPRINT: backbone_fingerprint(model.backbone)},
            **padding_tokens_of(self.meta)), {"items": self.vocab})


SETTINGS = job_settings(run_pretrain)
PretrainingJob.defaults = job_defaults(run_pretrain)
