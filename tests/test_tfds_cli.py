"""`tfds build` (the TensorFlow Datasets command) builds the project's builder over a
prepared directory. The command imports mlcroissant (pinned in requirements.txt for it)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from pipelines.prepare import prepare


def test_tfds_build_of_a_prepared_directory(tmp_path):
    if importlib.util.find_spec("mlcroissant") is None:
        message = "mlcroissant is missing (pip install -r requirements.txt): tfds build needs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import tensorflow_datasets as tfds
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\n" + "".join(
        f"u{u},i{(u + k) % 9},{k}\n" for u in range(8) for k in range(4)))
    prepared, built = str(tmp_path / "prepared"), str(tmp_path / "tfds")
    prepare("interactions", prepared, str(log), log=lambda *_: None)
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "tfds"), "build",
         os.path.join(REPO_ROOT, "pipelines", "tfds_builder.py"), "--config=pretrain",
         f"--manual_dir={prepared}", f"--data_dir={built}"],
        cwd=str(tmp_path), capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    builder = tfds.builder_from_directory(
        os.path.join(built, "peterrec_prepared", "pretrain", "1.0.0"))
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        "train": 8, "validation": 8, "test": 8}
    first = next(iter(builder.as_dataset(split="test").take(1)))
    assert first["item_ids"].shape == (3,) and int(first["target"]) > 0
