"""RecBole's NextItNet on MovieLens-100K: the reference figures for the pre-training target.

What it does
    1. Reads ``../shared/data/ml-100k/u.data`` (relative to the repository root) and writes RecBole
       atomic files (``<work_dir>/dataset/<name>/<name>.inter``) OUTSIDE the repository: the
       MovieLens licence forbids redistribution, so nothing derived from it may enter git.  The
       script refuses a ``--work_dir`` inside the repository.
    2. Trains RecBole 1.2.1's ``NextItNet`` (64 channels, ``dilations: [1, 4]``, ``block_num: 4``
       -> rates 1,4,1,4,1,4,1,4, each block's second conv at twice the rate; kernel 3;
       ``MAX_ITEM_LIST_LENGTH: 50``; CE loss over all items; Adam lr 0.001; train batch 2048;
       ``reg_weight`` 1e-5, RecBole's default for this model) with the leave-one-out split ordered
       by timestamp (``eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user,
       mode: full}``), full ranking, metrics Hit@10 (= HR@10), NDCG@10, MRR@10, early stopping on
       validation NDCG@10 (``stopping_step`` 10).  The test split is evaluated once, with the
       best-validation checkpoint; it is never used for selection.
    3. Prints and writes a JSON (``--output``, default ``<work_dir>/recbole_reference.json``) with
       the test metrics, the best validation epoch and its metrics, every epoch's validation
       metrics, the config, data statistics, a check that RecBole's split equals the project's
       leave-last-out split, the RecBole/torch/numpy versions and the wall time.

RecBole is NOT a dependency of this project.  It runs in its own virtualenv, e.g.::

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0          # pinned: the CPU wheel on this machine's
                                                              # disk; unpinned pulls a multi-GB CUDA build
    /tmp/recbole-venv/bin/pip install --no-deps recbole==1.2.1   # --no-deps: skips ray<=2.6.3 (unused)
    /tmp/recbole-venv/bin/pip install numpy==1.26.4 scipy==1.11.4 pandas==2.1.4 \\
        scikit-learn==1.3.2 colorlog==4.7.2 colorama==0.4.4 tqdm pyyaml tensorboard thop \\
        tabulate texttable psutil plotly

Working set, tested (Python 3.11.7): torch 2.13.0+cpu, recbole 1.2.1, numpy 1.26.4, scipy 1.11.4,
pandas 2.1.4, scikit-learn 1.3.2, colorlog 4.7.2, colorama 0.4.4, tensorboard 2.21.0,
thop 0.1.1.post2209072238, tabulate 0.10.0, texttable 1.7.2, psutil 7.2.2, plotly 7.1.0,
pyyaml 6.0.3, tqdm 4.70.1.  Why the pins:
  * numpy < 2: RecBole's ``Config.compatibility_settings`` assigns ``np.float_``/``np.complex_``/
    ``np.unicode_``, which numpy 2 removed (AttributeError on every ``Config``).
  * ray is not installed: only ``recbole.quick_start`` imports it, and this script does not use
    quick_start (it drives Config / create_dataset / data_preparation / Trainer itself).
  * torch >= 2.6 defaults ``torch.load(weights_only=True)``, which refuses RecBole's checkpoints
    (they pickle the Config); this script reloads the best checkpoint itself with
    ``weights_only=False`` (our own file) instead of ``Trainer.evaluate(load_best_model=True)``.

Run (from the repository root; ~1 CPU thread, be polite on the shared 2-core machine)::

    nice -n 10 /tmp/recbole-venv/bin/python benchmarks/recbole_reference.py \\
        --work_dir /tmp/recbole_ml100k --seed 2020 --epochs 50 --threads 1

``--model=SASRec`` trains RecBole 1.2.1's SASRec with its defaults (2 layers, 2 heads, hidden 64,
inner 256, dropout 0.5, gelu, CE loss) on the same data, split, metrics, optimiser and early
stopping; its kept output is tagged ``sasrec_seed<N>`` (NextItNet's keeps ``seed<N>``).

``--exclude_genres Comedy`` drops the interactions with Comedy movies first, which is what the
project's MovieLens pre-training split contains by default (``pipelines.prepare
--target_genres=Comedy`` keeps those for the cold-start target domain); the default (no
exclusion) is all of u.data.  See benchmarks/RECBOLE_REFERENCE.md for the figures and for how
RecBole builds NextItNet's training instances.
"""

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(REPO_ROOT, "..", "shared", "data", "ml-100k")
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=DEFAULT_DATA, help="ml-100k directory (u.data, u.item).")
    p.add_argument("--work_dir", default=None,
                   help="Where atomic files, checkpoints and logs go; must be outside the repo "
                        "(default: a new temp directory).")
    p.add_argument("--output", default=None, help="JSON path (default <work_dir>/recbole_reference.json).")
    p.add_argument("--seed", type=int, default=2020, help="RecBole seed (init_seed).")
    p.add_argument("--model", default="NextItNet", choices=sorted(MODEL_SETTINGS),
                   help="NextItNet (the flags below) or SASRec (RecBole's defaults for it: 2 "
                        "layers, 2 heads, hidden 64, inner 256, dropout 0.5, gelu, CE loss).")
    p.add_argument("--epochs", type=int, default=50, help="Maximum training epochs.")
    p.add_argument("--stopping_step", type=int, default=10,
                   help="Early stopping: stop after this many + 1 validations without improvement.")
    p.add_argument("--train_batch_size", type=int, default=2048)
    p.add_argument("--eval_batch_size", type=int, default=4096)
    p.add_argument("--learning_rate", type=float, default=0.001)
    p.add_argument("--reg_weight", type=float, default=1e-5, help="RecBole NextItNet default.")
    p.add_argument("--embedding_size", type=int, default=64)
    p.add_argument("--block_num", type=int, default=4)
    p.add_argument("--dilations", default="1,4")
    p.add_argument("--kernel_size", type=int, default=3)
    p.add_argument("--max_len", type=int, default=50, help="MAX_ITEM_LIST_LENGTH.")
    p.add_argument("--exclude_genres", default="",
                   help="Comma-separated genres whose movies' interactions are dropped first "
                        "(e.g. Comedy, to mirror the project's pre-training source domain).")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads.")
    p.add_argument("--max_users", type=int, default=None,
                   help="Smoke test only: keep the users with the N smallest ids.")
    p.add_argument("--time_budget_min", type=float, default=None,
                   help="Stop training after the first epoch that ends past this many minutes "
                        "from the start (the best-validation checkpoint so far is then tested; the "
                        "JSON says so).  Default: no limit (epochs / early stopping decide).")
    p.add_argument("--resume", action="store_true",
                   help="Continue the run whose state is in --work_dir (written after every "
                        "validated epoch: weights, optimiser, early-stopping counters, history and "
                        "every random generator), so a run longer than one sitting goes on where it "
                        "stopped, with the same epochs an uninterrupted run would have had.  "
                        "Refused if the settings differ from the saved run's.")
    args = p.parse_args(argv)
    if args.resume and not args.work_dir:
        p.error("--resume needs the --work_dir of the run to continue")
    return args


