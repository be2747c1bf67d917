"""The export report: `assets.extra/export_report.json` of a version (what was exported
from where, its signatures and settings, and what its weights and files take against
separate full models), and the lines the command prints about it."""

import json
import os

import numpy as np

REPORT_FILE = "export_report.json"


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def export_report(directory, built, model_dirs, options, version, signatures, warmup_requests):
    """The report of the version being written in `directory` (its SavedModel and warm-up
    records already there, the report not yet): `built` is `module_builder`'s
    (module, parameter reports, full model bytes), `signatures` the names it serves."""
    module, reports, full_bytes = built
    weight_bytes = sum(int(np.prod(v.shape)) * v.dtype.size
                       for v in {id(v): v for t in module.task_variables for v in t}.values())
    report = {
        "model_name": options.model_name, "version": version,
        "tasks": {name: {"model_dir": os.path.abspath(d), "max_len": task.framing.length,
                         "framing": task.framing.get_config(),
                         "trainable_share": reports[name].get("trainable_share"),
                         "parameters": reports[name]}
                  for (name, d), task in zip(model_dirs, module.tasks)},
        "signatures": sorted(signatures),
        "default_k": int(options.k),
        "exclude_history": module.exclude_history,
        "warmup_requests": warmup_requests,
        "variables_bytes": directory_bytes(os.path.join(directory, "variables")),
        "weight_bytes": weight_bytes,
        "separate_full_models_bytes": full_bytes,
    }
    index_bytes = sum(index.nbytes for index in module.indexes)
    report["next_item_index"] = ({"kind": "int8", "bytes": index_bytes,
                                  "candidates": module.indexes[0].candidates,
                                  "needs": "XLA (tensorflow_model_server "
                                           "--xla_cpu_compilation_enabled=true)"}
                                 if module.indexes else None)
    report["variables_to_weights_ratio"] = report["variables_bytes"] / max(1, weight_bytes)
    # what the variables hold beyond the model's weights and a deliberate index
    report["variables_to_weights_and_index_ratio"] = (
        report["variables_bytes"] / max(1, weight_bytes + index_bytes))
    report["saving_vs_separate_models"] = 1 - weight_bytes / max(1, full_bytes)
    report["export_bytes"] = directory_bytes(directory)  # before the report itself
    return report


def write_report(path, report):
    """The report as JSON (indented, keys in the order made)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)


def log_report(report, final, config_path, log=print):
    """What the command prints once the version `final` is in place and `config_path`
    (models.config) names it."""
    index = report["next_item_index"]
    index_bytes = index["bytes"] if index else 0
    weight_bytes = report["weight_bytes"]
    full_bytes = report["separate_full_models_bytes"]
    count = len(report["tasks"])
    log(f"exported {count} task(s) to {final}: signatures {', '.join(report['signatures'])}")
    if index_bytes:
        log(f"  int8 next-item index: {index_bytes:,} bytes; serve with XLA enabled "
            "(tensorflow_model_server --xla_cpu_compilation_enabled=true)")
    log(f"  variables/ {report['variables_bytes']:,} bytes for {weight_bytes:,} bytes of weights "
        f"({report['variables_to_weights_ratio']:.3f}x{' with the index' if index_bytes else ''}); "
        f"{count} separate full models "
        f"hold {full_bytes:,} bytes of weights ({100 * report['saving_vs_separate_models']:.1f}% "
        f"saved); whole export {report['export_bytes']:,} bytes")
    for name, task in report["tasks"].items():
        share = task["trainable_share"]
        if share is not None:
            log(f"  task {name}: trainable share {100 * share:.2f}% of its model")
    log(f"  TF Serving config: {config_path}")
