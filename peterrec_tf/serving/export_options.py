"""What an export is asked for: `ExportOptions`, one field per flag of the same name of
`python -m peterrec_tf.export`, checked when made; `ExportError` when it cannot be done.

The serving module's builder reads the answering fields (`k`, `max_len`, `backbone_dir`,
`next_item_index`, `exclude_history`), the version writer the placing ones (`model_name`,
`version`, `serving_base_path`, `num_versions`): one object travels instead of a chain of
positional parameters."""

import dataclasses
import os

#: --next_item_index choices: none (float32 scan) or int8 (candidate_index).
NEXT_ITEM_INDEXES = ("none", "int8")


class ExportError(ValueError):
    """The model directories cannot be exported as asked."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to export: refused (`ExportError`) when made with a value no export can take.

    model_name: the sub-directory of the export base and the name clients request.
    version: the version to write (default: one more than the highest there).
    k: items the ranking signatures without a `k` input return.
    max_len: history length the graph frames to (default: each model's recorded one).
    serving_base_path: where the server sees the export base, for `models.config`.
    num_versions: `models.config`'s `latest` version policy for this model.
    backbone_dir: where tasks stored alone find their backbone when it moved.
    next_item_index: one of `NEXT_ITEM_INDEXES` (int8: `candidate_index`).
    exclude_history: ranking signatures never return an item of the request's history.
    """
    model_name: str = "peterrec"
    version: int | None = None
    k: int = 10
    max_len: int | None = None
    serving_base_path: str | None = None
    num_versions: int = 2
    backbone_dir: str | None = None
    next_item_index: str = "none"
    exclude_history: bool = False

    def __post_init__(self):
        name = self.model_name
        if not name or os.sep in name or name.startswith("."):
            raise ExportError(f"model name {name!r}: one directory name, not a path")
        if self.version is not None and int(self.version) < 1:
            raise ExportError(f"version must be a positive integer, got {self.version}")
        if int(self.k) < 1:
            raise ExportError(f"k must be at least 1, got {self.k}")
        if int(self.num_versions) < 1:
            raise ExportError(f"num_versions must be at least 1, got {self.num_versions}")
        if self.max_len is not None and int(self.max_len) < 1:
            raise ExportError(
                f"max_len must be at least 1 (or unset: each model's own), got {self.max_len}: "
                "an uncut, unpadded history would make answers depend on how much "
                "padding a request carries and on what Serving batches it with")
        if self.next_item_index not in NEXT_ITEM_INDEXES:
            raise ExportError(f"next_item_index must be one of {NEXT_ITEM_INDEXES}, "
                              f"got {self.next_item_index!r}")

    @classmethod
    def field_names(cls):
        """The options' names (each also the command's flag of that name)."""
        return [field.name for field in dataclasses.fields(cls)]
