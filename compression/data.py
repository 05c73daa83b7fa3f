"""SemEval-2017 Task 4A data: loading dirty TSV files, splitting, tokenising, length-bucketed batches."""
from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from runtime.text import normalize
from .model import LABELS

__all__ = [
    "DataNotFound",
    "Example",
    "LoadReport",
    "SemEvalData",
    "data_root",
    "load_tsv",
    "load_semeval",
    "stratified_split",
    "Batch",
    "encode",
    "iter_batches",
]

_LABEL_ID = {name: i for i, name in enumerate(LABELS)}
_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})")
# trailing creation-date column found in some files: "Wed Jul 29 12:01:22 +0000 2015"
_DATE_RE = re.compile(r"^\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} [+-]\d{4} \d{4}$")

DATASET_DIR = "semeval2017-task4a"
TEST_FILE = "test/SemEval2017-task4-test.subtask-A.english.txt"


class DataNotFound(FileNotFoundError):
    """The SemEval data directory (or a file in it) is missing."""


@dataclasses.dataclass(frozen=True)
class Example:
    id: int
    label: int
    text: str  # raw (escapes decoded), not yet normalised


@dataclasses.dataclass
class LoadReport:
    """Counts of what happened to each input line, by reason."""

    lines: int = 0
    kept: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def merge(self, other: "LoadReport") -> None:
        self.lines += other.lines
        self.kept += other.kept
        self.dropped.update(other.dropped)

    def to_dict(self) -> dict:
        return {"lines": self.lines, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))}


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The data directory: argument, else ``$SPARSEPULSE_DATA``, else ``../shared/data`` of the repo."""
    if path is None:
        path = os.environ.get("SPARSEPULSE_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    root = Path(path).resolve()
    if not (root / DATASET_DIR).is_dir():
        raise DataNotFound(
            f"SemEval data not found: expected {root / DATASET_DIR}/ (set SPARSEPULSE_DATA or --data to the folder "
            "that contains semeval2017-task4a/)"
        )
    return root


def _decode_escapes(text: str) -> str:
    # JSON-style \uXXXX escapes, including surrogate pairs (\ud83d\ude02)
    if "\\u" not in text:
        return text
    s = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def load_tsv(path: str | os.PathLike) -> tuple[list[Example], LoadReport]:
    """Parse one ``id<TAB>label<TAB>text`` file; malformed lines are dropped and counted by reason."""
    rep = LoadReport()
    out: list[Example] = []
    raw = Path(path).read_bytes()
    for bline in raw.split(b"\n"):
        if not bline.strip():
            continue
        rep.lines += 1
        try:
            line = bline.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            rep.dropped["bad_utf8"] += 1
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            rep.dropped["too_few_fields"] += 1
            continue
        tid, label = fields[0].strip(), fields[1].strip().lower()
        rest = [f for f in fields[2:]]
        if len(rest) > 1 and (rest[-1].strip() == "" or _DATE_RE.match(rest[-1].strip())):
            rest = rest[:-1]  # empty trailing column or creation date
        text = " ".join(f.strip() for f in rest)  # stray tabs inside the text become spaces
        if not tid.isdigit():
            rep.dropped["bad_id"] += 1
            continue
        if label not in _LABEL_ID:
            rep.dropped["bad_label"] += 1
            continue
        text = _unquote(_decode_escapes(text).strip()).strip()
        if not text:
            rep.dropped["empty_text"] += 1
            continue
        out.append(Example(int(tid), _LABEL_ID[label], text))
        rep.kept += 1
    return out, rep


def _dedupe(examples: Sequence[Example], rep: LoadReport) -> list[Example]:
    seen: dict[int, Example] = {}
    for ex in examples:
        first = seen.get(ex.id)
        if first is None:
            seen[ex.id] = ex
        else:
            rep.kept -= 1
            rep.dropped["duplicate_id" if first.label == ex.label else "duplicate_id_conflicting_label"] += 1
    return list(seen.values())


@dataclasses.dataclass
class SemEvalData:
    train: list[Example]
    valid: list[Example]
    test: list[Example]
    report: dict

    def split(self, name: str) -> list[Example]:
        return {"train": self.train, "valid": self.valid, "test": self.test, "pool": self.train + self.valid}[name]


def stratified_split(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Carve ``fraction`` of each class out (fixed seed); returns (rest, carved), both sorted by id."""
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[Example]] = collections.defaultdict(list)
    for ex in sorted(examples, key=lambda e: e.id):
        by_label[ex.label].append(ex)
    rest, carved = [], []
    for label in sorted(by_label):
        group = by_label[label]
        idx = rng.permutation(len(group))
        n = int(round(fraction * len(group)))
        carved += [group[i] for i in idx[:n]]
        rest += [group[i] for i in idx[n:]]
    return sorted(rest, key=lambda e: e.id), sorted(carved, key=lambda e: e.id)