RESUME_STATE = "resume_state.pth"
# What must equal the saved run's for a resumed run to be the same run.
RESUME_MUST_MATCH = ("model", "seed", "epochs", "stopping_step", "train_batch_size",
                     "eval_batch_size", "learning_rate", "reg_weight", "embedding_size",
                     "block_num", "dilations", "kernel_size", "max_len", "exclude_genres",
                     "max_users")
# Not compared: --data_dir (the interactions written from it are compared by digest) and
# --threads (epochs 0-1 of the SASRec reference came out identical on 1 and 2 threads; each
# session's count is recorded).


def run_settings(args):
    return {k: getattr(args, k) for k in RESUME_MUST_MATCH}


def save_resume_state(path, state, torch):
    """Write the resume state whole or not at all (a kill mid-write leaves the previous one)."""
    partial = path + ".partial"
    torch.save(state, partial, pickle_protocol=4)
    os.replace(partial, path)


def file_digest(path):
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


# ---------------------------------------------------------------- data conversion (no RecBole)

def read_ratings(data_dir, exclude_genres):
    """[(user, item, rating, timestamp)] from u.data, minus items of `exclude_genres`."""
    excluded = set()
    if exclude_genres:
        unknown = set(exclude_genres) - set(GENRES)
        if unknown:
            raise SystemExit(f"unknown genre(s) {sorted(unknown)}; MovieLens genres: {GENRES}")
        with open(os.path.join(data_dir, "u.item"), encoding="latin-1") as handle:
            for line in handle:
                fields = line.rstrip("\n").split("|")
                if len(fields) == 5 + len(GENRES) and any(
                        flag == "1" and g in exclude_genres for g, flag in zip(GENRES, fields[5:])):
                    excluded.add(int(fields[0]))
    rows = []
    with open(os.path.join(data_dir, "u.data")) as handle:
        for line in handle:
            if not line.strip():
                continue
            user, item, rating, stamp = (int(x) for x in line.split("\t"))
            if item not in excluded:
                rows.append((user, item, rating, stamp))
    return rows, len(excluded)


