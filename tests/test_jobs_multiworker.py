"""multi_worker: two worker processes on localhost (TF_CONFIG) vs one process, same global batch.

Skipped with PETERREC_SKIP_MULTIWORKER=1 (it starts two TensorFlow processes, ~30-60 s on
2 cores); CI runs it.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from peterrec_tf.model_dir import load_model_dir
from peterrec_tf.jobs.pretraining import run_pretrain
from pipelines.prepare import prepare

pytestmark = [
    pytest.mark.skipif(os.environ.get("PETERREC_SKIP_MULTIWORKER") == "1",
                       reason="PETERREC_SKIP_MULTIWORKER=1"),
]

SETTINGS = {"channels": 16, "dilations": "1,2", "batch_size": 32, "train_steps": 12,
            "learning_rate": 0.003, "seed": 5, "checkpoint_every": 6, "log_every": 6,
            "jit_compile": False}  # the cluster runs without XLA; compare like with like


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_match_one_process(tmp_path):
    data = str(tmp_path / "data")
    prepare("synthetic", data, max_len=16, seed=2, num_users=200, num_items=60, num_clusters=4,
            num_targets=20, log=lambda *_: None)
    pretrain_data = os.path.join(data, "pretrain")
    single = str(tmp_path / "single")
    alone = run_pretrain(pretrain_data, single, log=lambda *_: None,
                         **dict(SETTINGS, dilations=(1, 2)))

    cluster_dir = str(tmp_path / "cluster")
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    args = [sys.executable, "-m", "peterrec_tf.pretrain", f"--data_dir={pretrain_data}",
            f"--model_dir={cluster_dir}", "--strategy=multi_worker"]
    args += [f"--{k}={v}" for k, v in SETTINGS.items()]
    workers = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        workers.append(subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    outputs = []
    for worker in workers:
        try:
            out, _ = worker.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            raise
        outputs.append(out)
    for worker, out in zip(workers, outputs):
        assert worker.returncode == 0, out[-3000:]

    # only the chief wrote the model directory and results; the non-chief's saves went to scratch
    report = json.load(open(os.path.join(cluster_dir, "results.json")))
    assert report["training"]["steps"] == SETTINGS["train_steps"]
    assert sorted(os.listdir(os.path.join(cluster_dir, "checkpoints")))[0] == "checkpoint"
    a, _, _ = load_model_dir(single)
    b, _, _ = load_model_dir(cluster_dir)
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        # the same global batches and the same weighted mean: equal up to float summation order
        np.testing.assert_allclose(wa.numpy(), wb.numpy(), atol=1e-4, err_msg=wa.path)
    assert report["training"]["last_loss"] == pytest.approx(alone["training"]["last_loss"],
                                                            rel=1e-4)
    assert report["test"]["hr@10"] == pytest.approx(alone["test"]["hr@10"], abs=0.011)
