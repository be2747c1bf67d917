"""What the transfer comparison runs and measures: its methods (simple baselines and
neural transfer methods), the patch presets, each task kind's primary and curve metrics,
and the names of a run's per-example file. Everything else in the experiment reads these."""

from peterrec_tf import transfer_methods

METHODS = [  # (label, finetune kwargs, or the name of a simple baseline)
    ("LabelCS", "majority"),
    ("Popularity", "popularity"),
    ("NaiveBayes", "naive_bayes"),
    ("FineZero", {"method": "fineall", "from_scratch": True}),
    ("PeterZero", {"method": "peterrec", "from_scratch": True}),
    ("FineCLS", {"method": "finecls"}),
    ("FineLast", {"method": "finelast", "finelast_blocks": 1}),
    ("FineAll", {"method": "fineall"}),
    ("PeterRec (b)", {"method": "peterrec", "insertion": "b"}),
    ("PeterRec (c)", {"method": "peterrec", "insertion": "c"}),
    ("PeterRec (d)", {"method": "peterrec", "insertion": "d"}),
    ("PeterRec (e)", {"method": "peterrec", "insertion": "e"}),
]
METHODS += [(name, {"method": name}) for name in transfer_methods.names()  # a newer method
            if name not in {spec["method"] for _, spec in METHODS if isinstance(spec, dict)}]
BASELINE_TASKS = {"majority": ("classify", "item_rec"), "popularity": ("item_rec",),
                  "naive_bayes": ("classify",)}
#: patch bottleneck as a share of C: the release's C/4 (the project's default), the paper's C/8
PATCH_PRESETS = {"release": 0.25, "paper": 0.125}
PATCH_ACTIVATION = "gelu_tanh"
PRIMARY = {"classify": "accuracy", "item_rec": "hr@5"}
CURVE_METRICS = {"classify": ("accuracy", "balanced_accuracy"),
                 "item_rec": ("hr@5", "mrr@5", "full_hr@5", "full_mrr@5")}
#: results.json's format: a work directory of another one is refused, not resumed
FORMAT = 2


def method_key(label):
    """`PeterRec (b)` -> `peterrec_b`: the names the flags use."""
    return label.lower().replace(" (", "_").replace(")", "")


def applies(spec, task):
    return not isinstance(spec, str) or task in BASELINE_TASKS[spec]


def labels_of(keys):
    """The METHODS labels of flag keys (`fineall`, `peterrec_b`); an unknown key is a
    `ValueError` listing the known ones."""
    known = {method_key(label): label for label, _ in METHODS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(known)}")
    return [known[k] for k in keys]


def run_file(record):
    """The per-example outputs' file name of one run (under WORK/per_example/)."""
    return (f"{record['objective']}_{record['seed']}_{record['task']}_{method_key(record['method'])}"
            f"_{record['fraction']:g}.npz")
