"""What a user sees first when starting an entry point: the job's own output, not
TensorFlow's C++ start-up log (unless they asked for it with TF_CPP_MIN_LOG_LEVEL)."""

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

NOISE = ("oneDNN", "cuda drivers", "cuInit", "absl::InitializeLog", "I0000", "E0000")


def run(module, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("module, args", [
    ("peterrec_tf.evaluate", ["--model_dir=/nonexistent", "--data_dir=/nonexistent"]),
    ("peterrec_tf.export", ["--model_dir=/nonexistent"]),
    ("pipelines.prepare", ["--format=interactions", "--input=/nonexistent", "--output_dir=/tmp/x"]),
])
def test_entry_points_start_without_tensorflow_log(module, args):
    done = run(module, *args)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:"), done.stderr
    assert not [line for line in lines if any(noise in line for noise in NOISE)], done.stderr


def test_a_user_set_log_level_is_respected():
    done = run("peterrec_tf.evaluate", "--model_dir=/nonexistent", "--data_dir=/nonexistent",
               env_extra={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert done.returncode == 2 and "oneDNN" in done.stderr


@pytest.mark.parametrize("module", ["peterrec_tf.pretrain", "peterrec_tf.finetune"])
def test_every_job_setting_is_a_flag_and_every_flag_a_setting(module):
    """The settings are read off the job's `run_*` signature (jobs.skeleton.job_settings):
    the flags the entry point defines must be exactly those, so neither list can drift."""
    code = (f"import json, {module} as m; from absl import flags; m.define_flags(); "
            "owned = flags.FLAGS.flags_by_module_dict(); "
            f"names = [f.name for mod in ('{module}', 'peterrec_tf.training.flags') "
            "for f in owned.get(mod, [])]; print(json.dumps([sorted(names), list(m.SETTINGS)]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json
    defined, settings = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(defined) == sorted(settings)
