"""Training checkpoints that make a killed run resumable, bit for bit on CPU.

A checkpoint folder holds the model (safetensors), the optimizer and scheduler states
(``torch.save`` of plain state dicts, read back with ``weights_only=True``), the Python, NumPy
and torch RNG states and the loop's position (JSON). It is written to a temporary folder and
renamed, so a kill during the write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    # clone: tied weights share memory, which safetensors refuses to write twice
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as JSON-able values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured."""
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def save(folder: Path, model: torch.nn.Module, optimizer, scheduler, loop: dict, best: dict | None) -> None:
    """Write a complete checkpoint into ``folder`` atomically."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(_tensors(model.state_dict()), str(tmp / "model.safetensors"))
    if best is not None:
        save_file(_tensors(best), str(tmp / "best.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(getattr(scheduler, "scheduler", scheduler).state_dict(), tmp / "scheduler.pt")
    (tmp / "state.json").write_text(json.dumps({"loop": loop, "rng": rng_state()}))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def exists(folder: Path) -> bool:
    """A complete checkpoint is there."""
    return (folder / "state.json").is_file()


def load(folder: Path, model: torch.nn.Module, optimizer, scheduler) -> tuple[dict, dict | None]:
    """Restore model, optimizer, scheduler and RNG states; returns (loop position, best weights or None)."""
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    getattr(scheduler, "scheduler", scheduler).load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    state = json.loads((folder / "state.json").read_text())
    set_rng_state(state["rng"])
    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").is_file() else None
    return state["loop"], best
