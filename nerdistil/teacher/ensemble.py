"""Ensembles of teachers of any kind: averaged soft labels, cross-fitted held-out labels, shared encoders.

An ensemble is also a model to run (``Ensemble``, ``load_ensemble``): `evaluate` and `bench-latency` take a
`nerdistil teach` output folder and run its members as labelling does.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from nerdistil.data.conll import Sentence, bio_labels, split_tag
from nerdistil.tags import decode_posteriors
from nerdistil.teacher.base import SPECIAL_TAGS, Labelled, Teacher, check_teacher, load_teacher


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
    edges: np.ndarray | None = None  # (words - 1, labels, labels) adjacent-tag marginals, when asked for


def _groups(teachers: Sequence[Teacher]) -> list[list[int]]:
    """Indices of the teachers grouped by kind and share key (members on one encoder label together)."""
    groups: dict[tuple, list[int]] = {}
    for k, t in enumerate(teachers):
        groups.setdefault((type(t), t.share_key()), []).append(k)
    return list(groups.values())


def label_stream(teachers: Sequence[Teacher], sentences: Iterable[Sentence], labels: list[str], temperature: float,
                 chunk: int = 1024, kind: str = "posterior", folds: Iterable[int] | None = None,
                 batch_size: int = 32, edges: bool = False) -> Iterator[TeacherRow]:  # fmt: skip
    """Label sentences with every teacher, ``chunk`` sentences at a time, in input order.

    At most one chunk of sentences (and their soft labels) is held at once, so an iterator over a
    file of any size runs in bounded memory. One teacher: its soft labels and tags; several: the mean
    of their soft labels and the best valid BIO path through the mean of their T = 1 probabilities.
    ``folds`` (one a sentence, ``--cross-fit``): each sentence is labelled by that member alone.
    ``batch_size``: sentences a teacher's forward pass takes at once. ``edges``: also the adjacent-tag
    marginals (CRF teachers), an ensemble's the mean of its members' (the mixture's own pair marginals, as the
    mean of their unary marginals is the mixture's).
    """
    it = iter(sentences)
    fold_it = iter(folds) if folds is not None else None
    while True:
        batch = [s for _, s in zip(range(chunk), it)]
        if not batch:
            return
        if fold_it is not None:
            yield from _label_held_out(teachers, batch, [next(fold_it) for _ in batch], labels, temperature, kind,
                                       batch_size, edges)  # fmt: skip
            continue
        every = [list(range(len(batch)))] * len(teachers)
        per_member = label_subsets(teachers, batch, every, labels, temperature, kind, len(teachers) > 1, batch_size,
                                   edges)  # fmt: skip
        for i, sent in enumerate(batch):
            outs = [m[i] for m in per_member]
            if len(outs) == 1:
                probs, tags, pairs = outs[0].probs, outs[0].tags, outs[0].edges
            else:
                probs = average([o.probs for o in outs])
                tags = decode_posteriors(average([o.decode_probs for o in outs]), labels)
                pairs = average([o.edges for o in outs]) if edges else None
            yield TeacherRow(sent, probs, tags, [o.tags for o in outs], pairs)


def label_subsets(teachers: Sequence[Teacher], batch: list[Sentence], subsets: list[list[int]], labels: list[str],
                  temperature: float, kind: str, decode_probs: bool = False,
                  batch_size: int = 32, edges: bool = False) -> list[list[Labelled]]:  # fmt: skip
    """Teacher k labels ``batch[i]`` for i in ``subsets[k]``; teachers sharing an encoder embed each sentence once."""
    out: list = [None] * len(teachers)
    for group in _groups(teachers):
        cls = type(teachers[group[0]])
        done = cls.label_group([teachers[k] for k in group], batch, [subsets[k] for k in group], labels, temperature,
                               kind, decode_probs, batch_size, edges)  # fmt: skip
        for k, labelled in zip(group, done):
            out[k] = labelled
    return out


def _label_held_out(teachers: Sequence[Teacher], batch: list[Sentence], folds: list[int], labels: list[str],
                    temperature: float, kind: str, batch_size: int = 32,
                    edges: bool = False) -> Iterator[TeacherRow]:  # fmt: skip
    """Cross-fitted soft labels: sentence i by member ``folds[i]``, the one that did not train on it."""
    subsets = [[i for i, f in enumerate(folds) if f == k] for k in range(len(teachers))]
    out: list = [None] * len(batch)
    labelled_subsets = label_subsets(teachers, batch, subsets, labels, temperature, kind, False, batch_size, edges)
    for subset, labelled in zip(subsets, labelled_subsets):
        for i, lab in zip(subset, labelled):
            out[i] = lab
    for sent, lab in zip(batch, out):
        yield TeacherRow(sent, lab.probs, lab.tags, [lab.tags], lab.edges)


def member_sources(source: str | Path) -> list[tuple[str, str]] | None:
    """A `nerdistil teach` output folder's teachers, in member order, as (file, kind); None for anything else.

    The members are those its ``report.json`` lists (a trained member's file is in the folder; a given
    ``--teacher`` file is where it was), else the folder's ``teacher.pt``, ``teacher_2.pt``…. A model folder
    (with ``config.json``) is a teacher of its own, not a teach folder.
    """
    path = Path(source).expanduser()
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    members = []
    if (path / "report.json").is_file():
        try:
            members = json.loads((path / "report.json").read_text()).get("members") or []
        except (ValueError, AttributeError):
            members = []
    if members:
        return [(str(path / m["file"]) if (path / m["file"]).exists() else m["file"], m.get("kind", "auto"))
                for m in members]  # fmt: skip
    files = [f for f in path.glob("teacher*.pt") if re.fullmatch(r"teacher(_\d+)?\.pt", f.name)]
    files.sort(key=lambda f: int(f.stem.partition("_")[2] or 1))
    return [(str(f), "auto") for f in files] or None


def check_ensemble(source: str | Path, trust_teacher: bool = False, kind: str = "auto") -> list[str]:
    """``check_teacher`` for a teacher or for every member of a teach folder, without loading; returns the files."""
    members = member_sources(source) or [(str(source), kind)]
    for file, member_kind in members:
        check_teacher(file, trust_teacher, kind if kind != "auto" else member_kind)
    return [file for file, _ in members]


class Ensemble:
    """Teachers run as one, exactly as ``label_stream`` decodes an ensemble's dev and test splits.

    Members that share a frozen encoder point at one module (``prepare_ensemble``); each batch is embedded
    once for all of them, every member's CRF gives posteriors at T = 1, and the tags are the best valid BIO path
    through their mean (``decode_posteriors(average(...))``). ``params`` counts every parameter the ensemble
    holds once: the members' heads summed, a shared encoder once (the teach report's ``params`` sums the
    members' own counts, so it counts a shared encoder once a member). Disk is the member files' sizes summed.
    """

    def __init__(self, members: Sequence[Teacher]) -> None:
        self.members = list(members)
        by_kind: dict[type, list[Teacher]] = {}
        for t in self.members:
            by_kind.setdefault(type(t), []).append(t)
        self.merged = sum(cls.prepare_ensemble(ts) for cls, ts in by_kind.items())
        types = {split_tag(t)[1] for m in self.members for t in m.tags if t not in SPECIAL_TAGS} - {None}
        self.labels = bio_labels(types)
        self.kind = f"ensemble of {len(self.members)} " + "+".join(dict.fromkeys(m.kind for m in self.members))
        self.params = _unique_params(self.members)

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[str]]:
        """Valid BIO tags for every word: the mean of the members' T = 1 posteriors, decoded; ``batch_size`` a pass."""
        from nerdistil.config import TeachConfig

        sents = (Sentence(list(words)) for words in sentences)
        rows = label_stream(self.members, sents, self.labels, 1.0, TeachConfig.label_chunk, "posterior",
                            batch_size=batch_size)  # fmt: skip
        return [row.tags for row in rows]


def _unique_params(members: Sequence[Teacher]) -> int:
    """Parameters of the members' torch modules, each tensor once (a shared encoder once); else their ``params``."""
    import torch

    seen: dict[int, int] = {}
    for m in members:
        modules = [v for v in vars(m).values() if isinstance(v, torch.nn.Module)]
        if not modules:
            return sum(t.params for t in members)
        for module in modules:
            for p in module.parameters():
                seen[id(p)] = p.numel()
    return sum(seen.values())


def load_ensemble(source: str | Path, trust_teacher: bool = False, kind: str = "auto",
                  device=None) -> Teacher | Ensemble:  # fmt: skip
    """A teacher (``load_teacher``), or a teach folder's members as an ``Ensemble`` (its only teacher, alone).

    Every member file goes through ``load_teacher``'s trust check.
    """
    members = member_sources(source)
    if members is None:
        return load_teacher(source, trust_teacher, kind, device)
    teachers = [load_teacher(f, trust_teacher, kind if kind != "auto" else k, device) for f, k in members]
    return teachers[0] if len(teachers) == 1 else Ensemble(teachers)
