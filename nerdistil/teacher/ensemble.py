"""Ensembles of teachers of any kind: averaged soft labels, cross-fitted held-out labels, shared encoders."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from nerdistil.data.conll import Sentence
from nerdistil.tags import decode_posteriors
from nerdistil.teacher.base import Labelled, Teacher


def average(member_probs: list[np.ndarray]) -> np.ndarray:
    """The mean of the members' [words x labels] posteriors: still a distribution in every row."""
    return np.mean(np.stack(member_probs), axis=0).astype(np.float32)


def train_folds(n_train: int, n_folds: int, seed: int) -> list[int]:
    """Each train sentence's fold (0..n_folds-1) for ``--cross-fit``: a seeded shuffle dealt round-robin."""
    order = np.random.default_rng(seed).permutation(n_train)
    fold = [0] * n_train
    for position, i in enumerate(order):
        fold[int(i)] = position % n_folds
    return fold


@dataclasses.dataclass
class TeacherRow:
    """One sentence labelled by the teacher (or ensemble): stored probs and tags, and each member's tags."""

    sentence: Sentence
    probs: np.ndarray
    tags: list[str]
    member_tags: list[list[str]]


def _groups(teachers: Sequence[Teacher]) -> list[list[int]]:
    """Indices of the teachers grouped by kind and share key (members on one encoder label together)."""
    groups: dict[tuple, list[int]] = {}
    for k, t in enumerate(teachers):
        groups.setdefault((type(t), t.share_key()), []).append(k)
    return list(groups.values())


def label_stream(teachers: Sequence[Teacher], sentences: Iterable[Sentence], labels: list[str], temperature: float,
                 chunk: int = 1024, kind: str = "posterior", folds: Iterable[int] | None = None,
                 batch_size: int = 32) -> Iterator[TeacherRow]:  # fmt: skip
    """Label sentences with every teacher, ``chunk`` sentences at a time, in input order.

    At most one chunk of sentences (and their soft labels) is held at once, so an iterator over a
    file of any size runs in bounded memory. One teacher: its soft labels and tags; several: the mean
    of their soft labels and the best valid BIO path through the mean of their T = 1 probabilities.
    ``folds`` (one a sentence, ``--cross-fit``): each sentence is labelled by that member alone.
    ``batch_size``: sentences a teacher's forward pass takes at once.
    """
    it = iter(sentences)
    fold_it = iter(folds) if folds is not None else None
    while True:
        batch = [s for _, s in zip(range(chunk), it)]
        if not batch:
            return
        if fold_it is not None:
            yield from _label_held_out(teachers, batch, [next(fold_it) for _ in batch], labels, temperature, kind,
                                       batch_size)  # fmt: skip
            continue
        every = [list(range(len(batch)))] * len(teachers)
        per_member = label_subsets(teachers, batch, every, labels, temperature, kind, len(teachers) > 1, batch_size)
        for i, sent in enumerate(batch):
            outs = [m[i] for m in per_member]
            if len(outs) == 1:
                probs, tags = outs[0].probs, outs[0].tags
            else:
                probs = average([o.probs for o in outs])
                tags = decode_posteriors(average([o.decode_probs for o in outs]), labels)
            yield TeacherRow(sent, probs, tags, [o.tags for o in outs])


def label_subsets(teachers: Sequence[Teacher], batch: list[Sentence], subsets: list[list[int]], labels: list[str],
                  temperature: float, kind: str, decode_probs: bool = False,
                  batch_size: int = 32) -> list[list[Labelled]]:  # fmt: skip
    """Teacher k labels ``batch[i]`` for i in ``subsets[k]``; teachers sharing an encoder embed each sentence once."""
    out: list = [None] * len(teachers)
    for group in _groups(teachers):
        cls = type(teachers[group[0]])
        done = cls.label_group([teachers[k] for k in group], batch, [subsets[k] for k in group], labels, temperature,
                               kind, decode_probs, batch_size)  # fmt: skip
        for k, labelled in zip(group, done):
            out[k] = labelled
    return out


def _label_held_out(teachers: Sequence[Teacher], batch: list[Sentence], folds: list[int], labels: list[str],
                    temperature: float, kind: str, batch_size: int = 32) -> Iterator[TeacherRow]:  # fmt: skip
    """Cross-fitted soft labels: sentence i by member ``folds[i]``, the one that did not train on it."""
    subsets = [[i for i, f in enumerate(folds) if f == k] for k in range(len(teachers))]
    out: list = [None] * len(batch)
    labelled_subsets = label_subsets(teachers, batch, subsets, labels, temperature, kind, False, batch_size)
    for subset, labelled in zip(subsets, labelled_subsets):
        for i, lab in zip(subset, labelled):
            out[i] = lab
    for sent, lab in zip(batch, out):
        yield TeacherRow(sent, lab.probs, lab.tags, [lab.tags])
