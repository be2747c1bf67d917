"""Next-item pre-training (NextItNet): a causal backbone predicts, at every position, the
item that follows it; examples are windows shifted by one (`data.next_item`)."""

from peterrec_tf.data.next_item import NextItemPreprocessor
from peterrec_tf.models.pretrainer import NextItNet
from peterrec_tf.objectives import register
from peterrec_tf.objectives.base import Objective
from peterrec_tf.training.xla_policy import TF_MATMUL_FROM_CHANNELS, WHOLE_STEP_FROM_FILL


@register
class NextItem(Objective):
    """Causal next-item prediction: the release's NextItNet, this project's default."""

    name = "next_item"
    model_class = NextItNet
    default = True

    def preprocessor(self, max_len, num_items, mask_rate=0.3, max_predictions=None,
                     pad_to_max_len=True, window_stride=0):
        del num_items, mask_rate, max_predictions  # nothing is drawn or masked
        return NextItemPreprocessor(max_len, pad_to_max_len, window_stride)

    def xla_plan(self, num_sampled, channels=64, fill=1.0):
        """The whole train step with the fused softmax inlined (`("step", "softmax")`) below
        `TF_MATMUL_FROM_CHANNELS` channels when at least `WHOLE_STEP_FROM_FILL` of the
        positions carry a target; otherwise the residual stack and the fused softmax alone
        (`("blocks", "softmax")`): from that width the head's matmuls run faster in TF's
        kernels, the sampled softmax cannot be compiled whole (its candidate sampler has no
        XLA kernel), and with short histories in long windows gathering the target rows
        outside XLA's static shapes wins (measured, BUILD_NOTES)."""
        if num_sampled or channels >= TF_MATMUL_FROM_CHANNELS:
            return ("blocks", "softmax")
        if (fill() if callable(fill) else fill) < WHOLE_STEP_FROM_FILL:
            return ("blocks", "softmax")
        return ("step", "softmax")
