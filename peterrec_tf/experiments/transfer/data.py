"""The downstream data of the transfer comparison and its scoring: each task's splits read
once, sampled-ranking candidates fixed by the evaluation seed, the simple baselines, a
saved model's scores on framed histories, and the limited-data subsets."""

import collections
import json
import math
import os
import shutil

import numpy as np

from peterrec_tf.experiments import stats


def read_split(data_dir, split):
    """{"users", "items", "truth"} of one split, in file order (item ids as int arrays)."""
    import tensorflow as tf

    from pipelines import inputs, schema

    meta = inputs.read_metadata(data_dir)
    key = schema.LABEL if meta["task"] == "classify" else schema.TARGET
    users, items, truth = [], [], []
    for path in inputs.shard_files(data_dir, split):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            feature = tf.train.Example.FromString(record.numpy()).features.feature
            users.append(feature[schema.USER_ID].bytes_list.value[0].decode("utf-8"))
            items.append(np.array(feature[schema.ITEM_IDS].int64_list.value, dtype=np.int64))
            truth.append(feature[key].int64_list.value[0])
    return {"users": users, "items": items, "truth": np.array(truth, dtype=np.int64)}


class TaskData:
    """One downstream dataset read once: splits, candidates fixed by the evaluation seed."""

    def __init__(self, data_dir, eval_seed, num_candidates, exclude_other_targets):
        from pipelines import inputs

        self.data_dir = data_dir
        self.meta = inputs.read_metadata(data_dir)
        self.task = self.meta["task"]
        self.splits = {s: read_split(data_dir, s) for s in ("train", "validation", "test")}
        self.eval_seed, self.exclude = eval_seed, exclude_other_targets
        self.num_outputs = (self.meta["num_targets"] if self.task == "item_rec"
                            else self.meta["num_classes"])
        # every example needs num_candidates - 1 negatives after its exclusions
        most = max([max(collections.Counter(self.splits[s]["users"]).values(), default=1)
                    for s in ("validation", "test")])
        self.num_candidates = max(2, min(num_candidates, self.num_outputs - 1 - (
            most if exclude_other_targets else 1) + 1))
        self._candidates, self._batches = {}, {}

    def candidates(self, split):
        if split not in self._candidates:
            data = self.splits[split]
            self._candidates[split] = stats.sample_candidates(
                data["truth"], data["users"], self.num_outputs, self.num_candidates,
                self.eval_seed, self.exclude)
        return self._candidates[split]

    def batches(self, split, framing):
        """A split's histories framed by `framing` (the model's own), built once."""
        key = (split, json.dumps(framing.get_config(), sort_keys=True))
        if key not in self._batches:
            self._batches[key] = frame_batches(self.splits[split]["items"], framing)
        return self._batches[key]

    def groups(self, split):
        """Per example: the index of its user (bootstrap resamples users)."""
        return np.unique(self.splits[split]["users"], return_inverse=True)[1]

    def evaluate(self, split, scores):
        """(metrics, per-example arrays) of `[n, outputs]` scores on a split."""
        data = self.splits[split]
        if self.task == "classify":
            pred = np.argmax(scores, axis=1)
            return stats.classification_metrics(data["truth"], pred), {"pred": pred}
        sampled = stats.sampled_ranks(scores, self.candidates(split))
        full = stats.full_ranks(scores, data["truth"], data["users"], self.exclude)
        metrics = {}
        for k in stats.KS:
            for name, gains in stats.ranking_gains(sampled, k).items():
                metrics[name] = float(gains.mean())
            for name, gains in stats.ranking_gains(full, k).items():
                metrics["full_" + name] = float(gains.mean())
        return metrics, {"sampled_ranks": sampled, "full_ranks": full}


