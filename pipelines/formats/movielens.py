"""MovieLens-100K: pre-training sequences and the paper-style downstream tasks.

Source domain = movies without any of `target_genres`; pre-training sequences are each
user's source-domain movies by time.  Downstream tasks (inputs: the same source
sequences): gender, age bracket (one class per 10 years, as the paper's AgeEst),
occupation, and cold-start cross-domain item recommendation `coldrec` (targets: each
user's first <= 3 target-domain movies, one instance per target, as the paper's ColdRec).
With `target_genres` empty every movie is in the source domain and coldrec is skipped
(the setting for comparing next-item quality with other libraries).
"""

import collections
import os

from pipelines import canonical
from pipelines.dataset import PreparedDataset, Record, by_user_split, leave_last_out
from pipelines.errors import DataError
from pipelines.formats.common import read_lines
from pipelines.vocab import Vocabulary

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _skip_header(lines):
    """Drop a first line whose first field is not a number (a column header)."""
    return lines[1:] if is_header(lines[0][1]) else lines


def is_header(line):
    """A first line whose first field is not a number is a column header."""
    return not canonical.is_ascii_integer(line.replace("\t", "|").split("|")[0])


def parse_rating_line(line):
    """One stripped line of u.data: (user, (time, movie id, movie)) or a bad-line message.
    Every path (in memory, Beam) uses this."""
    fields = line.split("\t")
    if len(fields) != 4:
        return f"expected 4 tab-separated fields (user item rating time), got {len(fields)}"
    if not all(map(canonical.is_ascii_integer, fields)):
        return f"expected integers (ASCII digits, no whitespace), got {fields}"
    user, item, _, stamp = fields
    return user, (int(stamp), int(item), item)


def order_ratings(events):
    """A user's (time, movie id, movie) events by time, ties by movie id."""
    return sorted(events)


def _ratings(path, bad):
    events = collections.defaultdict(list)
    for number, line in _skip_header(read_lines(path)):
        parsed = parse_rating_line(line)
        if isinstance(parsed, str):
            bad.report(path, number, parsed)
            continue
        events[parsed[0]].append(parsed[1])
    return events


def _users(path, bad):
    users = {}
    for number, line in _skip_header(read_lines(path)):
        fields = line.split("|")
        if (len(fields) != 5 or not all(map(canonical.is_ascii_integer, fields[:2]))
                or not all(f and f == f.strip() for f in fields[2:4])):
            bad.report(path, number, "expected 'user|age|gender|occupation|zip' (user and age "
                       "in ASCII digits, gender and occupation not empty, no whitespace "
                       "around them)")
            continue
        users[fields[0]] = {"age": int(fields[1]), "gender": fields[2], "occupation": fields[3]}
    return users


def _movie_genres(path, bad):
    """{movie id: genres} of u.item (Latin-1 text: the titles are; a UTF-8 byte order mark
    at the start is dropped, `\r\n` line ends accepted as everywhere)."""
    genres = {}
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(canonical.BOM_BYTES):
        data = data[len(canonical.BOM_BYTES):]
    pieces = data.decode("latin-1").split("\n")
    for number, raw in enumerate(pieces, 1):
        line = canonical.line_text(raw)
        if not line:
            continue
        fields = line.split("|")
        if number == 1 and not canonical.is_ascii_integer(fields[0]):
            continue  # header
        if len(fields) != 5 + len(GENRES):
            bad.report(path, number, f"expected {5 + len(GENRES)} '|'-separated fields, "
                       f"got {len(fields)}")
            continue
        if not canonical.is_ascii_integer(fields[0]) or any(
                flag not in ("0", "1") for flag in fields[5:]):
            bad.report(path, number, "expected a movie id in ASCII digits and genre flags "
                       "of 0 or 1")
            continue
        genres[fields[0]] = {g for g, flag in zip(GENRES, fields[5:]) if flag == "1"}
    return genres


def read_movielens(directory, items, bad, seed, target_genres=("Comedy",), max_targets=3,
                   min_length=3):
    for name in ("u.data", "u.user", "u.item"):
        if not os.path.exists(os.path.join(directory, name)):
            raise DataError(os.path.join(directory, name), None,
                            "not found: --input must be the ml-100k directory")
    events = _ratings(os.path.join(directory, "u.data"), bad)
    if not events:
        raise DataError(os.path.join(directory, "u.data"), None, "no ratings")
    users = _users(os.path.join(directory, "u.user"), bad)
    genres = _movie_genres(os.path.join(directory, "u.item"), bad)
    target_genres = set(target_genres or ())
    unknown = target_genres - set(GENRES)
    if unknown:
        raise ValueError(f"unknown genre(s) {sorted(unknown)}; MovieLens genres: {GENRES}")
    sources, firsts = [], {}
    targets = Vocabulary()
    for user in sorted(events, key=int):
        ordered = order_ratings(events[user])  # by time, ties by movie id
        in_target = [g & target_genres != set() for g in (genres.get(m, set()) for _, _, m in ordered)]
        source = [m for (_, _, m), t in zip(ordered, in_target) if not t]
        sources.append((user, items.ids(source)))
        firsts[user] = [m for (_, _, m), t in zip(ordered, in_target) if t][:max_targets]
    pretrain_splits, stats = leave_last_out(sources, min_length)
    datasets = [PreparedDataset("pretrain", pretrain_splits, items, name="pretrain",
                                stats=dict(stats, users=len(sources), **items.oov_summary()))]
    by_user = {user: seq for user, seq in sources if seq}

    def classification(name, label_of, names):
        records = [Record(by_user[u], u, label=label_of(users[u])) for u in by_user if u in users]
        return PreparedDataset("classify", by_user_split(records, seed), items, labels=names,
                               name=name, stats={"instances": len(records)})

    datasets.append(classification("gender", lambda u: int(u["gender"] == "F"), ["M", "F"]))
    brackets = sorted({u["age"] // 10 for u in users.values()})
    datasets.append(classification("age", lambda u: brackets.index(u["age"] // 10),
                                   [f"{10 * b}-{10 * b + 9}" for b in brackets]))
    occupations = sorted({u["occupation"] for u in users.values()})
    datasets.append(classification("occupation", lambda u: occupations.index(u["occupation"]),
                                   occupations))
    if target_genres:
        records = [Record(by_user[u], u, target=targets.id(m))
                   for u in by_user for m in firsts[u]]
        datasets.append(PreparedDataset(
            "item_rec", by_user_split(records, seed), items, targets=targets, name="coldrec",
            stats={"instances": len(records), "target_genres": sorted(target_genres),
                   "max_targets_per_user": max_targets}))
    return datasets
