"""FineCLS: only the task head trains over the frozen pre-trained backbone."""

from peterrec_tf.transfer_methods import TransferMethod, register, set_trainable


@register
class FineCLS(TransferMethod):
    name = "finecls"
    summary = "head only"
    grafts_patches = False
    changes_backbone = False
    stored_alone = True

    def mark_trainable(self, model):
        set_trainable(model)