def baseline_scores(spec, data, split):
    """(`[n, outputs]` scores, details) of a simple baseline fitted on the train split."""
    train, n = data.splits["train"], len(data.splits[split]["truth"])
    if spec == "majority":
        top = int(np.bincount(train["truth"], minlength=data.num_outputs).argmax())
        scores = np.zeros([n, data.num_outputs])
        scores[:, top] = 1.0
        return scores, {"most_frequent": top}
    if spec == "popularity":
        return stats.popularity_scores(train["truth"], data.num_outputs, n), {
            "ranks": "target count in the training split; ties count against the true target"}
    bags = stats.bag_of_items(train["items"], data.meta["num_items"])
    alpha, cv = stats.choose_alpha(bags, train["truth"], data.num_outputs, seed=data.eval_seed)
    model = stats.NaiveBayes(alpha).fit(bags, train["truth"], data.num_outputs)
    scores = model.scores(stats.bag_of_items(data.splits[split]["items"], data.meta["num_items"]))
    return scores, {"alpha": alpha, "cv_accuracy": {str(a): v for a, v in cv.items()},
                    "cv": "5-fold on training users"}


def scorer(model):
    """One traced scoring function per model (a new tf.function per call would retrace)."""
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def frame_batches(items, framing, batch_size=256):
    """Unpadded histories framed as the model reads them (`peterrec_tf.data.framing`), in batches."""
    import tensorflow as tf

    return [framing.frame(tf.ragged.constant(
        [list(i) for i in items[start:start + batch_size]], dtype=tf.int64))
        for start in range(0, len(items), batch_size)]


def score_model(model, batches, call=None):
    """`[n, outputs]` scores of a fine-tuned model on framed batches."""
    call = call or scorer(model)
    out = [call(x).numpy() for x in batches]
    return np.concatenate(out) if out else np.zeros([0, 1])


def make_subset(data_dir, out_dir, fraction, seed):
    """A copy of a downstream dataset whose train split keeps `fraction` of its users
    (chosen by `seed`, all of a chosen user's instances); validation/test unchanged."""
    import tensorflow as tf

    from pipelines import inputs, metadata_checksum, schema
    from pipelines.writer import shard_name, shard_record

    if os.path.exists(os.path.join(out_dir, "metadata.json")):
        return out_dir
    records = []
    for path in inputs.shard_files(data_dir, "train"):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            raw = record.numpy()
            user = tf.train.Example.FromString(raw).features.feature[schema.USER_ID]
            records.append((user.bytes_list.value[0].decode("utf-8"), raw))
    users = sorted({u for u, _ in records})
    keep = set(np.random.default_rng([seed, 7]).permutation(users)[
        :max(1, int(math.ceil(fraction * len(users))))].tolist())
    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(os.path.join(data_dir, "vocab"), os.path.join(tmp, "vocab"))
    for split in ("validation", "test"):
        for path in inputs.shard_files(data_dir, split):
            shutil.copy(path, tmp)
    kept = [raw for u, raw in records if u in keep]
    with tf.io.TFRecordWriter(os.path.join(tmp, shard_name("train", 0, 1)), "GZIP") as writer:
        for raw in kept:
            writer.write(raw)
    meta = inputs.read_metadata(data_dir)
    meta["splits"] = dict(meta["splits"], train=len(kept))
    if "shards" in meta:  # what readers verify: the new train shard, the copied others
        meta["shards"] = {name: entry for name, entry in meta["shards"].items()
                          if not name.startswith("train-")}
        meta["shards"][shard_name("train", 0, 1)] = shard_record(
            os.path.join(tmp, shard_name("train", 0, 1)), len(kept))
    meta["fingerprint"] = f"{meta.get('fingerprint')}-users{fraction}-seed{seed}"
    meta["subset"] = {"of": os.path.abspath(data_dir), "fraction_of_train_users": fraction,
                      "users": len(keep), "of_users": len(users), "seed": seed}
    meta = metadata_checksum.sealed(tmp, meta)  # its content changed: checksummed anew
    with open(os.path.join(tmp, "metadata.json"), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=2, sort_keys=True)
    os.replace(tmp, out_dir)
    return out_dir
