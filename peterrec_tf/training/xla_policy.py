"""Where XLA pays on CPU: the one home of the jobs' speed policy (measured, BUILD_NOTES).

`use_xla` says whether a job compiles at all; `xla_plan` what a pre-training step
compiles; `SequencePretrainer.compile(xla_plan=...)` takes the plan explicitly.
"""


#: From this width on the head's matmuls run in TF's (oneDNN) kernels, outside XLA: at
#: 128 and 256 channels XLA's CPU dot is 10-40% slower for `[rows, C] x [C, 100,000]` and
#: its transposes; at 64 it is as fast (measured, BUILD_NOTES).
TF_MATMUL_FROM_CHANNELS = 128
#: Below this share of positions carrying a target (short histories in long windows) the
#: whole-step XLA computation loses to gathering the target positions outside XLA and
#: compiling the residual stack and the fused softmax alone (measured, BUILD_NOTES).
WHOLE_STEP_FROM_FILL = 0.5


def xla_plan(objective, num_sampled, channels=64, fill=1.0):
    """What XLA compiles in pre-training (measured on CPU, see BUILD_NOTES), a tuple of:
    "step", the whole train step with the pre-trainer's static-shape loss (head at every
    position); "blocks", the residual stack only; and "softmax", the part of the softmax
    loss between its matmuls (`layers.fused_softmax`), inlined into the step's XLA when
    the step is compiled whole.  The next-item full softmax compiles the whole step below
    `TF_MATMUL_FROM_CHANNELS` channels and keeps the head's matmuls in TF from there; the
    sampled softmax cannot be compiled whole (its candidate sampler has no XLA kernel).
    The masked objective compiles only its softmax: the gather of the 30% masked
    positions saves more than compiling the step gains, and its compiled non-causal stack
    measured slower. `fill` is the share of positions that carry a target
    (`target_fill`): below WHOLE_STEP_FROM_FILL the next-item step is not compiled whole
    either (the head runs on the gathered target rows outside XLA's static shapes)."""
    if objective != "next_item":
        return ("softmax",)
    if num_sampled or channels >= TF_MATMUL_FROM_CHANNELS or fill < WHOLE_STEP_FROM_FILL:
        return ("blocks", "softmax")
    return ("step", "softmax")


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
