"""Machinery shared by the training jobs, one concept per module.

flags (common absl flags), reproducibility (seeds), strategy (tf.distribute, chief,
precision), results (flags.json / results.json), signals (SIGINT/SIGTERM -> stop),
progress (log lines with ETA), summaries (TensorBoard), checkpointing
(CheckpointManager state), loop (the resumable `fit` driver), scoring (scores, ranks
and metrics of a model over a dataset).
"""
