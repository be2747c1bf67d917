"""Adam whose per-variable update is TF's fused `ResourceApplyAdam` kernel.

Keras' Adam writes its update as about a dozen element-wise ops per variable (subtract,
multiply, assign_add, square, sqrt, divide...), each a pass over the variable outside XLA.
With 100,000 items the embedding and the head are 13M parameters, and those passes cost
37 ms a step where the fused kernel (the one the release's `tf.train.AdamOptimizer`
runs) costs 11 ms (measured, BUILD_NOTES).  The formula is the same: TF's kernel computes
`m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
`var -= m * lr * sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)`, as Keras' Adam does.
Sparse gradients are made dense first.  Keras' Adam does not quite: on a
`tf.IndexedSlices` gradient whose ids repeat (an item twice in a batch) it squares the
rows before summing them, so `v` grows by `sum(g_i^2)` instead of `(sum g_i)^2`; TF1's
Adam, hence the release, sums first, and so does this class (tested).  Under a
distribution strategy, for AMSGrad and for other than float32, Keras' update formula
runs on the dense gradient.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="peterrec_tf")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with the update done by one fused kernel per variable."""

    def update_step(self, gradient, variable, learning_rate):
        gradient = tf.convert_to_tensor(gradient)  # duplicates summed, as TF1's Adam does
        if self.amsgrad or variable.dtype != "float32" or tf.distribute.has_strategy():
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        step = tf.cast(self.iterations + 1, "float32")
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(m), v=_handle(v),
            beta1_power=tf.pow(tf.cast(self.beta_1, "float32"), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, "float32"), step),
            lr=tf.cast(learning_rate, "float32"), beta1=tf.cast(self.beta_1, "float32"),
            beta2=tf.cast(self.beta_2, "float32"), epsilon=tf.cast(self.epsilon, "float32"),
            grad=gradient)


def _handle(variable):
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="peterrec_tf")
class LazyAdam(FusedAdam):
    """Adam that updates only the rows a sparse gradient touches (the item embedding and
    the sampled softmax's rows), leaving every other row, and its moments, as they are.

    At the paper's 645K items the embedding and the dot head are 330M parameters; a dense
    Adam step reads and writes all of them and their moments (~9 GB of memory traffic,
    about a second on this machine) although a batch of 32 histories touches a few
    thousand rows. This is the "lazy" Adam of TF Addons / `tf.keras` recommenders: rows
    seen in the batch get exactly Adam's update (duplicates summed first, as TF1's Adam
    does), unseen rows keep their moments undecayed, so it is not the release's optimizer
    (`--optimizer=adam`, the default, is). Dense gradients, AMSGrad, other dtypes and
    distribution strategies get FusedAdam's update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (not isinstance(gradient, tf.IndexedSlices) or self.amsgrad
                or variable.dtype != "float32" or tf.distribute.has_strategy()):
            return super().update_step(gradient, variable, learning_rate)
        rows, position = tf.unique(tf.cast(gradient.indices, tf.int32))
        values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        beta_1, beta_2 = (tf.cast(b, "float32") for b in (self.beta_1, self.beta_2))
        step = tf.cast(self.iterations + 1, "float32")
        rate = (tf.cast(learning_rate, "float32") * tf.sqrt(1 - tf.pow(beta_2, step))
                / (1 - tf.pow(beta_1, step)))
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(values)
        tf.raw_ops.ResourceScatterUpdate(resource=_handle(m), indices=rows, updates=m_rows)
        tf.raw_ops.ResourceScatterUpdate(resource=_handle(v), indices=rows, updates=v_rows)
        tf.raw_ops.ResourceScatterSub(
            resource=_handle(variable), indices=rows,
            updates=rate * m_rows / (tf.sqrt(v_rows) + tf.cast(self.epsilon, "float32")))


#: --optimizer choices of the jobs.
OPTIMIZERS = {"adam": FusedAdam, "lazy_adam": LazyAdam}
