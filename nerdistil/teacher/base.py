"""The teacher seam: what every teacher kind offers, and the one place that loads one.

A teacher labels sentences with soft labels over the corpus's BIO labels (``label``) and tags words
(``predict``). Everything that orchestrates (``teach``, ``evaluate``, ``bench-latency``, ``predict``)
holds a ``Teacher`` and never names a kind. Adding a kind is one module with a ``Teacher`` subclass
plus one line in ``KINDS``. ``load_teacher`` is the only trust check: pickled kinds (Flair) are
loaded only when nerdistil wrote the file or the user trusts it.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from nerdistil import trust
from nerdistil.data.conll import Sentence, bio_labels, split_tag
from nerdistil.errors import UserError

# kind -> "module:class"; the module is imported only when a teacher of that kind is used
KINDS = {
    "flair": "nerdistil.teacher.flair.model:FlairTeacher",
    "transformer": "nerdistil.teacher.transformer:TransformerTeacher",
}
TRAINERS = {"flair": "nerdistil.teacher.flair.model:FlairTrainer"}  # kinds `teach` can train itself
SPECIAL_TAGS = ("<START>", "<STOP>", "<unk>")


@dataclass
class Labelled:
    """A sentence's soft labels (words x corpus labels) and the teacher's decoded BIO tags."""

    probs: np.ndarray
    tags: list[str]
    decode_probs: np.ndarray | None = None  # T = 1 probabilities (for decoding an ensemble), when asked for
    edges: np.ndarray | None = None  # (words - 1, labels, labels) CRF marginals of adjacent tags at T, when asked for


class Teacher(ABC):
    """One teacher model of any kind; subclasses set ``tags``, ``identity`` and ``params`` in ``__init__``."""

    kind: ClassVar[str]
    pickled: ClassVar[bool] = False  # loading runs code: ``load_teacher`` checks trust first
    soft_label_kinds: ClassVar[tuple[str, ...]] = ("posterior", "hard")
    edge_marginals: bool = False  # can label adjacent-tag marginals (a CRF teacher, ``edges=True``)
    decoding: ClassVar[str] = "valid-BIO Viterbi through the T = 1 probabilities"  # how its stored tags are made
    tags: list[str]  # the model's own tag names in index order (BIO or BIOES, maybe with CRF specials)
    identity: dict  # kind, source, sha256: what the soft-label dataset records about its teacher
    params: int

    @classmethod
    @abstractmethod
    def load(cls, source: str, sha256: str | None = None) -> Teacher:
        """Load from a file, folder or hub name (trust already checked by ``load_teacher``)."""

    @abstractmethod
    def label(self, sentences: Sequence[Sentence], corpus_labels: Sequence[str], temperature: float = 1.0,
              kind: str = "posterior", decode_probs: bool = False, batch_size: int = 32, *, edges: bool = False,
              ) -> Iterator[Labelled]:  # fmt: skip
        """Soft labels at ``temperature`` over ``corpus_labels`` and valid BIO tags, one a sentence, in order.

        ``edges`` (only where ``edge_marginals``): also the marginals of adjacent tags (``Labelled.edges``).
        """

    @abstractmethod
    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[str]]:
        """BIO tags over ``labels`` for every word, decoded as the model is normally run."""

    @property
    def labels(self) -> list[str]:
        """The BIO labels of the entity types this teacher knows."""
        return bio_labels({split_tag(t)[1] for t in self.tags if t not in SPECIAL_TAGS} - {None})

    def to(self, device) -> Teacher:
        """Move the model to a torch device (labelling then runs there, one transfer of results a batch)."""
        return self

    def share_key(self) -> object:
        """Teachers with equal keys share an encoder and are labelled together (``label_group``)."""
        return id(self)

    @classmethod
    def prepare_ensemble(cls, teachers: Sequence[Teacher]) -> int:
        """Let ensemble members of this kind share what they can; returns how many were merged."""
        return 0

    @classmethod
    def label_group(cls, teachers: Sequence[Teacher], batch: Sequence[Sentence], subsets: Sequence[Sequence[int]],
                    corpus_labels: Sequence[str], temperature: float, kind: str,
                    decode_probs: bool, batch_size: int = 32, edges: bool = False,
                    ) -> list[list[Labelled]]:  # fmt: skip
        """Teacher k labels ``batch[i]`` for i in ``subsets[k]`` (teachers of one kind with one share key)."""
        return [list(t.label([batch[i] for i in sub], corpus_labels, temperature, kind, decode_probs, batch_size,
                             edges=edges)) for t, sub in zip(teachers, subsets)]  # fmt: skip

    def check_kind(self, kind: str, edges: bool = False) -> None:
        """A soft-label kind (or edge marginals) this teacher cannot make is a one-line error."""
        if edges and not self.edge_marginals:
            raise UserError(f"--edge-marginals needs a CRF teacher (Flair, or a student trained with --head crf); "
                            f"this {self.kind} teacher has no adjacent-tag marginals (its soft labels still serve a "
                            "CRF student's posterior KD)")  # fmt: skip
        if edges and kind != "posterior":
            raise UserError(f"--edge-marginals goes with --soft-labels posterior, not {kind!r}")
        if kind not in self.soft_label_kinds:
            raise UserError(f"a {self.kind} teacher makes soft labels of kind {', '.join(self.soft_label_kinds)}, "
                            f"not {kind!r}")  # fmt: skip


def _import(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def detect_kind(source: str | Path) -> str:
    """``flair`` for a file, ``transformer`` for a folder with config.json or a hub name; else a one-line error."""
    path = Path(source).expanduser()
    if path.is_file():
        return "flair"
    if path.is_dir():
        if (path / "config.json").is_file():
            return "transformer"
        raise UserError("not a model folder (no config.json); give a student, a token-classifier folder or a "
                        "Flair .pt file", path)  # fmt: skip
    first = Path(str(source)).parts[0] if str(source) else ""
    if str(source).startswith((".", "/", "~")) or str(source).endswith(".pt") or (first and Path(first).is_dir()):
        raise UserError("no such model file or folder; give a Flair .pt file, a model folder or a hub name", source)
    return "transformer"  # a hub name: loads from the Hugging Face cache or the network


def teacher_class(kind: str) -> type[Teacher]:
    """The ``Teacher`` subclass of a kind name."""
    if kind not in KINDS:
        raise UserError(f"unknown teacher kind {kind!r}; use auto, {', '.join(KINDS)}")
    return _import(KINDS[kind])


def check_teacher(source: str | Path, trust_teacher: bool = False, kind: str = "auto") -> tuple[str, str | None]:
    """Kind and SHA-256 of a teacher, trust checked, without loading it: (kind, sha256 or None)."""
    kind = detect_kind(source) if kind == "auto" else kind
    cls = teacher_class(kind)
    digest = trust.check(source, trust_teacher) if cls.pickled else None
    return kind, digest


def load_teacher(source: str | Path, trust_teacher: bool = False, kind: str = "auto", device=None) -> Teacher:
    """The one way to load a teacher of any kind: detect the kind, check trust (pickles only), load."""
    kind, digest = check_teacher(source, trust_teacher, kind)
    teacher = teacher_class(kind).load(str(source), digest)
    return teacher if device is None else teacher.to(device)


def trainer(kind: str = next(iter(TRAINERS)), device=None):
    """A trainer of teachers of ``kind`` on ``device`` (``train(train, dev, cfg, work_dir, types)``, ``close()``)."""
    if kind not in TRAINERS:
        raise UserError(f"nerdistil trains {', '.join(TRAINERS)} teachers; train a {kind} one elsewhere "
                        "(a transformer: `nerdistil finetune`) and pass it with --teacher")  # fmt: skip
    return _import(TRAINERS[kind])(device)
