"""What a pre-training objective is: its model, its preprocessor, its XLA plan."""

import inspect


class Objective:
    """A pre-training objective. A subclass sets `name` and `model_class` (a
    `models.pretrainer.SequencePretrainer`; its `requires_causal` says whether the backbone
    is causal) and implements `preprocessor`; `xla_plan` defaults to compiling the fused
    softmax alone, the plan that holds for any objective."""

    #: The registered name (`pretrain --objective`), recorded in the model's config.json.
    name = None
    #: The pre-training model class the objective trains.
    model_class = None
    #: Whether it is `pretrain`'s default objective (one objective is).
    default = False
    #: Position among the flag's choices after the default (lowest first).
    order = 100

    @property
    def summary(self):
        """One line for `--objective`'s help: the first line of the class docstring."""
        return (type(self).__doc__ or self.name).strip().splitlines()[0].rstrip(".")

    @property
    def causal(self):
        """Whether the objective trains a causal backbone (reads each position's past only)."""
        return bool(self.model_class.requires_causal)

    def build_model(self, backbone, **settings):
        """The objective's pre-training model over `backbone`."""
        return self.model_class(backbone, **settings)

    def preprocessor(self, max_len, num_items, mask_rate=0.3, max_predictions=None,
                     pad_to_max_len=True, window_stride=0):
        """The object turning ragged histories into (x, y, weight) examples: its `window`
        is the (size, overlap) of the windows sequences are cut into and its `stride` how
        many items apart they are cut (None: size - overlap; `window_stride`, which an
        objective without overlapping windows refuses), its
        `examples(dataset, seed, input_context)` maps `{item_ids: ragged}` batches to
        examples (see `data.next_item`)."""
        raise NotImplementedError

    def takes_window_stride(self):
        """Whether `preprocessor` accepts `window_stride` (an objective written before the
        keyword, or one whose windows never overlap, may not declare it)."""
        parameters = inspect.signature(self.preprocessor).parameters.values()
        return any(p.name == "window_stride" or p.kind is inspect.Parameter.VAR_KEYWORD
                   for p in parameters)

    def stride_keyword(self, window_stride):
        """`preprocessor`'s keyword for a window stride: none at 0, so that an objective
        written before strides existed still works; a stride asked of one is refused."""
        if not window_stride:
            return {}
        if not self.takes_window_stride():
            raise ValueError(f"objective {self.name!r} takes no window stride (its "
                             "preprocessor has no window_stride parameter); leave "
                             "--window_stride at 0")
        return {"window_stride": window_stride}

    def xla_plan(self, num_sampled, channels=64, fill=1.0):
        """What XLA compiles in a training step (`SequencePretrainer.compile(xla_plan=...)`):
        here the fused softmax loss only. `fill` is the share of positions that carry a
        target, or a function measuring it (called only by a plan that depends on it)."""
        del num_sampled, channels, fill
        return ("softmax",)

    def __repr__(self):
        return f"<objective {self.name}>"
