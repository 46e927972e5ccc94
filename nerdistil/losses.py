"""The shared loss core: small pure functions used by NER and language-model distillation.

Shapes: N positions (already flattened and masked by the caller or via ``mask``), K classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight


def weighted_ce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
                ignore_index: int = -100) -> torch.Tensor:  # fmt: skip
    """Class-weighted cross-entropy, averaged over the N labelled positions.

    Args:
        logits: (N, K) student scores.
        targets: (N,) gold class ids; ``ignore_index`` positions are skipped.
        weight: (K,) class weights or None.
        ignore_index: target value of positions without a gold label.

    Returns:
        sum_i w[y_i] * -log p(y_i) / #labelled (a plain mean over positions, not over weights,
        so the CE and KD terms stay on the same per-word scale); 0 when nothing is labelled.
    """
    keep = targets != ignore_index
    if not keep.any():
        return logits.sum() * 0.0
    nll = F.cross_entropy(logits[keep], targets[keep], weight=weight, reduction="sum")
    return nll / keep.sum()


def kd_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
          mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """T^2 * KL(teacher || softmax(student / T)), averaged over the masked positions.

    Args:
        student_logits: (N, K) raw student scores.
        teacher_probs: (N, K) teacher distribution, already at temperature T (e.g. CRF posteriors of scores / T).
        temperature: T, required: it must be the one ``teacher_probs`` were made at (no default to
            silently disagree with the soft labels). The T^2 factor keeps gradient size comparable
            across temperatures (Hinton et al.).
        mask: (N,) bool, positions that carry a teacher distribution (default: all).
    """
    if mask is not None:
        student_logits, teacher_probs = student_logits[mask], teacher_probs[mask]
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(log_q, teacher_probs, reduction="sum")  # sum p (log p - log q), 0 log 0 = 0
    return kl / student_logits.shape[0] * temperature**2


def mse_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean squared error between (N, K) logits, averaged over positions and classes."""
    if mask is not None:
        student_logits, teacher_logits = student_logits[mask], teacher_logits[mask]
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    return F.mse_loss(student_logits, teacher_logits)


def cosine_hidden(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None):
    """Cosine embedding loss 1 - cos(s, t) between (N, H) hidden states, averaged over positions."""
    if mask is not None:
        student_hidden, teacher_hidden = student_hidden[mask], teacher_hidden[mask]
    if student_hidden.shape[0] == 0:
        return student_hidden.sum() * 0.0
    return (1 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)).mean()


def class_weights(tag_ids: Sequence[int], num_labels: int, power: float = 0.5) -> torch.Tensor:
    """scikit-learn's "balanced" class weights over gold tags, smoothed by ``power`` (1: as is, 0: none).

    Classes absent from training get the largest weight seen. Weights are rescaled to mean 1
    over the present classes' frequency, so the CE scale stays comparable to the unweighted one.
    """
    y = np.asarray(tag_ids)
    present = np.unique(y)
    w = compute_class_weight("balanced", classes=present, y=y) ** power
    full = np.full(num_labels, w.max(), dtype=np.float64)
    full[present] = w
    freq = np.bincount(y, minlength=num_labels) / len(y)
    full /= (full * freq).sum()  # expected weight of a training word = 1
    return torch.tensor(full, dtype=torch.float32)


def reweight_soft(probs: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class-weighted teacher targets: p_k * w_k^(1/T), renormalised over k (rows of zeros stay zero).

    Weighted CE on gold tags is minimised by q_k proportional to w_k * p_data(k): it moves the
    student's decisions towards rare classes. A student matching these targets at temperature T
    gets the same w shift in its T = 1 logits, so the CE and KD terms pull the same way instead of
    the teacher's O-heavy posteriors undoing the class weights.
    """
    shifted = probs * weight.to(probs.dtype) ** (1.0 / temperature)
    total = shifted.sum(-1, keepdim=True)
    return torch.where(total > 0, shifted / total.clamp_min(1e-30), probs)


@dataclass(frozen=True)
class NerBatch:
    """What an NER loss term sees: one batch flattened to N positions, and the run's settings."""

    logits: torch.Tensor  # (N, K) student token logits
    labels: torch.Tensor  # (N,) gold ids, -100 where there is none
    soft: torch.Tensor  # (N, K) teacher probabilities
    soft_mask: torch.Tensor  # (N,) bool, positions carrying a teacher distribution
    temperature: float  # T of the soft labels
    weight: torch.Tensor | None = None  # (K,) class weights of the CE term
    kd_weight: torch.Tensor | None = None  # (K,) class weights of the KD targets


def ce_term(b: NerBatch) -> torch.Tensor:
    """Class-weighted cross-entropy against the gold tags."""
    return weighted_ce(b.logits, b.labels, b.weight)


def kd_term(b: NerBatch) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T) at the positions with a teacher distribution.

    With ``kd_weight`` the teacher's distribution is reweighted to p_k * w_k^(1/T), renormalised
    (``reweight_soft``): the target whose optimum shifts the student's T = 1 decisions by w, as
    class-weighted CE does for gold tags.
    """
    target = b.soft if b.kd_weight is None else reweight_soft(b.soft, b.kd_weight, b.temperature)
    return kd_kl(b.logits, target, b.temperature, b.soft_mask)


# The NER loss's named terms: a new term is one function of a NerBatch plus one entry here
# (and a weight under its name, e.g. from a config field).
NER_TERMS: dict[str, Callable[[NerBatch], torch.Tensor]] = {"ce": ce_term, "kd": kd_term}


def ner_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft: torch.Tensor,
    soft_mask: torch.Tensor,
    *,
    weights: Mapping[str, float],
    temperature: float,
    weight: torch.Tensor | None = None,
    kd_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of named terms, e.g. alpha_ce * CE_w(student, gold) + alpha_kd * T^2 * KL(teacher_T || student_T).

    Args:
        logits: (B, T, K) student token logits.
        labels: (B, T) gold ids, -100 where there is none (padding, later subwords, unlabeled text).
        soft: (B, T, K) teacher probabilities.
        soft_mask: (B, T) bool, positions carrying a teacher distribution.
        weights: weight by term name (``NER_TERMS``), e.g. ``{"ce": 0.5, "kd": 2}``; a term with
            weight 0 (or absent) is not computed.
        temperature: T of the soft labels (the KD term and its target reweighting).
        weight: (K,) class weights for the CE term, or None.
        kd_weight: (K,) class weights for the KD term's targets, or None (see ``kd_term``).

    Returns:
        (total, {name: value}) for the computed terms, the parts as floats for logging.

    Raises:
        ValueError: a name in ``weights`` that is not in ``NER_TERMS``.
    """
    unknown = sorted(set(weights) - set(NER_TERMS))
    if unknown:
        raise ValueError(f"unknown NER loss term(s) {unknown}; known: {sorted(NER_TERMS)}")
    K = logits.shape[-1]
    batch = NerBatch(logits.reshape(-1, K), labels.reshape(-1), soft.reshape(-1, K), soft_mask.reshape(-1),
                     temperature, weight, kd_weight)  # fmt: skip
    parts: dict[str, torch.Tensor] = {}
    total = logits.new_zeros(())
    for name, alpha in weights.items():
        if alpha:
            parts[name] = NER_TERMS[name](batch)
            total = total + alpha * parts[name]
    return total, {k: float(v.detach()) for k, v in parts.items()}
