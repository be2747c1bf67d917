"""tf.data input functions: shapes, padding, masking statistics, negatives, evaluation
candidates, seeds, and sharding by input pipeline."""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from peterrec_tf.data import datasets, masked_item, windows
from peterrec_tf.data import framing as framing_ops
from pipelines import inputs
from pipelines.prepare import prepare

MAX_LEN = 20


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("inputs") / "syn")
    prepare("synthetic", out, max_len=MAX_LEN, num_shards=3, seed=5, num_users=400,
            num_items=150, num_clusters=6, num_targets=130, log=lambda *_: None)
    return lambda name: os.path.join(out, name)


def stored(data_dir, split):
    """(user, item ids, target or label) of every record, in the order an unshuffled
    pipeline reads them: shards interleaved one record at a time (= preparation order)."""
    files = []
    for path in inputs.shard_files(data_dir, split):
        rows = []
        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            value = f["target"] if "target" in f else f["label"] if "label" in f else None
            rows.append((f["user_id"].bytes_list.value[0].decode(), list(f["item_ids"].int64_list.value),
                         value.int64_list.value[0] if value is not None else None))
        files.append(rows)
    return [row for i in range(max(map(len, files))) for rows in files if i < len(rows)
            for row in [rows[i]]]


def padded(ids, length):
    ids = ids[-length:]
    return [0] * (length - len(ids)) + ids


def as_numpy(dataset):
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_left_pad_keeps_the_most_recent_items():
    ragged = tf.ragged.constant([[1, 2, 3, 4, 5], [6], []], dtype=tf.int64)
    np.testing.assert_array_equal(framing_ops.left_pad(ragged, 3).numpy(),
                                  [[3, 4, 5], [0, 0, 6], [0, 0, 0]])
    np.testing.assert_array_equal(framing_ops.left_pad(ragged, None).numpy()[1], [0, 0, 0, 0, 6])
    assert framing_ops.left_pad(ragged, 3).dtype == tf.int32


def test_next_item_batches_are_the_stored_sequences_shifted(data):
    data_dir = data("pretrain")
    batches = as_numpy(datasets.pretrain_dataset(data_dir, "train", 64, shuffle=False))
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    w = np.concatenate([b[2] for b in batches])
    assert x.dtype == np.int32 and y.dtype == np.int32 and w.dtype == np.float32
    assert x.shape[1] == y.shape[1] == MAX_LEN
    window = np.array([padded(ids, MAX_LEN + 1) for _, ids, _ in stored(data_dir, "train")])
    np.testing.assert_array_equal(x, window[:, :-1])
    np.testing.assert_array_equal(y, window[:, 1:])
    np.testing.assert_array_equal(w, (y > 0).astype("float32"))
    spec = datasets.pretrain_dataset(data_dir, "train", 64).element_spec
    assert spec[0].shape.as_list() == [None, MAX_LEN]  # static length for Keras


def test_truncation_and_per_batch_padding(data):
    data_dir = data("pretrain")
    x, y, _ = next(iter(datasets.pretrain_dataset(data_dir, "train", 400, max_len=5, shuffle=False)))
    first = stored(data_dir, "train")[0][1]
    np.testing.assert_array_equal(x.numpy()[0], first[-6:-1])  # the most recent items kept
    np.testing.assert_array_equal(y.numpy()[0], first[-5:])
    x, _, _ = next(iter(datasets.pretrain_dataset(data_dir, "train", 7, shuffle=False,
                                                  pad_to_max_len=False)))
    longest = max(len(ids) for _, ids, _ in stored(data_dir, "train")[:7])
    assert x.shape == (7, longest - 1)


def mask_stats(data_dir, seed, rate=0.3, batches=4):
    totals = dict(real=0, chosen=0, zero=0, kept=0, random=0)
    for x, y, w in as_numpy(datasets.pretrain_dataset(data_dir, "train", 100, "masked_item",
                                                      mask_rate=rate, seed=seed).take(batches)):
        w = w.astype(bool)
        n = (y > 0).sum(1)
        expected = np.maximum(1, np.floor(rate * n + 0.5)).astype(int)
        np.testing.assert_array_equal(w.sum(1), np.minimum(expected, n))  # exact count per row
        assert (x[~w] == y[~w]).all() and not (w & (y == 0)).any()
        assert (x >= 0).all() and (x < 151).all()
        totals["real"] += n.sum()
        totals["chosen"] += w.sum()
        totals["zero"] += ((x == 0) & w).sum()
        totals["kept"] += ((x == y) & w).sum()
        totals["random"] += ((x != y) & (x != 0) & w).sum()
    return totals


