"""PeterRec models: backbone, pre-training tasks, fine-tuning task (transfer methods:
`peterrec_tf.transfer_methods`)."""

from peterrec_tf.models.backbone import RELEASE_DILATIONS, Backbone
from peterrec_tf.models.attention_backbone import SelfAttentionBackbone
from peterrec_tf.models.finetuner import POOLINGS, FineTuner, default_pooling, pool_hidden
from peterrec_tf.models.pretrainer import (GRecEncoder, GRecPretrainer, NextItNet,
                                          SequencePretrainer, pretrainer_for)
from peterrec_tf.models.report import format_report, parameter_report
from peterrec_tf.models.factory import build_finetuner

__all__ = [
    "Backbone", "FineTuner", "GRecEncoder", "GRecPretrainer", "NextItNet", "POOLINGS",
    "RELEASE_DILATIONS", "SelfAttentionBackbone", "SequencePretrainer", "build_finetuner",
    "default_pooling", "format_report", "parameter_report", "pool_hidden", "pretrainer_for",
]
