"""The one way every command starts, as `python -m X` or as a `peterrec-*` console command.

`run_command(define_flags, main)` defines the command's absl flags, makes each of them a
key flag of the program actually started (so `--help` lists every flag the job reads,
including the shared ones defined in another module, whatever the program is called),
turns a bad flag value (an absl validator) into the project's one-line `error: ...` with
exit status 2, and keeps absl's, TensorFlow's and Beam's INFO logs off unless `--verbosity`
asks for them. `main(argv)` returns the exit status.

Lives in `pipelines` because the data command uses it too and `pipelines` never imports
the model package.
"""

import os
import sys

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


def run_command(define_flags, main, doc=None, known_only=False, minimums=None):
    """Define the flags, parse them and run `main` (see the module docstring); exits.
    `minimums` ({flag: smallest value}) become absl validators of those numeric flags
    (None, an unset optional flag, passes): the command line is refused while parsing,
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
            return values(argv, known_only=known_only)
        except flags.Error as error:
            print(f"error: {flag_error_text(error)}", file=sys.stderr)
            sys.exit(2)

    def run_main(argv):
        quiet_logs(values["verbosity"].present)
        if len(argv) > 1 and not known_only:  # known_only: the rest goes to Beam
            print(f"error: unexpected arguments {argv[1:]} (flags take the form "
                  "--name=value)", file=sys.stderr)
            return 2
        return main(argv)

    app.run(run_main, flags_parser=parse)


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
