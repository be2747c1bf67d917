"""Where a report's numbers come from: git commit, dirty flag, package versions, machine."""

import datetime
import os
import platform
import subprocess
import sys

PACKAGES = ("tensorflow", "keras", "numpy", "absl-py", "protobuf")


class DirtyTree(ValueError):
    """The code that would produce a report has uncommitted changes."""


def repository_root(start=None):
    """The git work tree holding this package (or `start`), or None."""
    start = start or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(["git", "-C", start, "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


RESULTS_DIR = "benchmarks/results/"


def git_state(repo_dir=None):
    """{"commit", "dirty", "dirty_files", "repository"}; commit None outside a git tree."""
    root = repository_root(repo_dir)
    if root is None:
        return {"commit": None, "dirty": None, "dirty_files": [], "repository": None}

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
    except subprocess.CalledProcessError:  # a repository without commits
        commit = None
    # A kept benchmark output that is not committed yet is a result, not a code change:
    # counting it would mark every later run of a series "dirty".
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if line.strip() and not (line.startswith("?? ")
                                        and line[3:].startswith(RESULTS_DIR))]
    return {"commit": commit, "dirty": bool(changed) or commit is None,
            "dirty_files": changed[:50], "repository": root}


def package_versions(names=PACKAGES):
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def collect(config, repo_dir=None):
    """The provenance block of a results.json: code state, configuration, versions."""
    state = git_state(repo_dir)
    return dict(state, configuration=config, versions=package_versions(),
                started_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                command=" ".join(sys.argv), machine={"platform": platform.platform(),
                                                     "cpus": os.cpu_count()})


def check_clean(state, allow_dirty):
    """Refuse a report from uncommitted (or unknown) code unless `allow_dirty`."""
    if allow_dirty or state["dirty"] is False:
        return
    if state["commit"] is None:
        raise DirtyTree("cannot tell which commit produced this report (not a git work tree, "
                        "or no commit yet); pass --allow_dirty to write it anyway")
    files = ", ".join(state["dirty_files"][:8])
    raise DirtyTree(f"the work tree {state['repository']} has uncommitted changes ({files}); "
                    "commit them so the report names the code that made it, or pass "
                    "--allow_dirty (recorded in results.json)")
