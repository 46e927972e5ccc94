"""Soft labels on disk: a ``datasets`` DatasetDict (Arrow), one row a sentence.

Columns: ``tokens`` (words), ``tags`` (gold BIO label ids, empty when unlabeled), ``has_gold``,
``teacher_tags`` (the teacher's Viterbi path as label ids) and ``probs``, a float32
[words x labels] matrix of teacher posteriors; with ``teach --edge-marginals`` also ``edges``, a float32
[words x labels²] matrix whose row w (w >= 1) is the teacher CRF's p(tag of word w-1, tag of word w) flattened
row-major (row 0 is zeros: word 0 has no pair). The label names live in the features
(``ClassLabel``), and every split's ``DatasetInfo.description`` holds the contract's metadata
(temperature, soft-label kind, the teachers' kind, source and SHA-256; see ``save`` and ``meta``),
so a soft-label folder is self-describing: no report beside it is needed to use it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Sequence as HFSequence

from nerdistil.errors import UserError


def features(labels: Sequence[str], edges: bool = False) -> Features:
    """The Arrow schema of a soft-label dataset over these BIO labels (``edges``: with the pair column)."""
    cols = {
        "tokens": HFSequence(Value("string")),
        "tags": HFSequence(ClassLabel(names=list(labels))),
        "has_gold": Value("bool"),
        "teacher_tags": HFSequence(ClassLabel(names=list(labels))),
        "probs": Array2D(shape=(None, len(labels)), dtype="float32"),
    }
    if edges:
        cols["edges"] = Array2D(shape=(None, len(labels) ** 2), dtype="float32")
    return Features(cols)


def row(tokens: Sequence[str], gold: Sequence[str] | None, teacher: Sequence[str], probs: np.ndarray,
        label2id: dict[str, int], edges: np.ndarray | None = None) -> dict:  # fmt: skip
    """One dataset row; checks that every word has one probability row (and each adjacent pair one pair matrix)."""
    n, L = len(tokens), len(label2id)
    if probs.shape != (n, L) or len(teacher) != n:
        raise RuntimeError(f"soft labels of shape {probs.shape} for {n} words")
    out = {
        "tokens": list(tokens),
        "tags": [label2id[t] for t in gold] if gold else [],
        "has_gold": bool(gold),
        "teacher_tags": [label2id[t] for t in teacher],
        "probs": probs.astype(np.float32),
    }
    if edges is not None:
        if edges.shape != (max(n - 1, 0), L, L):
            raise RuntimeError(f"pair marginals of shape {edges.shape} for {n} words")
        flat = np.zeros((n, L * L), dtype=np.float32)
        flat[1:] = edges.reshape(-1, L * L)
        out["edges"] = flat
    return out


def pair_marginals(flat: np.ndarray, num_labels: int) -> np.ndarray:
    """A row's stored ``edges`` column as (words - 1, labels, labels): entry w-1 is p(word w-1, word w)."""
    return flat[1:].reshape(-1, num_labels, num_labels)


def build(rows: Iterable[dict], labels: Sequence[str], cache_dir: Path) -> Dataset:
    """Materialise rows into an Arrow dataset without holding them all in memory.

    Rows may come from a generator (a stream of labelled tweets): ``datasets`` writes them to Arrow
    in batches as they arrive. A fresh fingerprint stops ``datasets`` from hashing (and so
    consuming or pickling) the generator, and from reusing an older cache.
    """
    stream = iter(rows)
    return Dataset.from_generator(lambda: stream, features=features(labels), cache_dir=str(cache_dir),
                                  fingerprint=uuid.uuid4().hex)  # fmt: skip


@contextmanager
def _no_bars() -> Iterator[None]:
    """Without datasets' "Saving the dataset" bars: a save takes milliseconds, and each bar stays in a log file."""
    import datasets

    was_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            datasets.enable_progress_bars()


