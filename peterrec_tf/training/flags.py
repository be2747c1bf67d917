"""absl flags every training job shares (defined by the entry points, never at import),
and the range checks of their values."""

import math

COMMON = ("data_dir", "model_dir", "batch_size", "epochs", "train_steps", "learning_rate",
          "seed", "deterministic", "strategy", "mixed_precision", "checkpoint_every",
          "keep_checkpoints", "log_every", "eval_every", "eval_batch_size", "ks", "max_len",
          "select_metric", "jit_compile", "patience", "dropout", "embedding_dropout",
          "weight_decay", "label_smoothing", "lr_schedule", "warmup_steps",
          "time_budget_minutes")


def define_common_flags(batch_size, learning_rate):
    """Data, model_dir, optimisation, reproducibility, distribution and cadence flags."""
    from absl import flags

    flags.DEFINE_string("data_dir", None, "A prepared dataset directory (python -m "
                        "pipelines.prepare): vocab/, TFRecord shards and metadata.json.")
    flags.DEFINE_string("model_dir", None, "Where checkpoints/, tensorboard/, flags.json, "
                        "results.json and the final model directory (model.keras, config.json, "
                        "vocabularies) are written. Re-running with the same model_dir resumes "
                        "from its latest checkpoint, continuing step count and data position.")
    flags.DEFINE_integer("batch_size", batch_size, "Global training batch size (split across "
                         "replicas and workers).")
    flags.DEFINE_float("epochs", 10.0, "Passes over the training split; ignored when "
                       "--train_steps > 0.")
    flags.DEFINE_integer("train_steps", 0, "Total optimizer steps of the run (a resumed run "
                         "continues up to it); 0 = derive from --epochs.")
    flags.DEFINE_float("learning_rate", learning_rate, "Adam learning rate.")
    flags.DEFINE_integer("seed", 0, "Seed for initialisation, shuffling, masking, negatives and "
                         "evaluation candidates.")
    flags.DEFINE_bool("deterministic", False, "Make TensorFlow ops deterministic (bit-exact "
                      "reruns; slower on accelerators).")
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                      "tf.distribute strategy: default (one device), mirrored (all local "
                      "devices), multi_worker (the cluster in the TF_CONFIG environment variable).")
    flags.DEFINE_bool("mixed_precision", False, "Mixed precision (float16 on GPU, bfloat16 "
                      "elsewhere); meant for accelerators.")
    flags.DEFINE_integer("checkpoint_every", 500, "Checkpoint every N steps (and always at the "
                         "end and on SIGINT/SIGTERM).")
    flags.DEFINE_integer("keep_checkpoints", 3, "How many recent checkpoints to keep.")
    flags.DEFINE_integer("log_every", 50, "Progress line (step, loss, examples/s, ETA) and "
                         "TensorBoard scalars every N steps.")
    flags.DEFINE_integer("eval_every", -1, "Evaluate on the validation split every N steps "
                         "(-1: once per epoch; 0: only at the end).")
    flags.DEFINE_string("select_metric", "auto", "With --eval_every: keep the weights of the "
                        "periodic validation with the highest value of this metric (hr@K, "
                        "mrr@K, ndcg@K for K in --ks; accuracy for classification) and use them "
                        "for the test figures and the saved model; auto = ndcg@<largest K> "
                        "(accuracy for classification); empty = the last step's.")
    flags.DEFINE_integer("patience", 0, "Stop after this many periodic validations in a row "
                         "without a better --select_metric (the best weights are kept); 0 = "
                         "train all steps.")
    flags.DEFINE_float("dropout", 0.0, "Dropout rate in every residual block's branch "
                       "(training only).")
    flags.DEFINE_float("embedding_dropout", 0.0, "Dropout rate on the item embeddings "
                       "(training only).")
    flags.DEFINE_float("weight_decay", 0.0, "Decoupled (AdamW) weight decay of kernels and "
                       "embeddings, not of biases and layer norms; with lazy_adam only the "
                       "rows a batch touches decay.")
    flags.DEFINE_float("label_smoothing", 0.0, "Label smoothing of softmax losses (the full "
                       "softmax of pre-training, --loss=ce and classification of fine-tuning).")
    flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine", "linear"], "Learning "
                      "rate after the warm-up: constant, or cosine / linear decay to 0 at the "
                      "last step (a function of the optimizer's step: resumes continue it).")
    flags.DEFINE_integer("warmup_steps", 0, "Linear learning-rate warm-up over this many steps.")
    flags.DEFINE_float("time_budget_minutes", 0.0, "Stop training once this many minutes have "
                       "passed since the job started (checked after every step; the best "
                       "weights are kept, then the final validation, test and save run); "
                       "a run continued with the same command gets a new budget; 0 = none.")
    flags.DEFINE_bool("jit_compile", True, "Use XLA in the training step (measured faster on "
                      "CPU for these models; Keras leaves XLA off on CPU by default): the whole "
                      "step for fine-tuning, and for next-item pre-training with the full "
                      "softmax under 128 channels; the residual blocks and the softmax loss "
                      "between its matmuls with the sampled softmax (its sampler has no XLA "
                      "kernel) and with the full softmax from 128 channels (TF's matmuls are "
                      "faster there); only the softmax loss for masked-item pre-training. Off "
                      "by itself with --deterministic and distributed strategies. Off: TF's "
                      "own ops, the reference.")
    flags.DEFINE_integer("eval_batch_size", 256, "Evaluation batch size.")
    flags.DEFINE_list("ks", ["5", "10"], "Cut-offs k for HR@k, MRR@k and NDCG@k.")
    flags.DEFINE_integer("max_len", 0, "Sequence length to pad/truncate to (most recent items "
                         "kept); 0 = the dataset's max_len.")
    flags.mark_flags_as_required(["data_dir", "model_dir"])


