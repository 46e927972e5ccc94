"""When ``nerdistil run`` may reuse a finished stage: only when what made it is what would make it now.

Each stage's record (its resolved config, and fingerprints of its inputs: the corpus files and the
reports of the stages before it) is kept in ``RUN_OUT/stages.json`` when the stage finishes. A later
``run`` reuses the stage's folder only when the record it would write now equals the saved one;
otherwise it names the keys that differ and redoes the stage (and, through the pipeline, every stage
after it). A folder from before the records existed is compared with the config file it saved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import yaml

from nerdistil.runio import write_json

RECORDS = "stages.json"
# settings that change where or how fast a stage runs, never what it makes
IGNORED = {"overwrite", "resume", "vector_cache", "label_batch_size", "num_workers"}
SAVED_CONFIGS = ("config.yaml", "nerdistil_config.yaml")  # what teach and the students saved before the records


def fingerprint(paths: Iterable[Path]) -> str:
    """SHA-256 over the files that exist among ``paths`` (name and bytes): a stage's inputs."""
    h = hashlib.sha256()
    for p in paths:
        if p.is_file():
            h.update(p.name.encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _config(value: object) -> dict[str, object]:
    """A config (dataclass or mapping) as dotted keys with JSON values, as ``stages.json`` keeps it."""
    return json.loads(json.dumps(_flat(value), default=str))


def _flat(value: object, prefix: str = "") -> dict[str, object]:
    """A nested mapping as dotted keys, without the ignored ones."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if not isinstance(value, dict):
        return {prefix.rstrip("."): value}
    out: dict[str, object] = {}
    for k, v in value.items():
        if k not in IGNORED:
            out.update(_flat(v, f"{prefix}{k}."))
    return out


def record(cfg: object, inputs: Iterable[Path]) -> dict:
    """What a stage is made from: its resolved config (JSON values) and its inputs' fingerprint."""
    return {"config": _config(cfg), "inputs": fingerprint(inputs)}


class Records:
    """The saved records of one run folder (``stages.json``)."""

    def __init__(self, out: Path) -> None:
        self.file = out / RECORDS
        self.saved: dict = {}
        self.damaged = False  # nothing can be shown unchanged, so every stage is redone
        try:
            self.saved = json.loads(self.file.read_text()) if self.file.is_file() else {}
        except ValueError:
            self.damaged = True

    def changes(self, name: str, now: dict, folder: Path) -> list[str] | None:
        """What differs between the record of the finished stage ``name`` and ``now`` ([] : nothing; None: unknown)."""
        if self.damaged:
            return [f"{RECORDS} is damaged"]
        old = self.saved.get(name)
        if old is None:  # a folder from before the records: its own saved config, where there is one
            for file in SAVED_CONFIGS:
                if (folder / file).is_file():
                    cfg = yaml.safe_load((folder / file).read_text()) or {}
                    old = {"config": _config(cfg), "inputs": None}
                    break
            else:
                return None
        diff = [f"{k}: {old['config'][k]!r} -> {now['config'][k]!r}" for k in sorted(now["config"])
                if k in old["config"] and old["config"][k] != now["config"][k]]  # fmt: skip
        if old.get("inputs") is not None and old["inputs"] != now["inputs"]:
            diff.append("its inputs changed (the corpus or an earlier stage's result)")
        return diff

    def save(self, name: str, now: dict) -> None:
        """Record that stage ``name`` finished from ``now``."""
        self.damaged = False
        self.saved[name] = now
        self.file.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.file, self.saved)
