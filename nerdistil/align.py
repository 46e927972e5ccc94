"""Words to subword tokens: label alignment, windows for long sentences, dynamic-padding collator.

The first subword of each word carries the word's gold label and soft-label row; other subwords
and special tokens get ``IGNORE`` (or, with ``label_all_subwords``, the word's labels too). A
word the tokenizer turns into no subword at all (a lone zero-width joiner, an odd emoji) is
replaced by the unknown token, so it still gets a prediction. A sentence longer than the
model's maximum length is cut into consecutive word windows, each within the limit, so every
word is predicted exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where batches are made: the torch-free runtime imports windows() from here
    import torch

IGNORE = -100


def load_tokenizer(name_or_path: str, **kwargs):
    """AutoTokenizer (fast) for word-split input; byte-level BPE gets ``add_prefix_space=True``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, **kwargs)
    if is_byte_level(tok) and not getattr(tok, "add_prefix_space", False):
        tok = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, add_prefix_space=True, **kwargs)
    # a sentence longer than the model is encoded whole, then cut into word windows (``windows``): transformers'
    # "sequence length is longer than the specified maximum ... will result in indexing errors" does not apply
    if isinstance(getattr(tok, "deprecation_warnings", None), dict):
        tok.deprecation_warnings["sequence-length-is-longer-than-the-specified-maximum"] = True
    return tok