def config_from_flags(values, names):
    """{name: value} for the parsed flags `names`, with list flags turned into ints."""
    config = {name: getattr(values, name) for name in names}
    for key in ("ks", "dilations"):
        if key in config and config[key] is not None:
            config[key] = [int(k) for k in config[key]]
    return config


def total_steps(train_steps, epochs, num_examples, batch_size):
    """`train_steps` when > 0, else round(epochs * batches per epoch) (at least 1)."""
    if train_steps and train_steps > 0:
        return int(train_steps)
    return max(1, int(round(epochs * max(1, num_examples // batch_size))))


#: Smallest allowed value of the integer settings a job may have (absent ones are skipped).
INTEGER_MINIMUMS = {"batch_size": 1, "train_steps": 0, "checkpoint_every": 1,
                    "keep_checkpoints": 1, "log_every": 1, "eval_every": -1, "eval_batch_size": 1,
                    "max_len": 0, "channels": 1, "patience": 0, "warmup_steps": 0, "kernel_size": 1, "num_candidates": 2,
                    "num_sampled": -2, "num_negatives": 0, "finelast_blocks": 1,
                    "num_blocks": 1, "heads": 1, "feed_forward_dim": 0, "window_stride": 0}


def register_validators():
    """absl validators for the range checks of single flags defined so far (INTEGER_MINIMUMS,
    the learning rate, epochs, mask rate, cut-offs and dilations), so a bad value on the
    command line is refused while parsing; `check_values` keeps the same checks for Python
    callers of the jobs, and the checks between flags."""
    from absl import flags

    defined = flags.FLAGS

    def register(name, test, expected):
        if name in defined:
            flags.register_validator(name, test, message=f"--{name} must be {expected}")

    for name, low in INTEGER_MINIMUMS.items():
        register(name, lambda value, low=low: value is None or value >= low, f">= {low}")
    register("learning_rate", lambda value: math.isfinite(value) and value > 0,
             "a finite number > 0")
    register("epochs", lambda value: math.isfinite(value) and value >= 0,
             "a finite number >= 0")
    register("mask_rate", lambda value: 0 < value <= 1, "in (0, 1]")
    for name in ("ks", "dilations"):
        register(name, _positive_integers, "a non-empty list of integers >= 1")


def _positive_integers(values):
    try:
        return bool(values) and all(int(value) >= 1 for value in values)
    except ValueError:
        return False


def check_values(config):
    """Refuse out-of-range or non-finite settings before a job touches anything (NaN
    fails every comparison, so each test is written to pass only for good values)."""
    for name, low in INTEGER_MINIMUMS.items():
        value = config.get(name)
        if value is not None and not value >= low:
            raise ValueError(f"--{name} must be >= {low}, got {value}")
    if "learning_rate" in config:
        _finite(config, "learning_rate", positive=True)
    if "epochs" in config:
        _finite(config, "epochs", positive=not config.get("train_steps"))
    if config.get("l2_reg") is not None:
        _finite(config, "l2_reg")
    for name in ("weight_decay", "time_budget_minutes"):
        if config.get(name) is not None:
            _finite(config, name)
    for name in ("dropout", "embedding_dropout", "label_smoothing"):
        if config.get(name) is not None and not 0 <= config[name] < 1:
            raise ValueError(f"--{name} must be in [0, 1), got {config[name]}")
    if config.get("lr_schedule") not in (None, "constant", "cosine", "linear"):
        raise ValueError(f"--lr_schedule must be constant, cosine or linear, got "
                         f"{config['lr_schedule']!r}")
    if config.get("mask_rate") is not None and not 0 < config["mask_rate"] <= 1:
        raise ValueError(f"--mask_rate must be in (0, 1], got {config['mask_rate']}")
    for name in ("ks", "dilations"):
        if name in config and (not config[name] or not all(v >= 1 for v in config[name])):
            raise ValueError(f"--{name} must be a non-empty list of integers >= 1, got "
                             f"{config[name]}")


def _finite(config, name, positive=False):
    value = config[name]
    if not (math.isfinite(value) and value >= 0 and (value > 0 or not positive)):
        raise ValueError(f"--{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                         f"got {value}")
