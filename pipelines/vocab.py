"""Item / target vocabularies: line i of the file is the token of id i.

Id 0 is `<UNK>`: padding, [TCL], [MASK] and the out-of-vocabulary id, as in the
release. New tokens get ids in order of first appearance (the release's order).
"""

import collections

UNK = "<UNK>"


def read_tokens(path):
    """Line i of a token file (vocabulary, labels) is the token of id i."""
    from pipelines import fileio
    if fileio.is_remote(path):
        lines = fileio.read_bytes(path).decode("utf-8").split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines
    with open(path, encoding="utf-8", newline="\n") as handle:
        return [line[:-1] if line.endswith("\n") else line for line in handle]


def write_tokens(path, tokens):
    """One token a line; a token holding a line break would shift every later id."""
    tokens = list(tokens)
    bad = [t for t in tokens if "\n" in t or "\r" in t]
    if bad:
        raise ValueError(f"{path}: tokens with line breaks cannot be stored: {bad[:3]}")
    from pipelines import fileio
    fileio.write_bytes(path, "".join(f"{token}\n" for token in tokens).encode("utf-8"))


class Vocabulary:
    """Token <-> id, growing (`frozen=False`) or fixed (unknown tokens -> 0, counted)."""

    def __init__(self, tokens=None, frozen=False, reserve_unk=True):
        self.tokens = list(tokens) if tokens is not None else ([UNK] if reserve_unk else [])
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dupes = [t for t, n in collections.Counter(self.tokens).items() if n > 1][:5]
            raise ValueError(f"duplicate tokens in vocabulary: {dupes}")
        self.frozen = frozen
        self.oov = collections.Counter()

    def __len__(self):
        return len(self.tokens)

    def id(self, token):
        found = self.index.get(token)
        if found is not None:
            return found
        if self.frozen:
            self.oov[token] += 1
            return 0
        self.index[token] = len(self.tokens)
        self.tokens.append(token)
        return self.index[token]

    def ids(self, tokens):
        return [self.id(token) for token in tokens]

    def oov_summary(self, top=10):
        return {"oov_occurrences": sum(self.oov.values()), "oov_distinct": len(self.oov),
                "oov_most_common": self.oov.most_common(top)}

    def save(self, path):
        write_tokens(path, self.tokens)

    @classmethod
    def load(cls, path, frozen=True, reserve_unk=True):
        tokens = read_tokens(path)
        if reserve_unk and (not tokens or tokens[0] != UNK):
            raise ValueError(f"{path}: line 1 must be {UNK} (id 0 is reserved)")
        return cls(tokens, frozen=frozen, reserve_unk=reserve_unk)
