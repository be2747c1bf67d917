"""The three files of MovieLens-100K (u.data ratings, u.user, u.item genres), read line by
line with the shared rules; both of `movielens_100k`'s paths (in memory, Beam) use these."""

import collections

from pipelines import dialect, text_lines
from pipelines.formats.common import read_lines

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _skip_header(lines):
    """Drop a first line whose first field is not a number (a column header)."""
    return lines[1:] if is_header(lines[0][1]) else lines


def is_header(line):
    """A first line whose first field is not a number is a column header."""
    return not dialect.is_ascii_integer(line.replace("\t", "|").split("|")[0])


def parse_rating_line(line):
    """One stripped line of u.data: (user, (time, movie id, movie)) or a bad-line message.
    Every path (in memory, Beam) uses this."""
    fields = line.split("\t")
    if len(fields) != 4:
        return f"expected 4 tab-separated fields (user item rating time), got {len(fields)}"
    if not all(map(dialect.is_ascii_integer, fields)):
        return f"expected integers (ASCII digits, no whitespace), got {fields}"
    user, item, _, stamp = fields
    return user, (int(stamp), int(item), item)


def order_ratings(events):
    """A user's (time, movie id, movie) events by time, ties by movie id."""
    return sorted(events)


def read_ratings(path, bad):
    events = collections.defaultdict(list)
    for number, line in _skip_header(read_lines(path)):
        parsed = parse_rating_line(line)
        if isinstance(parsed, str):
            bad.report(path, number, parsed)
            continue
        events[parsed[0]].append(parsed[1])
    return events


def read_users(path, bad):
    users = {}
    for number, line in _skip_header(read_lines(path)):
        fields = line.split("|")
        if (len(fields) != 5 or not all(map(dialect.is_ascii_integer, fields[:2]))
                or not all(f and f == f.strip() for f in fields[2:4])):
            bad.report(path, number, "expected 'user|age|gender|occupation|zip' (user and age "
                       "in ASCII digits, gender and occupation not empty, no whitespace "
                       "around them)")
            continue
        users[fields[0]] = {"age": int(fields[1]), "gender": fields[2], "occupation": fields[3]}
    return users


def read_genres(path, bad):
    """{movie id: genres} of u.item (Latin-1 text: the titles are; a UTF-8 byte order mark
    at the start is dropped, `\r\n` line ends accepted as everywhere)."""
    genres = {}
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(text_lines.BOM_BYTES):
        data = data[len(text_lines.BOM_BYTES):]
    pieces = data.decode("latin-1").split("\n")
    for number, raw in enumerate(pieces, 1):
        line = text_lines.line_text(raw)
        if not line:
            continue
        fields = line.split("|")
        if number == 1 and not dialect.is_ascii_integer(fields[0]):
            continue  # header
        if len(fields) != 5 + len(GENRES):
            bad.report(path, number, f"expected {5 + len(GENRES)} '|'-separated fields, "
                       f"got {len(fields)}")
            continue
        if not dialect.is_ascii_integer(fields[0]) or any(
                flag not in ("0", "1") for flag in fields[5:]):
            bad.report(path, number, "expected a movie id in ASCII digits and genre flags "
                       "of 0 or 1")
            continue
        genres[fields[0]] = {g for g, flag in zip(GENRES, fields[5:]) if flag == "1"}
    return genres
