"""The dilated-CNN user-sequence encoder shared by every task."""

import keras

from peterrec_tf.layers.model_patch import ModelPatch
from peterrec_tf.layers.residual_block import ResidualBlock, default_insertion

#: The release's demo architecture: blocks at 1,4 (convs at 1,2,4,8) twice over.
RELEASE_DILATIONS = (1, 4, 1, 4, 1, 4, 1, 4)
#: What makes two backbones interchangeable (patches aside): the only list of these fields.
ARCHITECTURE = ("vocab_size", "channels", "dilations", "kernel_size", "causal", "padding")
#: How the padding id 0 is read (see `Backbone`).
PADDINGS = ("learned", "masked")
#: Settings that change training only (dropout is off at inference): not architecture, so a
#: fine-tuning sets its own.
REGULARISATION = ("dropout", "embedding_dropout")


def leading_padding_mask(item_ids, dtype):
    """`[B, T, 1]`: 0 at each row's leading run of id 0 (the left padding), 1 from its first
    real item on. Ids 0 after the first item ([TCL], [MASK]) are tokens, not padding."""
    from keras import ops

    seen = ops.cumsum(ops.cast(item_ids > 0, "int32"), axis=1) > 0
    return ops.cast(seen, dtype)[..., None]


@keras.saving.register_keras_serializable(package="peterrec_tf")
class Backbone(keras.Model):
    """Item embedding followed by residual blocks: ids `[B, T]` -> hidden `[B, T, C]`.

    The dilated CNN (NextItNet / GRec). `models.attention_backbone.SelfAttentionBackbone`
    is the other architecture behind the same interface: a subclass overrides the
    constructor, `call`/`_run_blocks`, `last_position` and the class attributes below;
    everything else (patches, copies, transfer methods, export) works on `blocks`,
    `embedding_layers` and `final_layers`.

    `dilations` follows the release's convention: each value d is one residual block
    whose convolutions use rates d and 2d, so (1, 4) means conv rates 1, 2, 4, 8.
    `causal=True` is NextItNet (next-item pre-training); `False` is the GRec encoder
    (masked-item pre-training).  `insertion` grafts model patches into every block
    (see `ResidualBlock`); use `with_patches` to graft them into a trained backbone.

    `padding` says what the left padding (each row's leading ids 0) is:
      masked   nothing: its positions are zero at the input of every convolution and at
               every block's output, exactly as the convolutions' own zero padding, so an
               answer does not depend on how much left padding a request carries. The
               default of new causal backbones.
      learned  an item like any other (id 0's learned embedding enters every causal window
               that reaches it): the release's behaviour, kept by converted release models,
               by models saved before this setting existed, and by new non-causal (GRec)
               backbones, where id 0 is also the [MASK] token and position 0 is pooled.
    Ids 0 after a row's first item ([TCL], [MASK]) keep id 0's learned embedding in both.
    `dropout` (residual branches) and `embedding_dropout` (item embeddings) act in training
    only; evaluation and serving are deterministic.
    """

    #: The architecture's name (flag `--architecture`, config.json's backbone entry).
    ARCHITECTURE_NAME = "dilated_cnn"
    #: The constructor arguments that make two backbones of this class interchangeable.
    ARCHITECTURE_FIELDS = ARCHITECTURE
    #: How fine-tuning frames a history for this architecture (`data.framing`):
    #: `tcl` ends it with the [TCL] token (id 0, a learned vector here) whose state is read.
    FINE_TUNING_FRAMING = "tcl"

    def __init__(
        self,
        vocab_size,
        channels=64,
        dilations=RELEASE_DILATIONS,
        kernel_size=3,
        causal=True,
        insertion=None,
        patch_config=None,
        padding=None,
        dropout=0.0,
        embedding_dropout=0.0,
        **kwargs,
    ):
        kwargs.setdefault("name", "backbone")
        super().__init__(**kwargs)
        if vocab_size < 2 or channels < 1 or not dilations:
            raise ValueError(
                f"need vocab_size >= 2, channels >= 1 and at least one dilation; got "
                f"{vocab_size}, {channels}, {dilations}")
        self.vocab_size = int(vocab_size)
        self.channels = int(channels)
        self.dilations = tuple(int(d) for d in dilations)
        self.kernel_size = int(kernel_size)
        self.causal = bool(causal)
        self.insertion = insertion
        self.patch_config = dict(patch_config or {})
        self.padding = padding or ("masked" if self.causal else "learned")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.dropout = float(dropout)
        self.embedding_dropout = float(embedding_dropout)
        if not 0.0 <= self.embedding_dropout < 1.0:
            raise ValueError(f"embedding_dropout must be in [0, 1), got {embedding_dropout}")
        self.embedding_dropout_layer = (
            keras.layers.Dropout(self.embedding_dropout, name="embedding_dropout")
            if self.embedding_dropout else None)
        self.item_embedding = keras.layers.Embedding(
            self.vocab_size, self.channels,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="item_embedding")
        self.blocks = [
            ResidualBlock(
                d, self.kernel_size, self.causal, insertion, self.patch_config,
                dropout=self.dropout, name=f"block_{i}_{d}")
            for i, d in enumerate(self.dilations)
        ]

    def build(self, input_shape=None):
        if self.built:
            return
        if not self.item_embedding.built:
            self.item_embedding.build((None, None))
        for block in self.blocks:
            block.build((None, None, self.channels))
        self.built = True

    def call(self, item_ids, training=None):
        hidden, mask = self.embed(item_ids, training)
        stack = getattr(self, "_xla_blocks", None)
        run = stack if stack is not None else self._run_blocks
        return run(hidden, mask, training)

    def embed(self, item_ids, training=None):
        """(item embeddings `[B, T, C]` with embedding dropout and padding applied, the
        padding mask `[B, T, 1]` the blocks apply, or None when padding is learned)."""
        hidden = self.item_embedding(item_ids)
        if self.embedding_dropout_layer is not None:
            hidden = self.embedding_dropout_layer(hidden, training=training)
        if self.padding == "learned":
            return hidden, None
        mask = leading_padding_mask(item_ids, hidden.dtype)
        return hidden * mask, mask

    def _run_blocks(self, hidden, mask=None, training=None):
        for block in self.blocks:
            hidden = block(hidden, padding_mask=mask, training=training)
        return hidden

    def last_position(self, item_ids):
        """`self(item_ids)[:, -1, :]`, the hidden state `[B, C]` from which the next item
        is predicted, computing each causal block only on the positions that state depends
        on: a block at rate d widens the context by (kernel - 1) * 3d positions, so with
        the paper's rates and histories of 100 the top blocks run on 25, 31, 55, ... of
        them (about 30% fewer multiply-adds, the same numbers). A non-causal backbone sees
        the whole sequence from every position: it runs whole."""
        if not self.causal:
            return self(item_ids)[:, -1, :]
        needs, need = [], 1
        for block in reversed(self.blocks):
            need += (self.kernel_size - 1) * 3 * block.dilation
            needs.append(need)
        hidden, mask = self.embed(item_ids)
        for block, need in zip(self.blocks, reversed(needs)):
            # outputs near the slice's start see zero padding instead of earlier positions;
            # the next block keeps only the last ones, whose whole context is in the slice
            hidden = block(hidden[:, -need:, :],
                           padding_mask=None if mask is None else mask[:, -need:, :])
        return hidden[:, -1, :]

    def compile_blocks_with_xla(self, enabled=True):
        """Run the residual stack (and its gradient) as one XLA-compiled function.

        For train steps that cannot be XLA-compiled whole (the sampled softmax's candidate
        sampler has no XLA kernel; the masked objective's gather of masked positions has
        no static shape): the blocks are most of the step and fuse well. A runtime
        setting of this object, not part of its config; do not combine with a
        `jit_compile=True` train step (that compiles the blocks already).
        """
        import tensorflow as tf

        # bypass attribute tracking: a compiled function is no state of the model (not
        # checkpointed, not saved); `training` is a Python value, so training and inference
        # (dropout on and off) are separate traces
        object.__setattr__(self, "_xla_blocks",
                           tf.function(self._run_blocks, jit_compile=True) if enabled else None)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.channels)

    @property
    def patches(self):
        """Every model patch, found by type (never by name)."""
        return [patch for block in self.blocks for patch in block.patches]

    @property
    def receptive_field(self):
        """How many past positions (incl. itself) one output position can see."""
        return 1 + sum((self.kernel_size - 1) * 3 * d for d in self.dilations)

    def with_patches(self, insertion=None, patch_config=None, copy_weights=True,
                     regularisation=None):
        """A new backbone with patches grafted into every block.

        `insertion` defaults to the release's choice for this backbone (b causal, d not).
        The pre-trained weights are copied in (unless `copy_weights=False`); the new
        patches start from their own initialisers (by default the identity).
        `regularisation` ({"dropout", "embedding_dropout"}) is the new backbone's own (none
        by default: a fine-tuning does not inherit the pre-training's dropout).
        """
        insertion = insertion or default_insertion(self.causal)
        patched = type(self)(**self.architecture(), insertion=insertion,
                             patch_config=patch_config, name=self.name,
                             **(regularisation or {}))
        patched.build()
        if copy_weights:
            self.build()
            patched.copy_backbone_weights_from(self)
        return patched

    def plain_copy(self, regularisation=None):
        """A new, built backbone of the same architecture without patches, holding this
        one's pre-trained weights; `regularisation` as `with_patches`'."""
        plain = type(self)(**self.architecture(), **(regularisation or {}))
        plain.build()
        self.build()
        plain.copy_backbone_weights_from(self)
        return plain

    @property
    def embedding_layers(self):
        """The pre-trained layers before the blocks (trained only by `fineall`)."""
        return [self.item_embedding]

    @property
    def final_layers(self):
        """The pre-trained layers after the blocks (trained with the last block)."""
        return []

    def copy_backbone_weights_from(self, other):
        """Copy embedding and block weights (not patches) from a backbone of same shape."""
        self._check_compatible(other)
        for mine, theirs in zip(self.embedding_layers + self.final_layers,
                                other.embedding_layers + other.final_layers):
            mine.set_weights(theirs.get_weights())
        for mine, theirs in zip(self.blocks, other.blocks):
            for dst, src in zip(mine.backbone_layers, theirs.backbone_layers):
                dst.set_weights(src.get_weights())

    def architecture(self):
        """{field: value} of ARCHITECTURE_FIELDS (the constructor arguments of an
        unpatched copy: `type(self)(**self.architecture())`)."""
        return {field: getattr(self, field) for field in self.ARCHITECTURE_FIELDS}

    def architecture_differences(self, other):
        """["field: mine vs theirs", ...] where `other` has another architecture."""
        if self.ARCHITECTURE_NAME != other.ARCHITECTURE_NAME:
            return [f"architecture: {self.ARCHITECTURE_NAME} vs {other.ARCHITECTURE_NAME}"]
        return [f"{f}: {getattr(self, f)} vs {getattr(other, f)}"
                for f in self.ARCHITECTURE_FIELDS if getattr(self, f) != getattr(other, f)]

    def _check_compatible(self, other):
        diffs = self.architecture_differences(other)
        if diffs:
            raise ValueError("backbones differ in " + "; ".join(diffs))

    def backbone_weights(self):
        """The pre-trained (non-patch) variables."""
        patch_ids = {id(w) for p in self.patches for w in p.weights}
        return [w for w in self.weights if id(w) not in patch_ids]

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            channels=self.channels,
            dilations=list(self.dilations),
            kernel_size=self.kernel_size,
            causal=self.causal,
            insertion=self.insertion,
            patch_config=self.patch_config,
            padding=self.padding,
            dropout=self.dropout,
            embedding_dropout=self.embedding_dropout,
        )
        return config

    @classmethod
    def from_config(cls, config):
        # saved before `padding` existed: the release's learned id 0, what they computed
        config = dict(config)
        config.setdefault("padding", "learned")
        return cls(**config)