def load_semeval(root: str | os.PathLike | None = None, valid_fraction: float = 0.1, seed: int = 13) -> SemEvalData:
    """Training pool (all ``train/*.tsv``, de-duplicated by id) split into train/valid, and the 2017 test set."""
    base = data_root(root) / DATASET_DIR
    files = sorted((base / "train").glob("*.tsv"))
    if not files:
        raise DataNotFound(f"no training files in {base / 'train'}")
    pool_rep, pool = LoadReport(), []
    per_file = {}
    for f in files:
        exs, rep = load_tsv(f)
        per_file[f.name] = rep.to_dict()
        pool += exs
        pool_rep.merge(rep)
    pool = _dedupe(pool, pool_rep)
    test_path = base / TEST_FILE
    if not test_path.is_file():
        raise DataNotFound(f"missing test file {test_path}")
    test, test_rep = load_tsv(test_path)
    test = _dedupe(test, test_rep)
    train, valid = stratified_split(pool, valid_fraction, seed)
    report = {
        "pool": pool_rep.to_dict(),
        "pool_files": per_file,
        "test": test_rep.to_dict(),
        "sizes": {"train": len(train), "valid": len(valid), "test": len(test)},
        "class_counts": {
            name: np.bincount([e.label for e in split], minlength=len(LABELS)).tolist()
            for name, split in (("train", train), ("valid", valid), ("test", test))
        },
        "valid_fraction": valid_fraction,
        "split_seed": seed,
    }
    return SemEvalData(train, valid, test, report)


# ---------------------------------------------------------------- tokenisation and batching


def encode(tokenizer, texts: Sequence[str], max_len: int, demojize: bool = True) -> tuple[list[np.ndarray], int]:
    """Normalise and tokenise; returns per-text int32 id arrays and how many were truncated."""
    norm = [normalize(t, demojize=demojize) for t in texts]
    enc = tokenizer(norm, truncation=False, add_special_tokens=True)["input_ids"]
    out, truncated = [], 0
    for ids in enc:
        if len(ids) > max_len:
            truncated += 1
            ids = ids[: max_len - 1] + [ids[-1]]  # keep [SEP]
        out.append(np.asarray(ids, np.int32))
    return out, truncated


@dataclasses.dataclass
class Batch:
    input_ids: np.ndarray  # (B, T) int32
    attention_mask: np.ndarray  # (B, T) int32
    labels: np.ndarray  # (B,) int32
    weights: np.ndarray  # (B,) float32, 0 for padding rows
    index: np.ndarray  # (B,) int64 position in the dataset, -1 for padding rows


def _collate(ids: Sequence[np.ndarray], idx: np.ndarray, labels: np.ndarray, batch_size: int, pad_to: int) -> Batch:
    T = max(len(x) for x in ids)
    T = int(-(-T // pad_to) * pad_to)
    x = np.zeros((batch_size, T), np.int32)
    m = np.zeros((batch_size, T), np.int32)
    for r, seq in enumerate(ids):
        x[r, : len(seq)] = seq
        m[r, : len(seq)] = 1
    n = len(ids)
    lab = np.zeros(batch_size, np.int32)
    lab[:n] = labels[idx]
    w = np.zeros(batch_size, np.float32)
    w[:n] = 1.0
    full_idx = np.full(batch_size, -1, np.int64)
    full_idx[:n] = idx
    return Batch(x, m, lab, w, full_idx)


def iter_batches(
    ids: Sequence[np.ndarray],
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    pool_factor: int = 50,
    pad_to: int = 8,
) -> Iterator[Batch]:
    """Length-bucketed batches.

    Without a seed: sorted by length (evaluation; order restored through ``Batch.index``).
    With a seed: shuffle, then sort inside pools of ``pool_factor * batch_size`` examples by
    length, cut into batches, shuffle the batches: little padding, still random.  The order
    is a pure function of the seed, which makes ``--resume`` exact.  Every batch has exactly
    ``batch_size`` rows (padding rows have weight 0) so that jit sees few shapes.
    """
    n = len(ids)
    lengths = np.fromiter((len(x) for x in ids), np.int64, n)
    if shuffle_seed is None:
        order = np.argsort(lengths, kind="stable")
        chunks = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        rng = np.random.default_rng(shuffle_seed)
        perm = rng.permutation(n)
        chunks = []
        pool = pool_factor * batch_size
        for s in range(0, n, pool):
            p = perm[s : s + pool]
            p = p[np.argsort(lengths[p], kind="stable")]
            chunks += [p[i : i + batch_size] for i in range(0, len(p), batch_size)]
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    for c in chunks:
        yield _collate([ids[i] for i in c], c, labels, batch_size, pad_to)
