"""Adam whose per-variable update is TF's fused `ResourceApplyAdam` kernel.

Keras' Adam writes its update as about a dozen element-wise ops per variable (subtract,
multiply, assign_add, square, sqrt, divide...), each a pass over the variable outside XLA.
With 100,000 items the embedding and the head are 13M parameters, and those passes cost
more per step than the fused kernel (the one the release's `tf.train.AdamOptimizer`
runs) does (BUILD_NOTES, `FusedAdam`).  The formula is the same: TF's kernel computes
`m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
`var -= m * lr * sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)`, as Keras' Adam does.
Sparse gradients are made dense first.  Keras' Adam does not quite: on a
`tf.IndexedSlices` gradient whose ids repeat (an item twice in a batch) it squares the
rows before summing them, so `v` grows by `sum(g_i^2)` instead of `(sum g_i)^2`; TF1's
Adam, hence the release, sums first, and so does this class (tested).  For AMSGrad and
for other than float32, Keras' update formula runs on the dense gradient.

Under a distribution strategy (MirroredStrategy, MultiWorkerMirroredStrategy) the fused
kernel runs too.  Keras' optimizer all-reduces the gradients (SUM over the replicas;
`IndexedSlices` stay `IndexedSlices`: concatenated across devices, all-gathered across
workers) and then calls `update_step` inside `strategy.extended.update`, once per local
replica, with that replica's component of the mirrored variable: a plain resource
variable on one device.  The kernel is given that component's handle and the handles of
the moments' components on the same device, so every replica applies the same update to
its own copy, the numbers one process computes on the same global batch (tested with 2
in-process replicas, and with 2 and 4 worker processes for adam, 2 for lazy_adam).
Earlier versions fell back to Keras' formula under any strategy as a precaution (a
mirrored variable has no single handle outside `extended.update`: `.handle` raises there);
inside it nothing needed the fallback (tried: same numbers, both optimizers).  It is kept
only where a moment has no copy on the variable's device, or `update_step` is handed a
whole distributed variable instead of one replica's copy; no strategy used here does that
(strategies other than the default, Mirrored and MultiWorkerMirrored are untested).

Decoupled weight decay (`weight_decay=w`, AdamW's): before its Adam update a variable
shrinks by `lr * w * variable`, `lr` the step's learning rate (so it follows a schedule).
Only matrices decay (rank >= 2: kernels, embeddings, the head, patch projections), never
biases and layer-norm scales/offsets. Keras' own decay is replaced by the decay inside
`update_step`, so that LazyAdam can decay lazily: it shrinks only the rows a sparse gradient
touches, like its moments (an untouched embedding row keeps its value until a batch holds
its item; decaying all rows every step would cost the dense pass the lazy update avoids).
FusedAdam decays every row of every matrix. With `weight_decay=None` (or 0) nothing is
added: the fused kernel's numbers are the ones without decay.
"""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="peterrec_tf")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with the update done by one fused kernel per variable, and
    decoupled weight decay on matrices (see the module docstring)."""

    def __init__(self, learning_rate=0.001, *args, weight_decay=None, **kwargs):
        super().__init__(learning_rate, *args, weight_decay=weight_decay or None, **kwargs)

    def _apply_weight_decay(self, variables):
        """Nothing: `update_step` decays (Keras' decay would shrink every embedding row)."""

    def _use_weight_decay(self, variable):
        return len(variable.shape) >= 2 and super()._use_weight_decay(variable)

    def _decay(self, variable, learning_rate):
        """`variable -= lr * w * variable` when it decays (dense: every element)."""
        if self.weight_decay is not None and self._use_weight_decay(variable):
            rate = tf.cast(learning_rate, variable.dtype) * tf.cast(self.weight_decay,
                                                                     variable.dtype)
            _tf_variable(variable).assign_sub(_tf_variable(variable) * rate)

    def update_step(self, gradient, variable, learning_rate):
        gradient = tf.convert_to_tensor(gradient)  # duplicates summed, as TF1's Adam does
        self._decay(variable, learning_rate)
        slots = self._slots_on_device_of(variable)
        if self.amsgrad or variable.dtype != "float32" or slots is None:
            return super().update_step(gradient, variable, learning_rate)
        m, v = slots
        step = tf.cast(self.iterations + 1, "float32")
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=m.handle, v=v.handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, "float32"), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, "float32"), step),
            lr=tf.cast(learning_rate, "float32"), beta1=tf.cast(self.beta_1, "float32"),
            beta2=tf.cast(self.beta_2, "float32"), epsilon=tf.cast(self.epsilon, "float32"),
            grad=gradient)

    def _slots_on_device_of(self, variable):
        """(m, v) as the tf.Variables that live with `variable`, or None when a moment has
        no copy on `variable`'s device.

        Outside a strategy these are the moments' own variables.  Under one, `variable` is
        the component of a mirrored variable that `strategy.extended.update` hands over
        for one replica, and the moments are mirrored too: their component on the same
        device is the one this replica's update must read and write.
        """
        index = self._get_variable_index(variable)
        slots = []
        for slot in (self._momentums[index], self._velocities[index]):
            slot = slot.value if isinstance(slot, keras.Variable) else slot
            if isinstance(slot, tf.distribute.DistributedValues):
                if isinstance(_tf_variable(variable), tf.distribute.DistributedValues):
                    return None  # a whole distributed variable, not one replica's copy
                local = [c for c in tf.distribute.get_strategy().experimental_local_results(slot)
                         if c.device == _tf_variable(variable).device]
                if len(local) != 1:
                    return None
                slot = local[0]
            slots.append(slot)
        return tuple(slots)


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def _handle(variable):
    return _tf_variable(variable).handle


