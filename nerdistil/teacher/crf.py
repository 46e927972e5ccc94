"""Linear-chain CRF posteriors (forward-backward in log space) and teacher-to-corpus tag mapping.

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

from nerdistil.data.conll import bioes_to_bio, split_tag
from nerdistil.errors import UserError

log = logging.getLogger(__name__)

SPECIAL_TAGS = ("<START>", "<STOP>", "<unk>")


def crf_marginals(
    scores: torch.Tensor,
    lengths: torch.Tensor | Sequence[int],
    start_idx: int,
    stop_scores: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Posterior tag marginals of a linear-chain CRF by forward-backward in log space.

    Args:
        scores: (B, T, K, K) emission-plus-transition scores, ``[b, t, to, from]`` (Flair's layout).
        lengths: (B,) number of real words per sentence (any order; padding beyond is ignored).
        start_idx: the ``<START>`` tag index; word 0 is scored as ``scores[:, 0, :, start_idx]``.
        stop_scores: (K,) score of ending in each tag, Flair's ``transitions[<STOP>, :]``.
        temperature: every score is divided by it first; T > 1 flattens the posteriors.

    Returns:
        (B, T, K) float tensor; rows of real words sum to 1, padding rows are 0.
    """
    scores = scores.float() / temperature
    stop = stop_scores.float() / temperature
    B, T, K, _ = scores.shape
    lengths = torch.as_tensor(lengths, device=scores.device).long()
    steps = torch.arange(T, device=scores.device)

    alphas = torch.empty(B, T, K, device=scores.device)
    alpha = scores[:, 0, :, start_idx]  # (B, K)
    alphas[:, 0] = alpha
    for t in range(1, T):
        nxt = torch.logsumexp(scores[:, t] + alpha.unsqueeze(1), dim=2)  # (B, K_to)
        alpha = torch.where((t < lengths).unsqueeze(1), nxt, alpha)
        alphas[:, t] = alpha
    last = alphas[torch.arange(B), lengths - 1]  # (B, K)
    log_z = torch.logsumexp(last + stop, dim=1)  # (B,)

    betas = torch.zeros(B, T, K, device=scores.device)
    beta = stop.expand(B, K).clone()
    for t in range(T - 1, -1, -1):
        if t < T - 1:
            # beta_t[j] = logsumexp_k(scores[t+1, k, j] + beta_{t+1}[k])
            inner = torch.logsumexp(scores[:, t + 1] + beta.unsqueeze(2), dim=1)  # (B, K_from)
            beta = torch.where((t < lengths - 1).unsqueeze(1), inner, stop.expand(B, K))
        betas[:, t] = beta
    log_marg = alphas + betas - log_z.view(B, 1, 1)
    mask = (steps.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
    return torch.where(mask, log_marg.exp(), torch.zeros_like(log_marg))


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
