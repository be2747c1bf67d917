"""The paper's transfer comparison (Tables 2, 3, 7; Figures 4-6), run as a command:

    python -m peterrec_tf.experiments.transfer --dataset=DIR --seeds=3 --output_dir=WORK

(`__main__`: its flags and what it writes). By responsibility: `plan` (the methods,
presets and metrics compared), `data` (each task's data read once, candidates, baselines,
scoring a saved model, limited-data subsets), `runner` (the runs, resumable, recorded in
results.json), `summary` (means, stds and paired intervals from the recorded runs) and
`report` (results.md and the charts from results.json alone).
"""