@keras.saving.register_keras_serializable(package="peterrec_tf")
class LazyAdam(FusedAdam):
    """Adam that updates only the rows a sparse gradient touches (the item embedding and
    the sampled softmax's rows), leaving every other row, and its moments, as they are.

    At the paper's 645K items the embedding and the dot head are 330M parameters; a dense
    Adam step reads and writes all of them and their moments (gigabytes of memory
    traffic, BUILD_NOTES) although a batch of 32 histories touches a few
    thousand rows. This is the "lazy" Adam of TF Addons / `tf.keras` recommenders: rows
    seen in the batch get exactly Adam's update (duplicates summed first, as TF1's Adam
    does), unseen rows keep their moments undecayed, so it is not the release's optimizer
    (`--optimizer=adam`, the default, is). Dense gradients, AMSGrad, other dtypes and
    a slot with no copy on the variable's device get FusedAdam's update.

    Under MirroredStrategy and MultiWorkerMirroredStrategy the sparse gradients reach
    `update_step` still as `IndexedSlices` (the replicas' rows concatenated, or all-gathered
    across workers, after Keras' cross-replica SUM), so each replica scatters the same rows
    into its own copy of the variable and of its moments: the one-process update, and rows
    no replica touched stay bit-unchanged (tested; see FusedAdam for how the copies are
    found).
    """

    def update_step(self, gradient, variable, learning_rate):
        slots = self._slots_on_device_of(variable)
        if (not isinstance(gradient, tf.IndexedSlices) or self.amsgrad
                or variable.dtype != "float32" or slots is None):
            return super().update_step(gradient, variable, learning_rate)
        rows, position = tf.unique(tf.cast(gradient.indices, tf.int32))
        if self.weight_decay is not None and self._use_weight_decay(variable):
            # lazy decay: only the rows this batch touches shrink
            shrink = tf.cast(learning_rate, "float32") * tf.cast(self.weight_decay, "float32")
            tf.raw_ops.ResourceScatterSub(
                resource=_handle(variable), indices=rows,
                updates=tf.gather(_tf_variable(variable), rows) * shrink)
        values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        m, v = slots
        beta_1, beta_2 = (tf.cast(b, "float32") for b in (self.beta_1, self.beta_2))
        step = tf.cast(self.iterations + 1, "float32")
        rate = (tf.cast(learning_rate, "float32") * tf.sqrt(1 - tf.pow(beta_2, step))
                / (1 - tf.pow(beta_1, step)))
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        tf.raw_ops.ResourceScatterUpdate(resource=m.handle, indices=rows, updates=m_rows)
        tf.raw_ops.ResourceScatterUpdate(resource=v.handle, indices=rows, updates=v_rows)
        tf.raw_ops.ResourceScatterSub(
            resource=_handle(variable), indices=rows,
            updates=rate * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, "float32")))


#: --optimizer choices of the jobs.
OPTIMIZERS = {"adam": FusedAdam, "lazy_adam": LazyAdam}
#: --lr_schedule choices.
SCHEDULES = ("constant", "cosine", "linear")


@keras.saving.register_keras_serializable(package="peterrec_tf")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate at optimizer iteration `step` (0-based): a linear warm-up from
    `peak / warmup_steps` to `peak` over the first `warmup_steps` steps, then `constant`
    (stays at `peak`), `cosine` (half a cosine from `peak` to 0 at `total_steps`) or
    `linear` (straight to 0 at `total_steps`).

    A function of the optimizer's iteration count alone, which the checkpoints hold, so a
    resumed run continues the schedule where it stopped.
    """

    def __init__(self, peak, total_steps, warmup_steps=0, kind="constant"):
        if kind not in SCHEDULES:
            raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {kind!r}")
        self.peak, self.total_steps = float(peak), int(total_steps)
        self.warmup_steps, self.kind = int(warmup_steps), kind

    def __call__(self, step):
        step = tf.cast(step, "float32")
        peak = tf.constant(self.peak, "float32")
        rate = peak
        if self.kind != "constant":
            span = float(max(1, self.total_steps - self.warmup_steps))
            done = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            rate = (peak * 0.5 * (1.0 + tf.cos(math.pi * done)) if self.kind == "cosine"
                    else peak * (1.0 - done))
        if self.warmup_steps:
            rate = tf.where(step < self.warmup_steps,
                            peak * (step + 1.0) / float(self.warmup_steps), rate)
        return rate

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind}


def make_optimizer(name, learning_rate, total_steps=0, lr_schedule="constant", warmup_steps=0,
                   weight_decay=0.0):
    """The jobs' optimizer: OPTIMIZERS[name] at `learning_rate`, a plain float when the
    schedule is constant without warm-up (the optimizer of earlier versions, same numbers)."""
    rate = learning_rate
    if lr_schedule != "constant" or warmup_steps:
        rate = WarmupDecay(learning_rate, total_steps, warmup_steps, lr_schedule)
    return OPTIMIZERS[name](rate, weight_decay=weight_decay or None)
