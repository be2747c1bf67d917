"""The one way every command starts, as `python -m X` or as a `peterrec-*` console command.

`run_command(define_flags, main)` defines the command's absl flags, makes each of them a
key flag of the program actually started (so `--help` lists every flag the job reads,
including the shared ones defined in another module, whatever the program is called),
turns a bad flag value (an absl validator) into the project's one-line `error: ...` with
exit status 2, and keeps absl's, TensorFlow's and Beam's INFO logs off unless `--verbosity`
asks for them. Then it runs `main(flags.FLAGS)`, the same way for every command: a stray
positional argument is refused, a user's error (`ValueError`, `OSError`) raised by `main`
is one `error: ...` line with exit status 2, an interruption exits 130, and the `Done`
that `main` returns is printed as the last line (what was written; what to run next).

Lives in `pipelines` because the data command uses it too and `pipelines` never imports
the model package.
"""

import os
import sys
from typing import NamedTuple, Optional

#: absl flags every command's --help shows beside the job's (--flagfile is absl's special
#: flag, listed by --helpfull).
ABSL_KEY_FLAGS = ("verbosity",)
#: Console commands (pyproject.toml) and the modules `python -m` runs for them.
CONSOLE_COMMANDS = {
    "pipelines.prepare": "peterrec-prepare",
    "peterrec_tf.pretrain": "peterrec-pretrain",
    "peterrec_tf.finetune": "peterrec-finetune",
    "peterrec_tf.evaluate": "peterrec-evaluate",
    "peterrec_tf.export": "peterrec-export",
    "peterrec_tf.convert_tf1": "peterrec-convert",
    "peterrec_tf.demo": "peterrec-demo",
    "peterrec_tf.recommend": "peterrec-recommend",
}


def started_as_console_command():
    """True in a `peterrec-*` console command (pyproject.toml's scripts)."""
    return os.path.basename(sys.argv[0]).startswith("peterrec-")


def command_line(module, **flag_values):
    """How to start `module` with `flag_values`, in the form the user started this one
    (`peterrec-x` after `pip install`, else `python -m module`)."""
    program = (CONSOLE_COMMANDS[module] if started_as_console_command()
               and module in CONSOLE_COMMANDS else f"python -m {module}")
    return " ".join([program] + [f"--{name}={value}" for name, value in flag_values.items()])


class Done(NamedTuple):
    """What a command's `main` returns when it finished: the last line's two halves (what
    it wrote; the command to run next, None when there is none) and the exit status."""

    wrote: str
    next_command: Optional[str] = None
    code: int = 0


class Interrupted(Exception):
    """Raised by a command stopped part-way (a signal) with its work resumable: exit 130,
    the last line says where it stopped and to run the same command again."""


#: What a command's `main` may raise for a fault of the user's (a bad flag value, a missing
#: or unfit file, an unwritable place): one line, exit 2, no traceback.
USER_ERRORS = (ValueError, OSError)


#: What an interrupted command says to run next, unless it gives its own (`on_interrupt`).
RESUME = "the same command again to resume"
#: ... for a command that cannot resume and leaves nothing partial (what it writes is
#: renamed into place only when complete): evaluate, recommend, the paper log.
STARTS_OVER = ("the same command again (it starts over; nothing partial was written: its "
               "output is renamed into place only when complete)")


def run_command(define_flags, main, doc=None, *, passes_unknown=False, minimums=None,
                on_interrupt=RESUME):
    """Define the flags, parse them and run `main(flags.FLAGS)` (see the module docstring);
    exits with its status. `main` returns a `Done`, an exit status or None (0); the user's
    errors it raises (`USER_ERRORS`) become one `error: ...` line and exit 2, `Interrupted`
    and Ctrl-C exit 130. A positional argument is refused, unless `passes_unknown`: then
    what the command does not define goes to `main(flags.FLAGS, unknown_args)` (Beam's
    options). `minimums` ({flag: smallest value}) become absl validators of those numeric
    flags (None, an unset optional flag, passes): the command line is refused while parsing,
    the library keeps its own checks for Python callers."""
    from absl import app, flags

    values = flags.FLAGS
    before = set(values)
    define_flags()
    for name, low in (minimums or {}).items():
        flags.register_validator(name, lambda value, low=low: value is None or value >= low,
                                 message=f"--{name} must be >= {low}")
    program = sys.argv[0]
    for name in [name for name in values if name not in before] + list(ABSL_KEY_FLAGS):
        values.register_key_flag_for_module(program, values[name])
    main_module = sys.modules.get("__main__")
    if doc and main_module is not None and not main_module.__doc__:
        main_module.__doc__ = doc  # absl's --help prints it; a console script has none

    def parse(argv):
        try:
            return values(argv, known_only=passes_unknown)
        except flags.Error as error:
            print(f"error: {flag_error_text(error)}", file=sys.stderr)
            sys.exit(2)

    def run_main(argv):
        quiet_logs(values["verbosity"].present)
        if len(argv) > 1 and not passes_unknown:
            print(f"error: unexpected arguments {argv[1:]} (flags take the form "
                  "--name=value)", file=sys.stderr)
            return 2
        return run_guarded(lambda: main(values, argv[1:]) if passes_unknown else main(values),
                           on_interrupt)

    app.run(run_main, flags_parser=parse)


def run_guarded(call, on_interrupt=RESUME):
    """`call()`'s exit status as `run_command` reports it (printing its last line);
    `on_interrupt`: what to run next after Ctrl-C (a command that cannot resume says so)."""
    try:
        outcome = call()
    except USER_ERRORS as error:
        print(f"error: {user_error_text(error)}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as stopped:
        where = f" at {stopped}" if isinstance(stopped, Interrupted) else ""
        report_done(f"interrupted{where}", on_interrupt)
        return 130
    if isinstance(outcome, Done):
        if outcome.next_command is None:
            print(outcome.wrote, flush=True)
        else:
            report_done(outcome.wrote, outcome.next_command)
        return outcome.code
    return outcome or 0


def user_error_text(error):
    """One line for a user's error: an operating system's fault as `<file>: <what>`."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def flag_error_text(error):
    """A validator's `flag --x=v: --x must be ...` as the jobs' own checks say it
    (`--x must be ..., got v`), so both ways of starting a job refuse a value alike."""
    import re

    match = re.match(r"^flag --(\w+)=(.*?): (--\1 must .*)$", str(error), re.S)
    return f"{match.group(3)}, got {match.group(2)}" if match else str(error)


def quiet_logs(verbose):
    """absl's and TensorFlow's Python INFO lines (checkpoint sharding timings, SavedModel
    assets) and Beam's pipeline chatter only bury a job's own progress lines: warnings and
    errors still show; `--verbosity=0` (or higher) brings the INFO lines back."""
    import logging

    from absl import logging as absl_logging

    if verbose:
        return
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("tensorflow", "apache_beam", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)


def report_done(summary, next_command):
    """A command's last line: `summary` (what it wrote) and the command to run next."""
    print(f"{summary}; next: {next_command}", flush=True)
