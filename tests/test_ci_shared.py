"""Under CI a missing ../shared fails the tests that need it instead of skipping them
(checked once as a real pytest run: CI=true, PETERREC_SHARED pointing nowhere)."""

import os
import subprocess
import sys

import pytest

import conftest
from conftest import REPO_ROOT


class _Item:
    def __init__(self, mark):
        self.mark = mark

    def iter_markers(self, name):
        return [self.mark.mark] if name == "needs_shared" else []


def test_ci_setting_is_read_like_ci_services_set_it():
    assert conftest.ci_is_set({"CI": "true"}) and conftest.ci_is_set({"CI": "1"})
    assert not any(conftest.ci_is_set(env) for env in ({}, {"CI": ""}, {"CI": "false"},
                                                       {"CI": "0"}))


def _outcome(item):
    try:
        conftest.pytest_runtest_setup(item)
    except pytest.skip.Exception as stopped:
        return "skip", str(stopped)
    except pytest.fail.Exception as stopped:
        return "fail", str(stopped)
    return "run", ""


def test_missing_shared_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
    item = _Item(conftest.needs_shared(str(tmp_path / "absent"), "the thing"))
    present = _Item(conftest.needs_shared(str(tmp_path), "here"))
    monkeypatch.delenv("CI", raising=False)
    kind, text = _outcome(item)
    assert kind == "skip" and "the thing not at" in text
    assert _outcome(present)[0] == "run"
    monkeypatch.setenv("CI", "true")
    kind, text = _outcome(item)
    assert kind == "fail" and "CI is set and the thing not at" in text
    assert _outcome(present)[0] == "run"


def test_a_real_ci_run_without_shared_fails(tmp_path):
    env = dict(os.environ, PETERREC_SHARED=str(tmp_path / "no_shared"), CI="true")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0",
                           "tests/test_pipelines_movielens.py", "-k", "tasks_and_shared"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "CI is set and MovieLens-100K not at" in done.stdout and "skipped" not in done.stdout
