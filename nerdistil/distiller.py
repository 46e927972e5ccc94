"""The one training loop, shared by NER distillation, fine-tuning and language-model distillation.

A task hands over its model, data loaders and two callables: ``loss_fn(model, batch) ->
(total, {"name": float})`` and ``evaluate(model) -> float`` (higher is better unless
``maximize`` is off). The loop does AdamW with linear warm-up and decay, gradient clipping and
accumulation, TensorBoard curves (``losses/loss``, ``losses/loss_<name>``,
``losses/cum_avg_loss_epoch``, ``learning_rate/lr``, ``eval/<metric>``), best-epoch
selection and early stopping. Devices, mixed precision and data parallelism come from
Hugging Face Accelerate, so ``accelerate launch -m nerdistil ...`` needs no code change.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class TrainConfig:
    """Optimiser and schedule of the student loop."""

    epochs: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    warmup: float = 0.05  # proportion of all optimiser steps
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    patience: int = 3  # epochs without dev improvement before stopping (0: never stop early)
    seed: int = 13
    mixed_precision: str = "no"  # "no", "fp16", "bf16" (Accelerate)
    metric: str = "f1"  # logged as eval/<metric>
    maximize: bool = True  # False for metrics where lower is better (perplexity)


@dataclass
class TrainResult:
    """What the loop measured: best score, its epoch, per-epoch history, wall time."""

    best_score: float = -math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (BERT's recipe)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    model: torch.nn.Module,
    train_loader: torch.utils.data.DataLoader,
    loss_fn: LossFn,
    cfg: TrainConfig,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    log_dir: Path | None = None,
    accelerator=None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train ``model`` and return it with the best dev epoch's weights loaded (or the last epoch's)."""
    from accelerate import Accelerator
    from transformers import get_linear_schedule_with_warmup

    acc = accelerator or Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, eps=cfg.adam_eps)
    model, optimizer, train_loader = acc.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum)
    total = max(1, steps_per_epoch * cfg.epochs)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total), total)
    scheduler = acc.prepare(scheduler)

    writer = None
    if log_dir is not None and acc.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))

    result = TrainResult()
    best_state = None
    bad_epochs = 0
    t0 = time.perf_counter()
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        n = 0
        # disable=None: a bar on a terminal, none in log files or on non-main processes
        bar = tqdm(
            train_loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=None if acc.is_local_main_process else True
        )
        for batch in bar:
            with acc.accumulate(model):
                loss, parts = loss_fn(model, batch)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if acc.sync_gradients:
                step += 1
            value = float(loss.detach())
            n += 1
            for k, v in {"loss": value, **{f"loss_{k}": v for k, v in parts.items()}}.items():
                sums[k] = sums.get(k, 0.0) + v
                if writer:
                    writer.add_scalar(f"losses/{k}", v, step)
            if writer:
                writer.add_scalar("losses/cum_avg_loss_epoch", sums["loss"] / n, step)
                writer.add_scalar("learning_rate/lr", scheduler.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}")
        record = {"epoch": epoch, **{k: v / max(n, 1) for k, v in sums.items()}}
        if evaluate is not None:
            model.eval()
            score = evaluate(acc.unwrap_model(model))
            record[cfg.metric] = score
            if writer:
                writer.add_scalar(f"eval/{cfg.metric}", score, step)
            better = score > result.best_score if cfg.maximize else score < result.best_score
            if result.best_epoch == 0 or better:
                result.best_score, result.best_epoch, bad_epochs = score, epoch, 0
                best_state = copy.deepcopy(acc.unwrap_model(model).state_dict())
            else:
                bad_epochs += 1
        result.history.append(record)
        if acc.is_main_process:
            log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if evaluate is not None and cfg.patience and bad_epochs >= cfg.patience:
            log.info("early stop: no dev improvement for %d epochs", bad_epochs)
            break
    result.seconds = time.perf_counter() - t0
    result.steps = step
    if writer:
        writer.close()
    model = acc.unwrap_model(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, result
