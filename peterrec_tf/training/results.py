"""The files a job leaves in model_dir: flags.json (its settings), flags.txt (the same
settings as an absl --flagfile that replays the job) and results.json."""

import json
import os

#: Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({
    "train_steps", "epochs", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
    "flagfile", "strategy", "eval_batch_size", "save_full_model", "patience",
    "time_budget_minutes"})
#: Where things are, not what the job is: a run directory may be copied or moved, and
#: data moved elsewhere is the same data when its fingerprint (`data_fingerprint`) is.
PATHS = frozenset({"model_dir", "data_dir"})
#: Evaluation-only settings: they change no trained weight, so they may change on resume
#: unless a --select_metric chose weights by them.
EVALUATION = frozenset({"ks", "num_candidates", "eval_ranking"})
#: Recorded settings that are derived, not given: no flag of their own (left out of flags.txt).
DERIVED = frozenset({"data_fingerprint", "data_split", "backbone_fingerprint"})


def write_json(path, payload):
    """Atomic JSON write (temporary file + rename; the temporary removed on failure)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:  # a full disk, say: no temporary left beside the file
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def record_config(model_dir, config, name="flags.json", write=True, defaults=None):
    """Write the job's settings; refuse different ones for a model_dir that holds a run.

    A re-run with the same model_dir resumes, so it must be the same job: anything but
    step counts and logging cadence (RESUMABLE_CHANGES), paths (PATHS) and, without model
    selection, evaluation settings differing is an error. A setting the stored file does
    not have (written before the setting existed) ran at its default: given the job's
    `defaults`, a resume asking for another value is refused too.
    """
    path = os.path.join(model_dir, name)
    if os.path.exists(path):
        previous = read_json(path)
        current = json.loads(json.dumps(config, default=str))  # tuples -> lists, as stored
        free = RESUMABLE_CHANGES | PATHS | (EVALUATION if not current.get("select_metric")
                                            else frozenset())
        changed = sorted(k for k in previous  # keys only in `current` are newer settings
                         if k not in free and previous.get(k) != current.get(k))
        stored_defaults = json.loads(json.dumps(defaults or {}, default=str))
        for k in sorted(set(current) - set(previous) - free - DERIVED):
            if k in stored_defaults and current[k] != stored_defaults[k]:
                previous[k] = stored_defaults[k]  # what the run used: shown as such below
                changed.append(k)
        if changed:
            details = "; ".join(f"{_label(k)}: {previous.get(k)!r} -> {current.get(k)!r}"
                                for k in changed)
            raise ValueError(f"{model_dir} holds a run with other settings ({details}); use a "
                             "new --model_dir, or the same flags to resume")
    elif write and _holds_checkpoints(model_dir):
        # every run records its settings before its first checkpoint
        raise ValueError(f"{model_dir}/checkpoints holds checkpoints but {path} is missing: "
                         "they were not written by a run of this directory (copied in?), so "
                         "nothing says which data and settings they would continue; move "
                         "them aside to start over, or restore the run's flags.json")
    if write:
        os.makedirs(model_dir, exist_ok=True)
        write_json(path, config)


def write_flagfile(model_dir, config, command, name="flags.txt"):
    """flags.txt: the job's settings as `--name=value` lines, replayable with
    `COMMAND --flagfile=MODEL_DIR/flags.txt` (from the directory the job ran in, as its
    paths are recorded as given). A setting left at None (its default: derived later) is
    omitted, so the replay derives it the same way."""
    lines = [f"# {command} --flagfile={os.path.join(model_dir, name)}"]
    for key in sorted(config):
        value = config[key]
        if key in DERIVED or value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        lines.append(f"--{key}={value}")
    tmp = os.path.join(model_dir, f"{name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(model_dir, name))


def _holds_checkpoints(model_dir):
    folder = os.path.join(model_dir, "checkpoints")
    return os.path.isdir(folder) and any(name.startswith(("ckpt-", "checkpoint"))
                                         for name in os.listdir(folder))


def _label(key):
    return ("the data (metadata.json fingerprint)" if key == "data_fingerprint" else
            "the data's split (metadata.json seed and source checksums)" if key == "data_split"
            else "the backbone of --pretrained (its fingerprint: pre-trained again since this "
            "run started?)" if key == "backbone_fingerprint" else f"--{key}")


def write_results(model_dir, results, name="results.json"):
    os.makedirs(model_dir, exist_ok=True)
    write_json(os.path.join(model_dir, name), results)
