"""The CRF student's loss terms: CRF negative log-likelihood on gold tags and structure-level (posterior) KD.

Wang et al. 2020 ("Structure-Level Knowledge Distillation For Multilingual Sequence Labeling"): the student is a
CRF too, and its *marginals* (forward-backward of ``nerdistil.crf``, gradients through it) are matched to the
teacher's posteriors, word by word (``kd``) and, when the soft labels carry them, pair by pair (``pair``: the
teacher's marginals of adjacent tags). Same form as ``losses.ner_loss``: a dict of named weighted terms.

Class weights carry over as a logit adjustment: weighted CE's optimum shifts the student's logits by log w; a CRF
whose loss sees ``emissions - log w`` learns emissions shifted the same way, and decodes them unshifted (Menon et
al. 2021, "Long-tail learning via logit adjustment"). The NLL always sees the shift, the KD terms only with
``kd_class_weights`` (as the softmax student's reweighted targets).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from nerdistil.align import IGNORE
from nerdistil.crf import CrfHead, forward_backward, path_score


@dataclass(frozen=True)
class CrfBatch:
    """One batch at word level: each window a chain of its words (their first subwords' logits)."""

    head: CrfHead
    emissions: torch.Tensor  # (B, W, L) word logits
    lengths: torch.Tensor  # (B,) words a window
    tags: torch.Tensor  # (B, W) gold ids, IGNORE where none
    soft: torch.Tensor  # (B, W, L) teacher probabilities at T
    soft_mask: torch.Tensor  # (B, W) bool: words with a teacher row
    temperature: float
    log_w: torch.Tensor | None = None  # (L,) log class weights (the logit adjustment)
    kd_adjust: bool = False  # the KD terms see the adjustment too
    soft_edges: torch.Tensor | None = None  # (B, W, L, L): at word w, the teacher's p(w-1, w); w = 0 unused


def word_view(batch: dict, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gather a collated batch's word-start positions into word-level tensors, words in order, padding last."""
    start = batch["word_start"]  # (B, T)
    lengths = start.sum(1)
    W = int(lengths.max())
    order = torch.argsort((~start).to(torch.int8), dim=1, stable=True)[:, :W]  # (B, W): word starts first
    K = logits.shape[-1]

    def take(x: torch.Tensor) -> torch.Tensor:
        idx = order.view(*order.shape, *([1] * (x.dim() - 2)))
        return x.gather(1, idx.expand(*order.shape, *x.shape[2:]))

    real = torch.arange(W, device=start.device).unsqueeze(0) < lengths.unsqueeze(1)
    out = {"emissions": take(logits).float(), "lengths": lengths,
           "tags": torch.where(real, take(batch["labels"]), torch.full_like(order, IGNORE)),
           "soft": take(batch["soft"]), "soft_mask": take(batch["soft_mask"]) & real}  # fmt: skip
    if "soft_edges" in batch:
        out["soft_edges"] = take(batch["soft_edges"].reshape(*start.shape, K * K)).view(*order.shape, K, K)
    return out


def _potentials(b: CrfBatch, adjust: bool, temperature: float = 1.0):
    e = b.emissions - b.log_w if adjust and b.log_w is not None else b.emissions
    return b.head.potentials(e, temperature)


def _kl(target: torch.Tensor, log_q: torch.Tensor, dims: int) -> torch.Tensor:
    """Sum over the last ``dims`` dims of p (log p - log q), 0 log 0 = 0; masked log q (-inf) where p = 0 is 0."""
    safe_q = torch.where(target > 0, log_q, torch.zeros_like(log_q))
    kl = torch.xlogy(target, target) - target * safe_q
    return kl.sum(dim=tuple(range(-dims, 0)))


def _on_support(p: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Teacher mass on tags (or pairs) the student's BIO mask forbids is dropped, rows renormalised."""
    p = p * allowed
    return p / p.sum(dim=tuple(range(-allowed.dim(), 0)), keepdim=True).clamp_min(1e-30)


def nll_term(b: CrfBatch) -> torch.Tensor:
    """CRF negative log-likelihood of the gold paths, per gold word (the softmax CE's scale)."""
    real = torch.arange(b.tags.shape[1], device=b.tags.device).unsqueeze(0) < b.lengths.unsqueeze(1)
    gold = ((b.tags != IGNORE) | ~real).all(1)  # windows whose every word has a gold tag
    if not gold.any():
        return b.emissions.sum() * 0.0
    first, pair, end = _potentials(b, adjust=True)
    chain = forward_backward(first[gold], pair[gold], end, b.lengths[gold])
    score = path_score(first[gold], pair[gold], end, b.tags[gold], b.lengths[gold])
    return (chain.log_z - score).sum() / b.lengths[gold].sum()


def posterior_term(b: CrfBatch) -> torch.Tensor:
    """T^2 * KL(teacher_T || student CRF marginals at T), averaged over the words with a teacher row."""
    if not b.soft_mask.any():
        return b.emissions.sum() * 0.0
    T = b.temperature
    chain = forward_backward(*_potentials(b, b.kd_adjust, T), b.lengths)
    target = b.soft.clone()
    target[:, 0] = _on_support(target[:, 0], b.head.allowed[-1].to(target.dtype))  # no I-X first
    kl = _kl(target, chain.log_unary, 1)  # (B, W)
    return kl[b.soft_mask].sum() / b.soft_mask.sum() * T**2


def pair_term(b: CrfBatch) -> torch.Tensor:
    """T^2 * KL(teacher's adjacent-tag marginals || the student CRF's), averaged over word pairs with both."""
    if b.soft_edges is None:
        raise ValueError("the pairwise KD term needs soft labels with pair marginals (teach --edge-marginals)")
    has = b.soft_mask[:, 1:] & b.soft_mask[:, :-1] & (b.soft_edges[:, 1:].sum((-2, -1)) > 0)  # (B, W-1)
    if not has.any():
        return b.emissions.sum() * 0.0
    T = b.temperature
    chain = forward_backward(*_potentials(b, b.kd_adjust, T), b.lengths, edges=True)
    L = b.emissions.shape[-1]
    target = _on_support(b.soft_edges[:, 1:], b.head.allowed[:L].to(b.soft_edges.dtype))
    kl = _kl(target, chain.log_edge, 2)  # (B, W-1)
    return kl[has].sum() / has.sum() * T**2


CRF_TERMS: dict[str, Callable[[CrfBatch], torch.Tensor]] = {"ce": nll_term, "kd": posterior_term, "pair": pair_term}


def crf_loss(head: CrfHead, logits: torch.Tensor, batch: dict, *, weights: Mapping[str, float], temperature: float,
             weight: torch.Tensor | None = None, kd_class_weights: bool = False,
             ) -> tuple[torch.Tensor, dict[str, float]]:  # fmt: skip
    """Weighted sum of the CRF terms for a collated batch and the student's subword logits (B, T, L).

    ``weights`` by name (``CRF_TERMS``: "ce" the gold NLL, "kd" posterior KD, "pair" pairwise KD); a term
    of weight 0 is not computed. ``weight``: (L,) class weights, applied as a logit adjustment.
    """
    unknown = sorted(set(weights) - set(CRF_TERMS))
    if unknown:
        raise ValueError(f"unknown CRF loss term(s) {unknown}; known: {sorted(CRF_TERMS)}")
    view = word_view(batch, logits)
    log_w = None if weight is None else weight.to(view["emissions"].device).log()
    b = CrfBatch(head, view["emissions"], view["lengths"], view["tags"], view["soft"], view["soft_mask"],
                 temperature, log_w, kd_class_weights, view.get("soft_edges"))  # fmt: skip
    parts: dict[str, torch.Tensor] = {}
    total = logits.new_zeros((), dtype=torch.float32)
    for name, alpha in weights.items():
        if alpha:
            parts[name] = CRF_TERMS[name](b)
            total = total + alpha * parts[name]
    return total, {k: float(v.detach()) for k, v in parts.items()}
