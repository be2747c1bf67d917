"""TensorFlow's C++ start-up log, hidden for the command-line entry points.

Importing TensorFlow prints, through absl before its logging is initialised and so
whatever TF_CPP_MIN_LOG_LEVEL says, a oneDNN notice, "Could not find cuda drivers" and
an `E0000 ... failed call to cuInit` line on a machine without a GPU: a newcomer reads
that as a failure. `python -m pipelines.X` / `python -m peterrec_tf.X` import TensorFlow
(and let it probe for devices) with file descriptor 2 pointed at /dev/null, unless the
user set TF_CPP_MIN_LOG_LEVEL (then they want TensorFlow's own log, which is left alone).
"""

import os
import sys


def started_as_entry_point():
    """True while `python -m package.module` imports the module's parent packages (Python
    sets sys.argv[0] to "-m" until the module itself runs), or in a `peterrec-*` console
    command (pyproject.toml's scripts)."""
    return sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0]).startswith("peterrec-")


def quiet_tensorflow_startup():
    """Import TensorFlow without its C++ start-up log (see the module docstring)."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        import tensorflow as tf
        tf.config.list_physical_devices()  # the device probe logs the cuInit error line
    finally:
        os.dup2(saved, 2)
        os.close(saved)
