"""The objective registry: an objective defined in one place (here, in the test) pre-trains
through the job with no other edit, and the registry refuses what it cannot serve."""

import json
import os

import numpy as np
import pytest

from peterrec_tf import objectives
from peterrec_tf.data import datasets
from peterrec_tf.data.next_item import NextItemPreprocessor
from peterrec_tf.jobs.pretraining import run_pretrain
from peterrec_tf.models import NextItNet
from peterrec_tf.objectives import Objective
from pipelines.prepare import prepare

quiet = {"log": lambda *_: None}


class LastPositionPreprocessor(NextItemPreprocessor):
    """Next-item examples trained at the last position only."""

    calls = []

    def examples(self, dataset, seed=0, input_context=None):
        LastPositionPreprocessor.calls.append(self.max_len)
        last = np.zeros(self.max_len, np.float32)
        last[-1] = 1.0
        return super().examples(dataset, seed, input_context).map(
            lambda x, y, weight: (x, y, weight * last))


class LastItem(Objective):
    """Next item, trained on the most recent position only."""

    name = "test_last_item"
    model_class = NextItNet
    plans = []

    def preprocessor(self, max_len, num_items, mask_rate=0.3, max_predictions=None,
                     pad_to_max_len=True):
        return LastPositionPreprocessor(max_len, pad_to_max_len)

    def xla_plan(self, num_sampled, channels=64, fill=1.0):
        LastItem.plans.append((num_sampled, channels))
        return ("softmax",)


@pytest.fixture
def last_item():
    LastPositionPreprocessor.calls.clear()
    LastItem.plans.clear()
    objectives.register(LastItem)
    yield objectives.get(LastItem.name)
    objectives.REGISTRY.unregister(LastItem.name)


@pytest.fixture(scope="module")
def pretrain_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("objectives")
    prepare("synthetic", str(root / "syn"), max_len=12, seed=1, num_users=100, num_items=40,
            num_clusters=4, num_targets=20, **quiet)
    return str(root / "syn" / "pretrain")


def test_an_objective_of_one_file_pretrains_through_the_job(last_item, pretrain_data, tmp_path):
    assert "test_last_item" in objectives.names()
    assert objectives.module_of("test_last_item") == __name__
    lines = []
    model_dir = str(tmp_path / "model")
    results = run_pretrain(pretrain_data, model_dir, objective="test_last_item", channels=8,
                           dilations=(1, 2), batch_size=16, train_steps=3, eval_every=0,
                           log_every=1, checkpoint_every=100, log=lines.append)
    assert results["training"]["steps"] == 3
    assert LastPositionPreprocessor.calls and set(LastPositionPreprocessor.calls) == {12}
    assert LastItem.plans == [(0, 8)]  # the job asked the objective for its XLA plan
    assert any("NextItNet (test_last_item" in line and "XLA: softmax" in line for line in lines)
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["objective"] == "test_last_item"
    x, y, weight = next(iter(datasets.pretrain_dataset(pretrain_data, "train", 8,
                                                       "test_last_item", shuffle=False)))
    assert x.shape[1] == 12 and weight.numpy()[:, :-1].sum() == 0
    assert (weight.numpy()[:, -1] == 1).all()


def test_a_stride_for_an_objective_without_one_is_a_usage_error(last_item, pretrain_data,
                                                                tmp_path):
    """An objective whose preprocessor predates `window_stride` trains without it, and a
    stride asked of it is refused in one line before anything is written, not a TypeError
    from deep in the input pipeline."""
    assert not last_item.takes_window_stride()
    assert objectives.get("next_item").takes_window_stride()
    model_dir = tmp_path / "strided"
    with pytest.raises(ValueError, match="'test_last_item' takes no window stride"):
        run_pretrain(pretrain_data, str(model_dir), objective="test_last_item", channels=8,
                     dilations=(1, 2), batch_size=16, train_steps=3, eval_every=0,
                     train_windows="all", window_stride=2, **quiet)
    assert not model_dir.exists()
    for build in (lambda: datasets.pretrain_dataset(pretrain_data, "train", 8, "test_last_item",
                                                    windows="all", window_stride=2),
                  lambda: datasets.count_windows(pretrain_data, "train", 12, "test_last_item",
                                                 window_stride=2)):
        with pytest.raises(ValueError, match="'test_last_item' takes no window stride"):
            build()


def test_the_registry_serves_the_builtin_objectives_and_refuses_misuse():
    assert objectives.names()[:2] == ("next_item", "masked_item")  # the default first
    assert objectives.get("next_item").causal and not objectives.get("masked_item").causal
    assert objectives.module_of("masked_item") == "peterrec_tf.objectives.masked_item"
    with pytest.raises(ValueError, match=r"unknown objective 'cloze': --objective must be one of .*next_item"):
        objectives.get("cloze")

    class Impostor(Objective):
        name = "next_item"
        model_class = NextItNet
    with pytest.raises(ValueError, match="already registered by peterrec_tf.objectives.next_item"):
        objectives.register(Impostor)
    with pytest.raises(TypeError, match="must be Objective instances"):
        objectives.register(object())

    class Nameless(Objective):
        model_class = NextItNet
    with pytest.raises(ValueError, match="name must be an identifier, got None"):
        objectives.register(Nameless)
    assert objectives.get("next_item").model_class is NextItNet  # nothing was replaced


FLAG_PROBE = """
import json
from absl import flags
from peterrec_tf import objectives
from peterrec_tf.models import NextItNet

@objectives.register
class Toy(objectives.Objective):
    \"\"\"A toy objective. More lines.\"\"\"
    name = "test_toy"
    model_class = NextItNet

    def preprocessor(self, max_len, *args, **kwargs):
        from peterrec_tf.data.next_item import NextItemPreprocessor
        return NextItemPreprocessor(max_len)

import peterrec_tf.pretrain as pretrain
pretrain.define_flags()
flag = flags.FLAGS["objective"]
print(json.dumps([flag.parser.enum_values, flag.default, flag.help]))
"""


def test_the_flag_offers_every_registered_objective():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FLAG_PROBE], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    choices, default, text = json.loads(done.stdout.strip().splitlines()[-1])
    assert choices == ["next_item", "masked_item", "test_toy"] and default == "next_item"
    assert "test_toy: A toy objective" in text and "masked_item: GRec" in text


def test_an_objective_must_be_complete_and_cannot_take_the_default_silently():
    assert objectives.default().name == "next_item" == objectives.names()[0]

    class Modelless(Objective):
        name = "modelless"

        def preprocessor(self, *args, **kwargs):
            return None
    with pytest.raises(ValueError, match="'modelless' must set model_class"):
        objectives.register(Modelless)

    class Unprepared(Objective):
        name = "unprepared"
        model_class = NextItNet
    with pytest.raises(ValueError, match="'unprepared' must define preprocessor"):
        objectives.register(Unprepared)

    class Usurper(LastItem):
        name = "a_usurper"  # sorts before next_item
        default = True
        order = -1
    with pytest.raises(ValueError, match="'a_usurper' claims to be the default, which "
                                         "'next_item' is"):
        objectives.register(Usurper)
    assert objectives.default().name == "next_item"
    assert not {"modelless", "unprepared", "a_usurper"} & set(objectives.names())

