"""Flair's CRF posteriors (forward-backward of ``nerdistil.crf`` in log space) and teacher-to-corpus tag mapping.

Flair's CRF scores come as ``scores[b, t, k_to, k_from] = emission[b, t, k_to] +
transitions[k_to, k_from]``; the first word is scored from the ``<START>`` column and the last
word adds ``transitions[<STOP>, k]``. Flair's ``return_probabilities_for_all_classes`` is a
softmax over Viterbi max-scores, not a posterior: the functions here compute the true
marginal p(y_t = k | sentence).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from nerdistil.crf import Chain, forward_backward
from nerdistil.data.conll import bioes_to_bio, split_tag
from nerdistil.errors import UserError

log = logging.getLogger(__name__)

SPECIAL_TAGS = ("<START>", "<STOP>", "<unk>")


def flair_chain(scores: torch.Tensor, lengths: torch.Tensor | Sequence[int], start_idx: int,
                stop_scores: torch.Tensor, temperature: float = 1.0, edges: bool = False) -> Chain:  # fmt: skip
    """Forward-backward (``nerdistil.crf``, the package's one CRF) over Flair's CRF scores at a temperature.

    Args:
        scores: (B, T, K, K) emission-plus-transition scores, ``[b, t, to, from]`` (Flair's layout).
        lengths: (B,) number of real words per sentence (any order; padding beyond is ignored).
        start_idx: the ``<START>`` tag index; word 0 is scored as ``scores[:, 0, :, start_idx]``.
        stop_scores: (K,) score of ending in each tag, Flair's ``transitions[<STOP>, :]``.
        temperature: every score is divided by it first; T > 1 flattens the posteriors.
        edges: also the marginals of adjacent tag pairs.
    """
    scores = scores.float() / temperature
    first = scores[:, 0, :, start_idx]  # (B, K)
    pair = scores[:, 1:].transpose(2, 3)  # (B, T-1, K_from, K_to)
    return forward_backward(first, pair, stop_scores.float() / temperature, lengths, edges)


def crf_marginals(
    scores: torch.Tensor,
    lengths: torch.Tensor | Sequence[int],
    start_idx: int,
    stop_scores: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Posterior tag marginals (B, T, K) of Flair's CRF scores (``flair_chain``); padding rows are 0."""
    return flair_chain(scores, lengths, start_idx, stop_scores, temperature).log_unary.exp()


def tag_projection(teacher_tags: Sequence[str], corpus_labels: Sequence[str]) -> np.ndarray:
    """A (K_teacher, L) 0/1 matrix that sums teacher tag probabilities into corpus BIO labels.

    BIOES maps onto BIO (S-X -> B-X, E-X -> I-X); ``<START>``, ``<STOP>``, ``<unk>`` map to
    nothing (their mass is dropped and rows are renormalised afterwards). Entity types the
    teacher knows but the corpus does not annotate map to O, with a warning. A corpus label the
    teacher cannot produce is a ``UserError`` listing both label sets.
    """
    col = {label: j for j, label in enumerate(corpus_labels)}
    proj = np.zeros((len(teacher_tags), len(corpus_labels)), dtype=np.float32)
    extra: set[str] = set()
    covered: set[str] = set()
    for i, tag in enumerate(teacher_tags):
        if tag in SPECIAL_TAGS:
            continue
        try:
            bio = bioes_to_bio([tag])[0]
        except ValueError:
            raise UserError(f"the teacher predicts tag {tag!r}, which is not O or a BIO/BIOES tag") from None
        if bio not in col:
            extra.add(split_tag(bio)[1] or bio)
            bio = "O"
        proj[i, col[bio]] = 1.0
        covered.add(bio)
    missing = [label for label in corpus_labels if label not in covered]
    if missing:
        teacher_bio = sorted({t for t in teacher_tags if t not in SPECIAL_TAGS})
        raise UserError(
            f"the teacher cannot predict corpus label(s) {missing}; corpus labels: {list(corpus_labels)}; "
            f"teacher tags: {teacher_bio}. Use a teacher trained on these entity types or retrain one with teach"
        )
    if extra:
        log.warning("teacher entity types not in the corpus are counted as O: %s", sorted(extra))
    return proj


def project(probs: torch.Tensor, proj: np.ndarray) -> torch.Tensor:
    """(…, K_teacher) teacher tag probabilities -> (…, L) corpus label probabilities, rows renormalised."""
    out = probs.float() @ torch.from_numpy(proj).to(probs.device)
    return out / out.sum(dim=-1, keepdim=True).clamp_min(1e-30)


def project_pairs(pair: torch.Tensor, proj: np.ndarray) -> torch.Tensor:
    """(…, K, K) teacher tag-pair marginals -> (…, L, L) corpus label pairs (Pᵀ E P), each matrix renormalised."""
    P = torch.from_numpy(proj).to(pair.device)
    out = P.T @ pair.float() @ P
    return out / out.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
