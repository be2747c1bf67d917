"""The one error type of the conversion."""


class ConversionError(ValueError):
    """The checkpoint (or a file beside it) does not fit the release's model as documented.

    Messages start with the file or checkpoint they are about, so that the command line
    can print them as `error: <file>: ...`.
    """


def error_text(prefix, errors):
    """One message naming every offender."""
    return f"cannot convert {prefix}:\n  " + "\n  ".join(errors)
