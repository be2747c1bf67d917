"""Evaluation statistics for the transfer report, in NumPy only.

Per-example metrics from score matrices (the project's pessimistic tie rule: every
competitor scoring >= the true item ranks above it), sampled-ranking candidates fixed
by an evaluation seed (never the training seed), the simple baselines (popularity
ranking, multinomial naive Bayes on a bag of items with its smoothing chosen by
cross-validation on training users), classification metrics for imbalanced classes
(balanced accuracy, macro-F1) and confidence intervals: bootstrap over test users only
(the trained models held fixed), two-level bootstrap over training seeds and test users
(both sources of noise), and a normal combination of a stored user-only interval with the
seed variance for reports whose per-example outputs were not kept.
"""

import statistics
import zlib

import numpy as np

KS = (5, 10)


# ---------------------------------------------------------------- ranking

def example_rng(eval_seed, user, target):
    """A generator that depends only on (evaluation seed, user id, true target)."""
    key = zlib.crc32(str(user).encode("utf-8"))
    return np.random.default_rng([int(eval_seed), key, int(target)])


def sample_candidates(truth, users, num_targets, num_candidates, eval_seed,
                      exclude_other_targets=True):
    """`[n, num_candidates]` target ids, the true one in column 0, then distinct negatives
    drawn uniformly from ids 1..num_targets-1 minus the true id and (by default) minus the
    user's other held-out targets in the same split. Fixed by `eval_seed`: the same for
    every method and training seed."""
    truth = np.asarray(truth, dtype=np.int64)
    others = {}
    if exclude_other_targets:
        for user, target in zip(users, truth):
            others.setdefault(user, set()).add(int(target))
    rows = []
    for user, target in zip(users, truth):
        banned = {0, int(target)} | (others.get(user, set()) if exclude_other_targets else set())
        pool = np.array([i for i in range(num_targets) if i not in banned], dtype=np.int64)
        if len(pool) < num_candidates - 1:
            raise ValueError(f"{num_candidates} candidates need {num_candidates - 1} negatives; "
                             f"only {len(pool)} targets are left for user {user}")
        pick = example_rng(eval_seed, user, target).choice(len(pool), num_candidates - 1,
                                                           replace=False)
        rows.append(np.concatenate([[target], pool[np.sort(pick)]]))
    return np.stack(rows) if rows else np.zeros([0, num_candidates], np.int64)


def sampled_ranks(scores, candidates):
    """0-based rank of column 0 among the other candidates (ties count against it)."""
    scores = np.asarray(scores, dtype=np.float64)
    picked = np.take_along_axis(scores, candidates, axis=1)
    return (picked[:, 1:] >= picked[:, :1]).sum(axis=1)


def full_ranks(scores, truth, users=None, exclude_other_targets=True):
    """0-based rank of the true id against every id 1..N-1 (id 0 is padding); with
    `exclude_other_targets`, the user's other held-out targets are not competitors
    (the "filtered" protocol)."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    rows = np.arange(len(truth))
    beaten = scores >= scores[rows, truth][:, None]
    beaten[:, 0] = False
    beaten[rows, truth] = False
    if exclude_other_targets and users is not None:
        others = {}
        for user, target in zip(users, truth):
            others.setdefault(user, set()).add(int(target))
        for row, user in enumerate(users):
            for target in others[user]:
                beaten[row, target] = False
    return beaten.sum(axis=1)


def ranking_gains(ranks, k):
    """{hr@k, mrr@k, ndcg@k}: per-example gains `[n]` of 0-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = (ranks < k).astype(np.float64)
    return {f"hr@{k}": hit, f"mrr@{k}": hit / (ranks + 1.0),
            f"ndcg@{k}": hit * np.log(2.0) / np.log(ranks + 2.0)}


# ---------------------------------------------------------------- classification

