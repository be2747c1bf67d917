"""What a user sees first when starting an entry point: the job's own output, not
TensorFlow's C++ start-up log (unless they asked for it with TF_CPP_MIN_LOG_LEVEL)."""

import json
import os
import re
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
    # TensorFlow's C++ start-up lines shown: which ones depends on the CPU (oneDNN's notice
    # is not printed on every x86 machine), so any of them counts
    assert done.returncode == 2
    assert [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)], \
        done.stderr


@pytest.mark.parametrize("module", ["peterrec_tf.pretrain", "peterrec_tf.finetune"])
def test_every_job_setting_is_a_flag_and_every_flag_a_setting(module):
    """The settings are read off the job's `run_*` signature (jobs.training_job.job_settings):
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


#: Every command, its console command (pyproject.toml) and the settings its job reads
#: beyond the flags its own module defines (None: exactly those).
COMMANDS = {
    "pipelines.prepare": "peterrec-prepare", "peterrec_tf.pretrain": "peterrec-pretrain",
    "peterrec_tf.finetune": "peterrec-finetune", "peterrec_tf.evaluate": "peterrec-evaluate",
    "peterrec_tf.export": "peterrec-export", "peterrec_tf.convert_tf1": "peterrec-convert",
    "peterrec_tf.demo": "peterrec-demo", "peterrec_tf.recommend": "peterrec-recommend"}
HELP = """
import contextlib, io, json, sys
from absl import flags
import {module} as command
before = set(flags.FLAGS)
sys.argv = ["/venv/bin/{program}", "--help"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        command.cli()
    except SystemExit:
        pass
defined = sorted(name for name in set(flags.FLAGS) - before  # absl's --help* left out
                 if not flags.FLAGS.find_module_defining_flag(name).startswith("absl"))
print(json.dumps({{"help": out.getvalue(), "defined": defined,
                   "settings": list(getattr(command, "SETTINGS", []))}}))
"""


def listed_flags(help_text):
    """The flags `--help` lists (the program's key flags)."""
    return {match.group(2) for match in
            (re.match(r"^  (?:-\w,)?--(\[no\])?(\w+):", line) for line in help_text.splitlines())
            if match}


def test_help_lists_every_flag_the_job_reads():
    """`--help` (absl's short help: the started program's key flags) lists every flag the
    command defines, the shared training flags included (they are defined in another
    module), under the console command's name as under `python -m`; for the training
    jobs those are exactly the job's settings."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    running = {module: subprocess.Popen(
        [sys.executable, "-c", HELP.format(module=module, program=program)], cwd=REPO_ROOT,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for module, program in COMMANDS.items()}
    for module, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (module, err[-2000:])
        found = json.loads(out.strip().splitlines()[-1])
        listed = listed_flags(found["help"])
        assert f"/venv/bin/{COMMANDS[module]}:" in found["help"], module
        assert set(found["defined"]) <= listed, (module, set(found["defined"]) - listed)
        assert "verbosity" in listed, module
        if found["settings"]:
            assert set(found["settings"]) <= listed, (module, set(found["settings"]) - listed)
        assert "%%" not in found["help"], module


@pytest.mark.parametrize("module, args, expected", [
    ("peterrec_tf.pretrain", ["--data_dir=/nonexistent", "--model_dir=/nonexistent",
                              "--batch_size=0"], "--batch_size must be >= 1, got 0"),
    ("peterrec_tf.export", ["--model_dir=/nonexistent", "--k=0"], "--k must be >= 1, got 0"),
])
def test_a_bad_flag_value_is_one_line_and_exit_2(module, args, expected):
    """Range checks of single flags are absl validators: refused while parsing, in the
    project's one-line form."""
    done = run(module, *args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: {expected}"], done.stderr


def test_a_stray_argument_is_refused_by_every_command():
    """A positional argument (a flag missing its `--`, a path given bare) is an error in
    every command, not ignored: evaluate and convert_tf1 used to drop it silently and run
    with their defaults. `prepare` passes what it does not know to Beam instead."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cases = {"peterrec_tf.evaluate": ["--model_dir=/nonexistent", "--data_dir=/nonexistent",
                                      "ks=1"],
             "peterrec_tf.convert_tf1": ["--checkpoint=/nonexistent", "--output_dir=/tmp/x",
                                         "causal=true"],
             "peterrec_tf.pretrain": ["--data_dir=/nonexistent", "--model_dir=/nonexistent",
                                      "extra"]}
    running = {module: subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for module, args in cases.items()}
    for module, process in running.items():
        _, err = process.communicate(timeout=300)
        stray = cases[module][-1]
        assert process.returncode == 2, (module, err[-1000:])
        assert err.strip().splitlines()[-1] == (f"error: unexpected arguments ['{stray}'] "
                                                "(flags take the form --name=value)"), module


def test_every_main_ends_alike(capsys):
    """What `run_command` makes of a `main`'s outcome, the same for every command: a `Done`
    is the last line (what was written; what to run next) and its exit status, a user's
    error one `error:` line with exit 2 (an OS fault as `<file>: <what>`), an
    interruption exit 130 with the way to resume."""
    from pipelines.command import Done, Interrupted, run_guarded

    assert run_guarded(lambda: Done("wrote d", "python -m x --a=1")) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "wrote d; next: python -m x --a=1"
    assert run_guarded(lambda: Done("stopped at step 3", "again", 130)) == 130
    assert run_guarded(lambda: None) == 0 and run_guarded(lambda: 1) == 1

    def missing():
        open("/nonexistent/file.txt")
    for fails, line in ((missing, "error: /nonexistent/file.txt: No such file or directory"),
                        (lambda: int("x"), "error: invalid literal for int() with base 10: 'x'")):
        assert run_guarded(fails) == 2
        assert capsys.readouterr().err.splitlines() == [line]

    def stopped():
        raise Interrupted("step 40")
    assert run_guarded(stopped) == 130
    assert capsys.readouterr().out.splitlines()[-1] == (
        "interrupted at step 40; next: the same command again to resume")


def test_each_command_says_truly_whether_an_interrupted_run_resumes(monkeypatch):
    """What Ctrl-C's last line tells the user to do is true of the command: the training
    jobs, preparation and the demo resume from what they kept; evaluate, recommend and the
    paper log start over and leave nothing partial (their outputs go through a temporary
    name renamed when complete; the paper log's interruption is tested below); export and a
    conversion start over and say what a rerun may meet."""
    import importlib

    import pipelines.command as command
    from peterrec_tf.convert_tf1 import INTERRUPTED
    from peterrec_tf.experiments.reinterval import INTERRUPTED as REINTERVAL_INTERRUPTED
    from peterrec_tf.export import INTERRUPTED as EXPORT_INTERRUPTED

    expected = {
        "pipelines.prepare": command.RESUME, "peterrec_tf.pretrain": command.RESUME,
        "peterrec_tf.finetune": command.RESUME, "peterrec_tf.demo": command.RESUME,
        "peterrec_tf.evaluate": command.STARTS_OVER,
        "peterrec_tf.recommend": command.STARTS_OVER,
        "peterrec_tf.export": EXPORT_INTERRUPTED,
        "pipelines.paper_log": command.STARTS_OVER,
        "peterrec_tf.convert_tf1": INTERRUPTED,
        "peterrec_tf.experiments.reinterval": REINTERVAL_INTERRUPTED,
    }
    assert set(command.CONSOLE_COMMANDS) <= set(expected), "a new command: say what it does"
    said = {}

    def recorder(define_flags, main, doc=None, *, on_interrupt=command.RESUME, **_):
        said[recording] = on_interrupt
    monkeypatch.setattr(command, "run_command", recorder)
    for recording in expected:
        importlib.import_module(recording).cli()
    assert said == expected


def test_an_interrupted_paper_log_leaves_no_partial_file(tmp_path, monkeypatch):
    """The paper log's files appear whole or not at all: interrupted in its second block
    of users, none of the three files nor a temporary is left."""
    import pipelines.paper_log as paper_log

    real, calls = paper_log.user_labels, []

    def interrupted_later(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(paper_log, "user_labels", interrupted_later)
    paths = [str(tmp_path / name) for name in ("log.tsv", "labels.tsv", "targets.tsv")]
    with pytest.raises(KeyboardInterrupt):
        paper_log.write_paper_log(paths[0], 400, num_items=50, history=10, block_users=20,
                                  labels_path=paths[1], target_log_path=paths[2])
    assert len(calls) == 2 and os.listdir(tmp_path) == []
    monkeypatch.setattr(paper_log, "user_labels", real)
    assert paper_log.write_paper_log(paths[0], 400, num_items=50, history=10, block_users=20,
                                     labels_path=paths[1], target_log_path=paths[2]) > 0
    assert sorted(os.listdir(tmp_path)) == ["labels.tsv", "log.tsv", "targets.tsv"]


def test_an_interrupted_conversion_says_it_starts_over(tmp_path):
    """convert_tf1 stages its output and publishes it whole: Ctrl-C leaves nothing to
    resume, and its last line says so (the command, not only the constant)."""
    probe = ("import sys\n"
             "import peterrec_tf.convert_tf1 as command\n"
             "def main(values):\n"
             "    raise KeyboardInterrupt\n"
             "command.main = main\n"
             f"sys.argv = ['convert', '--checkpoint=x', '--output_dir={tmp_path / 'out'}']\n"
             "command.cli()\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == (
        "interrupted; next: the same command again (a conversion starts over; nothing was "
        "written to --output_dir)")
