"""FineAll: every weight of the pre-trained backbone trains with the head; the task is a
whole new model, stored as one."""

from peterrec_tf.transfer_methods import TransferMethod, register, set_trainable


@register
class FineAll(TransferMethod):
    name = "fineall"
    summary = "all weights"
    grafts_patches = False
    changes_backbone = True
    stored_alone = False

    def mark_trainable(self, model):
        set_trainable(model, embeddings=True, final_layers=True,
                      blocks=range(len(model.backbone.blocks)), patches=True)
