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
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from nerdistil.errors import UserError
from nerdistil.progress import Heartbeat

log = logging.getLogger(__name__)

LossFn = Callable[[torch.nn.Module, dict], tuple[torch.Tensor, dict[str, float]]]


@dataclass(kw_only=True)
class TrainConfig:
    """Optimiser, schedule and model selection of the one training loop.

    Keyword-only; a command builds it from its config with ``TrainConfig.from_config(cfg, ...)``.
    """

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
    device: str = "auto"  # "auto" (Accelerate's choice: a GPU when there is one), "cpu" or "cuda"
    checkpoint_every: int = 0  # also checkpoint every N optimiser steps (0: at epoch ends only)
    metric: str = "f1"  # logged as eval/<metric>
    maximize: bool = True  # False for metrics where lower is better (perplexity)

    @classmethod
    def from_config(cls, cfg: object, **overrides: Any) -> TrainConfig:
        """The loop's settings read from a command's config (``StudentConfig``, ``LMConfig``...).

        Every field is taken from the attribute of the same name on ``cfg``; ``overrides`` set
        fields the config lacks (or replace ones it has). A field found in neither keeps its
        default here.

        Raises:
            TypeError: an override that is not a field of TrainConfig.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"TrainConfig has no field(s) {unknown}; fields: {names}")
        values = {name: getattr(cfg, name) for name in names if hasattr(cfg, name)}
        return cls(**{**values, **overrides})


@dataclass
class TrainResult:
    """What the loop measured: best score, its epoch, per-epoch history, wall time."""

    best_score: float = -math.inf
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


class EpochBatchSampler(torch.utils.data.Sampler):
    """Index batches whose order depends only on (seed, epoch), so a resumed run sees the same batches.

    With ``group_by_length`` the shuffled indices are sorted by length within chunks of 50
    batches and the batches shuffled again: little padding, still random.
    """

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool = True, seed: int = 13,
                 group_by_length: bool = False) -> None:  # fmt: skip
        self.lengths, self.batch_size, self.shuffle = lengths, batch_size, shuffle
        self.seed, self.group_by_length, self.epoch = seed, group_by_length, 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        if self.group_by_length:
            chunk = self.batch_size * 50
            order = [
                i for s in range(0, n, chunk) for i in sorted(order[s : s + chunk], key=lambda j: -self.lengths[j])
            ]
        batches = [order[s : s + self.batch_size] for s in range(0, n, self.batch_size)]
        if self.shuffle and self.group_by_length:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        yield from batches


class MixedBatchSampler(torch.utils.data.Sampler):
    """Batches with a fixed share of teacher-only examples (KD only) beside gold ones (CE + KD).

    Every batch holds ``round(ratio * batch_size)`` teacher-only examples and the rest gold ones.
    An epoch is one pass over the gold examples; teacher-only examples are drawn in a shuffled
    order that carries on from epoch to epoch, so a large transfer set is seen piece by piece
    instead of swamping the gold data. Like ``EpochBatchSampler``, the batches depend only on
    (seed, epoch), so a resumed run sees the same ones.
    """

    def __init__(self, gold: Sequence[int], teacher_only: Sequence[int], batch_size: int, ratio: float,
                 seed: int = 13) -> None:  # fmt: skip
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"the teacher-only share of a batch must be in [0, 1), got {ratio}")
        self.gold, self.teacher_only = list(gold), list(teacher_only)
        self.n_teacher = min(round(ratio * batch_size), batch_size - 1) if self.teacher_only else 0
        self.n_gold = batch_size - self.n_teacher
        self.seed, self.epoch = seed, 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches ``__iter__`` yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.gold) / self.n_gold)

    def _teacher_stream(self, start: int, count: int) -> list[int]:
        """Items ``start .. start + count`` of the endless teacher-only order (a new permutation each pass)."""
        n, out = len(self.teacher_only), []
        for k in range(start, start + count):
            cycle, pos = divmod(k, n)
            if not out or pos == 0 or k == start:
                g = torch.Generator().manual_seed(self.seed * 100_003 + 7_919 * (cycle + 1))
                perm = torch.randperm(n, generator=g).tolist()
            out.append(self.teacher_only[perm[pos]])
        return out

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = [self.gold[i] for i in torch.randperm(len(self.gold), generator=g).tolist()]
        start = (self.epoch - 1) * len(self) * self.n_teacher
        for b, s in enumerate(range(0, len(order), self.n_gold)):
            extra = self._teacher_stream(start + b * self.n_teacher, self.n_teacher) if self.n_teacher else []
            yield order[s : s + self.n_gold] + extra


def make_accelerator(cfg: TrainConfig):
    """The run's Accelerator: device placement, mixed precision, data parallelism.

    Launched by ``accelerate launch --multi_gpu`` or ``torchrun`` it trains data-parallel; on a
    machine without CUDA, several torchrun processes use the gloo backend on the CPU.
    """
    from accelerate import Accelerator

    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {cfg.device}: this machine has no CUDA GPU that torch can use; use --device cpu")
    cpu_parallel = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(cpu=cpu_parallel or cfg.device == "cpu", mixed_precision=cfg.mixed_precision,
                       gradient_accumulation_steps=cfg.grad_accum)  # fmt: skip


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU.

    Under torchrun, ``cuda`` is the GPU of ``LOCAL_RANK`` modulo the machine's GPUs: labelling with more
    processes than GPUs (``--nproc_per_node 8`` on one GPU) shares each GPU between several processes, whose
    Python work (Flair's sentences, tokens and decoding) then runs on several cores.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise UserError(f"--device {name}: not a device nerdistil runs on; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this machine has no CUDA GPU that torch can use; use --device cpu")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return torch.device(name)


def where(acc, mixed_precision: str) -> dict:
    """The report's record of where a run trained: processes, device, its name, precision."""
    return {"processes": acc.num_processes, "device": str(acc.device), "device_name": device_name(acc.device),
            "mixed_precision": mixed_precision}  # fmt: skip


