"""benchmarks/paper_scale.py at a tiny fraction: the whole chain a user runs at the
paper's scale (prepare, pre-train, evaluate over the catalogue, fine-tune two tasks,
export, serve) runs through the real commands and reports every stage."""

import json
import math
import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_the_chain_runs_and_reports_every_stage(tmp_path):
    work = tmp_path / "work"
    done = subprocess.run(
        [sys.executable, "benchmarks/paper_scale.py", "--scale=0.0005", "--items=3000",
         "--channels=16", "--dilations=1,2", "--train_steps=8", "--finetune_steps=4",
         "--num_targets=150", "--masked_steps=3", "--masked_batch_size=16",
         "--lazy_steps=4",
         "--serve_repeats=10", "--batch_repeats=2",
         f"--work_dir={work}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PETERREC_BENCHMARK_RESULTS=str(tmp_path / "results")))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    run = json.load(open(work / "paper_scale.json"))
    stages = [row["stage"].split(" (")[0].split(":")[0] for row in run["rows"]]
    assert stages == ["prepare", "pre-train", "pre-train", "pre-train", "evaluate", "fine-tune PeterRec patch C*0.25",
                      "fine-tune PeterRec patch C*0.125", "export next", "export next_int8",
                      "export tasks", "serve next", "serve next_int8", "serve tasks", "next item, float32 vs --next_item_index=int8 called alternately in-process"]
    for row in run["rows"]:
        assert row["seconds"] > 0 and row["peak_rss_gb"] > 0.1, row
        if row["rate"] is not None:
            assert math.isfinite(row["rate"]) and row["rate"] > 0, row
    # the model holds the whole catalogue, every test user was ranked against all of it
    config = json.load(open(work / "models" / "pretrained" / "config.json"))
    assert config["backbone"]["vocab_size"] == 3001
    meta = json.load(open(work / "data" / "pretrain" / "metadata.json"))
    assert run["stages"]["evaluate"]["examples"] == meta["splits"]["test"] > 0
    evaluated, tested = run["stages"]["evaluate"], meta["splits"]["test"]
    for k in (5, 10):  # per-example means: hits are whole, and MRR <= NDCG <= HR per example
        hits = evaluated[f"hr@{k}"] * tested
        assert abs(hits - round(hits)) < 1e-6 * tested, (k, hits)
        assert evaluated[f"mrr@{k}"] <= evaluated[f"ndcg@{k}"] + 1e-9 <= evaluated[f"hr@{k}"] + 2e-9
    # the same model and split in other batches (7 users, not 256): the same figures
    again_file = tmp_path / "evaluate_again.json"
    subprocess.run([sys.executable, "-m", "peterrec_tf.evaluate",
                    f"--model_dir={work / 'models' / 'pretrained'}",
                    f"--data_dir={work / 'data' / 'pretrain'}", "--split=test", "--ranking=full",
                    "--batch_size=7", f"--output={again_file}"], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=600)
    again = json.load(open(again_file))
    assert again["examples"] == evaluated["examples"]
    for name in ("hr@5", "hr@10", "mrr@5", "mrr@10", "ndcg@5", "ndcg@10"):
        assert abs(again[name] - evaluated[name]) <= 1e-6, name
    for name, export in run["stages"]["export"].items():
        ratio = export["report"].get("variables_to_weights_and_index_ratio",
                                     export["report"]["variables_to_weights_ratio"])
        assert ratio <= 1.1, name
    # task directories hold only the task: far smaller than the pre-trained directory
    pre_bytes = sum(os.path.getsize(os.path.join(r, f))
                    for r, _, fs in os.walk(work / "models" / "pretrained") for f in fs)
    for name, task in run["stages"]["finetune"].items():
        assert task["file_bytes"] < 0.2 * pre_bytes, name
        assert task["bytes"] < 0.5 * pre_bytes, name  # checkpoints hold no frozen backbone
    both = run["stages"]["serve"]["compare"]
    assert both["same_ids"] == both["histories"] == 10  # the index answers as the float32 scan
    assert 0 <= both["certified"] <= both["histories"]
    served = run["stages"]["serve"]["next"]
    assert all(1 <= i <= 3000 for i in served["answer"])
    for kind in ("in_process_1", "grpc_1", "in_process_256", "grpc_256"):
        assert 0 < served[kind]["p50_ms"] <= served[kind]["p99_ms"]
    assert "| stage | size |" in done.stdout and run["provenance"]["commit"]
    # the kept raw output: provenance and every timing the percentiles came from
    [raw_file] = os.listdir(tmp_path / "results")
    raw = json.load(open(tmp_path / "results" / raw_file))
    assert raw["benchmark"] == "paper_scale" and raw["provenance"]["commit"]
    samples = raw["raw"]["stages"]["serve"]["next"]["in_process_1"]["samples_ms"]
    assert len(samples) == 10 and max(samples) >= served["in_process_1"]["p99_ms"]
