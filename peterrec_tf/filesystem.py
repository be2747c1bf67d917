"""Filesystem faults as one line: an output place checked before any work, and a write
that fails later (a full disk, a file system remounted read-only) reported as
`<path>: <reason>` instead of a traceback.

    check_writable(model_dir, "--model_dir")     # before anything is read or trained
    with write_faults_reported(model_dir):       # around the work that writes
        ...

Both raise `WriteFault`, a `ValueError`, which the entry points print as `error: ...` and
exit 2 with (`pipelines.command.run_command`). What is written is published by renames (model
directories, results.json, exported versions), so a failed write leaves nothing partial.
"""

import contextlib
import errno
import os
import tempfile

#: OS errors that mean "this place cannot be written": reported as one line.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM,
                          errno.EDQUOT, errno.ENOTDIR, errno.EISDIR, errno.EFBIG})
#: How TensorFlow's file writes (checkpoints, summaries) word the same faults.
TF_WRITE_MESSAGES = ("No space left on device", "Read-only file system", "Permission denied",
                     "Disk quota exceeded", "Not a directory")


class WriteFault(ValueError):
    """An output that cannot be written: `<path>: <reason>`."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def check_writable(path, flag):
    """`WriteFault` unless a file can be created in directory `path` (or, when it does not
    exist yet, in its nearest existing ancestor, which is then not created): checked by
    creating and removing a probe file, since permission bits say nothing to root."""
    place = os.path.abspath(path)
    while not os.path.exists(place):
        parent = os.path.dirname(place)
        if parent == place:
            break
        place = parent
    if not os.path.isdir(place):
        raise WriteFault(place, f"not a directory, so {flag}={path} cannot be created")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=place)
        try:
            os.write(handle, b"probe")
            os.fsync(handle)
        finally:
            os.close(handle)
            os.remove(probe)
    except OSError as error:
        raise WriteFault(place, f"cannot write {flag} there ({error.strerror or error})") \
            from None


def check_output_file(path, flag):
    """`WriteFault` unless the file `path` can be written (its directory writable, the path
    itself not a directory)."""
    if os.path.isdir(path):
        raise WriteFault(path, f"{flag} names a directory; give a file path")
    check_writable(os.path.dirname(os.path.abspath(path)), flag)


def as_write_fault(error, path):
    """The `WriteFault` an OS or TensorFlow error means (naming the file, else `path`, the
    output being written), or None for any other error."""
    if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
        return WriteFault(error.filename or path, error.strerror or str(error))
    message = getattr(error, "message", None)
    if isinstance(message, str) and any(text in message for text in TF_WRITE_MESSAGES):
        return WriteFault(path, message.strip().splitlines()[0])
    return None


@contextlib.contextmanager
def write_faults_reported(path):
    """Turn a write that fails inside the block into a `WriteFault` (one line) naming the
    file, or `path` when the error names none."""
    try:
        yield
    except Exception as error:  # noqa: BLE001  only write faults are replaced
        fault = as_write_fault(error, path)
        if fault is None:
            raise
        raise fault from None