def order_and_tie_stats(rows):
    """Sort rows by (user, timestamp, item): ties in time broken by movie id, as the project's
    pipelines/formats/movielens.py does.  RecBole only uses stable sorts on (user, time), so it
    keeps this file order for ties.  It also stores the timestamp as float32 (RecBole's FLOAT
    fields are torch.FloatTensor), which rounds 9-digit Unix times to multiples of 64 s and so
    creates extra ties; stable sorting on a non-decreasing function of the true time keeps the
    pre-sorted order, so the order RecBole uses is exactly (user, true timestamp, item id)."""
    import numpy as np
    rows = sorted(rows, key=lambda r: (r[0], r[3], r[1]))
    by_user = collections.defaultdict(list)
    for user, item, _, stamp in rows:
        by_user[user].append((stamp, item))
    tie_pairs = f32_merged = test_tied = valid_tied = 0
    for seq in by_user.values():
        stamps = np.array([s for s, _ in seq], dtype=np.int64)
        f32 = stamps.astype(np.float32)
        tie_pairs += int(np.sum(stamps[1:] == stamps[:-1]))
        f32_merged += int(np.sum((f32[1:] == f32[:-1]) & (stamps[1:] != stamps[:-1])))
        if len(seq) >= 2 and stamps[-1] == stamps[-2]:
            test_tied += 1
        if len(seq) >= 3 and (stamps[-2] == stamps[-3] or stamps[-2] == stamps[-1]):
            valid_tied += 1
    stats = {
        "adjacent_same_timestamp_pairs": tie_pairs,
        "adjacent_pairs_merged_only_by_float32": f32_merged,
        "users_whose_test_target_shares_its_timestamp_with_the_previous_item": test_tied,
        "users_whose_validation_target_shares_its_timestamp_with_a_neighbour": valid_tied,
    }
    return rows, by_user, stats