def test_masking_statistics(data):
    t = mask_stats(data("pretrain"), seed=1)
    assert abs(t["chosen"] / t["real"] - 0.3) < 0.01
    assert abs(t["zero"] / t["chosen"] - 0.8) < 0.03
    assert abs(t["kept"] / t["chosen"] - 0.1) < 0.025  # incl. rare random draws of the same item
    assert abs(t["random"] / t["chosen"] - 0.1) < 0.025
    t = mask_stats(data("pretrain"), seed=2, rate=0.5, batches=2)
    assert abs(t["chosen"] / t["real"] - 0.5) < 0.01


def test_mask_count_rounds_half_away_from_zero_like_the_release():
    ids = tf.constant([list(range(1, 16)), [0] * 14 + [3], list(range(1, 6)) + [0] * 10])
    _, weights = masked_item.mask_items(ids, tf.constant([0, 0], tf.int64), 20, 0.3)
    # 0.3 * 15 = 4.5 -> 5 (Python 2 round), 1 real item -> 1, 0.3 * 5 = 1.5 -> 2
    np.testing.assert_array_equal(weights.numpy().sum(1), [5, 1, 2])
    _, weights = masked_item.mask_items(ids, tf.constant([0, 0], tf.int64), 20, 0.3, max_predictions=3)
    np.testing.assert_array_equal(weights.numpy().sum(1), [3, 1, 2])


def test_same_seed_same_batches_other_seed_other_batches(data):
    def take(fn, seed):
        return as_numpy(fn(seed).take(3))
    makers = [
        lambda s: datasets.pretrain_dataset(data("pretrain"), "train", 50, "masked_item", seed=s),
        lambda s: datasets.pretrain_dataset(data("pretrain"), "train", 50, seed=s),
        lambda s: datasets.finetune_dataset(data("coldrec"), "train", 50, num_negatives=3, seed=s),
        lambda s: datasets.eval_dataset(data("coldrec"), "test", 50, seed=s),
    ]
    for make in makers:
        a, b, c = take(make, 7), take(make, 7), take(make, 8)
        assert all((p == q).all() for ba, bb in zip(a, b) for p, q in zip(ba, bb))
        assert not all(p.shape == q.shape and (p == q).all() for ba, bc in zip(a, c)
                       for p, q in zip(ba, bc))


def test_masks_and_negatives_differ_between_epochs(data):
    batches = as_numpy(datasets.pretrain_dataset(data("pretrain"), "train", 400, "masked_item",
                                                 shuffle=False, repeat=True).take(2))
    np.testing.assert_array_equal(batches[0][1], batches[1][1])  # same sequences
    assert not (batches[0][2] == batches[1][2]).all()  # other positions chosen


def test_finetune_item_rec_batches(data):
    data_dir = data("coldrec")
    num_targets = inputs.read_metadata(data_dir)["num_targets"]
    xs, ys = [], []
    for x, y in as_numpy(datasets.finetune_dataset(data_dir, "train", 128, num_negatives=4, seed=3,
                                                   shuffle=False)):
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape[1] == MAX_LEN + 2 and y.shape[1] == 5 and y.dtype == np.int32
    rows = stored(data_dir, "train")
    np.testing.assert_array_equal(x, [[0] + padded(ids, MAX_LEN) + [0] for _, ids, _ in rows])
    np.testing.assert_array_equal(y[:, 0], [t for _, _, t in rows])
    assert (y[:, 1:] != y[:, :1]).all()  # negatives never equal the positive
    assert y[:, 1:].min() >= 1 and y[:, 1:].max() < num_targets
    counts = np.bincount(y[:, 1:].ravel(), minlength=num_targets)[1:]
    assert counts.min() > 0.4 * counts.mean() and counts.max() < 1.8 * counts.mean()  # uniform


def test_finetune_classification_batches(data):
    data_dir = data("attribute")
    x, y = next(iter(datasets.finetune_dataset(data_dir, "test", 1000, shuffle=False)))
    rows = stored(data_dir, "test")
    assert x.shape == (len(rows), MAX_LEN + 2) and y.shape == (len(rows),) and y.dtype == tf.int32
    np.testing.assert_array_equal(y.numpy(), [label for _, _, label in rows])
    ex, ey = next(iter(datasets.eval_dataset(data_dir, "test", 1000)))
    np.testing.assert_array_equal(ex.numpy(), x.numpy())
    np.testing.assert_array_equal(ey.numpy(), y.numpy())


