"""The jobs as library functions: `run_pretrain`, `run_finetune`, `run_evaluate` and the
skeleton the training jobs share. The command-line entry points (`peterrec_tf.pretrain`,
`.finetune`, `.evaluate`) only define flags and call these; the demo, the transfer
experiment and the benchmarks import them from here.
"""
