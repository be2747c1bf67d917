"""recipes/public_sequential.flags is a valid pre-training flagfile that runs as written
(shrunk by flags given after it)."""

import json
import os

from conftest import REPO_ROOT
from pipelines.prepare import prepare
from test_jobs_cli import command

RECIPE = os.path.join(REPO_ROOT, "recipes", "public_sequential.flags")


def test_recipe_runs_pretrain_and_keeps_its_settings(tmp_path):
    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=80, num_items=40, num_clusters=4,
            num_targets=20, log=lambda *_: None)
    model_dir = str(tmp_path / "pre")
    process = command(["peterrec_tf.pretrain", f"--flagfile={RECIPE}",
                       f"--data_dir={os.path.join(data, 'pretrain')}", f"--model_dir={model_dir}",
                       "--train_steps=6", "--batch_size=16", "--max_len=12", "--log_every=3"])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    with open(os.path.join(model_dir, "flags.json"), encoding="utf-8") as handle:
        flags = json.load(handle)
    assert flags["architecture"] == "self_attention" and flags["head"] == "tied"
    assert flags["dropout"] > 0 and flags["patience"] > 0 and flags["train_steps"] == 6
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["backbone"]["max_positions"] == 12