def device_name(device: torch.device | str) -> str:
    """What a report says about where a run ran: the GPU's name, or the CPU's."""
    import platform

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:  # Linux names the CPU model here; platform.processor() often says only "x86_64"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine() or 'unknown'}"


def _param_groups(model: torch.nn.Module, weight_decay: float, lr: float) -> list[dict]:
    """Optimizer groups: no weight decay on biases and normalisation weights (BERT's recipe).

    A parameter with an ``lr_scale`` attribute (a CRF head's transitions) trains at that multiple of the
    learning rate, without weight decay.
    """
    decay, no_decay, scaled = [], [], {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if getattr(p, "lr_scale", 1.0) != 1.0:
            scaled.setdefault(p.lr_scale, []).append(p)
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups + [{"params": ps, "weight_decay": 0.0, "lr": lr * k} for k, ps in scaled.items()]


def train(
    model: torch.nn.Module,
    train_loader: torch.utils.data.DataLoader,
    loss_fn: LossFn,
    cfg: TrainConfig,
    evaluate: Callable[[torch.nn.Module], float] | None = None,
    log_dir: Path | None = None,
    accelerator=None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train ``model`` and return it with the best dev epoch's weights loaded (or the last epoch's).

    With ``checkpoint_dir`` the loop saves a checkpoint at every epoch end (and every
    ``cfg.checkpoint_every`` steps); with ``resume`` it continues from the one there. The
    loader's batch sampler should be an ``EpochBatchSampler`` so a resumed epoch replays the
    same batch order and skips the batches already done.
    """
    from transformers import get_linear_schedule_with_warmup

    from nerdistil import checkpoint

    acc = accelerator or make_accelerator(cfg)
    sampler = train_loader.batch_sampler
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay, cfg.lr), lr=cfg.lr, eps=cfg.adam_eps)
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
    step, start_epoch, done = 0, 1, 0  # done: batches of start_epoch already trained
    sums: dict[str, float] = {}
    n = 0
    elapsed = 0.0
    if resume:
        if checkpoint_dir is None or not checkpoint.exists(checkpoint_dir):
            raise UserError("nothing to resume: no checkpoint in the partial output folder; run without --resume")
        loop, best_state = checkpoint.load(checkpoint_dir, acc.unwrap_model(model), optimizer, scheduler)
        step, start_epoch, done, sums, n = loop["step"], loop["epoch"], loop["done"], loop["sums"], loop["n"]
        bad_epochs, elapsed = loop["bad_epochs"], loop["seconds"]
        result.best_score, result.best_epoch, result.history = loop["best_score"], loop["best_epoch"], loop["history"]
        log.info("resuming at epoch %d, batch %d (step %d)", start_epoch, done, step)

    def save(epoch: int, batches_done: int) -> None:
        if checkpoint_dir is None or not acc.is_main_process:
            return
        loop = {"epoch": epoch, "done": batches_done, "step": step, "sums": sums, "n": n, "bad_epochs": bad_epochs,
                "seconds": elapsed + time.perf_counter() - t0, "best_score": result.best_score,
                "best_epoch": result.best_epoch, "history": result.history}  # fmt: skip
        checkpoint.save(checkpoint_dir, acc.unwrap_model(model), optimizer, scheduler, loop, best_state)
        if os.environ.get("NERDISTIL_FAULT_KILL_AT_STEP") == str(step):  # fault injection for the resume test
            os.kill(os.getpid(), signal.SIGKILL)

    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        if not (resume and epoch == start_epoch and done > 0):  # a fresh epoch (a resumed one keeps its sums)
            sums, n, done = {}, 0, 0
        # Accelerate's loader re-sets its batch sampler's epoch to its own iteration count when
        # iterated: give it the real epoch, so a resumed process replays the same order
        for obj in (sampler, train_loader):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        loader = acc.skip_first_batches(train_loader, done) if done else train_loader
        batches_done = done
        # disable=None: a bar on a terminal, none in log files or on non-main processes
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=None if acc.is_local_main_process else True)
        quiet = bool(bar.disable) and acc.is_local_main_process  # no bar drawn: a log line a minute instead
        beat = Heartbeat(f"epoch {epoch}/{cfg.epochs}", len(train_loader), "batches", done, on=quiet)
        for batch in bar:
            with acc.accumulate(model):
                loss, parts = loss_fn(model, batch)
                if not torch.isfinite(loss.detach()):  # a NaN model must never be saved as a finished run
                    raise UserError(f"the training loss became {float(loss.detach())} at epoch {epoch}, batch "
                                    f"{batches_done + 1}; check the soft labels and lower --lr")  # fmt: skip
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            batches_done += 1
            value = float(loss.detach())
            n += 1
            if acc.sync_gradients:
                step += 1
            for k, v in {"loss": value, **{f"loss_{k}": v for k, v in parts.items()}}.items():
                sums[k] = sums.get(k, 0.0) + v
                if writer:
                    writer.add_scalar(f"losses/{k}", v, step)
            if writer:
                writer.add_scalar("losses/cum_avg_loss_epoch", sums["loss"] / n, step)
                writer.add_scalar("learning_rate/lr", scheduler.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}")
            beat.tick(batches_done, f"loss {sums['loss'] / n:.4f}")
            if acc.sync_gradients and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save(epoch, batches_done)
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
        stop = evaluate is not None and cfg.patience and bad_epochs >= cfg.patience
        save(epoch + 1, 0)
        if stop:
            log.info("early stop: no dev improvement for %d epochs", bad_epochs)
            break
    result.seconds = elapsed + time.perf_counter() - t0
    result.steps = step
    if writer:
        writer.close()
    model = acc.unwrap_model(model)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, result
