"""Model + optimizer + step under `model_dir/checkpoints` (tf.train.CheckpointManager)."""

import os
import shutil
import tempfile

import tensorflow as tf

from peterrec_tf.training.finite import check_finite


#: What a damaged checkpoint raises: TF's DataLossError/NotFoundError..., a short read
#: of the object graph (IndexError), a file that cannot be opened, a mismatch.
RESTORE_ERRORS = (tf.errors.OpError, IndexError, OSError, ValueError, AssertionError)


def random_states(model):
    """The states of `model`'s random generators (dropout's), in the layers' fixed order:
    checkpointed by position, since their variable names carry a process-wide counter."""
    return [getattr(generator.state, "value", generator.state)
            for layer in model._flatten_layers(include_self=True)
            for generator in getattr(layer, "_seed_generators", ())]


def changing_variables(model):
    """What a checkpoint of `model` must hold: the model itself, or, when part of it is a
    frozen pre-trained backbone (PeterRec, FineCLS, FineLast), every variable but the
    frozen ones, keyed by path. A fine-tuning run rebuilds the frozen part from
    `--pretrained` before restoring, so checkpointing it again would copy the backbone
    into every task's `checkpoints/`: each checkpoint the whole model, many times the
    task's own files (BUILD_NOTES, the task artifact)."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or getattr(model, "task", "pretrain") == "pretrain":
        return model
    trainable = {id(v) for v in model.trainable_variables}
    frozen = {id(w) for w in backbone.backbone_weights() if id(w) not in trainable}
    if not frozen:
        return model
    from peterrec_tf.task_artifact import relative_path  # paths without the model's name
    seeds = {id(v) for v in model.variables if any(v.value is s for s in random_states(model))}
    tracked = {relative_path(v).replace("/", "|"): getattr(v, "value", v)
               for v in model.variables if id(v) not in frozen and id(v) not in seeds}
    if len(tracked) != len(model.variables) - len(frozen) - len(seeds):
        raise ValueError("two variables of the model share a path: cannot checkpoint them")
    return tracked


def checkpoints_of(model, **extra):
    """(checkpoint, legacy): a `tf.train.Checkpoint` of what `model` changes (plus `extra`
    objects), and, when that leaves out a frozen backbone, one of the older layout (the
    whole model) that checkpoints written before still need; else legacy is None."""
    tracked = changing_variables(model)
    if tracked is model:
        return tf.train.Checkpoint(model=model, **extra), None
    return (tf.train.Checkpoint(variables=tracked, **extra),
            tf.train.Checkpoint(model=model, **extra))


def restore(checkpoint, legacy, path):
    """Restore `path` with the layout that wrote it; returns TF's restore status."""
    if legacy is not None and _holds_model(path):
        return legacy.restore(path)
    return checkpoint.restore(path)


class TrainingState:
    """What a resumed run needs: the model's variables, the optimizer's slots and the step.

    The step is also the data position: batches depend only on (seed, batch index), so
    resuming at step s means skipping s batches.  In a multi-worker cluster every worker
    must take part in a save, but only the chief's lands in `model_dir`; the others write
    to a temporary directory that is removed at once.
    """

    def __init__(self, model, model_dir, keep=3, strategy=None, chief=True):
        self.model = model
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        with (strategy or tf.distribute.get_strategy()).scope():
            model.optimizer.build(model.trainable_variables)
        # dropout's random states continue where a resumed run stopped (none without dropout,
        # so checkpoints of models without it are as before)
        seeds = random_states(model)
        self.checkpoint, self.legacy = checkpoints_of(
            model, optimizer=model.optimizer, step=self.step,
            **({"random_states": seeds} if seeds else {}))
        self.directory = os.path.join(model_dir, "checkpoints")
        self.keep = keep
        self.chief = chief
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                  max_to_keep=keep)

    @property
    def current_step(self):
        return int(self.step.numpy())

    def restore(self, log=print):
        """Restore the newest checkpoint that restores; returns its path or None.

        A checkpoint that fails (truncated, checksum error, missing file) is reported by
        file and the one before it is tried; if none restores, a `ValueError` lists them
        (starting over silently would throw the run away).
        """
        failures = []
        for path in reversed(self.manager.checkpoints):
            try:
                restore(self.checkpoint, self.legacy, path).assert_existing_objects_matched()
            except RESTORE_ERRORS as error:
                reason = getattr(error, "message", str(error)).strip().splitlines()[0]
                failures.append(f"{path}: {reason}")
                log(f"warning: checkpoint {path} does not restore ({reason}); trying the one "
                    "before it")
                continue
            return path
        if failures:
            raise ValueError("no checkpoint in " + self.directory + " restores: "
                             + "; ".join(failures) + ". Move the directory aside to start over")
        return None

    def save(self):
        """Checkpoint at the current step (numbered by it); returns the chief's path.
        Weights that are not finite are never saved (`NonFiniteError`)."""
        check_finite(self.model.variables, f"at step {self.current_step}: training diverged; "
                     "this checkpoint is not written. Lower --learning_rate or check the data")
        number = self.current_step
        if self.chief:
            return self.manager.save(checkpoint_number=number)
        scratch = tempfile.mkdtemp(prefix="peterrec-worker-ckpt-")
        try:
            tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save(
                checkpoint_number=number)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None


def _holds_model(path):
    """True for a checkpoint of the older layout (the whole model under `model/`)."""
    try:
        return any(name.startswith("model/") for name, _ in tf.train.list_variables(path))
    except RESTORE_ERRORS:
        return False
