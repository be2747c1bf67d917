"""Dilated 1-D convolution, causal (NextItNet) or centred (GRec encoder)."""

import keras
from keras import ops


def conv_padding(kernel_size, dilation_rate, causal):
    """(left, right) zeros along time: all on the left when causal, SAME split otherwise."""
    total = (kernel_size - 1) * dilation_rate
    if causal:
        return total, 0
    return total // 2, total - total // 2


def dilated_conv1d(inputs, kernel, bias, dilation_rate, causal):
    """The convolution itself: explicit zero padding, then a VALID dilated convolution."""
    left, right = conv_padding(kernel.shape[0], dilation_rate, causal)
    if left or right:
        inputs = ops.pad(inputs, [[0, 0], [left, right], [0, 0]])
    outputs = ops.conv(inputs, kernel, strides=1, padding="valid", dilation_rate=dilation_rate)
    return outputs + bias


@keras.saving.register_keras_serializable(package="peterrec_tf")
class DilatedConv1D(keras.layers.Layer):
    """A dilated 1-D convolution over `[B, T, C_in]` with kernel `[k, C_in, C_out]`.

    `filters=None` keeps the input width (C_out = C_in), as every conv of the backbone.

    `causal=True` pads `(k - 1) * dilation_rate` zeros on the left only, so the output at
    t sees inputs t, t - r, ..., t - (k - 1) r and never the future.  `causal=False` pads
    the same total split as TensorFlow's SAME padding (the extra one on the right), so
    t sees t - r, t, t + r for k = 3: the GRec "masked-bidirectional" encoder.  Padding is
    explicit so that the layer behaves identically under XLA and for any sequence length.
    """

    def __init__(
        self,
        filters=None,
        kernel_size=3,
        dilation_rate=1,
        causal=True,
        kernel_initializer=None,
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if kernel_size < 1 or dilation_rate < 1 or (filters is not None and filters < 1):
            raise ValueError(
                f"filters, kernel_size and dilation_rate must be >= 1, got "
                f"{filters}, {kernel_size}, {dilation_rate}"
            )
        self.filters = None if filters is None else int(filters)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.causal = bool(causal)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.TruncatedNormal(stddev=0.02)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        if self.built:
            return
        in_channels = input_shape[-1]
        if self.filters is None:
            self.filters = in_channels
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, in_channels, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.filters,), initializer=self.bias_initializer
        )

    @property
    def padding(self):
        """(left, right) zeros added along time."""
        return conv_padding(self.kernel_size, self.dilation_rate, self.causal)

    def call(self, inputs):
        return dilated_conv1d(inputs, self.kernel, self.bias, self.dilation_rate, self.causal)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters or input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dilation_rate=self.dilation_rate,
            causal=self.causal,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config
