"""The TF1 -> Keras name tables: which release variable fills which Keras weight, and how.

Each `Rule` pairs a TF1 name template with a Keras weight path template (relative to the
model: `backbone/...`, `head/...`, `target_embeddings/...`). `{i}` is a block index,
`{d}` its dilation, `{p}` a patch scope (`mp_1`, `mp_2`), `{j}` a patch branch. `lead`
is the number of leading unit axes the TF1 value has and the Keras weight does not
(`[1, k, C, C]` conv weights, `[1, 1, C, m]` 1x1 convs): the only transform needed.
The same rule renders the TF1 name of a Keras weight that nothing filled.
"""

import dataclasses
import functools
import re

FIELDS = {"i": r"\d+", "d": r"\d+", "p": r"mp_\d+", "j": r"\d+"}
BLOCK = "nextitnet_residual_blockdecoder_layer_{i}_{d}"
KERAS_BLOCK = "backbone/block_{i}_{d}"

#: Roles: what part of the release's model a rule belongs to.
EMBEDDING, BLOCK_PART, PATCH, FULL_HEAD, DOT_HEAD, TARGETS = (
    "embedding", "block", "patch", "full_head", "dot_head", "targets")
PRETRAINING_HEADS = (FULL_HEAD, DOT_HEAD)


@functools.lru_cache(maxsize=None)
def _compile(template):
    pattern = re.escape(template)
    for field, regex in FIELDS.items():
        pattern = pattern.replace(re.escape("{" + field + "}"), f"(?P<{field}>{regex})")
    return re.compile(f"^{pattern}$")


@dataclasses.dataclass(frozen=True)
class Rule:
    tf1: str
    keras: str
    role: str
    lead: int = 0

    def match(self, name):
        """The template fields of a TF1 name, or None."""
        found = _compile(self.tf1).match(name)
        return None if found is None else found.groupdict()

    def match_keras(self, path):
        found = _compile(self.keras).match(path)
        return None if found is None else found.groupdict()

    def keras_path(self, fields):
        return self.keras.format(**fields)

    def tf1_name(self, fields):
        return self.tf1.format(**fields)

    def tf1_shape(self, keras_shape):
        """The shape the release stores a Keras weight of `keras_shape` in."""
        return (1,) * self.lead + tuple(keras_shape)

    def transform(self, value, keras_shape):
        """The TF1 value as the Keras weight holds it (shape already checked)."""
        return value.reshape(tuple(keras_shape))


def _block(tf1, keras, lead=0):
    return Rule(f"{BLOCK}/{tf1}", f"{KERAS_BLOCK}/{keras}", BLOCK_PART, lead)


def _patch(direction, kind, keras_kind, lead):
    return Rule(f"{BLOCK}/{{p}}/mp_conv1_{direction}_{{j}}/{kind}",
                f"{KERAS_BLOCK}/{{p}}/{direction}_{{j}}_{keras_kind}", PATCH, lead)


RULES = (
    Rule("allitem_embeddings", "backbone/item_embedding/embeddings", EMBEDDING),
    _block("dilated_conv1/weight", "dilated_conv1/kernel", lead=1),
    _block("dilated_conv1/bias", "dilated_conv1/bias"),
    _block("layer_norm1/gamma", "layer_norm1/gamma"),
    _block("layer_norm1/beta", "layer_norm1/beta"),
    _block("dilated_conv2/weight", "dilated_conv2/kernel", lead=1),
    _block("dilated_conv2/bias", "dilated_conv2/bias"),
    _block("layer_norm2/gamma", "layer_norm2/gamma"),
    _block("layer_norm2/beta", "layer_norm2/beta"),
    _patch("down", "weight", "kernel", lead=2),
    _patch("down", "bias", "bias", lead=0),
    _patch("up", "weight", "kernel", lead=2),
    _patch("up", "bias", "bias", lead=0),
    Rule("logits/weight", "head/kernel", FULL_HEAD, lead=2),
    Rule("logits/bias", "head/bias", FULL_HEAD),
    Rule("softmax_w", "head/kernel", DOT_HEAD),
    Rule("softmax_b", "head/bias", DOT_HEAD),
    Rule("target-item/allitem_embeddings_target", "target_embeddings/embeddings", TARGETS),
)

#: The per-block variables every residual block must have.
BLOCK_RULES = tuple(rule for rule in RULES if rule.role == BLOCK_PART)
HEAD_RULES = {role: tuple(r for r in RULES if r.role == role) for role in PRETRAINING_HEADS}


def match_name(name):
    """(rule, fields) for a TF1 model variable name, or (None, None)."""
    for rule in RULES:
        fields = rule.match(name)
        if fields is not None:
            return rule, fields
    return None, None


# Training state, recognised by structure rather than by a list of optimizer names:
# counters, the Adam beta-power scalars (`beta1_power`, `beta2_power_1`, ... one pair per
# optimizer: the FineAll scripts' `Adam2` makes `beta1_power_1`), and slots: a variable
# `<model variable>/<slot>` with that model variable's shape (`/Adam`, `/Adam_1`,
# `/Adam2`, `/Adam2_1`, `/Momentum`, ...).
COUNTERS = ("global_step",)
BETA_POWER = re.compile(r"^beta[12]_power(_\d+)?$")
SLOT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def training_state(shapes):
    """The names in `{name: shape}` that are optimizer state or counters, not model."""
    state = set()
    for name, shape in shapes.items():
        leaf = name.rsplit("/", 1)[-1]
        if name in COUNTERS or (BETA_POWER.match(leaf) and tuple(shape) == ()):
            state.add(name)
    for name, shape in shapes.items():
        if "/" not in name or name in state:
            continue
        parent, slot = name.rsplit("/", 1)
        if (parent in shapes and parent not in state and SLOT.match(slot)
                and tuple(shapes[parent]) == tuple(shape) and match_name(parent)[0] is not None
                and match_name(name)[0] is None):
            state.add(name)
    return state