def write_atomic(rows, work_dir, name):
    folder = os.path.join(work_dir, "dataset", name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.inter")
    with open(path, "w") as handle:
        handle.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item, rating, stamp in rows:
            handle.write(f"{user}\t{item}\t{rating}\t{stamp}\n")
    return path


# ---------------------------------------------------------------- RecBole run

#: SASRec's settings are RecBole 1.2.1's defaults for it (recbole/properties/model/SASRec.yaml),
#: hidden_size = --embedding_size.
MODEL_SETTINGS = {
    "NextItNet": lambda args: {
        "embedding_size": args.embedding_size, "block_num": args.block_num,
        "dilations": [int(d) for d in args.dilations.split(",")],
        "kernel_size": args.kernel_size, "reg_weight": args.reg_weight, "loss_type": "CE"},
    "SASRec": lambda args: {
        "n_layers": 2, "n_heads": 2, "hidden_size": args.embedding_size, "inner_size": 256,
        "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu",
        "layer_norm_eps": 1e-12, "initializer_range": 0.02, "loss_type": "CE"},
}


def recbole_config(args, work_dir, name):
    return {
        "model": args.model, "dataset": name,
        "data_path": os.path.join(work_dir, "dataset"),
        "checkpoint_dir": os.path.join(work_dir, "saved"),
        # data
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "filter_inter_by_user_or_item": True, "rm_dup_inter": None, "normalize_all": False,
        # model
        **MODEL_SETTINGS[args.model](args),
        # training
        "epochs": args.epochs, "train_batch_size": args.train_batch_size,
        "learner": "adam", "learning_rate": args.learning_rate, "weight_decay": 0.0,
        "train_neg_sample_args": None, "eval_step": 1, "stopping_step": args.stopping_step,
        "clip_grad_norm": None,
        # evaluation
        "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO",
                      "mode": "full"},
        "repeatable": True,
        "metrics": ["Hit", "NDCG", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "valid_metric_bigger": True, "eval_batch_size": args.eval_batch_size,
        "metric_decimal_place": 6,
        # environment
        "seed": args.seed, "reproducibility": True, "use_gpu": False, "device": "cpu",
        "worker": 0, "show_progress": False, "log_wandb": False, "state": "INFO",
        "save_dataset": False, "save_dataloaders": False, "shuffle": True,
    }


def check_split(dataset, train, valid, test, by_user, max_len):
    """Compare RecBole's instances with the project's leave-last-out split:
    train = seq[:-2], validation = seq[:-2] -> seq[-2], test = seq[:-1] -> seq[-1]
    (RecBole keeps the most recent max_len items of each input)."""
    def decode(ds):
        inter = ds.inter_feat
        users = dataset.id2token("user_id", inter["user_id"].numpy())
        targets = dataset.id2token("item_id", inter["item_id"].numpy())
        lengths = inter["item_length"].numpy()
        lists = inter["item_id_list"].numpy()
        return users, targets, lengths, lists

    report = {}
    for split, ds, cut in (("validation", valid, 2), ("test", test, 1)):
        users, targets, lengths, lists = decode(ds)
        bad_target = bad_input = 0
        for u, t, n, row in zip(users, targets, lengths, lists):
            items = [i for _, i in by_user[int(u)]]
            target = items[-cut]
            history = items[:-cut][-max_len:]
            got = [int(x) for x in dataset.id2token("item_id", row[:n])]
            bad_target += int(int(t) != target)
            bad_input += int(got != history)
            if n < len(row) and row[n:].any():
                bad_input += 1  # padding must be zeros on the right
        report[split] = {"instances": int(len(users)), "target_mismatches": bad_target,
                         "input_mismatches": bad_input}
    users, targets, lengths, _ = decode(train)
    expected = sum(max(len(seq) - 3, 0) for seq in by_user.values())
    report["train"] = {"instances": int(len(users)),
                       "expected_all_prefixes_of_seq[:-2]": int(expected),
                       "max_input_length": int(lengths.max()), "min_input_length": int(lengths.min())}
    report["ok"] = (report["validation"]["target_mismatches"] == 0
                    and report["validation"]["input_mismatches"] == 0
                    and report["test"]["target_mismatches"] == 0
                    and report["test"]["input_mismatches"] == 0
                    and report["train"]["instances"] == expected)
    return report


def per_user_test_ranks(trainer, test_data, dataset, torch):
    """{user token: rank of the test item} under RecBole's own full-sort scores (padding at
    -inf), ranked as this project's ``metrics.true_ranks`` does: 1 + the competitors scoring
    at or above the true item (ties against it).  For a paired, per-user comparison with this
    project's models on the same split; its means are reported beside RecBole's figures."""
    import math

    ranks = {}
    trainer.model.eval()
    with torch.no_grad():
        for batched in test_data:
            interaction, scores, positive_u, positive_i = trainer._full_sort_batch_eval(batched)
            true = scores[positive_u, positive_i]
            rows = scores[positive_u]
            # NaN competitors count above the true item, as metrics.true_ranks counts them
            at_or_above = ((rows >= true[:, None]) | rows.isnan()).sum(dim=1) - 1  # not itself
            users = dataset.id2token("user_id", interaction["user_id"][positive_u].numpy())
            for user, rank, score in zip(users, at_or_above.tolist(), true.tolist()):
                ranks[str(user)] = int(rank) + 1 if math.isfinite(score) else len(scores[0])
    return ranks


def figures_from_ranks(ranks, k=10):
    """HR/NDCG/MRR@k from the per-user ranks, with the paired table's own per-user gain."""
    from benchmarks.quality_tables import per_user_gain  # stdlib only: runs in RecBole's venv

    values = list(ranks.values())
    return {f"{metric.upper()}@{k}": sum(per_user_gain(r, metric, k) for r in values) / len(values)
            for metric in ("hr", "ndcg", "mrr")}


class TimeBudgetExceeded(Exception):
    pass


def kept_output_tag(args):
    """The kept output's tag, in the one form the tables also parse
    (`scale_tables.recbole_tag`): ``seed<N>`` for NextItNet, ``<model>_seed<N>`` for any
    other model, so that no model's run becomes another model's newest output."""
    sys.path.insert(0, REPO_ROOT)
    from benchmarks.scale_tables import recbole_tag  # stdlib only: runs in RecBole's venv

    return recbole_tag(args.model, args.seed)


def run(args):
    started = time.time()
    sys.path.insert(0, REPO_ROOT)
    from benchmarks.raw_output import Run  # stdlib only: runs in RecBole's environment too
    # Created before training: the commit, dirty flag and first load average describe the
    # tree and machine the run started on, whatever is edited while it trains.
    kept = Run("recbole_reference", tag=kept_output_tag(args),
               note="one RecBole process; load averages read before and after it")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    work_dir = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="recbole_ml100k_"))
    if inside(work_dir, REPO_ROOT):
        raise SystemExit(f"--work_dir {work_dir} is inside the repository; MovieLens-derived files "
                         "must stay out of git: choose a directory outside it")
    os.makedirs(work_dir, exist_ok=True)
    output = os.path.abspath(args.output or os.path.join(work_dir, "recbole_reference.json"))
    if inside(output, REPO_ROOT):
        raise SystemExit("--output must be outside the repository (it names MovieLens figures "
                         "only, but keep run artefacts out of git; copy numbers into the .md)")

    exclude = [g for g in args.exclude_genres.split(",") if g]
    rows, n_excluded_items = read_ratings(args.data_dir, exclude)
    if args.max_users:
        keep = set(sorted({r[0] for r in rows})[:args.max_users])
        rows = [r for r in rows if r[0] in keep]
    rows, by_user, tie_stats = order_and_tie_stats(rows)
    name = "ml100k_ref" + ("_no_" + "_".join(g.lower().replace("'", "") for g in exclude)
                           if exclude else "")
    inter_path = write_atomic(rows, work_dir, name)

    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model import sequential_recommender

    model_class = getattr(sequential_recommender, args.model)
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    os.chdir(work_dir)  # RecBole writes ./log and ./log_tensorboard relative to the cwd
    config = Config(model=model_class, dataset=name, config_dict=recbole_config(args, work_dir, name))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)

    dataset = create_dataset(config)
    data_stats = {
        "users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1),
        "interactions": int(len(dataset.inter_feat)),
        "interactions_in_u.data_kept": len(rows), "excluded_genres": exclude,
        "items_excluded_by_genre": n_excluded_items, "max_users": args.max_users, "atomic_file": inter_path,
        "ranked_candidates": int(dataset.item_num - 1),
    }
    train_data, valid_data, test_data = data_preparation(config, dataset)
    split_check = check_split(dataset, train_data.dataset, valid_data.dataset, test_data.dataset,
                              by_user, args.max_len)
    print("split check:", json.dumps(split_check), flush=True)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = model_class(config, train_data._dataset).to(config["device"])
    n_params = int(sum(p.numel() for p in model.parameters()))
    trainer = Trainer(config, model)

    history = []
    original_valid_epoch = trainer._valid_epoch

    def valid_epoch(valid_data, show_progress=False):
        score, result = original_valid_epoch(valid_data, show_progress=show_progress)
        history.append({"epoch": len(history), "valid": {k: float(v) for k, v in result.items()},
                        "train_loss": float(trainer.train_loss_dict[len(history)]),
                        "elapsed_s": round(time.time() - started, 1),
                        "session": len(sessions) - 1})
        print(f"epoch {history[-1]['epoch']}: loss {history[-1]['train_loss']:.4f} "
              f"valid {history[-1]['valid']}", flush=True)
        return score, result

    progress_path = output + ".progress"

    def after_validation(epoch_idx, valid_score):
        # called by Trainer.fit after the checkpoint of an improving epoch is saved
        with open(progress_path, "w") as handle:
            json.dump({"history": history, "data": data_stats, "split_check": split_check}, handle,
                      indent=1)
        # Trainer.fit has updated the early-stopping counters for this epoch and will stop
        # after this call if they say so: a run resumed from here takes the same decision.
        write_resume_state(epoch_idx)
        will_go_on = epoch_idx + 1 < args.epochs and trainer.cur_step <= args.stopping_step
        if will_go_on and args.time_budget_min and time.time() - started > 60 * args.time_budget_min:
            raise TimeBudgetExceeded(epoch_idx)

    trainer._valid_epoch = valid_epoch
    train_start = time.time()
    resume_path = os.path.join(work_dir, RESUME_STATE)
    inter_digest = file_digest(inter_path)
    sessions = []
    if not args.resume and os.path.exists(resume_path):
        raise SystemExit(f"{resume_path} holds a run: --resume continues it; to start over, "
                         "choose another --work_dir (this one's training would be lost)")
    finished_before = None  # a state saved at the last epoch but not yet marked finished
    if args.resume:
        if not os.path.exists(resume_path):
            raise SystemExit(f"--resume: no {resume_path}; the run to continue writes it after "
                             "its first validated epoch")
        state = torch.load(resume_path, map_location="cpu", weights_only=False)
        differ = {k: (state["settings"].get(k), v) for k, v in run_settings(args).items()
                  if state["settings"].get(k) != v}
        if differ:
            raise SystemExit(f"--resume: {resume_path} was written by a run with other settings "
                             f"(saved, now): {differ}")
        if state["inter_digest"] != inter_digest:
            raise SystemExit(f"--resume: the interactions written to {inter_path} differ from "
                             "the saved run's (another u.data?)")
        model.load_state_dict(state["state_dict"])
        model.load_other_parameter(state.get("other_parameter"))
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.start_epoch = state["epoch"] + 1
        trainer.cur_step = state["cur_step"]
        trainer.best_valid_score = state["best_valid_score"]
        trainer.best_valid_result = state["best_valid_result"]
        trainer.train_loss_dict.update(state["train_loss_dict"])
        # the checkpoint's name, under this run's checkpoint_dir: the work_dir may have moved
        trainer.saved_model_file = os.path.join(config["checkpoint_dir"],
                                                os.path.basename(state["saved_model_file"]))
        history.extend(state["history"])
        sessions.extend(state["sessions"])
        train_data.generator.set_state(state["rng"]["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        import random
        random.setstate(state["rng"]["python"])
        print(f"resumed from {resume_path}: epoch {trainer.start_epoch}, "
              f"{trainer.cur_step} validations since the best", flush=True)
        if state.get("finished"):
            raise SystemExit(f"--resume: the run in {work_dir} already finished "
                             f"({state['finished']}); nothing to continue")
        # Stopped after the state of its last epoch was saved, before it was marked finished:
        # the uninterrupted run stopped there, so this one trains no further (Trainer.fit
        # would train on past an early stop, or overwrite the best checkpoint at the limit).
        if trainer.cur_step > args.stopping_step:
            finished_before = "early_stopping"
        elif trainer.start_epoch >= args.epochs:
            finished_before = "epoch_limit"
    trained_before = sum(s["train_s"] for s in sessions)
    sessions.append({"commit": kept.provenance.get("commit"), "threads": args.threads,
                     "first_epoch": trainer.start_epoch, "train_s": 0.0})

    def write_resume_state(epoch_idx, finished=None):
        import random
        sessions[-1]["train_s"] = round(time.time() - train_start, 1)
        sessions[-1]["last_epoch"] = epoch_idx
        save_resume_state(resume_path, {
            "settings": run_settings(args), "inter_digest": inter_digest,
            "epoch": epoch_idx, "cur_step": trainer.cur_step,
            "best_valid_score": trainer.best_valid_score,
            "best_valid_result": trainer.best_valid_result,
            "train_loss_dict": dict(trainer.train_loss_dict),
            "saved_model_file": trainer.saved_model_file,
            "state_dict": model.state_dict(), "other_parameter": model.other_parameter(),
            "optimizer": trainer.optimizer.state_dict(),
            "history": history, "sessions": sessions, "finished": finished,
            "rng": {"loader": train_data.generator.get_state(), "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(), "python": random.getstate()},
        }, torch)

    stopped_by = finished_before or "early_stopping"
    if finished_before:  # nothing to train: test the best checkpoint
        best_score, best_valid = trainer.best_valid_score, trainer.best_valid_result
    else:
        try:
            best_score, best_valid = trainer.fit(train_data, valid_data, saved=True,
                                                 show_progress=False, callback_fn=after_validation)
            if len(history) >= args.epochs and trainer.cur_step <= args.stopping_step:
                stopped_by = "epoch_limit"
        except TimeBudgetExceeded:
            stopped_by = "time_budget"
            best_score, best_valid = trainer.best_valid_score, trainer.best_valid_result
    train_time = trained_before + time.time() - train_start
    if stopped_by != "time_budget":  # a time-budget stop can be resumed; the others are final
        write_resume_state(len(history) - 1, finished=stopped_by)
    best_epoch = max(range(len(history)),
                     key=lambda e: (history[e]["valid"]["ndcg@10"], -e))  # first maximum

    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    test = {k: float(v) for k, v in test_result.items()}
    test_ranks = per_user_test_ranks(trainer, test_data, dataset, torch)

    def version(pkg):
        try:
            from importlib.metadata import version as v
            return v(pkg)
        except Exception:  # pragma: no cover
            return None

    try:
        commit = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip() or None
    except OSError:
        commit = None
    report = {
        "test": {"HR@10": test["hit@10"], "NDCG@10": test["ndcg@10"], "MRR@10": test["mrr@10"]},
        "test_ranks": test_ranks,
        "test_from_ranks": figures_from_ranks(test_ranks),
        "best_valid_epoch": best_epoch,
        "best_valid": {k: float(v) for k, v in best_valid.items()},
        "best_valid_score_ndcg@10": float(best_score),
        "checkpoint_epoch": int(checkpoint.get("epoch", -1)),
        "epochs_run": len(history),
        "training_stopped_by": stopped_by,
        "epochs_since_best_at_stop": int(trainer.cur_step),
        "history": history,
        "data": data_stats,
        "tie_order": dict(tie_stats, rule="rows sorted by (user, timestamp, movie id) before "
                          "RecBole; RecBole's stable sorts keep that order for ties"),
        "split_check": split_check,
        "model_parameters": n_params,
        "config": {k: config[k] for k in (
            "model", *MODEL_SETTINGS[args.model](args), "MAX_ITEM_LIST_LENGTH", "epochs", "train_batch_size", "eval_batch_size", "learner",
            "learning_rate", "weight_decay", "stopping_step", "eval_step", "eval_args", "metrics",
            "topk", "valid_metric", "seed", "reproducibility", "device",
            "user_inter_num_interval", "item_inter_num_interval")},
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "scipy": version("scipy"),
                     "pandas": version("pandas"), "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "repo_commit": commit,
        "train_wall_time_s": round(train_time, 1),
        "sessions": sessions,
        "wall_time_s": round(time.time() - started, 1),
    }
    if args.model == "NextItNet":
        report["config"]["dilations_expanded"] = (
            [int(d) for d in args.dilations.split(",")] * args.block_num)
    with open(output, "w") as handle:
        json.dump(report, handle, indent=2, default=str)
    summary = {k: report[k] for k in ("test", "test_from_ranks", "best_valid_epoch",
                                      "best_valid", "epochs_run",
                                      "training_stopped_by",
                                      "data", "versions", "wall_time_s")}
    summary["model"] = args.model
    print(json.dumps(summary, indent=2, default=str))
    print(f"wrote {output}")
    kept.provenance["versions"].update(report["versions"])  # RecBole's stack, not TensorFlow's
    print("raw output: " + kept.write(summary, report))
    return report


if __name__ == "__main__":
    run(parse_args())
