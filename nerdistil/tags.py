"""BIO tag rules shared by every role: entity spans, the transition mask and the valid-BIO Viterbi.

NumPy only (the torch-free runtime imports it). One chunker for everybody: the teacher's Flair spans,
the runtime's entities and ``predict``'s output all come from ``bio_spans``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bio_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word + 1) of every entity in a BIO sequence; a stray I-X starts an entity."""
    spans: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-") or (tag.startswith("I-") and (not spans or spans[-1][2] != i or
                                                              spans[-1][0] != tag[2:])):  # fmt: skip
            spans.append((tag[2:], i, i + 1))
        elif tag.startswith("I-"):
            spans[-1] = (spans[-1][0], spans[-1][1], i + 1)
    return spans


def bio_transitions(labels: Sequence[str]) -> np.ndarray:
    """(L+1, L) bool: row L is the sentence start; ``[i, j]`` says whether label j may follow label i."""
    L = len(labels)
    ok = np.ones((L + 1, L), dtype=bool)
    for j, lab in enumerate(labels):
        if lab.startswith("I-"):
            ok[:, j] = False
            for i, prev in enumerate(labels):
                if prev[2:] == lab[2:] and prev[:2] in ("B-", "I-"):
                    ok[i, j] = True
    return ok


def viterbi(emissions: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[int]:
    """Best tag path of a linear chain: (n, L) word scores, (L, L) [from, to] transitions, (L,) start and end.

    The one Viterbi of the package (the ensemble's posteriors, the softmax and CRF students); a forbidden move
    is a score of -inf. Ties go to the lowest index, as the exported graph's ArgMax.
    """
    n, L = emissions.shape
    score = emissions[0] + start
    back = np.zeros((n, L), dtype=np.int64)
    for t in range(1, n):
        cand = score[:, None] + transitions  # (from, to)
        back[t] = cand.argmax(0)
        score = cand.max(0) + emissions[t]
    path = [int((score + end).argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def bio_scores(allowed: np.ndarray, crf: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
    """(transitions, start, end) for ``viterbi``: a CRF's learned scores (or zeros) with the BIO mask's -inf."""
    L = allowed.shape[1]
    trans, start, end = crf if crf is not None else (np.zeros((L, L)), np.zeros(L), np.zeros(L))
    return np.where(allowed[:L], trans, -np.inf), np.where(allowed[L], start, -np.inf), np.asarray(end, dtype=float)


def bio_viterbi(logp: np.ndarray, allowed: np.ndarray,
                crf: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> list[int]:  # fmt: skip
    """Best valid BIO path for (n, L) log-probabilities under ``bio_transitions``' mask (plus a CRF's scores)."""
    return viterbi(logp, *bio_scores(allowed, crf))


def decode_posteriors(probs: np.ndarray, labels: Sequence[str]) -> list[str]:
    """The best valid BIO path through (n, L) per-word probabilities (an ensemble's mean, a softmax)."""
    path = bio_viterbi(np.log(np.clip(probs, 1e-12, None)), bio_transitions(labels))
    return [labels[k] for k in path]
