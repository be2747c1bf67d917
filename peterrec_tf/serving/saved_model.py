"""Model directories as SavedModels for TensorFlow Serving (the library; the command line is
`python -m peterrec_tf.export`): `export([(task, model_dir), ...], export_base, ...)`.

Writes `EXPORT_BASE/MODEL_NAME/VERSION/` (under a temporary name, renamed when complete,
because Serving watches the base directory) and merges `EXPORT_BASE/models.config`. One
SavedModel holds one copy of the frozen backbone shared by every task, plus each task's
patches, trained layer norms and head; its signatures and what they guarantee are
`serving_module`'s.

The export is split by responsibility, each part usable alone:
  `export_options`   ExportOptions (one field per command flag), ExportError
  `serving_module`   ServingModule: what is served, its signature table
  `module_builder`   build_serving_module: task model directories -> ServingModule (weights
                     stored once, the backbone checked shared, the int8 next-item index)
  `version_writer`   write_version: a version under the model's lock, renamed when
                     complete, with `warmup` records, the `export_report` and
                     `models_config` merged
and `export` here checks the request and runs the builder and the writer.
"""

import os
import tempfile

from peterrec_tf.serving.export_options import ExportError, ExportOptions
from peterrec_tf.serving.models_config import read_models_config
from peterrec_tf.serving.module_builder import build_serving_module
from peterrec_tf.serving.version_writer import sigterm_as_exit, write_version


def export(model_dirs, export_base="saved_models", model_name="peterrec", *, log=print,
           **options):
    """Export [(task, dir), ...] to EXPORT_BASE/MODEL_NAME/VERSION; returns the report dict
    (also written to `assets.extra/export_report.json`) with the version's `path`.
    `options`: the other fields of `ExportOptions` (version, k, max_len, exclude_history,
    ...), refused (ExportError) when no export can take them."""
    check_task_names(model_dirs)
    options = ExportOptions(model_name=model_name, **options)
    read_models_config(os.path.join(export_base, "models.config"))  # merged later: refuse now
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="peterrec-export-assets-") as asset_dir:
        built = build_serving_module(model_dirs, asset_dir, options, log)
        return write_version(built, model_dirs, export_base, options, log)


def check_task_names(model_dirs):
    """Refuses no tasks, a task name used twice and one that cannot name signatures."""
    if not model_dirs:
        raise ExportError("nothing to export: give --model_dir or --tasks")
    names = [name for name, _ in model_dirs]
    if len(set(names)) != len(names):
        raise ExportError(f"task names must be unique, got {names}")
    for name in names:
        if not name.replace("_", "").isalnum() or name == "serving_default":
            raise ExportError(f"task name {name!r}: use letters, digits and _ (it names signatures)")