def save_chunk(rows: list[dict], labels: Sequence[str], folder: Path) -> None:
    """Write one chunk of labelled rows as its own Arrow dataset, atomically (a killed run leaves no half chunk)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    edges = bool(rows) and "edges" in rows[0]
    with _no_bars():
        Dataset.from_list(rows, features=features(labels, edges)).save_to_disk(str(tmp))
    os.replace(tmp, folder)


def join_chunks(folder: Path, labels: Sequence[str], edges: bool = False) -> Dataset:
    """The chunks of ``save_chunk`` in order, as one memory-mapped dataset (an empty one if there are none)."""
    from datasets import concatenate_datasets, load_from_disk

    chunks = sorted(p for p in folder.glob("[0-9]*") if p.is_dir() and not p.name.endswith(".tmp"))
    if not chunks:
        return Dataset.from_list([], features=features(labels, edges))
    return concatenate_datasets([load_from_disk(str(p)) for p in chunks])


def batches(ds: Dataset, batch_size: int = 1024) -> Iterator[dict]:
    """The dataset in Arrow record batches, each column unpacked once per batch, not once per row.

    Yields dicts of per-row lists: ``tokens`` (lists of str), ``tags`` and ``teacher_tags`` (int64
    arrays), ``has_gold`` (bools) and ``probs`` ((words, labels) float32 arrays, views into one buffer);
    ``edges`` ((words, labels²) arrays) where the dataset has that column.
    """
    L = len(label_names(ds))
    matrices = {"probs": L} | ({"edges": L * L} if "edges" in ds.column_names else {})
    for table in ds.with_format("arrow").iter(batch_size=batch_size):
        out = {"tokens": table.column("tokens").to_pylist(), "has_gold": table.column("has_gold").to_pylist()}
        for name in ("tags", "teacher_tags"):
            col = table.column(name).combine_chunks()
            offsets = col.offsets.to_numpy()
            flat = col.flatten().to_numpy(zero_copy_only=False)
            out[name] = np.split(flat, offsets[1:-1] - offsets[0])
        for name, width in matrices.items():
            col = table.column(name).combine_chunks()  # list (words) of lists (labels) of float32
            col = getattr(col, "storage", col)  # Array2D is an Arrow extension type over that list
            offsets = col.offsets.to_numpy()
            flat = col.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            out[name] = np.split(flat, offsets[1:-1] - offsets[0])
        yield out


def rows(ds: Dataset, batch_size: int = 1024) -> Iterator[dict]:
    """One dict a row (the columns of ``batches``), read batch by batch."""
    for b in batches(ds, batch_size):
        for i in range(len(b["tokens"])):
            yield {k: v[i] for k, v in b.items()}


def decoded_argmax_agreement(ds: Dataset) -> float:
    """Share of words whose stored teacher tag equals the argmax of their stored soft label."""
    same = total = 0
    for batch in batches(ds):
        for tags, probs in zip(batch["teacher_tags"], batch["probs"]):
            if len(tags):
                same += int((probs.argmax(-1) == tags).sum())
                total += len(tags)
    return same / max(1, total)


META_KEY = "nerdistil_soft_labels"


def save(splits: dict[str, Dataset], folder: Path, meta: dict, max_shard_size: str | int | None = None) -> None:
    """Write the splits as one DatasetDict, each split carrying ``meta`` (temperature, kind, teachers)."""
    for ds in splits.values():
        ds.info.description = json.dumps({META_KEY: meta}, sort_keys=True)
    with _no_bars():
        DatasetDict(splits).save_to_disk(str(folder), max_shard_size=max_shard_size)


def meta(ds: Dataset | DatasetDict) -> dict:
    """The contract's metadata stored by ``save`` (empty for soft labels written before it existed)."""
    if isinstance(ds, DatasetDict):
        ds = next(iter(ds.values()))
    try:
        return json.loads(ds.info.description or "{}").get(META_KEY, {})
    except (ValueError, AttributeError):
        return {}


def load(path: str | Path) -> DatasetDict:
    """Load a soft-label folder written by ``nerdistil teach``."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / "dataset_dict.json").is_file():
        raise UserError(
            "not a nerdistil soft-label folder (no dataset_dict.json); point to TEACH_OUT/soft_labels", path
        )
    return load_from_disk(str(path))


def label_names(ds: Dataset | DatasetDict) -> list[str]:
    """The BIO label names stored in the features."""
    if isinstance(ds, DatasetDict):
        ds = next(iter(ds.values()))
    return list(ds.features["tags"].feature.names)


def max_row_error(ds: Dataset) -> float:
    """Largest |sum(row) - 1| over every word of every sentence (0 for a perfect dataset)."""
    worst = 0.0
    for batch in batches(ds):
        if batch["probs"]:
            flat = np.concatenate(batch["probs"]).astype(np.float64)
            if len(flat):
                worst = max(worst, float(np.abs(flat.sum(-1) - 1).max()))
    return worst
