"""Writing the converted model directory: into a temporary directory beside the output,
then renamed into place, so a reader never sees a half-written or mixed directory (no
stale `target_vocab.txt` of an earlier conversion beside a new model)."""

import contextlib
import ctypes
import os
import shutil
import tempfile

from peterrec_tf.conversion.errors import ConversionError

RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def check_output_dir(output_dir, overwrite):
    """Refuse an existing non-empty output (or a file there) unless `overwrite`."""
    if not os.path.lexists(output_dir):
        return
    if not os.path.isdir(output_dir) or os.path.islink(output_dir):
        raise ConversionError(f"{output_dir}: exists and is not a directory")
    if os.listdir(output_dir) and not overwrite:
        raise ConversionError(f"{output_dir}: not empty; choose another --output_dir or pass "
                              "--overwrite to replace it (atomically) with the new conversion")


def _exchange(first, second):
    """Swap two paths atomically (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    done = renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second),
                     RENAME_EXCHANGE)
    return done == 0


def remove_stale_staging(output_dir, log=print):
    """Remove staging directories a killed conversion into `output_dir` left beside it
    (called with the output's lock held, so no live conversion owns them)."""
    target = os.path.abspath(output_dir)
    prefix = f".{os.path.basename(target)}.converting-"
    parent = os.path.dirname(target)
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else []:
        if name.startswith(prefix):
            log(f"removing {os.path.join(parent, name)}, left by an interrupted conversion")
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


@contextlib.contextmanager
def staged_output(output_dir, overwrite=False, before_swap=None):
    """Yield a temporary directory beside `output_dir`; on success it becomes `output_dir`
    (an empty or absent one is replaced by a rename; a non-empty one, with `overwrite`,
    by an atomic exchange where the OS has it, else by two renames), after
    `before_swap(staging)` where given. On failure the temporary directory is removed and
    `output_dir` is left as it was."""
    check_output_dir(output_dir, overwrite)
    target = os.path.abspath(output_dir)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.converting-", dir=parent)
    try:
        umask = os.umask(0o22)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 is not what a model dir gets
        yield staging
        check_output_dir(output_dir, overwrite)  # again: something may have appeared since
        if before_swap is not None:
            before_swap(staging)
        if os.path.isdir(target) and os.listdir(target):
            if _exchange(staging, target):
                shutil.rmtree(staging)  # now the old directory
            else:
                old = staging + ".old"
                os.rename(target, old)
                os.rename(staging, target)
                shutil.rmtree(old)
        else:
            os.replace(staging, target)  # rename(2) replaces an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def keep_replaced_versions(output_dir, backbone, staging, log=print):
    """Before a conversion replaces `output_dir` (--overwrite): a finished model there whose
    backbone differs is what tasks fine-tuned over it load, so it is kept, with the versions
    the directory already kept, in the new directory's `versions/`, as a pre-training re-run
    keeps the backbone it replaces (`task_artifact.keep_replaced_backbone`). Hard links:
    the old directory stays whole until the swap, so a failure loses nothing."""
    from peterrec_tf.task_artifact import VERSIONS_DIR, keep_replaced_backbone, link_or_copy

    if not os.path.isdir(output_dir):
        return
    try:
        keep_replaced_backbone(output_dir, backbone, log)
    except (OSError, ValueError) as error:  # not a model this project reads: nothing loads it
        log(f"{output_dir}: the model it held could not be read ({error}); not kept")
    kept = os.path.join(output_dir, VERSIONS_DIR)
    if os.path.isdir(kept):
        shutil.copytree(kept, os.path.join(staging, VERSIONS_DIR), copy_function=link_or_copy)
