"""Keras layers of PeterRec: dilated convolution, residual block, self-attention block,
model patch, heads."""

from peterrec_tf.layers.dilated_conv import DilatedConv1D
from peterrec_tf.layers.heads import DotProductHead, FullSoftmaxHead, make_head
from peterrec_tf.layers.model_patch import ModelPatch, gelu_tanh
from peterrec_tf.layers.residual_block import (
    INSERTIONS,
    ResidualBlock,
    default_insertion,
)
from peterrec_tf.layers.self_attention import MultiHeadSelfAttention, SelfAttentionBlock

__all__ = [
    "DilatedConv1D",
    "DotProductHead",
    "FullSoftmaxHead",
    "INSERTIONS",
    "ModelPatch",
    "MultiHeadSelfAttention",
    "ResidualBlock",
    "SelfAttentionBlock",
    "default_insertion",
    "gelu_tanh",
    "make_head",
]
