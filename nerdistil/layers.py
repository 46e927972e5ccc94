"""Shrinking pretrained transformers: keep some encoder layers, prune attention heads.

Shared by the NER student (``--student-layers K``) and language-model distillation
(``--student-layers 0,2,4`` and ``--prune-heads N``).
"""

from __future__ import annotations

import numpy as np
import torch

from nerdistil.errors import UserError


def num_layers(model: torch.nn.Module) -> int:
    """Number of transformer layers from the model's config."""
    cfg = model.config
    return cfg.num_hidden_layers if hasattr(cfg, "num_hidden_layers") else cfg.n_layers


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` of ``n`` layer indices, evenly spaced, first and last included (DistilBERT's choice)."""
    if not 1 <= k <= n:
        raise UserError(f"--student-layers must be between 1 and the model's {n} layers, got {k}")
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def select_layers(model: torch.nn.Module, indices: list[int]) -> list[int]:
    """Keep exactly these encoder layers (in this order), in place; updates the config."""
    n = num_layers(model)
    bad = [i for i in indices if not 0 <= i < n]
    if bad or not indices or len(set(indices)) != len(indices):
        raise UserError(f"layer indices {indices} must be distinct and between 0 and {n - 1}")
    base = getattr(model, model.base_model_prefix)
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            parent = base.get_submodule(name.rsplit(".", 1)[0]) if "." in name else base
            setattr(parent, name.rsplit(".", 1)[-1], torch.nn.ModuleList([module[i] for i in indices]))
            for attr in ("num_hidden_layers", "n_layers"):
                if hasattr(model.config, attr):
                    setattr(model.config, attr, len(indices))
            return list(indices)
    raise UserError(f"cannot find the {n} transformer layers of {type(model).__name__} to drop layers from")


def head_importance(model: torch.nn.Module) -> torch.Tensor:
    """(layers, heads) data-free importance: ||W_V of the head||_F * ||W_O columns of the head||_F.

    A head writes into the residual stream only through its value and output projections, so the
    product of their norms bounds how much it can change the layer's output (BERT-family naming:
    ``attention.self.value`` and ``attention.output.dense``).
    """
    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer if hasattr(base, "encoder") else None
    if layers is None or not hasattr(layers[0].attention, "self"):
        raise UserError(f"head pruning supports BERT-family models (BERT, RoBERTa, XLM-R), not {type(model).__name__}")
    rows = []
    for layer in layers:
        att = layer.attention.self
        n_heads, d = att.num_attention_heads, att.attention_head_size
        wv = att.value.weight.detach().view(n_heads, d, -1)  # (heads, d, hidden)
        wo = layer.attention.output.dense.weight.detach().view(-1, n_heads, d)  # (hidden, heads, d)
        rows.append(wv.flatten(1).norm(dim=1) * wo.transpose(0, 1).flatten(1).norm(dim=1))
    return torch.stack(rows)


def prune_least_important_heads(model: torch.nn.Module, n: int) -> dict[int, list[int]]:
    """Prune the ``n`` least important heads (``head_importance``) in every layer; returns what was pruned."""
    imp = head_importance(model)
    if not 0 <= n < imp.shape[1]:
        raise UserError(f"--prune-heads must be between 0 and {imp.shape[1] - 1} (heads per layer), got {n}")
    plan = {i: sorted(imp[i].argsort()[:n].tolist()) for i in range(imp.shape[0])} if n else {}
    if plan:
        model.prune_heads(plan)
    return plan
