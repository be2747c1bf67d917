"""The NextItNet residual block, with optional model patches grafted in."""

import keras
from keras import ops

from peterrec_tf.layers.dilated_conv import DilatedConv1D
from peterrec_tf.layers.model_patch import ModelPatch

#: Insertion methods of the paper's Figure 3 (a = no patch).
INSERTIONS = ("b", "c", "d", "e")
SERIAL_INSERTIONS = ("b", "c")
LAYER_NORM_EPSILON = 1e-8


def default_insertion(causal):
    """The release's choice: serial (b) for causal backbones, parallel (d) otherwise."""
    return "b" if causal else "d"


def block_patches(insertion, patch_config):
    """The model patches a residual block of either architecture holds for `insertion`:
    none, one (`c`: `mp`) or two (`mp_1`, `mp_2`); serial insertions (b, c) need their
    identity shortcut, the parallel ones (d, e) have none unless `patch_config` asks
    (a converted release checkpoint)."""
    if insertion is None:
        return []
    config = dict(patch_config)
    config.setdefault("shortcut", insertion in SERIAL_INSERTIONS)
    if insertion in SERIAL_INSERTIONS and not config["shortcut"]:
        raise ValueError("serial insertions (b, c) need patches with an identity shortcut")
    names = ["mp"] if insertion == "c" else ["mp_1", "mp_2"]
    return [ModelPatch(name=name, **config) for name in names]


@keras.saving.register_keras_serializable(package="peterrec_tf")
class ResidualBlock(keras.layers.Layer):
    """`out = x + relu(LN2(conv2(relu(LN1(conv1(x))))))`, conv1 at rate d, conv2 at 2d.

    `insertion` grafts model patches (paper Figure 3):
      b: serial, `mp_1` after conv1 and `mp_2` after conv2 (before each layer norm);
      c: serial, one `mp` on the residual branch's output;
      d: parallel before layer norm: `LN1(conv1(x) + mp_1(x))`, `LN2(conv2(h) + mp_2(h))`;
      e: parallel after the activation: `mp_1(x) + relu(LN1(conv1(x)))`, likewise mp_2.
    `patch_config` holds ModelPatch arguments.  Parallel patches default to no identity
    shortcut (so a zero up-projection leaves the block unchanged); converted release
    checkpoints set `shortcut=True`, which is what the release computes.

    `dropout` > 0 drops units of the residual branch in training (after its first stage,
    the input of conv2, and on its output, before the residual sum); off at inference.
    `call(x, padding_mask)` with a `[B, T, 1]` mask of 0/1 and `x` zero where it is 0 (as
    `Backbone` hands it over) zeroes the padded positions of conv2's input and of the
    block's output, so that every convolution sees them exactly as its own zero padding
    (`Backbone(padding="masked")`).
    """

    def __init__(
        self,
        dilation,
        kernel_size=3,
        causal=True,
        insertion=None,
        patch_config=None,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if insertion is not None and insertion not in INSERTIONS:
            raise ValueError(f"insertion must be one of {INSERTIONS} or None, got {insertion!r}")
        self.dilation = int(dilation)
        self.kernel_size = int(kernel_size)
        self.causal = bool(causal)
        self.insertion = insertion
        self.patch_config = dict(patch_config or {})
        self.dropout = float(dropout)
        # no Dropout layers (nor their seed state) unless asked for: a block without dropout
        # holds exactly the variables it always held
        self.dropouts = ([keras.layers.Dropout(self.dropout, name=f"dropout{i}") for i in (1, 2)]
                         if self.dropout else [])
        self.conv1 = DilatedConv1D(
            None, self.kernel_size, self.dilation, self.causal, name="dilated_conv1")
        self.layer_norm1 = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="layer_norm1")
        self.conv2 = DilatedConv1D(
            None, self.kernel_size, 2 * self.dilation, self.causal, name="dilated_conv2")
        self.layer_norm2 = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, name="layer_norm2")
        self.patches = block_patches(insertion, self.patch_config)

    def build(self, input_shape):
        if self.built:
            return
        for layer in (self.conv1, self.layer_norm1, self.conv2, self.layer_norm2, *self.patches):
            if not layer.built:
                layer.build(input_shape)

    def call(self, x, padding_mask=None, training=None):
        conv1, norm1, conv2, norm2 = self.conv1, self.layer_norm1, self.conv2, self.layer_norm2
        patches, insertion = self.patches, self.insertion
        if insertion == "b":
            h = ops.relu(norm1(patches[0](conv1(x))))
        elif insertion == "d":
            h = ops.relu(norm1(conv1(x) + patches[0](x)))
        elif insertion == "e":
            h = patches[0](x) + ops.relu(norm1(conv1(x)))
        else:
            h = ops.relu(norm1(conv1(x)))
        h = self._regularise(h, 0, padding_mask, training)
        if insertion == "b":
            h = ops.relu(norm2(patches[1](conv2(h))))
        elif insertion == "d":
            h = ops.relu(norm2(conv2(h) + patches[1](h)))
        elif insertion == "e":
            h = patches[1](h) + ops.relu(norm2(conv2(h)))
        else:
            h = ops.relu(norm2(conv2(h)))
            if insertion == "c":
                h = patches[0](h)
        return self._regularise(x + self._regularise(h, 1, None, training), None, padding_mask,
                                training)

    def _regularise(self, h, dropout, padding_mask, training):
        """`h` through dropout number `dropout` (if any) and the padding mask (if any)."""
        if dropout is not None and self.dropouts:
            h = self.dropouts[dropout](h, training=training)
        return h if padding_mask is None else h * padding_mask

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def backbone_layers(self):
        """The pre-trained sub-layers (everything but the patches)."""
        return [self.conv1, self.layer_norm1, self.conv2, self.layer_norm2]

    @property
    def trained_norms(self):
        """The layer norms PeterRec trains with the patches (`train_layer_norm`): the
        release's LN2."""
        return [self.layer_norm2]

    @property
    def transform_layers(self):
        """The layers that mix channels (what the paper compares the patches with)."""
        return [self.conv1, self.conv2]

    def get_config(self):
        config = super().get_config()
        config.update(
            dilation=self.dilation,
            kernel_size=self.kernel_size,
            causal=self.causal,
            insertion=self.insertion,
            patch_config=self.patch_config,
            dropout=self.dropout,
        )
        return config
