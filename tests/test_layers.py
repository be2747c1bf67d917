"""Layers: exact semantics against NumPy, serialization, dynamic shapes, XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.layers import (
    INSERTIONS, DilatedConv1D, DotProductHead, FullSoftmaxHead, ModelPatch, ResidualBlock,
    gelu_tanh)


def numpy_dilated_conv(x, kernel, bias, rate, causal):
    """Reference: out[t] = sum_j x[t - offset + j*rate] @ kernel[j] (zeros outside)."""
    k = kernel.shape[0]
    total = (k - 1) * rate
    left = total if causal else total // 2
    batch, length, _ = x.shape
    out = np.zeros((batch, length, kernel.shape[2]), dtype=np.float64)
    for t in range(length):
        for j in range(k):
            source = t - left + j * rate
            if 0 <= source < length:
                out[:, t] += x[:, source] @ kernel[j]
    return out + bias


def numpy_layer_norm(x, gamma, beta, eps=1e-8):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kernel_size,rate", [(3, 1), (3, 4), (2, 2), (5, 3), (1, 1)])
def test_dilated_conv_matches_reference(causal, kernel_size, rate, rng):
    layer = DilatedConv1D(6, kernel_size, rate, causal)
    x = rng.randn(2, 11, 4).astype("float32")
    out = layer(x).numpy()
    layer.bias.assign(rng.randn(6).astype("float32"))
    out = layer(x).numpy()
    expected = numpy_dilated_conv(x, layer.kernel.numpy(), layer.bias.numpy(), rate, causal)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert layer.kernel.shape == (kernel_size, 4, 6)


def test_residual_block_matches_reference(rng):
    block = ResidualBlock(dilation=2, kernel_size=3, causal=True)
    x = rng.randn(3, 9, 8).astype("float32")
    block(x)
    for layer in (block.layer_norm1, block.layer_norm2):
        layer.gamma.assign(rng.rand(8).astype("float32") + 0.5)
        layer.beta.assign(rng.randn(8).astype("float32"))
    c1 = numpy_dilated_conv(x, block.conv1.kernel.numpy(), block.conv1.bias.numpy(), 2, True)
    h = np.maximum(numpy_layer_norm(c1, block.layer_norm1.gamma.numpy(), block.layer_norm1.beta.numpy()), 0)
    c2 = numpy_dilated_conv(h, block.conv2.kernel.numpy(), block.conv2.bias.numpy(), 4, True)
    h = np.maximum(numpy_layer_norm(c2, block.layer_norm2.gamma.numpy(), block.layer_norm2.beta.numpy()), 0)
    np.testing.assert_allclose(block(x).numpy(), x + h, atol=1e-4)
    assert block.conv2.dilation_rate == 4  # the release's second conv doubles the rate
    assert block.layer_norm1.epsilon == 1e-8


def test_model_patch_formula_and_bottleneck(rng):
    patch = ModelPatch(bottleneck_ratio=0.25, up_initializer="glorot_uniform")
    x = rng.randn(2, 5, 16).astype("float32")
    out = patch(x).numpy()
    assert patch.down_kernels[0].shape == (16, 4)
    hidden = x @ patch.down_kernels[0].numpy() + patch.down_biases[0].numpy()
    act = 0.5 * hidden * (1 + np.tanh(np.sqrt(2 / np.pi) * (hidden + 0.044715 * hidden ** 3)))
    np.testing.assert_allclose(out, x + act @ patch.up_kernels[0].numpy() + patch.up_biases[0].numpy(),
                               atol=1e-5)
    assert ModelPatch(bottleneck_ratio=0.125).resolve_bottleneck(256) == 32
    three = ModelPatch(bottleneck_dim=3, cardinality=3, shortcut=False)
    three(x)
    assert len(three.down_kernels) == 3 and three.down_kernels[0].shape == (16, 3)


def test_gelu_tanh_matches_keras_approximate():
    x = np.linspace(-5, 5, 41).astype("float32")
    np.testing.assert_allclose(gelu_tanh(x), keras.activations.gelu(x, approximate=True), atol=1e-6)


LAYER_CASES = [
    lambda: DilatedConv1D(8, 3, 2, causal=False),
    lambda: ModelPatch(bottleneck_dim=3, activation="relu", cardinality=2),
    lambda: FullSoftmaxHead(13),
    lambda: DotProductHead(13),
] + [lambda ins=ins: ResidualBlock(1, 3, causal=True, insertion=ins,
                                   patch_config={"bottleneck_ratio": 0.5}) for ins in INSERTIONS]


@pytest.mark.parametrize("make", LAYER_CASES)
def test_layer_config_round_trip_and_dynamic_shapes(make, rng):
    layer = make()
    x = rng.randn(2, 7, 8).astype("float32")
    out = layer(x)
    clone = type(layer).from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), out.numpy(), atol=1e-6)
    assert clone.get_config() == layer.get_config()
    # one traced function, any batch and length, also under XLA
    fn = tf.function(layer.__call__, input_signature=[tf.TensorSpec([None, None, 8], tf.float32)],
                     jit_compile=True)
    for batch, length in ((1, 3), (4, 19)):
        y = rng.randn(batch, length, 8).astype("float32")
        np.testing.assert_allclose(fn(y).numpy(), layer(y).numpy(), atol=1e-5)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="insertion"):
        ResidualBlock(1, insertion="z")
    with pytest.raises(ValueError, match="dilation_rate"):
        DilatedConv1D(4, 3, 0)
    with pytest.raises(ValueError, match="shortcut"):
        ResidualBlock(1, insertion="b", patch_config={"shortcut": False})


def test_fused_sampled_softmax_equals_tf_sampled_softmax_loss(rng):
    """Same candidates -> the same weighted loss and the same gradients as the release's
    `tf.nn.sampled_softmax_loss`, accidental hits (a label among the candidates) included."""
    from peterrec_tf.layers.fused_softmax import draw_candidates, fused_sampled_softmax_sum

    vocab, channels, rows, num_sampled = 50, 6, 40, 12
    kernel = tf.Variable(rng.randn(vocab, channels).astype("float32"))
    bias = tf.Variable(rng.randn(vocab).astype("float32"))
    hidden = tf.constant(rng.randn(rows, channels).astype("float32"))
    labels = tf.constant(rng.randint(0, 8, rows), tf.int32)  # low ids: log-uniform draws them
    weights = tf.constant((rng.rand(rows) > 0.3) * rng.rand(rows), tf.float32)
    tf.random.set_seed(3)
    candidates = draw_candidates(labels, num_sampled, vocab)
    hits = np.isin(labels.numpy(), candidates[0].numpy())
    assert hits.any() and not hits.all()  # both kinds of row are exercised
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(hidden)
        reference = tf.reduce_sum(weights * tf.nn.sampled_softmax_loss(
            kernel, bias, tf.cast(labels, tf.int64)[:, None], hidden, num_sampled, vocab,
            sampled_values=(candidates[0], candidates[1][:, None], candidates[2])))
        fused = fused_sampled_softmax_sum(hidden, labels, weights, kernel, bias, candidates)
    np.testing.assert_allclose(fused.numpy(), reference.numpy(), rtol=1e-5)
    for a, b in zip(tape.gradient(reference, [hidden, kernel, bias]),
                    tape.gradient(fused, [hidden, kernel, bias])):
        np.testing.assert_allclose(tf.convert_to_tensor(b).numpy(),
                                   tf.convert_to_tensor(a).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("vocab_major", [False, True])
def test_fused_softmax_equals_tf_softmax_cross_entropy(vocab_major, rng):
    from peterrec_tf.layers.fused_softmax import fused_softmax_sum

    vocab, channels, rows = 37, 5, 23
    shape = (vocab, channels) if vocab_major else (channels, vocab)
    kernel = tf.Variable(rng.randn(*shape).astype("float32"))
    bias = tf.Variable(rng.randn(vocab).astype("float32"))
    inputs = tf.constant(rng.randn(rows, channels).astype("float32"))
    labels = tf.constant(rng.randint(0, vocab, rows), tf.int32)
    weights = tf.constant((rng.rand(rows) > 0.3) * rng.rand(rows), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        logits = tf.matmul(inputs, kernel, transpose_b=vocab_major) + bias
        reference = tf.reduce_sum(weights * tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, logits))
        fused = fused_softmax_sum(inputs, labels, weights, kernel, bias, vocab_major)
    np.testing.assert_allclose(fused.numpy(), reference.numpy(), rtol=1e-5)
    for a, b in zip(tape.gradient(reference, [inputs, kernel, bias]),
                    tape.gradient(fused, [inputs, kernel, bias])):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-6)
