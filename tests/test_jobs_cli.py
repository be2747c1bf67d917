"""The absl commands: --helpfull explains every flag; --flagfile runs a job end to end."""

import json
import os
import re
import subprocess
import sys

from conftest import REPO_ROOT
from pipelines.prepare import prepare

MODULES = ("peterrec_tf.pretrain", "peterrec_tf.finetune", "peterrec_tf.evaluate",
           "peterrec_tf.experiments.transfer")
FLAG_LINE = re.compile(r"^  --(\[no\])?(\w+): (.*)$")


def command(args, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def own_flags(help_text):
    """{flag: explanation} of the project's flags (absl's own modules are left out)."""
    flags, current, ours = {}, None, False
    for line in help_text.split("\nflags:\n", 1)[1].splitlines():
        if line and not line.startswith(" "):  # a module heading
            ours = "peterrec_tf" in line
            current = None
            continue
        match = FLAG_LINE.match(line)
        if match:
            current = match.group(2) if ours else None
            if current:
                flags[current] = match.group(3)
        elif current and line.startswith("    ") and not line.strip().startswith("("):
            flags[current] += " " + line.strip()
    return flags


def test_helpfull_explains_every_flag():
    running = [command([module, "--helpfull"]) for module in MODULES]  # in parallel
    found = {}
    for module, process in zip(MODULES, running):
        out, err = process.communicate(timeout=120)
        assert process.returncode in (0, 1), err[-2000:]  # absl exits 1 after --helpfull
        found[module] = own_flags(out)
        assert len(found[module]) >= 6, (module, out[:1500])
        for name, text in found[module].items():
            assert len(text.split("(default")[0].strip()) > 15, (module, name, text)
    assert {"data_dir", "model_dir", "objective", "mask_rate", "channels", "dilations",
            "kernel_size", "head", "num_sampled", "batch_size", "epochs", "train_steps",
            "eval_every", "seed", "strategy", "mixed_precision"} <= set(found[MODULES[0]])
    assert {"pretrained", "task", "method", "finelast_blocks", "from_scratch", "insertion",
            "pooling", "loss", "bottleneck_ratio", "patch_activation"} <= set(found[MODULES[1]])
    assert {"ranking", "ks", "split", "num_candidates"} <= set(found[MODULES[2]])


def test_flagfile_runs_pretrain_then_evaluate(tmp_path):
    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=80, num_items=40, num_clusters=4,
            num_targets=20, log=lambda *_: None)
    model_dir = str(tmp_path / "pre")
    flagfile = tmp_path / "pretrain.flags"
    flagfile.write_text("\n".join([
        f"--data_dir={os.path.join(data, 'pretrain')}", f"--model_dir={model_dir}",
        "--channels=8", "--dilations=1,2", "--train_steps=4", "--batch_size=16",
        "--log_every=2", "--seed=1"]) + "\n")
    process = command(["peterrec_tf.pretrain", f"--flagfile={flagfile}"])
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    assert "step 4/4" in out and "ETA" in out
    assert json.load(open(os.path.join(model_dir, "flags.json")))["channels"] == 8
    # the last line names what the job wrote and the next command
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {model_dir} (") and (
        f"; next: python -m peterrec_tf.finetune --pretrained={model_dir} ") in last, last
    named = last[len(f"wrote {model_dir} ("):last.index("); next:")].split(", ")
    assert named == sorted(n for n in os.listdir(model_dir) if not n.startswith(".")
                           and not os.path.isdir(os.path.join(model_dir, n))) + sorted(
        n + "/" for n in os.listdir(model_dir) if os.path.isdir(os.path.join(model_dir, n)))
    assert "model.keras" in named and "checkpoints/" in named  # what it holds, no more
    assert "Sharding callback" not in err  # absl INFO off without --verbosity
    # flags.txt replays the job: the same settings, so the finished run is resumed as is
    replay = open(os.path.join(model_dir, "flags.txt")).read()
    assert "--channels=8\n" in replay and "--dilations=1,2\n" in replay
    assert "--jit_compile=true\n" in replay and "data_fingerprint" not in replay
    process = command(["peterrec_tf.pretrain", f"--flagfile={model_dir}/flags.txt"])
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    assert "already trained 4 >= 4 steps" in out
    output = str(tmp_path / "eval.json")
    process = command(["peterrec_tf.evaluate", f"--model_dir={model_dir}",
                       f"--data_dir={os.path.join(data, 'pretrain')}", "--ranking=full",
                       "--ks=1,5", f"--output={output}"])
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    assert 0.0 <= json.load(open(output))["hr@5"] <= 1.0
    # a usage error is one clear line and exit code 2, not a traceback
    process = command(["peterrec_tf.pretrain", f"--flagfile={flagfile}", "--channels=16"])
    out, err = process.communicate(timeout=180)
    assert process.returncode == 2 and "other settings" in err and "Traceback" not in err
