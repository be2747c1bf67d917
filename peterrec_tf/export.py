"""Export model directories as SavedModels for TensorFlow Serving (the command).

    python -m peterrec_tf.export --model_dir=runs/coldrec [--model_name=peterrec] \
        [--export_base=saved_models] [--version=N] [--k=10] [--max_len=N]
    python -m peterrec_tf.export --tasks=coldrec=runs/coldrec,gender=runs/gender ...

The library, its signatures and guarantees are `peterrec_tf.serving.saved_model` (and the
modules it names); this module defines the flags, one per `ExportOptions` field of the same
name and the choice of tasks, and maps them onto `export(...)`; exit 2 on a usage error.
"""

import os

from peterrec_tf.serving.export_options import (NEXT_ITEM_INDEXES, ExportError,  # noqa: F401
                                                ExportOptions)
from peterrec_tf.serving.export_report import REPORT_FILE  # noqa: F401
from peterrec_tf.serving.models_config import write_models_config  # noqa: F401
from peterrec_tf.serving.module_builder import build_serving_module  # noqa: F401
from peterrec_tf.serving.saved_model import export
from peterrec_tf.serving.warmup import WARMUP_FILE  # noqa: F401


def parse_tasks(text):
    """'name=dir,name2=dir2' or 'dir1,dir2' (names from the directories' base names)."""
    pairs = []
    for part in [p for p in text.split(",") if p]:
        name, _, directory = part.partition("=") if "=" in part else ("", "", part)
        pairs.append((name or os.path.basename(os.path.normpath(directory)), directory))
    return pairs


def define_flags():
    """Defines the command's absl flags (called by the entry point, never at import)."""
    from absl import flags

    flags.DEFINE_string("model_dir", None, "One model directory to export: the output of "
                        "finetune, pretrain or convert_tf1 (model.keras, config.json, vocab.txt "
                        "and, for tasks, target_vocab.txt / labels.txt). Exclusive with --tasks.")
    flags.DEFINE_string("tasks", None, "Several fine-tuned model directories over one frozen "
                        "backbone, as name=dir,name2=dir2 (or dir1,dir2, named by their base "
                        "names): one SavedModel holding one backbone copy and each task's "
                        "patches, layer norms and head; signatures <name>, <name>_ids, "
                        "<name>_top_k, <name>_user_embedding per task; serving_default = the "
                        "first task. "
                        "Refused unless every task's frozen backbone is bit-identical.")
    flags.DEFINE_string("task_name", None, "Signature name of a single --model_dir export "
                        "(letters, digits, _; default: the directory's base name).")
    flags.DEFINE_string("export_base", "saved_models", "Serving's base directory: the version "
                        "goes to EXPORT_BASE/MODEL_NAME/VERSION and EXPORT_BASE/models.config "
                        "is rewritten to name every model under it.")
    flags.DEFINE_string("model_name", "peterrec", "Model name: the sub-directory of "
                        "--export_base and the name clients put in requests.")
    flags.DEFINE_integer("version", None, "Version number, a positive integer (default: one "
                         "more than the highest version already there). Existing versions are "
                         "never overwritten.")
    flags.DEFINE_integer("k", 10, "Items the item-ranking signatures <task> and <task>_ids "
                         "return; <task>_top_k takes k per history as an input instead.")
    flags.DEFINE_integer("max_len", None, "Histories are cut to their most recent MAX_LEN "
                         "items and padded to MAX_LEN in the graph with the model's own framing, "
                         "as the training input pipeline does (default: each model's recorded "
                         "length; a model without one needs this flag). At least 1.")
    flags.DEFINE_string("serving_base_path", None, "Where tensorflow_model_server sees "
                        "--export_base, written into models.config (e.g. /models when the "
                        "directory is mounted into the tensorflow/serving container; default: "
                        "the absolute local path).")
    flags.DEFINE_string("backbone_dir", None, "For tasks stored alone (finetune's default): "
                        "their pre-trained model directory when it is no longer where they "
                        "recorded it; refused unless its backbone fingerprint matches.")
    flags.DEFINE_enum("next_item_index", "none", list(NEXT_ITEM_INDEXES), "Next-item tasks (a "
                      "pre-trained model): 'none' scores the whole catalogue in float32 per "
                      "request; 'int8' adds an int8 copy of the head (+25% of its bytes) from "
                      "which candidates are picked, re-scored in float32 and proven to be the "
                      "exact top k (else the whole catalogue is scored): faster for one user "
                      "over a large catalogue (measured in BUILD_NOTES), but it needs XLA "
                      "where it is served "
                      "(tensorflow_model_server --xla_cpu_compilation_enabled=true).")
    flags.DEFINE_boolean("exclude_history", False, "SavedModel: ranking signatures never "
                         "return an item of the request's own history (every item it sends, "
                         "not only the most recent max_len); recorded in the export report. "
                         "<task>_top_k_exclude also takes a per-request `exclude` list either "
                         "way. --litert: only the max_len ids the on-device model is given "
                         "are excluded (recorded as the window in FILE.tflite.json); exclude "
                         "older items on the app side.")
    flags.DEFINE_string("item_embeddings", None, "Write the item embeddings of --model_dir "
                        "to this new directory instead of a SavedModel: embeddings.npy (row i "
                        "= token i of vocab.tsv), bias.npy, vocab.tsv, item_embeddings.json "
                        "(the served score as a dot product: which query, which bias) and a "
                        "TensorBoard projector config (see peterrec_tf/serving/item_embeddings.py).")
    flags.DEFINE_string("litert", None, "Write an on-device LiteRT model FILE.tflite of "
                        "--model_dir instead of a SavedModel: int32 item ids [1, max_len] in "
                        "(left-padded with 0), top-k ids and scores out (k = --k), the "
                        "vocabularies and FILE.tflite.json beside it. A FILE (or one of its "
                        "sidecars) that exists is refused, never overwritten.")
    flags.DEFINE_enum("litert_quantize", "none", ["none", "dynamic_int8"], "--litert weights: "
                      "float32 (same ids as the SavedModel) or dynamic-range int8 (weights of "
                      "1,024 elements or more stored as int8: a smaller file; ids measured "
                      "against float32 in BUILD_NOTES).")
    flags.DEFINE_integer("num_versions", 2, "models.config version policy: Serving keeps the "
                         "latest NUM_VERSIONS versions of each model loaded.")


