"""FineLast: the last `finelast_blocks` residual blocks (and the layers after them) train
with the head; the earlier blocks and the embeddings stay frozen. The task stores the
blocks it trained, so it cannot share a served backbone with other tasks."""

from peterrec_tf.transfer_methods import TransferMethod, register, set_trainable


@register
class FineLast(TransferMethod):
    name = "finelast"
    summary = "last --finelast_blocks blocks + head"
    grafts_patches = False
    changes_backbone = True
    stored_alone = True
    settings = ("finelast_blocks",)

    def check_settings(self, num_blocks=None, finelast_blocks=1, **settings):
        if num_blocks is not None and not 1 <= finelast_blocks <= num_blocks:
            raise ValueError(f"finelast_blocks must be in [1, {num_blocks}], got "
                             f"{finelast_blocks}")

    def mark_trainable(self, model):
        count = len(model.backbone.blocks)
        set_trainable(model, final_layers=True,
                      blocks=range(count - model.finelast_blocks, count))