def balanced_accuracy(truth, pred):
    """Mean recall over the classes present in `truth`."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    classes = np.unique(truth)
    return float(np.mean([(pred[truth == c] == c).mean() for c in classes])) if len(classes) else 0.0


def macro_f1(truth, pred):
    """Unweighted mean F1 over the classes present in `truth` (F1 = 0 where a class is
    never predicted correctly)."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    scores = []
    for c in np.unique(truth):
        tp = np.sum((pred == c) & (truth == c))
        denominator = np.sum(pred == c) + np.sum(truth == c)
        scores.append(2.0 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def classification_metrics(truth, pred):
    truth, pred = np.asarray(truth), np.asarray(pred)
    return {"accuracy": float((truth == pred).mean()) if len(truth) else 0.0,
            "balanced_accuracy": balanced_accuracy(truth, pred),
            "macro_f1": macro_f1(truth, pred)}


# ---------------------------------------------------------------- baselines

def popularity_scores(train_targets, num_targets, n):
    """`[n, num_targets]`: every example scores target j by its count in the training split."""
    counts = np.bincount(np.asarray(train_targets, dtype=np.int64), minlength=num_targets)
    return np.tile(counts[None, :num_targets].astype(np.float64), [n, 1])


def bag_of_items(histories, num_items):
    """`[n, num_items]` counts of each item id in each history (id 0, padding/OOV, dropped)."""
    bags = np.zeros([len(histories), num_items], dtype=np.float64)
    for row, items in enumerate(histories):
        np.add.at(bags[row], np.asarray(items, dtype=np.int64), 1.0)
    bags[:, 0] = 0.0
    return bags


class NaiveBayes:
    """Multinomial naive Bayes on bags of items with additive smoothing `alpha`."""

    def __init__(self, alpha=1.0):
        self.alpha = float(alpha)

    def fit(self, bags, labels, num_classes):
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        self.log_prior = np.log((counts + 1.0) / (counts.sum() + num_classes))
        totals = np.zeros([num_classes, bags.shape[1]])
        np.add.at(totals, labels, bags)
        smoothed = totals + self.alpha
        self.log_likelihood = np.log(smoothed / smoothed.sum(axis=1, keepdims=True))
        return self

    def scores(self, bags):
        return bags @ self.log_likelihood.T + self.log_prior[None, :]

    def predict(self, bags):
        return np.argmax(self.scores(bags), axis=1)


def choose_alpha(bags, labels, num_classes, alphas=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
                 folds=5, seed=0, metric="accuracy"):
    """(best alpha, {alpha: mean validation metric}) by k-fold cross-validation on the
    given (training) users only; ties go to the larger alpha (the smoother model)."""
    labels = np.asarray(labels, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    parts = np.array_split(order, min(folds, len(labels)))
    results = {}
    for alpha in alphas:
        values = []
        for held in parts:
            train = np.setdiff1d(order, held)
            model = NaiveBayes(alpha).fit(bags[train], labels[train], num_classes)
            values.append(classification_metrics(labels[held], model.predict(bags[held]))[metric])
        results[alpha] = float(np.mean(values))
    best = max(alphas, key=lambda a: (round(results[a], 12), a))
    return best, results


# ---------------------------------------------------------------- uncertainty

def sample_std(values):
    """Sample standard deviation (n - 1); None for fewer than two values."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1)) if len(values) > 1 else None


def user_resamples(groups, resamples=1000, seed=0):
    """Bootstrap resamples of the test users: a list of `[n]` example-index arrays, each
    drawing users with replacement and taking all of a drawn user's examples."""
    groups = np.asarray(groups)
    users, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == u) for u in range(len(users))]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(users), size=[resamples, len(users)])
    return [np.concatenate([members[u] for u in draw]) for draw in draws]


def bootstrap_ci(statistic, groups, resamples=1000, seed=0, level=0.95):
    """(point, low, high): `statistic(index_array)` on all examples and the percentile
    interval of it over user-level bootstrap resamples. Call it with a statistic of a
    difference of two methods (same indices) for a paired interval."""
    everything = np.arange(len(groups))
    point = float(statistic(everything))
    values = np.array([statistic(idx) for idx in user_resamples(groups, resamples, seed)])
    tail = (1.0 - level) / 2.0
    return point, float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def two_level_resamples(num_seeds, groups, resamples=1000, seed=0):
    """Two-level bootstrap resamples: a list of (seed indices `[num_seeds]`, example indices)
    pairs. Training seeds are drawn with replacement first, then test users with
    replacement (all of a drawn user's examples), independently; the user draws are the
    ones `user_resamples(groups, resamples, seed)` makes, so the user-only interval and
    this one see the same users."""
    if num_seeds < 1:
        raise ValueError("a two-level bootstrap needs at least one training seed")
    seeds = np.random.default_rng([int(seed), 2]).integers(0, num_seeds,
                                                           size=[resamples, num_seeds])
    return list(zip(seeds, user_resamples(groups, resamples, seed)))


def two_level_bootstrap_ci(outcomes, groups, resamples=1000, seed=0, level=0.95):
    """(point, low, high) of the mean of `outcomes` `[seeds, examples]` (per training seed,
    per test example; a paired difference of two methods is their outcome matrices'
    difference, row by row on the same seeds): the point is the mean over seeds and
    examples, the interval the percentiles of that mean over two-level resamples (seeds,
    then users), so it covers training noise as well as the choice of test users."""
    outcomes = np.asarray(outcomes, dtype=np.float64)
    if outcomes.ndim != 2 or outcomes.shape[1] != len(groups):
        raise ValueError(f"outcomes must be [seeds, {len(groups)} examples], got {outcomes.shape}")
    values = np.array([outcomes[:, users].mean(axis=1)[seeds].mean() for seeds, users in
                       two_level_resamples(len(outcomes), groups, resamples, seed)])
    tail = (1.0 - level) / 2.0
    return (float(outcomes.mean()), float(np.quantile(values, tail)),
            float(np.quantile(values, 1.0 - tail)))


def seed_user_normal_ci(point, user_ci, seed_values, level=0.95):
    """(low, high, details): a normal interval around `point` whose variance adds the two
    sources of noise: the test users' (the half-width of `user_ci`, a user-only bootstrap
    interval of the seed mean, read as z * standard error) and the training seeds'
    (sample variance (n-1) of `seed_values`, the per-seed values or paired per-seed
    differences, divided by their number). For results whose per-example outputs per seed
    were not kept, where `two_level_bootstrap_ci` cannot run; with one seed the seed term
    is unknown and None is returned."""
    seed_values = np.asarray(seed_values, dtype=np.float64)
    spread = sample_std(seed_values)
    if spread is None:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2.0)
    user_se = (user_ci[1] - user_ci[0]) / (2.0 * z)
    seed_se = spread / np.sqrt(len(seed_values))
    half = z * float(np.hypot(user_se, seed_se))
    return (float(point - half), float(point + half),
            {"user_se": float(user_se), "seed_se": float(seed_se),
             "z": float(point / np.hypot(user_se, seed_se)) if half else None})
