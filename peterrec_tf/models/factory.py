"""Build a fine-tuning model from a pre-trained backbone by transfer method."""

from peterrec_tf import transfer_methods
from peterrec_tf.models.finetuner import FineTuner


def build_finetuner(
    pretrained_backbone,
    method="peterrec",
    task="item_rec",
    num_outputs=2,
    insertion=None,
    patch_config=None,
    from_scratch=False,
    seed=None,
    regularisation=None,
    **finetuner_kwargs,
):
    """A FineTuner whose backbone copies `pretrained_backbone` (never modifies it).

    The method prepares the backbone: one that grafts patches (`peterrec`) gets them
    (`insertion`, default b causal / d non-causal), the others fine-tune a plain copy.
    `from_scratch=True` keeps the architecture but not the weights: the paper's PeterZero /
    FineZero baselines. `regularisation`
    ({"dropout", "embedding_dropout"}) is the fine-tuning backbone's (none by default).
    """
    source = pretrained_backbone
    if from_scratch:
        import keras
        if seed is not None:
            keras.utils.set_random_seed(seed)
        source = type(pretrained_backbone)(**pretrained_backbone.architecture())
        source.build()
    backbone = transfer_methods.get(method).prepare_backbone(
        source, insertion, patch_config, regularisation)
    model = FineTuner(backbone, task=task, num_outputs=num_outputs, method=method,
                      **finetuner_kwargs)
    model.build()
    return model
