"""One job per directory: an exclusive `fcntl.flock` held for the job's lifetime.

    with exclusive_lock(model_dir):                 # <model_dir>/.lock
        ...
    with exclusive_lock(parent, ".data.lock", owner=output_dir):   # a sibling lock file
        ...

The lock file records the holder's pid, so a second job is told who has the directory.
The kernel drops the lock when the holder dies (even by SIGKILL), so a stale lock file
never blocks anyone.  The holder deletes the file when it is done; a job that locked a
file just deleted this way sees that the path no longer names its file and tries again,
so two jobs can never hold two files of the same name.  Shared by `pipelines` and
`peterrec_tf` (this module imports neither).
"""

import contextlib
import fcntl
import os

LOCK_FILE = ".lock"


class DirectoryInUse(ValueError):
    """Another live process holds the directory's lock."""


def holder(path):
    """The pid written in a lock file ('?' when unreadable)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def exclusive_lock(directory, name=LOCK_FILE, owner=None):
    """Hold `<directory>/<name>` exclusively (creating the directory); `DirectoryInUse`
    naming `owner` (default `directory`) and the holder's pid if another process has it.
    An unwritable directory raises `PermissionError` before anything else is done."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise DirectoryInUse(f"{owner or directory} is in use by pid {holder(path)} "
                                 f"(lock {path}); wait for that job or stop it") from None
        if _names(path, handle):
            break
        os.close(handle)  # the previous holder deleted it after we opened it: again
    try:
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):  # e.g. the directory was removed
            os.remove(path)
        os.close(handle)  # closing releases the lock


def _names(path, handle):
    """Whether `path` still names the open file `handle`."""
    try:
        return os.stat(path).st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False
