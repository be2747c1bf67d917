"""Shared test set-up: quiet TensorFlow, paths to ../shared, tiny model builders."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("PETERREC_SHARED", os.path.join(os.path.dirname(REPO_ROOT), "shared"))
CHECKPOINTS = os.path.join(SHARED, "tf1_checkpoints")
DEMO_DATA = os.path.join(SHARED, "data", "peterrec_demo")
PRETRAIN_CSV = os.path.join(DEMO_DATA, "history_sequences_20181014_fajie_transfer_pretrain_small.csv")
FINETUNE_CSV = os.path.join(DEMO_DATA, "history_sequences_20181014_fajie_transfer_finetune_small.csv")
PRETRAINED_PREFIX = os.path.join(
    CHECKPOINTS, "nextitnet_causal", "model_nextitnet_transfer_pretrain.ckpt")
FINETUNED = {
    name: os.path.join(CHECKPOINTS, f"peterrec_finetuned_{name}", f"peterrec_{name}")
    for name in ("cau_serial", "cau_parallel", "noncau_parallel")
}

#: Under continuous integration (CI set, as CI services set it) a missing ../shared is a
#: failure: a run that skipped every release-parity test must not pass.
def ci_is_set(environ=os.environ):
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


IN_CI = ci_is_set()


def needs_shared(path, what):
    """A mark for tests that read `path` from ../shared: skipped where it is absent, except
    under CI, where each such test fails, naming what is missing."""
    return pytest.mark.needs_shared(path=path, what=what)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_shared(path, what): reads a file of ../shared "
                            "(skipped if absent; a failure when CI is set)")


def pytest_runtest_setup(item):
    for mark in item.iter_markers(name="needs_shared"):
        path = mark.kwargs["path"]
        if not os.path.exists(path):
            message = (f"{mark.kwargs['what']} not at {path} (set PETERREC_SHARED, or check "
                       "out ../shared)")
            if ci_is_set():
                pytest.fail(f"CI is set and {message}", pytrace=False)
            pytest.skip(message)


needs_checkpoints = needs_shared(PRETRAINED_PREFIX + ".index", "the release's checkpoints")


#: The test files that run longest, longest first (BUILD_NOTES, "Two test processes"). They are
#: started first, so that under pytest-xdist (pytest.ini) no long file is the last work left
#: on one worker while the other is idle.
LONGEST_FIRST = ("test_readme.py", "test_export.py", "test_paper_scale.py",
                 "test_convert_tf1.py", "test_jobs_multiworker.py", "test_pipelines_beam.py",
                 "test_entry_points.py", "test_demo.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first; within a file and among the others, the collected order."""
    def rank(item):
        name = os.path.basename(str(item.path))
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)


@pytest.fixture
def rng():
    return np.random.RandomState(1234)


def random_ids(rng, batch, length, vocab, low=0):
    return rng.randint(low, vocab, size=(batch, length)).astype("int32")
