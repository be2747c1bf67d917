"""One reader per source format; each returns a list of PreparedDataset.

`TABLE_FORMATS` are the fine-tuning formats built from a per-user table and an event log
(`user_history`): each module holds its whole format (local reading, Beam stages, flags
through `user_history`), so `prepare` and `beam_prepare` only look them up here."""

import importlib

TABLE_FORMATS = {"user_labels": "pipelines.formats.user_labels",
                 "user_targets": "pipelines.formats.user_targets"}


def table_format(name):
    """The format object of a table format (`user_history.UserTableFormat`)."""
    return importlib.import_module(TABLE_FORMATS[name]).FORMAT
