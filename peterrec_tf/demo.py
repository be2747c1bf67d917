"""The main job end to end on an embedded synthetic default (no data needed):

    prepare -> pre-train -> fine-tune with patches -> evaluate -> export -> TF1 parity

    python -m peterrec_tf.demo [--workdir=runs/demo] [--export_base=saved_models] [--seed=0]

Synthetic behaviour data with planted structure is generated on the fly; a causal
NextItNet is pre-trained on it; PeterRec grafts patches into the frozen backbone for two
downstream tasks (a user attribute and cold-start items of another domain), compared
with fine-tuning everything; both tasks are exported as one SavedModel over one backbone
for TF Serving; and, when ../shared is beside the repo, the original release's TF1
checkpoint is converted and compared with the release's own graph. Re-running resumes
or reuses finished stages.
"""

import os
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The release's checkpoints: $PETERREC_SHARED, else ../shared beside a source checkout
#: (an installed package has none beside it: then ../shared from the working directory).
DEFAULT_SHARED = os.environ.get("PETERREC_SHARED") or (
    os.path.join(os.path.dirname(REPO_ROOT), "shared")
    if os.path.exists(os.path.join(REPO_ROOT, "pyproject.toml")) else os.path.join("..", "shared"))


def run_demo(workdir, export_base, shared, seed=0, pretrain_steps=800, finetune_steps=400,
             log=print):
    from peterrec_tf.jobs.evaluating import run_evaluate
    from peterrec_tf.serving.saved_model import export
    from peterrec_tf.jobs.finetuning import run_finetune
    from peterrec_tf.jobs.pretraining import run_pretrain
    from pipelines.prepare import prepare

    quiet = lambda *_: None  # noqa: E731
    started = time.time()
    data = os.path.join(workdir, "data")
    models = os.path.join(workdir, "models")
    log("[1/6] prepare: synthetic behaviour sequences with planted structure")
    prepare("synthetic", data, max_len=40, seed=seed, log=lambda m: log("      " + m))

    log("[2/6] pre-train: causal NextItNet (next-item prediction)")
    pre_dir = os.path.join(models, "pretrained")
    pre = run_pretrain(os.path.join(data, "pretrain"), pre_dir, channels=32, dilations=(1, 4, 1, 4),
                       batch_size=64, train_steps=pretrain_steps, learning_rate=2e-3, seed=seed,
                       log_every=200, checkpoint_every=400, log=lambda m: log("      " + m))
    test = pre["test"]
    log(f"      next-item on held-out last items (full ranking over {test['examples']} users): "
        f"HR@10 {test['hr@10']:.3f}, NDCG@10 {test['ndcg@10']:.3f}")

    log("[3/6] fine-tune: PeterRec patches on the frozen backbone vs fine-tuning everything")
    rows = []
    for task, metric in (("attribute", "accuracy"), ("coldrec", "hr@5")):
        for method in ("peterrec", "fineall"):
            out = run_finetune(pre_dir, os.path.join(data, task), os.path.join(models, f"{task}_{method}"),
                               method=method, batch_size=128, train_steps=finetune_steps,
                               learning_rate=5e-3, seed=seed, log_every=finetune_steps,
                               checkpoint_every=finetune_steps, log=quiet)
            rows.append((task, method, metric, out["test"][metric],
                         out["parameters"]["trainable_share"], out["parameters"]["trainable"]))
    log("      task       method    test metric        trained params")
    for task, method, metric, value, share, count in rows:
        log(f"      {task:<10} {method:<9} {metric:<9} {value:.3f}   {count:>8,} ({100 * share:5.1f}%)")

    log("[4/6] evaluate: the paper's protocol (true target + 99 sampled negatives) on the test split")
    evaluated = run_evaluate(os.path.join(models, "coldrec_peterrec"), os.path.join(data, "coldrec"),
                             "test", "sampled", ks=(5, 10), log=quiet)
    log(f"      coldrec PeterRec: HR@5 {evaluated['hr@5']:.3f}, MRR@5 {evaluated['mrr@5']:.3f}, "
        f"HR@10 {evaluated['hr@10']:.3f} (random: HR@5 0.050)")

    log(f"[5/6] export: both PeterRec tasks over one frozen backbone -> {export_base}/")
    report = export([("coldrec", os.path.join(models, "coldrec_peterrec")),
                     ("attribute", os.path.join(models, "attribute_peterrec"))],
                    export_base, "peterrec_demo", k=5, log=lambda m: log("      " + m))
    import tensorflow as tf
    served = tf.saved_model.load(report["path"]).signatures["serving_default"]
    history = [f"i{i}" for i in (3, 4, 5, 6)]
    answer = served(items=tf.constant([history]))
    log(f"      serving_default for history {history}: top-5 targets "
        f"{[t.decode() for t in answer['top_k_items'].numpy()[0]]}")

    prefix = os.path.join(shared, "tf1_checkpoints", "nextitnet_causal",
                          "model_nextitnet_transfer_pretrain.ckpt")
    if os.path.exists(prefix + ".index"):
        from peterrec_tf.conversion.driver import convert_checkpoint
        from peterrec_tf.model_dir import load_model_dir
        from peterrec_tf.tf1_oracle import run_oracle

        log("[6/6] convert the release's TF1 NextItNet checkpoint and compare with its own graph")
        out = os.path.join(models, "converted_tf1")
        convert_checkpoint(prefix, out, log=quiet, overwrite=True)
        converted, _, _ = load_model_dir(out)
        ids = np.random.RandomState(seed).randint(0, 175, (4, 12)).astype("int32")
        oracle = run_oracle(prefix, ids)
        hidden = np.abs(converted.backbone(ids[:, :-1]).numpy() - oracle["hidden"]).max()
        last = converted(ids[:, :-1]).numpy()[:, -1]
        probs = np.exp(last - last.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        log(f"      max |difference| vs the TF1 graph: hidden states {hidden:.1e}, next-item "
            f"probabilities {np.abs(probs - oracle['next_item_probs']).max():.1e}")
    else:
        log(f"[6/6] skipped TF1 conversion: no checkpoint at {prefix}")
    log(f"done in {time.time() - started:.0f}s; models in {models}, export in {report['path']}")
    return {"pretrain": pre, "finetune": rows, "evaluate": evaluated, "export": report}


def define_flags():
    from absl import flags

    flags.DEFINE_string("workdir", os.path.join("runs", "demo"),
                        "Where the job writes its datasets and model directories.")
    flags.DEFINE_string("export_base", "saved_models",
                        "TF Serving base directory for the SavedModel export.")
    flags.DEFINE_string("shared", DEFAULT_SHARED,
                        "Folder with the release's TF1 checkpoints (optional; skipped if absent).")
    flags.DEFINE_integer("seed", 0, "Seed for data generation, initialisation and sampling.")
    flags.DEFINE_integer("pretrain_steps", 800, "Pre-training steps (batch 64).")
    flags.DEFINE_integer("finetune_steps", 400, "Fine-tuning steps per task and method (batch 128).")


def main(v):
    """flags -> run_demo (which prints its own progress) -> the last line."""
    from pipelines.command import Done, command_line

    run_demo(v.workdir, v.export_base, v.shared, v.seed, v.pretrain_steps, v.finetune_steps)
    return Done(f"wrote {v.workdir} (datasets, model directories) and {v.export_base}",
                command_line("peterrec_tf.evaluate",
                             model_dir=os.path.join(v.workdir, "models", "coldrec_peterrec"),
                             data_dir=os.path.join(v.workdir, "data", "coldrec")))


def cli():
    """The command (`python -m peterrec_tf.demo` and `peterrec-demo`)."""
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__)


if __name__ == "__main__":
    cli()
