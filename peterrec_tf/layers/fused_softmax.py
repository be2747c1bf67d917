"""Softmax cross-entropy losses of the item heads, with their gradients formed in one pass.

The item heads end in a softmax over a large vocabulary, and on CPU that is where the
time goes.  TF's ops (`tf.nn.sampled_softmax_loss`, which the release trains with, and the
softmax cross-entropy) move `[rows, classes]` tensors through memory many times: logits, a
dense copy of the accidental hits, their sum, a concatenation with the true logits, a dense
one-hot label matrix, the softmax and its gradient, each a separate kernel.  XLA fuses
many of those, but compiling TF's softmax cross-entropy it still writes the logits plus
bias, a `[rows, classes]` matrix of per-class loss terms it then sums, and a column sum for
the bias gradient (profiled, BUILD_NOTES).

So both losses here put everything between the matmuls in one XLA function that returns
the loss *and* `d loss / d logits` (written once, read by the two backward matmuls).
Called in an ordinary TF step the matmuls run in TF's kernels (faster than XLA's CPU dot
for wide heads, BUILD_NOTES); called in an XLA-compiled step all of it is inlined.  The
values and gradients are those of TF's ops (tests compare them); the gradients are formed
in the forward pass, so call these only in training.

- `fused_sampled_softmax_sum`: the release's sampled softmax, same candidates (the same
  `LogUniformCandidateSampler` op: log-uniform, unique, accidental hits removed, log of
  the expected counts subtracted).  The sampler has no XLA kernel and stays outside.
- `fused_softmax_sum`: the full softmax over every item.
"""

import tensorflow as tf


def _backward_from(gradients):
    """The `tf.custom_gradient` backward function of a scalar loss whose gradients were
    formed in the forward pass: each scaled by the upstream gradient."""
    def backward(upstream):
        return [upstream * gradient for gradient in gradients]
    return backward


def draw_candidates(labels, num_sampled, vocab_size):
    """`(sampled ids [S], true expected counts [N], sampled expected counts [S])`, drawn as
    `tf.nn.sampled_softmax_loss` draws them (log-uniform over `[0, vocab_size)`, unique)."""
    sampled, true_expected, sampled_expected = tf.random.log_uniform_candidate_sampler(
        true_classes=tf.cast(labels, "int64")[:, None], num_true=1, num_sampled=num_sampled,
        unique=True, range_max=vocab_size)
    return sampled, true_expected[:, 0], sampled_expected


@tf.function(jit_compile=True)
def _sampled_softmax_and_gradient(raw_logits, sampled_b, true_logit, log_q_true, log_q_sampled,
                                  labels, sampled, weights):
    """`sum_i weights_i * loss_i`, d/d(true logit) `[N]` and d/d(sampled logits) `[N, S]`."""
    true_logit = true_logit - log_q_true
    logits = raw_logits + sampled_b - log_q_sampled
    # accidental hits: a candidate equal to the row's label gets -FLT_MAX added, as
    # compute_accidental_hits + sparse_to_dense do in TF's version (its exp is 0)
    hit = tf.equal(labels[:, None], sampled[None, :])
    logits = tf.where(hit, logits - tf.float32.max, logits)
    peak = tf.maximum(tf.reduce_max(logits, -1), true_logit)
    exp_true = tf.exp(true_logit - peak)
    exp_sampled = tf.exp(logits - peak[:, None])
    total = exp_true + tf.reduce_sum(exp_sampled, -1)
    loss = tf.reduce_sum((peak + tf.math.log(total) - true_logit) * weights)
    return loss, (exp_true / total - 1.0) * weights, exp_sampled * (weights / total)[:, None]


