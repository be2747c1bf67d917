"""Writing a built serving module as `EXPORT_BASE/MODEL_NAME/VERSION/`: one export into a
model's versions at a time (a lock), under a temporary name renamed when complete (Serving
watches the base directory and would load a half-written version), never over an existing
version (Serving may have loaded it), with its warm-up records and report, then
`models.config` merged to name it. A failure, SIGTERM included, leaves no version behind."""

import os
import shutil
import signal
import tempfile

import tensorflow as tf

from pipelines.locking import exclusive_lock
from peterrec_tf.serving.export_options import ExportError
from peterrec_tf.serving.export_report import REPORT_FILE, export_report, log_report, write_report
from peterrec_tf.serving.models_config import write_models_config
from peterrec_tf.serving.warmup import WARMUP_FILE, warmup_requests, write_warmup


def next_version(model_base):
    versions = [int(d) for d in os.listdir(model_base) if d.isdigit()] if os.path.isdir(model_base) else []
    return max(versions, default=0) + 1


class sigterm_as_exit:
    """SIGTERM raises SystemExit while exporting (main thread only), so the half-written
    version's temporary directory is removed as on any other failure."""

    def __enter__(self):
        self.previous = None
        import threading
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def write_version(built, model_dirs, export_base, options, log=print):
    """Save `built` (`module_builder.build_serving_module`'s) as a new version of
    EXPORT_BASE/`options.model_name` (`options.version`, or one more than the highest
    there) and merge `models.config`; returns the report with the version's `path`."""
    model_base = os.path.join(export_base, options.model_name)
    with exclusive_lock(model_base):  # one export into a model's versions at a time
        for name in sorted(os.listdir(model_base)):
            if name.startswith(".tmp-"):  # no live export owns it while we hold the lock
                log(f"removing {os.path.join(model_base, name)}, left by an interrupted export")
                shutil.rmtree(os.path.join(model_base, name), ignore_errors=True)
        version = int(options.version or next_version(model_base))
        final = os.path.join(model_base, str(version))
        if os.path.exists(final):
            raise ExportError(f"{final} exists: versions are immutable once Serving may have loaded them")
        report = _write_renamed(final, built, model_dirs, options, version)
        config_path = write_models_config(export_base, options.num_versions,
                                          options.serving_base_path, options.model_name)
        log_report(report, final, config_path, log)
    report["path"] = final
    return report


def _write_renamed(final, built, model_dirs, options, version):
    """The version written in a temporary directory beside `final`, readable by everyone,
    then renamed to `final`; removed on any failure. Returns its report."""
    tmp = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=os.path.dirname(final))
    try:
        report = _write_contents(tmp, built, model_dirs, options, version)
        for root, dirs, _ in os.walk(tmp):  # mkdtemp is private (0700); Serving may run as another user
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        os.chmod(tmp, 0o755)
        if os.path.exists(final):  # another export took the version meanwhile
            raise ExportError(f"{final} appeared while exporting: run again for the next version")
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _write_contents(directory, built, model_dirs, options, version):
    """The SavedModel, its warm-up records and its report, in `directory`."""
    module = built[0]
    signatures = module.signatures()
    tf.saved_model.save(module, directory, signatures=signatures)
    extra = os.path.join(directory, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    requests = warmup_requests(options.model_name, module, signatures)
    write_warmup(os.path.join(extra, WARMUP_FILE), requests)
    report = export_report(directory, built, model_dirs, options, version, signatures,
                           len(requests))
    write_report(os.path.join(extra, REPORT_FILE), report)
    return report
