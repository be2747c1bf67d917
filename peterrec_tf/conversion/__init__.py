"""Conversion of the original TF1 release's checkpoints (see `peterrec_tf.convert_tf1`).

    names.py        the TF1 -> Keras name tables and training-state recognition
    reader.py       checkpoint / .meta reading (every failure a ConversionError)
    graph.py        causal, insertion and pooling read off the .meta graph
    release_csv.py  vocabularies and widths from the release CSVs (via pipelines)
    output.py       the atomic write of the output directory
    driver.py       convert_checkpoint
"""

from peterrec_tf.conversion.driver import RELEASE_INSERTIONS, POOLINGS, convert_checkpoint
from peterrec_tf.conversion.errors import ConversionError
from peterrec_tf.conversion.release_csv import release_token_order

__all__ = ["ConversionError", "POOLINGS", "RELEASE_INSERTIONS", "convert_checkpoint",
           "release_token_order"]
