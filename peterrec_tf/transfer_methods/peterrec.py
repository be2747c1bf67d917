"""PeterRec: model patches grafted into every block train with the head (and, as the
release, each block's second layer norm); the pre-trained backbone stays frozen, so tasks
share it and each stores only its patches, norms and head."""

from peterrec_tf.transfer_methods import PATCH_SETTINGS, TransferMethod, register, set_trainable


@register
class PeterRec(TransferMethod):
    name = "peterrec"
    summary = "patches + head (+ layer norms), backbone frozen"
    grafts_patches = True
    changes_backbone = False
    stored_alone = True
    settings = PATCH_SETTINGS

    def mark_trainable(self, model):
        if not model.backbone.patches:
            raise ValueError(f"method {self.name!r} needs a backbone with patches "
                             "(insertion b/c/d/e)")
        norms = model.train_layer_norm
        set_trainable(model, final_layers=norms, patches=True, block_norms=norms)
