"""Masked-item pre-training (GRec): a non-causal backbone restores the items masked in its
input; examples are non-overlapping windows with GRec's masking (`data.masked_item`)."""

from peterrec_tf.data.masked_item import MaskedItemPreprocessor
from peterrec_tf.models.pretrainer import GRecPretrainer
from peterrec_tf.objectives import register
from peterrec_tf.objectives.base import Objective


@register
class MaskedItem(Objective):
    """GRec's masked-item objective over a non-causal encoder."""

    name = "masked_item"
    model_class = GRecPretrainer
    order = 1

    def preprocessor(self, max_len, num_items, mask_rate=0.3, max_predictions=None,
                     pad_to_max_len=True, window_stride=0):
        if window_stride:
            raise ValueError("a window stride applies to next-item windows; masked-item "
                             "windows never overlap (each masked position is a target once)")
        return MaskedItemPreprocessor(max_len, num_items, mask_rate, max_predictions,
                                      pad_to_max_len)

    def xla_plan(self, num_sampled, channels=64, fill=1.0):
        """The fused softmax only: the gather of the masked positions saves more than
        compiling the whole step gains, and the compiled non-causal stack measured slower
        (BUILD_NOTES)."""
        del num_sampled, channels, fill
        return ("softmax",)