@pytest.mark.parametrize("name", ["pretrain", "coldrec"])
def test_sampled_candidates_are_fixed_distinct_and_independent_of_batching(data, name):
    data_dir = data(name)
    meta = inputs.read_metadata(data_dir)
    universe = meta.get("num_targets", meta["num_items"])
    first = np.concatenate([y for _, y in as_numpy(datasets.eval_dataset(data_dir, "test", 64))])
    again = np.concatenate([y for _, y in as_numpy(datasets.eval_dataset(data_dir, "test", 64))])
    other_batching = np.concatenate([y for _, y in as_numpy(datasets.eval_dataset(data_dir, "test", 37))])
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, other_batching)
    assert first.shape[1] == 100 and first.dtype == np.int32
    assert all(len(set(row)) == 100 for row in first)
    assert first.min() >= 1 and first.max() < universe  # no padding id, the truth included
    assert (first[:, 1:] != first[:, :1]).all()
    truth = np.concatenate([t for _, t in as_numpy(datasets.eval_dataset(data_dir, "test", 64,
                                                                         ranking="full"))])
    assert truth.ndim == 1
    np.testing.assert_array_equal(truth, first[:, 0])
    np.testing.assert_array_equal(truth, [t for _, _, t in stored(data_dir, "test")])


def test_pretrain_eval_input_is_the_history(data):
    data_dir = data("pretrain")
    x, y = next(iter(datasets.eval_dataset(data_dir, "validation", 500, ranking="full")))
    rows = stored(data_dir, "validation")
    assert x.shape == (len(rows), MAX_LEN)  # no [TCL] tokens for pre-training evaluation
    np.testing.assert_array_equal(x.numpy(), [padded(ids, MAX_LEN) for _, ids, _ in rows])
    np.testing.assert_array_equal(y.numpy(), [t for _, _, t in rows])


@pytest.mark.parametrize("pipelines", [2, 3])  # 3 shards: uneven, then one file each
def test_input_context_shards_by_file_and_covers_everything(data, pipelines):
    data_dir = data("pretrain")
    rows, count = [], 0
    for pipeline in range(pipelines):
        context = tf.distribute.InputContext(pipelines, pipeline, 1)
        x, y, _ = next(iter(datasets.pretrain_dataset(data_dir, "train", 1000, shuffle=False,
                                                      input_context=context)))
        count += len(x)
        rows.append({tuple(r) for r in np.concatenate([x.numpy(), y.numpy()[:, -1:]], 1)})
    assert all(not (a & b) for i, a in enumerate(rows) for b in rows[i + 1:])
    every = {tuple(padded(ids, MAX_LEN + 1)) for _, ids, _ in stored(data_dir, "train")}
    assert set().union(*rows) == every
    assert count == inputs.read_metadata(data_dir)["splits"]["train"]  # each record once


def test_input_context_with_more_pipelines_than_files(data):
    data_dir = data("attribute")  # 3 files, 4 pipelines: falls back to sharding records
    seen = []
    for pipeline in range(4):
        context = tf.distribute.InputContext(4, pipeline, 1)
        _, y = next(iter(datasets.finetune_dataset(data_dir, "train", 1000, shuffle=False,
                                                   input_context=context)))
        seen.append(len(y))
    assert sum(seen) == inputs.read_metadata(data_dir)["splits"]["train"]
    assert max(seen) - min(seen) <= 1


def test_workers_draw_different_masks(data):
    data_dir = data("pretrain")
    masks = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 1)
        _, _, w = next(iter(datasets.pretrain_dataset(data_dir, "train", 8, "masked_item",
                                                      input_context=context, seed=0)))
        masks.append(w.numpy())
    assert not (masks[0] == masks[1]).all()


def test_datasets_are_auto_shardable_by_file(data):
    dataset = datasets.pretrain_dataset(data("pretrain"), "train", 8)
    options = dataset.options()
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.FILE
    assert options.deterministic is True
    assert datasets.pretrain_dataset(data("pretrain"), "train", 8, deterministic=False).options().deterministic is False


def test_clear_errors_for_misuse(data, tmp_path):
    with pytest.raises(ValueError, match="not pre-training data"):
        datasets.pretrain_dataset(data("coldrec"), "train", 8)
    with pytest.raises(ValueError, match="not a fine-tuning task"):
        datasets.finetune_dataset(data("pretrain"), "train", 8)
    with pytest.raises(ValueError, match="validation or test"):
        datasets.eval_dataset(data("pretrain"), "train", 8)
    with pytest.raises(ValueError, match="objective"):
        datasets.pretrain_dataset(data("pretrain"), "train", 8, objective="cloze")
    with pytest.raises(ValueError, match="1001 candidates need"):
        datasets.eval_dataset(data("coldrec"), "test", 8, num_candidates=1001)
    with pytest.raises(FileNotFoundError, match="sub-directories"):
        inputs.read_metadata(os.path.dirname(data("pretrain")))


def test_split_into_windows_covers_every_target_once():
    ragged = tf.ragged.constant([[1, 2, 3, 4, 5, 6, 7], [8, 9], [10], [11, 12, 13, 14], []],
                                dtype=tf.int64)
    assert windows.split_into_windows(ragged, 4, 1).to_list() == [
        [1, 2, 3, 4], [4, 5, 6, 7], [8, 9], [10], [11, 12, 13, 14], []]
    # masked windows do not overlap: every item is in exactly one window
    assert windows.split_into_windows(ragged, 3, 0).to_list() == [
        [1], [2, 3, 4], [5, 6, 7], [8, 9], [10], [11], [12, 13, 14], []]


