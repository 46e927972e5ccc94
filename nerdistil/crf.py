"""The one linear-chain CRF of the package: forward-backward marginals, path scores, and the student's CRF head.

Both roles use it: the Flair teacher's soft labels (``teacher/crf.py`` maps Flair's score layout onto the
potentials here) and the CRF student (``CrfHead``: word emissions plus learned transitions, trained on the CRF
negative log-likelihood and on the teacher's posteriors through forward-backward). Everything is batched and in
log space; gradients flow through it.

A chain over words 0..n-1 is given as potentials (all log-scores):
    first (B, K)            word 0 in tag k (its emission, plus the start score)
    pair  (B, T-1, K, K)    [b, t-1, i, j]: word t-1 in tag i then word t in tag j (word t's emission included)
    end   (B, K) or (K,)    the last real word in tag k
The probability of a tag path is exp(sum of its potentials) / Z.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

HEAD_FILE = "crf.safetensors"  # the CRF head beside a student's model.safetensors (config.json: nerdistil_head)
MASKED = -1e4  # a forbidden transition's score in training: finite (no NaN in gradients), exp() is 0 in float32


@dataclass
class Chain:
    """Forward-backward results: log marginals of every word (and of adjacent pairs when asked) and log Z."""

    log_unary: torch.Tensor  # (B, T, K); padding words hold -inf
    log_z: torch.Tensor  # (B,)
    log_edge: torch.Tensor | None = None  # (B, T-1, K, K) [b, t-1, i, j]; pairs past a row's end hold -inf


def _lengths(lengths: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    return torch.as_tensor(lengths, device=device).long()


def forward_backward(first: torch.Tensor, pair: torch.Tensor, end: torch.Tensor,
                     lengths: torch.Tensor | Sequence[int], edges: bool = False) -> Chain:  # fmt: skip
    """Exact marginals of a batch of linear chains of potentials (module docstring), by forward-backward.

    Args:
        first: (B, K) scores of each tag at word 0.
        pair: (B, T-1, K, K) scores of tag i at word t followed by tag j at word t+1 (transition plus emission).
        end: (B, K) or (K,) scores of ending in each tag.
        lengths: (B,) real words a row (>= 1; words past it are padding and ignored).
        edges: also return the marginals of adjacent pairs (K^2 a word).
    """
    B, K = first.shape
    T = pair.shape[1] + 1
    lengths = _lengths(lengths, first.device)
    end = end.expand(B, K)
    alphas = [first]
    for t in range(1, T):  # alpha_t[j] = logsumexp_i(alpha_t-1[i] + pair[t-1, i, j]); rows that ended carry
        nxt = torch.logsumexp(alphas[-1].unsqueeze(2) + pair[:, t - 1], dim=1)
        alphas.append(torch.where((t < lengths).unsqueeze(1), nxt, alphas[-1]))
    alpha = torch.stack(alphas, 1)  # (B, T, K)
    last = alpha[torch.arange(B, device=first.device), lengths - 1]  # (B, K)
    log_z = torch.logsumexp(last + end, dim=1)  # (B,)
    betas = [end]
    for t in range(T - 2, -1, -1):  # beta_t[i] = logsumexp_j(pair[t, i, j] + beta_t+1[j]); at and past the end: end
        inner = torch.logsumexp(pair[:, t] + betas[-1].unsqueeze(1), dim=2)
        betas.append(torch.where((t < lengths - 1).unsqueeze(1), inner, end))
    beta = torch.stack(betas[::-1], 1)  # (B, T, K)
    real = torch.arange(T, device=first.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    neg_inf = torch.tensor(float("-inf"), device=first.device)
    log_unary = torch.where(real.unsqueeze(2), alpha + beta - log_z.view(B, 1, 1), neg_inf)
    log_edge = None
    if edges:
        e = alpha[:, :-1].unsqueeze(3) + pair + beta[:, 1:].unsqueeze(2) - log_z.view(B, 1, 1, 1)
        log_edge = torch.where(real[:, 1:].view(B, T - 1, 1, 1), e, neg_inf)
    return Chain(log_unary, log_z, log_edge)


def path_score(first: torch.Tensor, pair: torch.Tensor, end: torch.Tensor, tags: torch.Tensor,
               lengths: torch.Tensor | Sequence[int]) -> torch.Tensor:  # fmt: skip
    """(B,) log-score of each row's tag path (B, T) under the potentials (unnormalised: minus log Z is log p)."""
    B, K = first.shape
    lengths = _lengths(lengths, first.device)
    tags = tags.clamp_min(0)  # padding words may hold IGNORE; they are masked out below
    score = first.gather(1, tags[:, :1]).squeeze(1)
    if pair.shape[1]:
        prev, nxt = tags[:, :-1], tags[:, 1:]  # (B, T-1)
        steps = pair.gather(2, prev[:, :, None, None].expand(-1, -1, 1, K)).squeeze(2)  # (B, T-1, K): row i = prev
        steps = steps.gather(2, nxt.unsqueeze(2)).squeeze(2)  # (B, T-1)
        real = torch.arange(1, pair.shape[1] + 1, device=first.device).unsqueeze(0) < lengths.unsqueeze(1)
        score = score + (steps * real).sum(1)
    last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    return score + end.expand(B, K).gather(1, last.unsqueeze(1)).squeeze(1)


