"""peterrec-tf: PeterRec (SIGIR 2020) for Keras 3 / TensorFlow 2.

Importing the package registers every layer, model, metric and the optimizer with Keras
serialization, so `keras.saving.load_model("model.keras")` and
`peterrec_tf.model_dir.load_model_dir(DIR)` work after `import peterrec_tf` alone (a
fine-tuned task's stored compile config names `peterrec_tf.metrics.HitRate`).
"""

from pipelines.tf_startup import quiet_tensorflow_startup, started_as_entry_point

if started_as_entry_point():  # `python -m peterrec_tf.X`: the job's output first
    quiet_tensorflow_startup()

from peterrec_tf import layers, metrics, models  # noqa: E402,F401  (registers serializables)
from peterrec_tf.training import optimizer  # noqa: E402,F401  (a saved compile config names it)

__version__ = "0.1.0"
