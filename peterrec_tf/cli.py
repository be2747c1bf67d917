"""What every command-line entry point shares: user errors become one line and exit 2."""

import sys

USER_ERRORS = (ValueError, FileNotFoundError)


def run_guarded(function, *args, **kwargs):
    """(result, exit code): a bad flag or file prints `error: ...` instead of a traceback."""
    try:
        return function(*args, **kwargs), 0
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return None, 2


def run_training_job(argv, run, names):
    """A training job's absl `main`: flags -> `run(**config)`; exit 2 on a usage error
    (`pipelines.command.run_command` refuses stray positional arguments before it), 130
    when a signal interrupted training."""
    from absl import flags

    from peterrec_tf.training.flags import config_from_flags

    report, code = run_guarded(run, **config_from_flags(flags.FLAGS, names))
    if code:
        return code
    print_next_step(report)
    return 130 if report["training"]["interrupted"] else 0


def print_next_step(report):
    """A training job's last line: what it wrote into --model_dir and what to run next."""
    from pipelines.command import command_line, report_done

    config = report["config"]
    model_dir = config["model_dir"]
    if report["training"]["interrupted"]:
        report_done(f"interrupted at step {report['training']['steps']}; checkpoint in "
                    f"{model_dir}/checkpoints",
                    "the same command again to resume")
        return
    wrote = (f"wrote {model_dir} (model.keras, config.json, vocabularies, checkpoints/, "
             "tensorboard/, flags.json, flags.txt, results.json)")
    if report["job"] == "pretrain":
        following = command_line("peterrec_tf.finetune", pretrained=model_dir,
                                 data_dir="PREPARED_TASK_DIR", model_dir="runs/TASK")
    else:
        following = command_line("peterrec_tf.export", model_dir=model_dir)
    report_done(wrote, following)
