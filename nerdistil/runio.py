"""Run folders: atomic outputs, resolved configs, library versions, JSON reports."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from nerdistil.errors import UserError

log = logging.getLogger(__name__)
PACKAGES = ("nerdistil", "torch", "flair", "transformers", "datasets", "seqeval", "scikit-learn", "accelerate")


@contextlib.contextmanager
def staging(out: str | Path, overwrite: bool = False, resume: bool = False, main: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes ``out`` only when the block succeeds.

    An interrupted run leaves ``.NAME.partial`` behind, never a folder that looks finished;
    ``resume`` reuses it (its checkpoint) instead of starting afresh. An existing non-empty
    ``out`` is refused unless ``overwrite``. In a multi-process run only the main process
    (``main``) creates, checks and renames anything; the others just get the path.
    """
    out = Path(out)
    if not main:
        yield out.parent / f".{out.name}.partial"
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            what = "a finished run" if (out / "report.json").is_file() else "files"
            raise UserError(f"the output folder already holds {what}; choose another --out or pass --overwrite", out)
    tmp = out.parent / f".{out.name}.partial"
    if resume and not tmp.is_dir():
        raise UserError(f"nothing to resume: no interrupted run ({tmp.name}) next to it; run without --resume", out)
    if tmp.exists() and not resume:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except UserError:  # bad input found mid-run: leave no debris, unless it holds work worth resuming
        if not any((tmp / keep).exists() for keep in ("checkpoint", "members", "labels")):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)


def versions() -> dict[str, Any]:
    """Python, platform, thread count and the versions of the libraries a result depends on."""
    import torch

    libs = {}
    for name in PACKAGES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "libraries": libs,
    }


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON, written to a temporary name and renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_config(path: str | Path, cfg: Any) -> None:
    """Save a resolved config dataclass as YAML, so ``--config`` reproduces the run."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def write_model_run(folder: Path, model, tokenizer, cfg: Any, report: dict) -> None:
    """A Hugging Face model folder (safetensors + tokenizer) with nerdistil's config and report beside it."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_config(folder / "nerdistil_config.yaml", cfg)
    write_json(folder / "report.json", report)