def chain_potentials(emissions: torch.Tensor, transitions: torch.Tensor, start: torch.Tensor,
                     end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Potentials of a CRF with per-word emissions (B, T, K), transitions (K, K) [from, to], start and end (K,)."""
    first = emissions[:, 0] + start
    pair = transitions.unsqueeze(0).unsqueeze(0) + emissions[:, 1:].unsqueeze(2)  # (B, T-1, K, K)
    return first, pair, end


class CrfHead(torch.nn.Module):
    """A student's CRF layer over its word emissions (each word's first-subword logits).

    Learned transitions (L, L) [from, to], start and end scores (L,); transitions the BIO scheme forbids (I-X after
    anything but B-X or I-X, I-X first) are fixed at ``MASKED``, so no probability goes to a broken entity. Its
    parameters train at ``lr_scale`` times the encoder's learning rate: from zero, at an encoder's 1e-4, they
    could move by about 0.1 in a whole run.
    """

    lr_scale = 100.0

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__()
        from nerdistil.tags import bio_transitions

        L = len(labels)
        self.transitions = torch.nn.Parameter(torch.zeros(L, L))
        self.start = torch.nn.Parameter(torch.zeros(L))
        self.end = torch.nn.Parameter(torch.zeros(L))
        for p in self.parameters():
            p.lr_scale = self.lr_scale  # read by the trainer's parameter groups
        self.register_buffer("allowed", torch.from_numpy(bio_transitions(labels)), persistent=False)  # (L+1, L)

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transitions, start, end) with the forbidden moves at ``MASKED``."""
        masked = torch.tensor(MASKED, dtype=self.transitions.dtype, device=self.transitions.device)
        L = self.transitions.shape[0]
        return (torch.where(self.allowed[:L], self.transitions, masked),
                torch.where(self.allowed[L], self.start, masked), self.end)  # fmt: skip

    def potentials(self, emissions: torch.Tensor, temperature: float = 1.0):
        """Chain potentials of word emissions (B, T, L), every score divided by ``temperature``."""
        trans, start, end = self.scores()
        first, pair, end = chain_potentials(emissions.float(), trans, start, end)
        return first / temperature, pair / temperature, end / temperature

    def numpy_scores(self):
        """(transitions, start, end) as float32 NumPy arrays, unmasked: decoders apply the BIO mask themselves."""
        return tuple(p.detach().cpu().float().numpy() for p in (self.transitions, self.start, self.end))

    def save(self, folder: Path) -> None:
        """Write ``crf.safetensors`` into a student folder."""
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(folder / HEAD_FILE))


def read_head(folder: Path):
    """A student folder's CRF scores (transitions, start, end) as NumPy float32, or None for a softmax student.

    Torch-free (the export reads it). A folder whose config.json names a CRF head but has no readable
    ``crf.safetensors`` is a ``UserError``: decoding it without its transitions would tag differently.
    """
    import json

    from nerdistil.errors import UserError

    cfg_file = folder / "config.json"
    try:
        head = json.loads(cfg_file.read_text(encoding="utf-8")).get("nerdistil_head", "softmax")
    except (OSError, ValueError, AttributeError):
        return None  # check_folder reports an unreadable config.json
    if head != "crf":
        return None
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        t = load_file(str(folder / HEAD_FILE))
        return t["transitions"], t["start"], t["end"]
    except (OSError, SafetensorError, KeyError) as e:
        raise UserError(f"the student has a CRF head (config.json) but {HEAD_FILE} is missing or damaged "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); retrain or restore the folder",
                        folder) from None  # fmt: skip


def attach_head(model, labels: Sequence[str], scores=None) -> CrfHead:
    """Give a token classifier a CRF head (``model.crf``), fresh or with saved (transitions, start, end)."""
    head = CrfHead(labels)
    if scores is not None:
        with torch.no_grad():
            for p, v in zip((head.transitions, head.start, head.end), scores):
                p.copy_(torch.from_numpy(v))
    model.crf = head
    model.config.nerdistil_head = "crf"
    return head