def is_byte_level(tokenizer) -> bool:
    """True for GPT-2/RoBERTa-style byte-level BPE, which needs a prefix space on split words."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.pre_tokenizer is None:
        return False
    return "ByteLevel" in json.dumps(json.loads(backend.to_str()).get("pre_tokenizer"))


@dataclass
class Window:
    """One model input: a run of words ``[start, start + len(words))`` of sentence ``sid``."""

    sid: int
    start: int
    input_ids: list[int]
    word_ids: list[int | None]  # per subword: index of its word within the sentence, None for specials
    labels: list[int] = field(default_factory=list)  # per subword: gold label id or IGNORE
    soft_pos: list[int] = field(default_factory=list)  # per subword: word index carrying a soft row, or -1


def windows(
    tokenizer,
    words: Sequence[str],
    sid: int = 0,
    tags: Sequence[int] | None = None,
    max_length: int | None = None,
    label_all_subwords: bool = False,
) -> list[Window]:
    """Tokenize one sentence into one or more windows with aligned labels.

    Args:
        tokenizer: a fast Hugging Face tokenizer.
        words: the sentence's words.
        sid: sentence index, kept on each window to stitch predictions back.
        tags: gold label ids per word, or None (unlabeled).
        max_length: model input limit including special tokens (default: the tokenizer's, capped at 512).
        label_all_subwords: give every subword its word's labels, not just the first.
    """
    if not words:
        raise ValueError("a sentence needs at least one word")
    limit = max_length or min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    # one tokenizer call serves the common case: every word has a subword and the sentence fits
    full = tokenizer(list(words), is_split_into_words=True)
    seen = {w for w in full.word_ids() if w is not None}
    if len(seen) < len(words):  # a word with no subword: feed the unknown token instead (nothing is dropped)
        unk = tokenizer.unk_token or "?"
        words = [w if i in seen else unk for i, w in enumerate(words)]
        full = tokenizer(list(words), is_split_into_words=True)
    if len(full["input_ids"]) <= limit:
        return [_window(sid, 0, len(words), list(full["input_ids"]), full.word_ids(), tags, label_all_subwords)]
    budget = limit - tokenizer.num_special_tokens_to_add(pair=False)
    counts = np.bincount([w for w in full.word_ids() if w is not None], minlength=len(words))
    # greedy word windows: as many whole words as fit in the subword budget
    spans, start, used = [], 0, 0
    for i, n in enumerate(counts):
        n = min(int(n), budget)  # a single word longer than the budget is truncated to its first subwords
        if used + n > budget and i > start:
            spans.append((start, i))
            start, used = i, 0
        used += n
    spans.append((start, len(words)))
    out = []
    for a, b in spans:
        e = tokenizer(list(words[a:b]), is_split_into_words=True, truncation=True, max_length=limit)
        out.append(_window(sid, a, b - a, list(e["input_ids"]), e.word_ids(), tags, label_all_subwords))
    return out


def _window(sid: int, a: int, n_words: int, input_ids: list[int], local_ids: list[int | None],
            tags: Sequence[int] | None, label_all_subwords: bool) -> Window:  # fmt: skip
    """A Window for words ``[a, a + n_words)`` from one encoding's word ids (local to the window)."""
    wids = [None if w is None else w + a for w in local_ids]
    labels, soft = [], []
    prev = None
    for w in wids:
        first = w is not None and w != prev
        carry = w is not None and (first or label_all_subwords)
        labels.append(tags[w] if carry and tags is not None else IGNORE)
        soft.append(w if carry else -1)
        prev = w
    covered = {w for w in wids if w is not None}
    missing = set(range(a, a + n_words)) - covered
    if missing:  # cannot happen unless truncation cut a word; fail loudly rather than drop it
        raise RuntimeError(f"words {sorted(missing)} of sentence {sid} lost their subwords")
    return Window(sid, a, input_ids, wids, labels, soft)


class Collator:
    """Pads a list of windows to the longest in the batch (no fixed length, so no pad class).

    Each window comes with its sentence's soft labels (``[words x labels]`` float array or None) and, optionally,
    the teacher's marginals of adjacent word pairs (``[words - 1 x labels x labels]``, for a CRF student's
    pairwise term). Returns ``input_ids``, ``attention_mask``, ``labels`` (B, T) with IGNORE on padding,
    ``soft`` (B, T, L) teacher probabilities, ``soft_mask`` (B, T) marking positions that carry them,
    ``word_start`` (B, T) marking each word's first subword, and with pair marginals ``soft_edges``
    (B, T, L, L): at word w's first subword, the teacher's p(word w-1, word w).
    """

    def __init__(self, pad_token_id: int, num_labels: int, pad_to: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.num_labels = num_labels
        self.pad_to = pad_to  # fixed length (only to measure what fixed padding costs); None: dynamic

    def __call__(self, items: Sequence[tuple]) -> dict[str, torch.Tensor]:
        """Collate (window, soft labels or None[, pair marginals or None]) tuples into one padded batch."""
        import torch

        T = max(max(len(it[0].input_ids) for it in items), self.pad_to or 0)
        B, L = len(items), self.num_labels
        ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        soft = torch.zeros((B, T, L), dtype=torch.float32)
        soft_mask = torch.zeros((B, T), dtype=torch.bool)
        word_start = torch.zeros((B, T), dtype=torch.bool)
        with_edges = any(len(it) > 2 and it[2] is not None for it in items)
        edges = torch.zeros((B, T, L, L), dtype=torch.float32) if with_edges else None
        for b, (w, probs, *rest) in enumerate(items):
            n = len(w.input_ids)
            ids[b, :n] = torch.tensor(w.input_ids)
            mask[b, :n] = 1
            labels[b, :n] = torch.tensor(w.labels)
            first = first_subword_positions(w.word_ids)  # word -> its first subword
            word_start[b, list(first.values())] = True
            if probs is not None:
                pos = [t for t, p in enumerate(w.soft_pos) if p >= 0]
                soft[b, pos] = torch.from_numpy(np.asarray(probs, dtype=np.float32)[[w.soft_pos[t] for t in pos]])
                soft_mask[b, pos] = True
            if edges is not None and rest and rest[0] is not None:
                inner = [word for word in first if word > w.start]  # the pair (word - 1, word) lies in the window
                if inner:
                    e = np.asarray(rest[0], dtype=np.float32)[[word - 1 for word in inner]]
                    edges[b, [first[word] for word in inner]] = torch.from_numpy(e)
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels, "soft": soft, "soft_mask": soft_mask,
               "word_start": word_start}  # fmt: skip
        if edges is not None:
            out["soft_edges"] = edges
        return out


def first_subword_positions(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Word index -> position of its first subword in one window."""
    out: dict[int, int] = {}
    for t, w in enumerate(word_ids):
        if w is not None and w not in out:
            out[w] = t
    return out
