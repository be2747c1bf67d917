"""How many parameters a task costs: the figure PeterRec is about."""

import numpy as np


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def parameter_report(model):
    """Counts for a FineTuner or a pre-training model (any model with `.backbone`).

    `task_share` = (patches + head + other trainable) / total: what one more task adds
    on top of a shared frozen backbone.  `patch_share_of_conv` compares the patches with
    the backbone's convolution weights, the ratio the paper quotes (< 10%).
    """
    backbone = model.backbone
    patch_weights = [w for p in backbone.patches for w in p.weights]
    conv_weights = [w for b in backbone.blocks for layer in b.transform_layers
                    for w in layer.weights]
    head_weights = list(model.head.weights) if hasattr(model, "head") else []
    total = _count(model.weights)
    trainable = _count(model.trainable_weights)
    patches = _count(patch_weights)
    head = _count(head_weights)
    conv = _count(conv_weights)
    return {
        "total": total,
        "trainable": trainable,
        "non_trainable": total - trainable,
        "patches": patches,
        "head": head,
        "backbone": _count(backbone.backbone_weights()),
        "conv": conv,
        "trainable_share": trainable / total if total else 0.0,
        "patch_head_share": (patches + head) / total if total else 0.0,
        "patch_share_of_conv": patches / conv if conv else 0.0,
    }


def format_report(report, title="parameters"):
    return (
        f"{title}: total {report['total']:,}, trainable {report['trainable']:,} "
        f"({100 * report['trainable_share']:.2f}%), patches {report['patches']:,} "
        f"({100 * report['patch_share_of_conv']:.2f}% of conv), head {report['head']:,}, "
        f"patches+head {100 * report['patch_head_share']:.2f}% of the model")
