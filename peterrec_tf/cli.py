"""The training jobs' command: flags -> `run(**settings)` -> the last line.

Every command starts through `pipelines.command.run_command` (stray arguments, one-line
errors, exit statuses); this is only what pretrain and finetune share beyond it.
"""


def training_main(run, names):
    """A training job's `main(values)`: the flags named `names` -> `run(**config)` -> `Done`
    (exit 130 when a signal interrupted training; the checkpoint resumes it)."""

    def main(values):
        from peterrec_tf.training.flags import config_from_flags

        return training_done(run(**config_from_flags(values, names)))

    return main


def written_entries(model_dir):
    """What `model_dir` holds, as its last line names it: files, then folders with a
    trailing "/" (hidden files and the job's lock left out)."""
    import os

    entries = [e for e in os.scandir(model_dir) if not e.name.startswith(".")]
    return ([e.name for e in sorted(entries, key=lambda e: e.name) if not e.is_dir()]
            + [e.name + "/" for e in sorted(entries, key=lambda e: e.name) if e.is_dir()])


def training_done(report):
    """A training job's last line: what it wrote into --model_dir and what to run next."""
    from pipelines.command import Done, command_line

    model_dir = report["config"]["model_dir"]
    if report["training"]["interrupted"]:
        return Done(f"interrupted at step {report['training']['steps']}; checkpoint in "
                    f"{model_dir}/checkpoints", "the same command again to resume", 130)
    wrote = f"wrote {model_dir} ({', '.join(written_entries(model_dir))})"
    if report["job"] == "pretrain":
        return Done(wrote, command_line("peterrec_tf.finetune", pretrained=model_dir,
                                        data_dir="PREPARED_TASK_DIR", model_dir="runs/TASK"))
    return Done(wrote, command_line("peterrec_tf.export", model_dir=model_dir))
