"""The installable package: pyproject.toml's pins are requirements.txt's (less the test
runner and its parallel plug-in), its console commands are the commands, and a wheel built from the sources
installs and runs outside the repository (console command and import), offline."""

import os
import re
import shutil
import site
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO_ROOT
from pipelines.command import CONSOLE_COMMANDS

TEST_ONLY = {"pytest", "pytest-xdist", "execnet"}


def pyproject():
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as handle:
        return tomllib.load(handle)


def requirement_pins():
    pins = {}
    with open(os.path.join(REPO_ROOT, "requirements.txt"), encoding="utf-8") as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==")
                pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_runtime_dependencies_are_the_requirements_pins():
    declared = {}
    for requirement in pyproject()["project"]["dependencies"]:
        name, version = requirement.split("==")
        declared[re.sub(r"[-_.]+", "-", name).lower()] = version
    pins = requirement_pins()
    assert declared == {k: v for k, v in pins.items() if k not in TEST_ONLY}
    assert not TEST_ONLY & set(declared)
    extra = {}
    for requirement in pyproject()["project"]["optional-dependencies"]["test"]:
        name, version = requirement.split("==")
        extra[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert extra == {k: v for k, v in pins.items() if k in TEST_ONLY}


def test_console_commands_are_the_commands():
    scripts = pyproject()["project"]["scripts"]
    assert scripts == {program: f"{module}:cli" for module, program in CONSOLE_COMMANDS.items()}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout")
def test_a_wheel_installs_and_runs_outside_the_repository(tmp_path):
    """Built without network (the test environment's setuptools), installed with
    --no-deps into a fresh venv that sees the test environment's packages through a .pth
    file; then a console command's --help and an import from another directory."""
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("peterrec_tf", "pipelines"):
        shutil.copytree(os.path.join(REPO_ROOT, name), source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO_ROOT, name), source / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w", str(wheels),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = wheels.glob("peterrec_tf-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the test environment's packages (TensorFlow, ...), not this repository
    with open(os.path.join(purelib, "test_environment.pth"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(site.getsitepackages()) + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python),
                                "install", "--no-deps", "--no-index", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    imported = subprocess.run(
        [str(python), "-c", "import peterrec_tf, pipelines, keras; "
         "from peterrec_tf.models import NextItNet; "
         "print(peterrec_tf.__file__); print(pipelines.__file__)"],
        cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    for line in imported.stdout.strip().splitlines()[-2:]:
        assert line.startswith(purelib), line  # the installed copy, not the repository
    helped = subprocess.run([str(venv / "bin" / "peterrec-evaluate"), "--help"], cwd=outside,
                            env=env, capture_output=True, text=True, timeout=300)
    assert helped.returncode in (0, 1), helped.stderr[-3000:]  # absl exits 1 after --help
    assert "--model_dir" in helped.stdout and "--data_dir" in helped.stdout
    assert "Evaluate any saved model directory" in helped.stdout
