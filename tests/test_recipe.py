"""The recipes under recipes/ are valid pre-training flagfiles that run as written (shrunk by
flags given after them), and the long-histories recipe stays both the public-log recipe with
exactly the changes it documents and the settings behind the ML-100K figures quoted for it."""

import json
import os

import pytest

from conftest import REPO_ROOT
from pipelines.prepare import prepare
from test_jobs_cli import command

RECIPE = os.path.join(REPO_ROOT, "recipes", "public_sequential.flags")
LONG_HISTORIES = os.path.join(REPO_ROOT, "recipes", "public_sequential_long_histories.flags")
#: What the long-histories recipe changes in the public-log one (the values measured on
#: MovieLens-100K, BUILD_NOTES "Self-attention backbone, tied head and public-log quality").
LONG_HISTORIES_CHANGES = {"--heads": "2", "--feed_forward_dim": "256", "--norm_order": "post",
                          "--activation": "gelu", "--position_origin": "oldest",
                          "--epochs": "200", "--patience": "25"}
#: The kept output of the runs whose figures README and BUILD_NOTES quote for that recipe.
LONG_HISTORIES_MEASURED = os.path.join(
    REPO_ROOT, "benchmarks", "results",
    "public_quality_6b23e7e_ml100k_post_gelu_h2_ff256_p25_oldest_3seeds.json")


def read_flagfile(path):
    """{--flag: value} of a flagfile's lines (comments and blank lines skipped); a flag
    given twice is refused, since absl would silently keep the last."""
    flags = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith(("#", "//")):  # absl's two comment forms
                continue
            name, sep, value = line.partition("=")
            assert sep and name.startswith("--"), f"{path}:{number}: not --flag=value: {line!r}"
            assert name not in flags, f"{path}:{number}: {name} given twice"
            flags[name] = value
    return flags


def test_long_histories_recipe_is_the_public_recipe_with_its_documented_changes():
    base, long_histories = read_flagfile(RECIPE), read_flagfile(LONG_HISTORIES)
    assert set(long_histories) == set(base) | set(LONG_HISTORIES_CHANGES)
    changed = {name: value for name, value in long_histories.items()
               if base.get(name) != value}
    assert changed == LONG_HISTORIES_CHANGES


def test_long_histories_recipe_is_what_the_quoted_ml100k_runs_trained_with():
    with open(LONG_HISTORIES_MEASURED, encoding="utf-8") as handle:
        runs = json.load(handle)["raw"]["results"]
    assert runs
    for run in runs:
        for name, value in read_flagfile(LONG_HISTORIES).items():
            assert _same_value(run["settings"][name[2:]], value), (run["seed"], name)


@pytest.mark.parametrize("recipe", [RECIPE, LONG_HISTORIES], ids=os.path.basename)
def test_recipe_runs_pretrain_and_keeps_its_settings(tmp_path, recipe):
    data = str(tmp_path / "syn")
    prepare("synthetic", data, max_len=12, seed=0, num_users=80, num_items=40, num_clusters=4,
            num_targets=20, log=lambda *_: None)
    model_dir = str(tmp_path / "pre")
    process = command(["peterrec_tf.pretrain", f"--flagfile={recipe}",
                       f"--data_dir={os.path.join(data, 'pretrain')}", f"--model_dir={model_dir}",
                       "--train_steps=6", "--batch_size=16", "--max_len=12", "--log_every=3"])
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    with open(os.path.join(model_dir, "flags.json"), encoding="utf-8") as handle:
        flags = json.load(handle)
    # every value of the recipe reached the job, except the ones overridden after it
    overridden = {"train_steps", "batch_size", "max_len"}
    for name, value in read_flagfile(recipe).items():
        name = name[2:]
        if name not in overridden:
            assert _same_value(flags[name], value), (name, flags[name], value)
    assert flags["train_steps"] == 6
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["backbone"]["max_positions"] == 12


def _same_value(saved, written):
    """A setting as a job saved it (int, float, bool, str) equals the flagfile's text."""
    if str(saved).lower() == written.lower():
        return True
    try:
        return not isinstance(saved, bool) and float(saved) == float(written)
    except (TypeError, ValueError):
        return False