def export_artifacts(v):
    """--item_embeddings and/or --litert of one --model_dir (no SavedModel); the last line."""
    from pipelines.command import Done

    if v.tasks:
        raise ValueError("--item_embeddings and --litert take one --model_dir, not --tasks")
    from peterrec_tf.serving.item_embeddings import refuse_existing_dir
    from peterrec_tf.serving.litert import refuse_existing

    # both refusals before either is written: a refused second output must not leave the
    # first behind, which the same command would then refuse
    if v.item_embeddings:
        refuse_existing_dir(os.path.abspath(v.item_embeddings))
    if v.litert:
        refuse_existing(v.litert)
    written = []
    if v.item_embeddings:
        from peterrec_tf.serving.item_embeddings import write_item_embeddings

        path = write_item_embeddings(v.model_dir, v.item_embeddings, backbone_dir=v.backbone_dir)
        written.append(os.path.dirname(path))
    if v.litert:
        from peterrec_tf.serving.litert import write_litert

        write_litert(v.model_dir, v.litert, k=v.k, quantize=v.litert_quantize,
                     max_len=v.max_len, exclude_history=v.exclude_history,
                     backbone_dir=v.backbone_dir)
        written.append(v.litert)
    return Done(f"wrote {', '.join(written)}",
                f"load {os.path.join(v.item_embeddings, 'embeddings.npy')} into your ANN index, "
                f"or look at it: tensorboard --logdir={v.item_embeddings}" if v.item_embeddings else
                f"run {v.litert} with the LiteRT interpreter (ids in, top-k ids and scores out)")


def export_checked(dirs, export_base, *args, **kwargs):
    """`export`, with --export_base checked writable before any model is loaded and a
    write that fails later (a full disk) reported as one line naming the place."""
    from peterrec_tf.filesystem import check_writable, write_faults_reported

    check_writable(export_base, "--export_base")
    with write_faults_reported(export_base):
        return export(dirs, export_base, *args, **kwargs)


def main(v):
    """flags -> export (or the single-model artifacts) -> the last line."""
    from pipelines.command import Done

    if bool(v.model_dir) == bool(v.tasks):
        raise ValueError("give exactly one of --model_dir or --tasks")
    if v.tasks and v.task_name:
        raise ValueError("--task_name names a single --model_dir export; with --tasks use "
                         "name=dir pairs")
    if v.item_embeddings or v.litert:
        return export_artifacts(v)
    dirs = parse_tasks(v.tasks) if v.tasks else [
        (v.task_name or os.path.basename(os.path.normpath(v.model_dir)), v.model_dir)]
    options = {name: getattr(v, name) for name in ExportOptions.field_names()}  # same names
    report = export_checked(dirs, v.export_base, **options)
    config = os.path.join(v.export_base, "models.config")
    return Done(f"wrote {report['path']} and {config}",
                "tensorflow_model_server --port=8500 --rest_api_port=8501 "
                f"--model_config_file={os.path.abspath(config)}")


#: What Ctrl-C's last line says to run next. Each output (a version, the item embeddings'
#: directory, the .tflite) is renamed into place when complete, but a stop can fall between
#: two of them, and a finished one is never overwritten.
INTERRUPTED = ("the same command again (it starts over; each output appears whole or not at "
               "all: if one was finished before the stop, a fixed --version, "
               "--item_embeddings directory or --litert FILE that now exists is refused: "
               "drop it or choose another)")


def cli():
    """The command (`python -m peterrec_tf.export` and its console command)."""
    from pipelines.command import run_command

    run_command(define_flags, main, __doc__, on_interrupt=INTERRUPTED,
                minimums={"k": 1, "version": 1, "max_len": 1, "num_versions": 1})


if __name__ == "__main__":
    cli()
