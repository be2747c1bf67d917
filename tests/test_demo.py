"""The README's main job runs end to end (tiny step counts)."""

import os

from peterrec_tf.demo import run_demo
from conftest import IN_CI, SHARED


def test_main_job_end_to_end(tmp_path):
    lines = []
    result = run_demo(str(tmp_path / "work"), str(tmp_path / "saved_models"), SHARED, seed=1,
                      pretrain_steps=20, finetune_steps=10, log=lines.append)
    text = "\n".join(lines)
    for stage in ("[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]"):
        assert stage in text
    assert os.path.exists(os.path.join(result["export"]["path"], "saved_model.pb"))
    assert len(result["finetune"]) == 4
    if os.path.exists(os.path.join(SHARED, "tf1_checkpoints")) or IN_CI:
        assert "max |difference| vs the TF1 graph" in text
