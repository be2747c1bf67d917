"""The README is executable: every ```bash and ```python block runs, in order, in a copy of
the repository, as written (with `python` this test's interpreter and the `peterrec-*`
console commands the modules they name).

A block that cannot run here (a server, docker, a cluster, a fresh venv from PyPI) carries
the marker `<!-- readme-test: skip (why) -->` on the line right before it; an unmarked
block that starts a program this test cannot run is an error, not a silent pass. New
blocks are picked up as they are added.
"""

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, SHARED
from pipelines.command import CONSOLE_COMMANDS as _CONSOLE_COMMANDS

SKIP = re.compile(r"^<!-- readme-test: skip \((.+)\) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")
RUNNABLE = {"bash", "python"}
#: Programs the README's shell blocks may start (anything else needs a skip marker).
PROGRAMS = {"python", "python3", "printf", "cat", "head", "mkdir", "cp", "echo", "ls", "cd"}
#: Console command -> module, from the one map the package's scripts are built from.
CONSOLE_COMMANDS = {program: module for module, program in _CONSOLE_COMMANDS.items()}
#: Copied into the working copy (what the README's commands read from the repository;
#: `benchmarks.tables --write` rewrites BUILD_NOTES.md's tables).
COPIED = ("peterrec_tf", "pipelines", "benchmarks", "README.md", "BUILD_NOTES.md",
          "pyproject.toml", "requirements.txt", "saved_models")


def readme_blocks(text):
    """[(line number, language, code, skip reason or None)] of every fenced block."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"README.md:{start + 1}: unclosed code block"
        previous = lines[start - 1].strip() if start else ""
        marker = SKIP.match(previous)
        if previous.startswith("<!-- readme-test") and not marker:
            raise AssertionError(f"README.md:{start}: malformed marker {previous!r}; expected "
                                 "<!-- readme-test: skip (why) -->")
        blocks.append((start + 1, match.group(1), "\n".join(lines[start + 1:end]),
                       marker.group(1) if marker else None))
        index = end + 1
    return blocks


def programs(code):
    """The programs a shell block starts (first word of each command)."""
    joined = re.sub(r"\\\n", " ", code)
    found = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as error:
            raise AssertionError(f"cannot parse {line!r}: {error}") from error
        command = []
        for word in words + [";"]:
            if word in (";", "&&", "||", "|") or word.endswith(";"):
                if word.endswith(";") and word != ";":
                    command.append(word[:-1])
                if command:
                    found.append(command[0].lstrip("("))
                command = []
            else:
                command.append(word)
    return [p for p in found if p and "=" not in p]


def unrunnable(code):
    return sorted({p for p in programs(code)
                   if p not in PROGRAMS and p not in CONSOLE_COMMANDS})


def test_the_parser_sees_every_program():
    code = "python -m a \\\n  --b=1  # python\n(printf 'x\\ty\\n'; cat f) > g && curl -s h | jq ."
    assert programs(code) == ["python", "printf", "cat", "curl", "jq"]
    assert unrunnable(code) == ["curl", "jq"]
    blocks = readme_blocks("a\n<!-- readme-test: skip (a server) -->\n```bash\nx\n```\n"
                           "```python\ny\n```\n```text\nz\n```\n")
    assert blocks == [(3, "bash", "x", "a server"), (6, "python", "y", None),
                      (9, "text", "z", None)]


def test_every_unmarked_block_is_one_this_test_can_run():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as handle:
        blocks = readme_blocks(handle.read())
    refused = [(line, unrunnable(code)) for line, language, code, skip in blocks
               if language == "bash" and skip is None and unrunnable(code)]
    assert not refused, ("unmarked README blocks start programs this test cannot run; mark "
                         f"them <!-- readme-test: skip (why) -->: {refused}")
    assert not [line for line, language, _, skip in blocks
                if skip is None and language in ("sh", "shell", "console", "")], \
        "shell blocks must be ```bash (or another language, e.g. ```text, for file contents)"


def working_copy(root):
    """A copy of the repository at root/repo with ../shared beside it and a bin/ of shims:
    `python` this interpreter, `peterrec-*` the console commands."""
    repo = root / "repo"
    repo.mkdir()
    for name in COPIED:
        source = os.path.join(REPO_ROOT, name)
        if os.path.isdir(source):
            shutil.copytree(source, repo / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif os.path.exists(source):
            shutil.copy(source, repo / name)
    if os.path.isdir(SHARED):
        os.symlink(SHARED, root / "shared")
    shims = root / "bin"
    shims.mkdir()
    commands = {"python": "", "python3": "", **{k: f"-m {v}" for k, v in CONSOLE_COMMANDS.items()}}
    for name, module in commands.items():
        path = shims / name
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" {module} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=str(repo), TF_NUM_INTEROP_THREADS="1")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return repo, env


def test_the_readme_runs_as_written(tmp_path):
    """Every unmarked ```bash and ```python block, in order, in one working copy."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as handle:
        blocks = [b for b in readme_blocks(handle.read()) if b[1] in RUNNABLE and b[3] is None]
    needs_shared = [line for line, _, code, _ in blocks if "../shared" in code]
    if needs_shared and not os.path.isdir(SHARED):
        pytest.skip(f"README blocks at lines {needs_shared} read ../shared, absent here")
    repo, env = working_copy(tmp_path)
    ran = 0
    for line, language, code, _ in blocks:
        if language == "bash":
            command = ["bash", "-euo", "pipefail", "-c", code]
        else:
            script = tmp_path / f"readme_{line}.py"
            script.write_text(code + "\n")
            command = [sys.executable, str(script)]
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, (f"README.md:{line}: the {language} block failed "
                                      f"(exit {done.returncode}):\n{code}\n--- stdout\n"
                                      f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
        ran += 1
    assert ran >= 8, f"only {ran} README blocks ran"
