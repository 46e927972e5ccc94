"""The student's training data: windows with gold label ids and the teacher's soft-label rows, batched.

``distil`` and ``finetune`` are the same run: ``finetune`` is ``distil`` with no teacher
(alpha_kd = 0), so every distillation result has a baseline made by the same code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nerdistil.align import Collator, Window, windows
from nerdistil.data.conll import Sentence


@dataclass
class Example:
    """One training window and the soft labels of its sentence (None without a teacher)."""

    window: Window
    probs: np.ndarray | None
    gold: bool = True  # the sentence has gold tags (False: teacher-only text, KD only)
    edges: np.ndarray | None = None  # (words - 1, L, L) the teacher's pair marginals, for a CRF student


def make_examples(
    tokenizer,
    sentences: Sequence[Sentence],
    label2id: dict[str, int],
    probs: Sequence[np.ndarray | None] | None = None,
    use_gold: bool = True,
    max_length: int | None = None,
    label_all_subwords: bool = False,
    min_confidence: float = 0.0,
    edges: Sequence[np.ndarray | None] | None = None,
) -> list[Example]:
    """Windows with gold label ids (when known and ``use_gold``) and the sentence's soft-label matrix.

    ``min_confidence``: in teacher-only sentences, words whose teacher max probability is below it
    get no KD target (their soft row is masked out); gold sentences keep every row.
    """
    out = []
    for i, sent in enumerate(sentences):
        tags = [label2id[t] for t in sent.tags] if sent.tags and use_gold else None
        p = probs[i] if probs is not None else None
        unsure = p is not None and not sent.tags and min_confidence > 0
        low = set(np.flatnonzero(p.max(-1) < min_confidence).tolist()) if unsure else set()
        for w in windows(tokenizer, sent.tokens, i, tags, max_length, label_all_subwords):
            if low:
                w.soft_pos = [-1 if j in low else j for j in w.soft_pos]
            out.append(Example(w, p, bool(sent.tags), edges[i] if edges is not None else None))
    return out


def loader(examples: list[Example], collator: Collator, batch_size: int, shuffle: bool, seed: int = 13,
           group_by_length: bool = False,
           teacher_only_ratio: float | None = None) -> torch.utils.data.DataLoader:  # fmt: skip
    """Batches padded to their longest window, in an order fixed by (seed, epoch) so runs can resume.

    ``teacher_only_ratio``: the share of every batch taken from teacher-only examples (see
    ``MixedBatchSampler``); None mixes them in like any other example.
    """
    from nerdistil.trainer import EpochBatchSampler, MixedBatchSampler

    items = [(e.window, e.probs, e.edges) for e in examples]
    if teacher_only_ratio is not None and any(e.gold for e in examples):
        gold = [i for i, e in enumerate(examples) if e.gold]
        rest = [i for i, e in enumerate(examples) if not e.gold]
        sampler = MixedBatchSampler(gold, rest, batch_size, teacher_only_ratio, seed)
    else:
        sampler = EpochBatchSampler([len(it[0].input_ids) for it in items], batch_size, shuffle, seed, group_by_length)
    # own generator: creating an epoch's iterator must not draw from the global RNG (dropout's), or a
    # resumed run would drift from an uninterrupted one
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(items, batch_sampler=sampler, collate_fn=collator, generator=g)
