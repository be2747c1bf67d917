"""Backbone architectures by name: what `pretrain --architecture` builds.

Each architecture is a `Backbone` class (its `ARCHITECTURE_NAME`) plus the job settings
that shape it; a setting of another architecture given with a non-default value is
refused, never silently ignored.
"""

from peterrec_tf.models.attention_backbone import SelfAttentionBackbone
from peterrec_tf.models.backbone import Backbone, RELEASE_DILATIONS

#: name -> (Backbone class, {job setting: default} that only this architecture reads)
ARCHITECTURES = {
    Backbone.ARCHITECTURE_NAME: (Backbone, {"dilations": list(RELEASE_DILATIONS),
                                            "kernel_size": 3}),
    SelfAttentionBackbone.ARCHITECTURE_NAME: (SelfAttentionBackbone, {"num_blocks": 2,
                                                                      "heads": 1,
                                                                      "feed_forward_dim": 0,
                                                                      "norm_order": "pre",
                                                                      "activation": "relu",
                                                                      "position_origin":
                                                                          "newest"}),
}


def check_architecture_settings(architecture, objective, settings):
    """Refuse an unknown architecture, a self-attention backbone for a non-causal
    `objective` (an `objectives.Objective`), and settings of another architecture changed
    from their defaults."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"--architecture must be one of {sorted(ARCHITECTURES)}, got "
                         f"{architecture!r}")
    if architecture == SelfAttentionBackbone.ARCHITECTURE_NAME and not objective.causal:
        from peterrec_tf import objectives

        causal = "|".join(name for name in objectives.names() if objectives.get(name).causal)
        raise ValueError("--architecture=self_attention is causal: it pre-trains with "
                         f"--objective={causal} only (--objective={objective.name} is not "
                         "causal; the masked objective's [MASK] is id 0, its padding)")
    for other, (_, own) in ARCHITECTURES.items():
        if other == architecture:
            continue
        changed = [name for name, default in own.items()
                   if name in settings and settings[name] != default]
        if changed:
            raise ValueError(f"{', '.join('--' + n for n in changed)} only apply to "
                             f"--architecture={other}, not {architecture}")


def backbone_for(architecture, vocab_size, channels, causal, max_len, dilations=RELEASE_DILATIONS,
                 kernel_size=3, num_blocks=2, heads=1, feed_forward_dim=None,
                 norm_order="pre", activation="relu", position_origin="newest",
                 **training_settings):
    """A new backbone of `architecture`; `max_len` is the history length it will read
    (the self-attention backbone's number of positions; `feed_forward_dim` None: its
    channels). `training_settings` (dropout) go to the constructor as they are."""
    if architecture == SelfAttentionBackbone.ARCHITECTURE_NAME:
        return SelfAttentionBackbone(vocab_size, channels, num_blocks=num_blocks, heads=heads,
                                     max_positions=max_len, feed_forward_dim=feed_forward_dim,
                                     causal=causal, norm_order=norm_order,
                                     activation=activation, position_origin=position_origin,
                                     **training_settings)
    return Backbone(vocab_size, channels, dilations, kernel_size, causal=causal,
                    **training_settings)
