"""Which weights train when a pre-trained backbone is transferred (the paper's methods)."""

#: peterrec: patches + head (+ each block's second layer norm); backbone frozen.
#: fineall: everything.  finecls: the head only.  finelast: the last n blocks + head.
METHODS = ("peterrec", "fineall", "finecls", "finelast")


def check_method(method, finelast_blocks=1, num_blocks=None):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "finelast" and num_blocks is not None and not 1 <= finelast_blocks <= num_blocks:
        raise ValueError(
            f"finelast_blocks must be in [1, {num_blocks}], got {finelast_blocks}")


def apply_transfer_method(model):
    """Set `trainable` on the built sub-layers of a FineTuner from its `method`."""
    backbone = model.backbone
    method = model.method  # checked by the FineTuner's constructor
    if method == "peterrec" and not backbone.patches:
        raise ValueError("method 'peterrec' needs a backbone with patches (insertion b/c/d/e)")
    model.head.trainable = True
    everything = method == "fineall"
    for layer in backbone.embedding_layers:
        layer.trainable = everything
    train_norms = method == "peterrec" and model.train_layer_norm
    for layer in backbone.final_layers:
        layer.trainable = everything or method == "finelast" or train_norms
    first_trained = len(backbone.blocks) - model.finelast_blocks
    for index, block in enumerate(backbone.blocks):
        train_block = everything or (method == "finelast" and index >= first_trained)
        for layer in block.backbone_layers:
            layer.trainable = train_block
        if train_norms:
            for norm in block.trained_norms:
                norm.trainable = True
        for patch in block.patches:
            patch.trainable = method in ("peterrec", "fineall") or train_block
