"""training.local_cluster: TF_CONFIG per worker, and a failed worker stops the others."""

import json
import sys

import pytest

from peterrec_tf.training.local_cluster import run_local_cluster, tf_config

WORKER = """
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])
print(json.dumps(task), flush=True)
if task["task"]["index"] == int(sys.argv[1]):
    sys.exit(3)
time.sleep(float(sys.argv[2]))
"""


def test_each_worker_gets_its_index_in_one_cluster():
    runs = run_local_cluster([sys.executable, "-c", WORKER, "-1", "0"], 3, timeout=60)
    configs = [json.loads(run.lines[0][1]) for run in runs]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)
    hosts = configs[0]["cluster"]["worker"]
    assert len(set(hosts)) == 3 and all(h.startswith("127.0.0.1:") for h in hosts)
    assert [run.returncode for run in runs] == [0, 0, 0]
    assert all(run.peak_rss_bytes > 0 for run in runs)


def test_a_failed_worker_stops_the_others():
    # the others sleep 120 s: without the stop this would raise TimeoutError at 60 s
    runs = run_local_cluster([sys.executable, "-c", WORKER, "1", "120"], 3, timeout=60)
    assert runs[1].returncode == 3
    assert runs[0].returncode < 0 and runs[2].returncode < 0  # killed by a signal


def test_timeout_kills_every_worker():
    with pytest.raises(TimeoutError, match="did not finish in 1 s"):
        run_local_cluster([sys.executable, "-c", WORKER, "-1", "120"], 2, timeout=1)


def test_tf_config_is_the_documented_shape():
    assert json.loads(tf_config(["a:1", "b:2"], 1)) == {
        "cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
