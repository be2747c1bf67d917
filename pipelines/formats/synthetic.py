"""Synthetic behaviour data with planted structure, so pre-training and transfer learn.

Items fall into latent clusters; each cluster has a fixed successor chain, so the next
item is predictable from the current one (next-item structure). Each user prefers two
clusters and switches between them. Downstream tasks depend on those preferences only
through the behaviour sequence:
  `attribute` (2 classes) = whether one of the user's clusters is among the first 30%
                            of cluster ids (about balanced), 10% label noise;
  `segment` (4 classes)   = the user's lowest cluster id mod 4, 10% noise;
  `coldrec` (item_rec)    = up to 3 target-domain items drawn from the targets tied to the
                            user's clusters (a cold-start target domain).
"""

import numpy as np

from pipelines.dataset import PreparedDataset, Record, by_user_split, leave_last_out
from pipelines.formats import DataFormat, Flag, register
from pipelines.vocab import Vocabulary


def generate(items, seed, num_users=2000, num_items=500, num_clusters=10, min_len=10,
             max_len=40, stay=0.85, num_targets=100, noise=0.1):
    rng = np.random.RandomState(seed)
    if num_items < 2 * num_clusters:
        raise ValueError("--synthetic_items must be at least twice --synthetic_clusters")
    cluster_of = rng.randint(0, num_clusters, size=num_items)
    members = [np.flatnonzero(cluster_of == c) for c in range(num_clusters)]
    members = [m if len(m) else np.array([c]) for c, m in enumerate(members)]
    successor = np.zeros(num_items, dtype=int)
    for m in members:
        order = rng.permutation(m)
        successor[order] = np.roll(order, -1)
    target_cluster = rng.randint(0, num_clusters, size=num_targets)
    # vectorised over users (a million users take seconds): one step of every walk at a time
    order = np.concatenate(members)
    offsets = np.cumsum([0] + [len(m) for m in members])[:-1]
    sizes = np.array([len(m) for m in members])
    prefs = np.stack([rng.choice(num_clusters, size=2, replace=False) for _ in range(num_users)])
    lengths = rng.randint(min_len, max_len + 1, size=num_users)
    users = np.arange(num_users)

    def member_of(clusters):
        return order[offsets[clusters] + (rng.rand(len(clusters)) * sizes[clusters]).astype(int)]

    walks = np.zeros((num_users, max_len), dtype=np.int64)
    current = member_of(prefs[:, 0])
    for t in range(max_len):
        walks[:, t] = current
        stay_here = rng.rand(num_users) < stay
        jump_to = prefs[users, rng.randint(0, 2, size=num_users)]
        current = np.where(stay_here, successor[current], member_of(jump_to))
    item_ids = np.array(items.ids([f"i{i}" for i in range(num_items)]), dtype=np.int64)
    ids = item_ids[walks]
    sequences = [(f"u{user}", ids[user, :lengths[user]].tolist()) for user in range(num_users)]
    pretrain, stats = leave_last_out(sequences)
    datasets = [PreparedDataset("pretrain", pretrain, items, name="pretrain",
                                stats=dict(stats, users=num_users))]

    def noisy(value, classes):
        return int(rng.randint(classes)) if rng.rand() < noise else int(value)

    low = max(1, int(round(0.3 * num_clusters)))
    for name, classes, rule in (("attribute", 2, lambda p: int(min(p) < low)),
                                ("segment", 4, lambda p: min(p) % 4)):
        records = [Record(seq, user, label=noisy(rule(p), classes))
                   for (user, seq), p in zip(sequences, prefs)]
        datasets.append(PreparedDataset("classify", by_user_split(records, seed), items,
                                        labels=[f"class{c}" for c in range(classes)], name=name,
                                        stats={"instances": len(records), "label_noise": noise}))
    targets = Vocabulary()
    for t in range(num_targets):
        targets.id(f"t{t}")
    records = []
    for (user, seq), pref in zip(sequences, prefs):
        liked = np.flatnonzero(np.isin(target_cluster, pref))
        if not len(liked):
            continue
        for t in rng.choice(liked, size=min(3, len(liked)), replace=False):
            records.append(Record(seq, user, target=int(t) + 1))
    datasets.append(PreparedDataset("item_rec", by_user_split(records, seed), items,
                                    targets=targets, name="coldrec",
                                    stats={"instances": len(records)}))
    return datasets


@register
class Synthetic(DataFormat):
    """No --input: the data are generated from --seed (`generate`); local runner only."""

    name = "synthetic"
    generated = True
    flags = (Flag("integer", "synthetic_users", 2000, "synthetic: number of users."),
             Flag("integer", "synthetic_items", 500, "synthetic: number of items."),
             Flag("integer", "synthetic_clusters", 10, "synthetic: latent item clusters."),
             Flag("integer", "synthetic_min_len", 10, "synthetic: shortest sequence."),
             Flag("integer", "synthetic_max_len", 40, "synthetic: longest sequence."),
             Flag("integer", "synthetic_targets", 100, "synthetic: target-domain items "
                  "(coldrec)."))
    #: options -> `generate`'s keyword arguments
    ARGUMENTS = {"num_users": "num_users", "num_items": "num_items",
                 "num_clusters": "num_clusters", "min_len": "min_len",
                 "max_len_generated": "max_len", "num_targets": "num_targets"}

    def options(self, values):
        return {"num_users": values.synthetic_users, "num_items": values.synthetic_items,
                "num_clusters": values.synthetic_clusters, "min_len": values.synthetic_min_len,
                "max_len_generated": values.synthetic_max_len,
                "num_targets": values.synthetic_targets}

    def read(self, input, items, bad, seed, options):
        return generate(items, seed, **{argument: options[option] for option, argument
                                        in self.ARGUMENTS.items() if option in options})
