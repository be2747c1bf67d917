"""Data preparation (raw data -> vocabulary + TFRecord shards) and tf.data input functions.

`pipelines` never imports the model package: data flows one way, into the models.
"""

from pipelines.tf_startup import quiet_tensorflow_startup, started_as_entry_point

if started_as_entry_point():
    quiet_tensorflow_startup()
