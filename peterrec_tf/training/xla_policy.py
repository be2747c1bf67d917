"""Where XLA pays on CPU: the one home of the jobs' speed thresholds (measured, BUILD_NOTES).

`use_xla` says whether a job compiles at all; each pre-training objective's `xla_plan`
(`objectives`) says what its step compiles, from the thresholds here;
`SequencePretrainer.compile(xla_plan=...)` takes the plan explicitly.
"""


#: From this width on the head's matmuls run in TF's (oneDNN) kernels, outside XLA: XLA's
#: CPU dot is slower for `[rows, C] x [C, items]` and its transposes at 128 channels and
#: above, as fast at 64 (measured, BUILD_NOTES).
TF_MATMUL_FROM_CHANNELS = 128
#: Below this share of positions carrying a target (short histories in long windows) the
#: whole-step XLA computation loses to gathering the target positions outside XLA and
#: compiling the residual stack and the fused softmax alone (measured, BUILD_NOTES).
WHOLE_STEP_FROM_FILL = 0.5


def target_fill(dataset, batches=32):
    """The share of positions with weight > 0 in the first `batches` batches of a
    pre-training dataset of (x, y, weight) (1.0 when it holds none)."""
    kept = total = 0.0
    for _, _, weights in dataset.take(batches):
        kept += float(weights.numpy().sum())
        total += float(weights.numpy().size)
    return kept / total if total else 1.0


def use_xla(jit_compile, strategy, deterministic, supported=True):
    """Whether a job compiles its train step with XLA: asked for, supported by the model,
    one process (the distributed code paths are tested without it) and not in op-determinism
    mode (XLA does not promise it for every op)."""
    if not (jit_compile and supported and strategy == "default" and not deterministic):
        return False
    from tensorflow.python.framework.config import is_op_determinism_enabled

    return not is_op_determinism_enabled()  # process-wide: an earlier job may have set it
