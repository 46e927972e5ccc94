"""Labelling one split chunk by chunk into Arrow, resumable, and shared out between processes.

A split is read ``label_chunk`` sentences at a time; chunk c is labelled and saved as its own Arrow
dataset ``labels/SPLIT/c`` (a killed run keeps its finished chunks). Under ``torchrun`` process r of N
labels the chunks with c mod N == r; every process reads the stream (never holding it) and skips the
others' chunks, and the first joins all chunks in input order. Each chunk is labelled exactly as a
single process labels it (same sentences, same batches), so the result is bitwise the same.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nerdistil import softlabels, trust
from nerdistil.config import TeachConfig
from nerdistil.data.conll import Sentence
from nerdistil.errors import UserError
from nerdistil.progress import Heartbeat
from nerdistil.runio import write_json
from nerdistil.teacher.base import Teacher
from nerdistil.teacher.ensemble import TeacherRow, label_stream

log = logging.getLogger(__name__)
ROW_SUM_TOLERANCE = 1e-4


@dataclass
class Procs:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"  # the torch device this process labels on

    @classmethod
    def from_env(cls) -> Procs:
        """Read ``RANK``/``WORLD_SIZE`` (set by torchrun); join the process group for barriers (gloo)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # barriers only: no tensors travel between the processes
        return cls(dist.get_rank(), dist.get_world_size())

    def barrier(self) -> None:
        """Wait for every process (nothing to wait for alone)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def mine(self, chunk: int) -> bool:
        """Whether this process labels chunk ``chunk``."""
        return chunk % self.world == self.rank


def autocast(cfg: TeachConfig, device: str):
    """Torch's autocast on the teacher's device for ``--mixed-precision fp16|bf16``; a no-op for ``no``."""
    import contextlib

    import torch

    if cfg.mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.float16 if cfg.mixed_precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def fault(var: str, count: int) -> None:
    """Fault injection for the resume tests: SIGKILL this process when ``$var`` equals ``count``."""
    if os.environ.get(var) == str(count):
        os.kill(os.getpid(), signal.SIGKILL)


def check_finite(row: TeacherRow, split: str, cfg: TeachConfig) -> None:
    """Stop at the first sentence whose soft labels hold NaN or inf: garbage must not become a finished run."""
    if not np.isfinite(row.probs).all():
        where = f"line {row.sentence.line} of " if row.sentence.line else ""
        raise UserError(f"the teacher's soft labels are not finite (NaN or inf) for the sentence at {where}the "
                        f"{split} split (temperature {cfg.temperature}); use a temperature nearer 1")  # fmt: skip


def check_rows(max_error: float, cfg: TeachConfig) -> None:
    """Every stored row must be a distribution: a failed check is an error, not a warning on a finished run."""
    if not max_error <= ROW_SUM_TOLERANCE:  # also catches NaN
        raise UserError(
            f"soft-label check failed: a stored row sums to 1 +- {max_error:.2e} (tolerance "
            f"{ROW_SUM_TOLERANCE:.0e}) at temperature {cfg.temperature}; use a temperature nearer 1"
        )


def check_reusable_labels(cfg: TeachConfig, folder: Path, members: list[dict], files: Sequence[Path]) -> None:
    """Keep an interrupted run's labelled chunks only if they came from the same inputs and teachers."""
    inputs = {
        "teachers": [m["sha256"] for m in members],
        "temperature": cfg.temperature,
        "soft_labels": cfg.soft_labels,
        "label_chunk": cfg.label_chunk,
        "pretokenized": cfg.pretokenized,
        "cross_fit": cfg.cross_fit,
        "edge_marginals": cfg.edge_marginals,
        "files": {str(p): trust.sha256(p) for p in files if p.is_file()},
    }
    stamp = folder / "inputs.json"
    if folder.is_dir() and (not stamp.is_file() or json.loads(stamp.read_text()) != inputs):
        log.warning("resume: the inputs or teachers changed since the interrupted run; labelling afresh")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(stamp, inputs)


@dataclass
class Labelled:
    """What labelling a split leaves besides its chunks: tags to score (gold splits) and reused chunks."""

    gold: list[list[str]] = field(default_factory=list)
    pred: list[list[str]] = field(default_factory=list)
    member_pred: list[list[list[str]]] = field(default_factory=list)
    reused: int = 0


def label_split(name: str, sents: Iterable[Sentence], total: int, teachers: Sequence[Teacher], labels: list[str],
                folder: Path, cfg: TeachConfig, folds: list[int] | None, procs: Procs) -> Labelled:  # fmt: skip
    """Label one split into ``folder``'s chunks (this process's share); gold splits keep tags for scoring."""
    scored = name in ("dev", "test")  # small gold splits: always labelled afresh, then scored
    if scored:
        shutil.rmtree(folder, ignore_errors=True)
    label2id = {label: i for i, label in enumerate(labels)}
    out = Labelled(member_pred=[[] for _ in teachers])
    stream = iter(sents)
    n = len(teachers)
    share = f", process {procs.rank + 1} of {procs.world}" if procs.world > 1 else ""
    what = f"labelling {name}" + (f" ({n} members)" if n > 1 else "") + share
    # a bar on a terminal; in a log file a line a minute (a bar's first estimate there reads hours: issue 28)
    bar = tqdm(total=total, desc=what, unit=" sentences", disable=None if procs.rank == 0 else True)
    beat = Heartbeat(what, total, "sentences", on=bool(bar.disable) and procs.rank == 0, share=procs.world)
    seen = 0  # tqdm counts nothing where it is disabled
    try:  # the bar ends its line before an error is printed
        for c in itertools.count():
            chunk = list(itertools.islice(stream, cfg.label_chunk))
            if not chunk:
                break
            done = folder / f"{c:06d}"
            if not procs.mine(c) or done.is_dir():  # another process's, or labelled before an interruption
                out.reused += procs.mine(c)
                bar.update(len(chunk))
                seen += len(chunk)
                beat.skip(len(chunk))
                continue
            rows = []
            held_out = None  # --cross-fit: each train sentence labelled by the member that did not see it
            if folds is not None and name == "train":
                held_out = folds[c * cfg.label_chunk : c * cfg.label_chunk + len(chunk)]
            with autocast(cfg, procs.device):
                for lab in label_stream(teachers, chunk, labels, cfg.temperature, len(chunk), cfg.soft_labels,
                                        held_out, cfg.label_batch_size, cfg.edge_marginals):  # fmt: skip
                    check_finite(lab, name, cfg)
                    rows.append(softlabels.row(lab.sentence.tokens, lab.sentence.tags, lab.tags, lab.probs, label2id,
                                               lab.edges))  # fmt: skip
                    if scored:
                        out.gold.append(lab.sentence.tags)
                        out.pred.append(lab.tags)
                        for k, tags in enumerate(lab.member_tags):
                            out.member_pred[k].append(tags)
                    bar.update(1)
                    seen += 1
                    beat.tick(seen)
            softlabels.save_chunk(rows, labels, done)
            fault("NERDISTIL_FAULT_KILL_AFTER_CHUNK", c + 1)
    finally:
        bar.close()
    return out
