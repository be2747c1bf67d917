"""Transfer methods: which weights train when a pre-trained backbone meets a new task.

A method is one object, registered by name, in one module of this package (every module
here is imported below, so adding a method is adding one file):

    name             the `--method` value, recorded in a fine-tuned model's config
    summary          one line for `--method`'s help
    grafts_patches   its backbone gets model patches (the patch flags apply to it)
    changes_backbone it trains the pre-trained backbone itself (whole blocks or all of it),
                     so its task is served alone, not over a backbone shared with other
                     tasks (the few norms a sharing method trains are kept per task)
    stored_alone     a task fine-tuned with it is stored as what it trained, over its
                     pre-trained directory (`task_artifact`); false for a method that
                     trains everything, where that would be the whole model. Not the
                     same question: FineLast changes the backbone yet is stored alone
    settings         the job flags it reads (`check_flags` refuses them for other methods)
    check_settings(num_blocks, **settings)    refuse values it cannot use
    prepare_backbone(source, insertion, patch_config, regularisation)    a new backbone
    mark_trainable(model)    set `trainable` on a built FineTuner's sub-layers

Consumers ask `get(name)` and never compare method names: `models.factory` and
`models.finetuner`, the fine-tuning job's checks, `finetune --method`, `task_artifact`,
serving's shared-backbone check and the transfer experiment.
"""

from pipelines.registry import Registry

#: The job flags that configure model patches (read by methods that graft them).
PATCH_SETTINGS = ("insertion", "bottleneck_ratio", "patch_activation")
#: What every method states about itself, True or False.
DECLARED = ("grafts_patches", "changes_backbone", "stored_alone")


class TransferMethod:
    """Defaults for a method; a module subclasses it and registers one instance."""

    name = None
    summary = ""
    grafts_patches = None  # each of these three is declared by the method (register checks)
    changes_backbone = None
    stored_alone = None
    settings = ()

    def check_settings(self, num_blocks=None, **settings):
        """Refuse a value of a setting this method reads that a backbone of `num_blocks`
        blocks cannot take (settings it does not read are ignored here)."""

    def prepare_backbone(self, source, insertion=None, patch_config=None, regularisation=None):
        """A new backbone holding `source`'s weights (never `source` itself): with patches
        grafted in (`insertion`, `patch_config`) when the method grafts them."""
        if self.grafts_patches:
            return source.with_patches(insertion, patch_config, regularisation=regularisation)
        return source.plain_copy(regularisation)

    def mark_trainable(self, model):
        raise NotImplementedError(f"transfer method {self.name!r} does not say what trains")

    def __repr__(self):
        return f"<transfer method {self.name!r} from {type(self).__module__}>"


def _check_declared(method):
    """A method declares the three facts, says what trains, and reads the patch flags
    exactly when it grafts patches (so they are neither refused nor silently ignored)."""
    undeclared = [attribute for attribute in DECLARED if not isinstance(
        getattr(method, attribute, None), bool)]
    if undeclared:
        raise ValueError(f"transfer method {method.name!r} must declare "
                         f"{', '.join(undeclared)} (True or False)")
    if type(method).mark_trainable is TransferMethod.mark_trainable:
        raise ValueError(f"transfer method {method.name!r} must define mark_trainable()")
    reads_patches = set(PATCH_SETTINGS) & set(method.settings)
    if method.grafts_patches != bool(reads_patches) or (
            reads_patches and reads_patches != set(PATCH_SETTINGS)):
        raise ValueError(f"transfer method {method.name!r}: a method that grafts patches "
                         f"reads all of {', '.join(PATCH_SETTINGS)} in its settings, and "
                         "one that does not reads none of them")


#: {name: method}, filled as this package's modules are imported (`pipelines.registry`).
REGISTRY = Registry("transfer method", "method", TransferMethod, check=_check_declared)
register, get, names, module_of = (REGISTRY.register, REGISTRY.get, REGISTRY.names,
                                   REGISTRY.module_of)


def check_flags(name, **given):
    """Refuse job flags (`given`: flag -> value, None when not given) that the method `name`
    does not read, naming the methods that do."""
    method = get(name)
    unread = [flag for flag, value in given.items()
              if value is not None and flag not in method.settings]
    groups = {}
    for flag in unread:
        readers = tuple(other for other in names() if flag in get(other).settings)
        groups.setdefault(readers, []).append(flag)
    for readers, flags in groups.items():
        # "--finelast_blocks only applies", "--insertion only apply" (one of several)
        verb = "applies" if len(get(readers[0]).settings if readers else flags) == 1 else "apply"
        where = "|".join(readers) or "no method"
        raise ValueError(f"{', '.join('--' + flag for flag in flags)} only {verb} to "
                         f"--method={where}, not --method={name}")


def set_trainable(model, embeddings=False, final_layers=False, blocks=(), patches=False,
                  block_norms=False):
    """The shared part of `mark_trainable`: the head trains; the backbone's embedding
    layers, its final layers, the blocks whose indexes are in `blocks` (with their
    patches), every patch (`patches`) and each block's trained layer norms (`block_norms`)
    train as told; everything else is frozen."""
    backbone = model.backbone
    model.head.trainable = True
    for layer in backbone.embedding_layers:
        layer.trainable = embeddings
    for layer in backbone.final_layers:
        layer.trainable = final_layers
    for index, block in enumerate(backbone.blocks):
        train_block = index in blocks
        for layer in block.backbone_layers:
            layer.trainable = train_block
        if block_norms:
            for norm in block.trained_norms:
                norm.trainable = True
        for patch in block.patches:
            patch.trainable = patches or train_block


Registry.import_package(__name__, __path__)
