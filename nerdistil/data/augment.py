"""Transfer text made from the gold tweets, for the teacher to label (distillation's unlabeled set).

On the full gold set a teacher's posteriors of its own training tweets are nearly the gold tags, so
KD there adds little; the teacher's knowledge shows on text it was not trained on. Where no raw
in-domain tweets exist, new ones are made from the gold ones, as TinyBERT made its transfer set by
word replacement, with the two label-preserving operations of Dai & Adel (2020, "An analysis of
simple data augmentation for named entity recognition"):

- mention replacement: an entity mention is swapped, with probability ``p_mention``, for another
  mention of the same type seen in the corpus (so the context is real and the entity is new there);
- label-wise token replacement: a word outside any entity is swapped, with probability ``p_word``,
  for another outside word drawn from the corpus's unigram distribution.

The teacher then labels every made tweet (``teach --unlabeled``); the tags the operations would
imply are written too (``--conll``), to train a gold-augmentation baseline on the same text.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from nerdistil.data.conll import Sentence, read_conll, write_conll
from nerdistil.errors import UserError
from nerdistil.runio import check_file_out

Mention = tuple[str, ...]


def mentions(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) of every BIO entity in ``tags``, end exclusive (seqeval's own chunking)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [(a, b + 1, typ) for typ, a, b in get_entities(list(tags))]


def augment(
    sentences: Sequence[Sentence],
    copies: int = 2,
    seed: int = 13,
    p_mention: float = 0.5,
    p_word: float = 0.1,
) -> Iterator[Sentence]:
    """``copies`` changed versions of every tagged sentence (in order), each with its implied BIO tags.

    A version that came out identical to its source is tried again (up to 10 times), then skipped,
    so every yielded sentence is new text. Deterministic for a seed.
    """
    rng = random.Random(seed)
    pool: dict[str, list[Mention]] = {}
    words: list[str] = []
    for s in sentences:
        if not s.tags:
            continue
        inside = set()
        for a, b, typ in mentions(s.tags):
            pool.setdefault(typ, []).append(tuple(s.tokens[a:b]))
            inside.update(range(a, b))
        words += [w for i, w in enumerate(s.tokens) if i not in inside]
    for s in sentences:
        if not s.tags:
            continue
        spans = {a: (b, typ) for a, b, typ in mentions(s.tags)}
        for _ in range(copies):
            for _try in range(10):
                tokens, tags = _one(s, spans, pool, words, rng, p_mention, p_word)
                if tokens != s.tokens:
                    yield Sentence(tokens, tags, s.line)
                    break


def _one(s: Sentence, spans: dict[int, tuple[int, str]], pool: dict[str, list[Mention]], words: list[str],
         rng: random.Random, p_mention: float, p_word: float) -> tuple[list[str], list[str]]:  # fmt: skip
    """One changed version of ``s``: its words and tags."""
    tokens: list[str] = []
    tags: list[str] = []
    i = 0
    while i < len(s.tokens):
        if i in spans:
            end, typ = spans[i]
            span = tuple(s.tokens[i:end])
            others = pool.get(typ, [])
            if others and rng.random() < p_mention:
                span = rng.choice(others)
            tokens += span
            tags += [f"B-{typ}"] + [f"I-{typ}"] * (len(span) - 1)
            i = end
            continue
        word = s.tokens[i]
        if words and rng.random() < p_word:
            word = rng.choice(words)
        tokens.append(word)
        tags.append("O")
        i += 1
    return tokens, tags


def write_pretokenized(path: str | Path, sentences: Iterable[Sentence]) -> int:
    """Write one sentence a line, words joined by spaces (``teach --unlabeled --pretokenized``), atomically.

    Returns the number of lines; a half-written file never carries the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for s in sentences:
            f.write(" ".join(s.tokens) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def run_augment(train_file: Path, out_file: Path, copies: int = 2, seed: int = 13, p_mention: float = 0.5,
                p_word: float = 0.1, conll: Path | None = None) -> tuple[int, int]:  # fmt: skip
    """``data augment``: check the settings, write the made tweets (and, with ``conll``, their tags).

    Returns (tweets made, gold tweets read).
    """
    if copies < 1:
        raise UserError(f"--copies must be at least 1, got {copies}")
    for name, p in (("--p-mention", p_mention), ("--p-word", p_word)):
        if not 0.0 <= p <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {p}")
    check_file_out(out_file, [train_file])
    check_file_out(conll, [train_file, out_file])
    gold = read_conll(train_file)
    made = list(augment(gold, copies, seed, p_mention, p_word))
    write_pretokenized(out_file, made)
    if conll:
        write_conll(conll, made)
    return len(made), len(gold)
