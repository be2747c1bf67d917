"""The jobs as library functions: `run_pretrain`, `run_finetune`, `run_evaluate`.

The training jobs are explicit objects (`training_job.TrainingJob`: check, build_model,
build_inputs, evaluate, save) run by `training_job.run_training`. The command-line entry
points (`peterrec_tf.pretrain`, `.finetune`, `.evaluate`) only define flags and call the
`run_*` functions; the demo, the transfer experiment and the benchmarks import them from here.
"""