def is_patch(layer):
    return isinstance(layer, ModelPatch)


class WrapsBackbone:
    """Serialization for task models that hold a Backbone: nested config in, object out;
    the compile a loaded model gets, and Keras' `export` with the models' one input, so a
    model from `keras.saving.load_model` summarises, predicts, exports and trains on."""

    #: Every task model's input: item ids `[batch, length]`, framed as the model records.
    ITEM_IDS_SPEC = ("item_ids", (None, None), "int32")

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)

    def compile_from_config(self, config):
        """`keras.saving.load_model`'s compile: the saved optimizer configuration (a fresh
        optimizer: its moments are not in model.keras, resuming a job reads checkpoints/),
        the loss of `compute_loss`, and TensorFlow's own ops (the jobs choose XLA per
        machine). The optimizer builds at the first `fit`, as after any `compile`, so the
        file's optimizer variables (step count, learning rate) are exactly its own."""
        config = dict(keras.saving.deserialize_keras_object(config))
        config["jit_compile"] = False
        self.compile(**config)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """`keras.Model.export`, with `input_signature` defaulting to the item ids `[B, L]`
        (Keras infers it only from a first call's shapes, which `build()` and loading do not
        record). The serving export with string histories and top-k signatures is
        `peterrec_tf.serving.saved_model.export`."""
        if input_signature is None:
            import tensorflow as tf

            name, shape, dtype = self.ITEM_IDS_SPEC
            input_signature = [tf.TensorSpec(shape, dtype, name=name)]
        return super().export(filepath, format=format, verbose=verbose,
                              input_signature=input_signature, **kwargs)