def fused_sampled_softmax_sum(hidden, labels, weights, kernel, bias, candidates):
    """`sum_i weights[i] * loss_i` of the release's sampled softmax over `candidates`
    (`draw_candidates`), for `hidden` `[N, C]`, `kernel` `[V, C]`, `bias` `[V]`; gradients to
    `hidden` and to the rows of `kernel`/`bias` it uses (sparse, like `tf.gather`'s)."""
    sampled, true_expected, sampled_expected = candidates
    labels = tf.cast(labels, "int32")
    sampled_ids = tf.cast(sampled, "int32")
    weights = tf.cast(weights, hidden.dtype)

    @tf.custom_gradient
    def weighted_sum(hidden, true_w, true_b, sampled_w, sampled_b):
        loss, d_true, d_sampled = _sampled_softmax_and_gradient(
            tf.matmul(hidden, sampled_w, transpose_b=True), sampled_b,
            tf.reduce_sum(hidden * true_w, -1) + true_b, tf.math.log(true_expected),
            tf.math.log(sampled_expected), labels, sampled_ids, weights)
        d_hidden = d_true[:, None] * true_w + tf.matmul(d_sampled, sampled_w)
        return loss, _backward_from((
            d_hidden, d_true[:, None] * hidden, d_true,
            tf.matmul(d_sampled, hidden, transpose_a=True), tf.reduce_sum(d_sampled, 0)))

    return weighted_sum(hidden, tf.gather(kernel, labels), tf.gather(bias, labels),
                        tf.gather(kernel, sampled_ids), tf.gather(bias, sampled_ids))


@tf.function(jit_compile=True)
def _softmax_and_gradient(logits, labels, weights, label_smoothing=0.0):
    """`sum_i weights_i * loss_i` and d/d(logits) `[N, V]` of the full softmax; with
    `label_smoothing` e (a Python number: its own trace) the target is `(1 - e)` on the
    label plus `e / V` on every class."""
    peak = tf.reduce_max(logits, -1)
    exp = tf.exp(logits - peak[:, None])
    total = tf.reduce_sum(exp, -1)
    label_logit = tf.gather(logits, labels, batch_dims=1)
    target = tf.one_hot(labels, tf.shape(logits)[1])
    if label_smoothing:
        label_logit = ((1.0 - label_smoothing) * label_logit
                       + label_smoothing * tf.reduce_mean(logits, -1))
        target = (1.0 - label_smoothing) * target + label_smoothing / tf.cast(
            tf.shape(logits)[1], logits.dtype)
    loss = tf.reduce_sum((peak + tf.math.log(total) - label_logit) * weights)
    d_logits = exp * (weights / total)[:, None] - target * weights[:, None]
    return loss, d_logits


def fused_softmax_sum(inputs, labels, weights, kernel, bias, vocab_major=False,
                      label_smoothing=0.0):
    """`sum_i weights[i] * loss_i` of the softmax of `inputs @ kernel + bias` over every
    class, `kernel` `[C, V]` (or `[V, C]` with `vocab_major`), with gradients to all three
    (`label_smoothing` as `smoothed_cross_entropy`).

    The bias rides in the matmuls as one more input channel (a column of ones): the
    forward matmul adds it and the kernel-gradient matmul sums its gradient, instead of
    two more passes over the `[N, V]` logits (a broadcast add and a column sum, each over
    every logit).
    """
    labels = tf.cast(labels, "int32")
    weights = tf.cast(weights, inputs.dtype)

    @tf.custom_gradient
    def weighted_sum(inputs, kernel, bias):
        with_ones = tf.concat([inputs, tf.ones_like(inputs[:, :1])], 1)
        if vocab_major:
            with_bias = tf.concat([kernel, bias[:, None]], 1)
        else:
            with_bias = tf.concat([kernel, bias[None, :]], 0)
        loss, d_logits = _softmax_and_gradient(
            tf.matmul(with_ones, with_bias, transpose_b=vocab_major), labels, weights,
            float(label_smoothing))
        d_inputs = tf.matmul(d_logits, kernel, transpose_b=not vocab_major)
        if vocab_major:
            d_with_bias = tf.matmul(d_logits, with_ones, transpose_a=True)
            d_kernel, d_bias = d_with_bias[:, :-1], d_with_bias[:, -1]
        else:
            d_with_bias = tf.matmul(with_ones, d_logits, transpose_a=True)
            d_kernel, d_bias = d_with_bias[:-1], d_with_bias[-1]
        return loss, _backward_from((d_inputs, d_kernel, d_bias))

    return weighted_sum(inputs, kernel, bias)


def smoothed_cross_entropy(labels, logits, label_smoothing=0.0):
    """Per-row softmax cross-entropy `[N]` of integer `labels` against `(1 - e)` on the
    label plus `e / V` on each of the V classes (`e = label_smoothing`; 0: Keras' sparse
    categorical cross-entropy itself)."""
    import keras

    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    if not label_smoothing:
        return loss
    uniform = tf.reduce_logsumexp(logits, -1) - tf.reduce_mean(logits, -1)
    return (1.0 - label_smoothing) * loss + label_smoothing * uniform
