"""Guards against NaN/Inf: a diverged run stops and nothing of it is saved."""

import math

import tensorflow as tf


class NonFiniteError(ValueError):
    """Training produced NaN/Inf (a loss or weights); nothing of it is saved."""


def check_finite(variables, when=""):
    """`NonFiniteError` naming the first floating variable holding NaN or Inf."""
    for variable in variables:
        if tf.as_dtype(variable.dtype).is_floating and not bool(
                tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(variable)))):
            name = getattr(variable, "path", None) or variable.name
            raise NonFiniteError(f"{name} holds NaN or Inf {when}".rstrip())


def check_loss(logs, step, last_saved):
    """`NonFiniteError` when the step's loss is NaN/Inf, naming the last good checkpoint."""
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
        kept = (f"the newest checkpoint (step {last_saved}) is left as it was"
                if last_saved is not None else "no checkpoint of this run was written")
        raise NonFiniteError(f"training diverged: loss is {float(loss)} at step {step}, which "
                             f"is not saved; {kept}. Lower --learning_rate or check the data")