def test_strided_windows_train_every_target_once_with_its_longest_context():
    """With a window every `stride` items, each target is owned by exactly one window, the
    one where it has the most items before it (at least size - stride - 1, or all of its
    history), and a sequence's oldest window owns everything it holds."""
    sequences = [list(range(1, 24)), [30, 31], list(range(40, 52)), [60]]
    ragged = tf.ragged.constant(sequences, dtype=tf.int64)
    size = 6  # next item: max_len 5
    for stride in (1, 2, 3, 5):
        cut, fresh = windows.windows_and_fresh_targets(ragged, size, 1, stride)
        owned = collections.Counter()
        for window, own in zip(cut.to_list(), fresh.numpy().tolist()):
            assert len(window) <= size
            targets = list(range(1, len(window)))  # positions predicted from a context
            for position in targets[-own:]:
                context = window[:position]
                owned[window[position]] += 1
                history = next(s for s in sequences if window[position] in s)
                before = history.index(window[position])
                assert len(context) == min(before, size - 1) or len(context) >= size - stride
        expected = collections.Counter(item for s in sequences for item in s[1:])
        assert owned == expected, stride
    # the default stride is the unstrided cut, each window owning all it holds
    default, fresh = windows.windows_and_fresh_targets(ragged, size, 1)
    assert default.to_list() == windows.split_into_windows(ragged, size, 1).to_list()
    assert set(fresh.numpy().tolist()) == {size}
    with pytest.raises(ValueError, match="stride"):
        windows.windows_and_fresh_targets(ragged, size, 1, size)


def test_strided_windows_weight_only_their_own_next_item_targets(data):
    """pretrain_dataset(window_stride=s) trains every (previous item -> item) transition
    exactly once, as the unstrided cut does, and count_windows counts its windows."""
    data_dir = data("pretrain")
    max_len, stride = 6, 2
    expected = collections.Counter()
    for _, ids, _ in stored(data_dir, "train"):
        expected.update(zip(ids[:-1], ids[1:]))
    dataset = datasets.pretrain_dataset(data_dir, "train", 32, max_len=max_len, shuffle=True,
                                        seed=3, windows="all", window_stride=stride)
    seen, examples = collections.Counter(), 0
    for x, y, w in as_numpy(dataset):
        examples += len(x)
        for row_x, row_y, row_w in zip(x, y, w):
            for t in np.flatnonzero(row_w):
                if row_x[t] > 0:
                    seen[(int(row_x[t]), int(row_y[t]))] += 1
    assert examples == datasets.count_windows(data_dir, "train", max_len, window_stride=stride)
    assert examples > datasets.count_windows(data_dir, "train", max_len)
    assert seen == expected
    with pytest.raises(ValueError, match="windows='all'"):
        datasets.pretrain_dataset(data_dir, "train", 8, max_len=max_len, window_stride=2)
    with pytest.raises(ValueError, match="never overlap"):
        datasets.pretrain_dataset(data_dir, "train", 8, objective="masked_item",
                                  max_len=max_len, windows="all", window_stride=2)


def test_all_windows_train_on_every_next_item_target(data):
    """windows="all" trains every (previous item -> item) transition of every stored
    sequence exactly once; windows="last" only those of each sequence's newest window."""
    data_dir = data("pretrain")
    max_len = 6
    expected = collections.Counter()
    for _, ids, _ in stored(data_dir, "train"):
        expected.update(zip(ids[:-1], ids[1:]))
    dataset = datasets.pretrain_dataset(data_dir, "train", 32, max_len=max_len, shuffle=True,
                                        seed=3, windows="all")
    seen, examples = collections.Counter(), 0
    for x, y, w in as_numpy(dataset):
        assert x.shape[1] == max_len
        examples += len(x)
        for row_x, row_y, row_w in zip(x, y, w):
            for t in np.flatnonzero(row_w):
                if row_x[t] > 0:  # (the first item of a sequence is predicted from padding)
                    seen[(int(row_x[t]), int(row_y[t]))] += 1
    assert examples == datasets.count_windows(data_dir, "train", max_len)
    assert examples > len(stored(data_dir, "train"))  # sequences were longer than a window
    assert seen == expected
    last = datasets.pretrain_dataset(data_dir, "train", 32, max_len=max_len, shuffle=False)
    assert sum(len(b[0]) for b in as_numpy(last)) == len(stored(data_dir, "train"))
    with pytest.raises(ValueError, match="windows"):
        datasets.pretrain_dataset(data_dir, "train", 32, windows="every")
