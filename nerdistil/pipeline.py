"""``nerdistil run CONFIG``: data, teacher, fine-tuned baseline, distilled student, one table.

The config has a top-level ``run`` section (output root, corpus) and one section per stage
(``teach``, ``finetune``, ``distil``) with the same keys as those commands' configs. A stage
whose folder already holds a finished run (``report.json``) is reused unless ``--overwrite``,
so an interrupted pipeline restarts where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from nerdistil import config as cfgmod
from nerdistil.errors import UserError
from nerdistil.runio import versions, write_json

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Where the pipeline reads and writes."""

    out: str = "runs/wnut16"
    corpus: str = "data/wnut16"
    wnut16: bool = True  # write the bundled WNUT-16 split into ``corpus`` if it is not there yet
    split_seed: int = 13
    overwrite: bool = False


def run_pipeline(path: str | Path, overwrite: bool = False) -> dict:
    """Run every stage of the config; returns the summary (also written to OUT/summary.json)."""
    from nerdistil.student import run_student
    from nerdistil.teacher.teach import run_teach

    run = cfgmod.load(RunConfig, path, "run")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(raw) - {"run", "teach", "finetune", "distil"}
    if unknown:
        raise UserError(f"unknown section(s) {sorted(unknown)}; use run, teach, finetune, distil", path)
    overwrite = overwrite or run.overwrite
    out = Path(run.out)
    corpus = Path(run.corpus)
    if run.wnut16 and not (corpus / "train.txt").is_file():
        from nerdistil.data import wnut16

        wnut16.write_split(corpus, run.split_seed)
    t0 = time.perf_counter()

    def stage(name: str, fn, cfg) -> dict:
        report_file = Path(cfg.out) / "report.json"
        if report_file.is_file() and not overwrite:
            log.info("%s: reusing the finished run in %s (pass --overwrite to redo it)", name, cfg.out)
            return json.loads(report_file.read_text())
        log.info("%s: writing %s", name, cfg.out)
        return fn(replace(cfg, overwrite=True))

    teach_cfg = cfgmod.load(cfgmod.TeachConfig, path, "teach", {"corpus": str(corpus), "out": str(out / "teacher")})
    teacher = stage("teach", run_teach, teach_cfg)
    students = {}
    for name, distil in (("finetune", False), ("distil", True)):
        cfg = cfgmod.load(
            cfgmod.StudentConfig, path, name, {"soft_labels": str(out / "teacher"), "out": str(out / name)}
        )
        students[name] = stage(name, lambda c, d=distil: run_student(c, d), cfg)

    rows = [_row("teacher (Flair BiLSTM-CRF)", teacher, teacher.get("params"), teacher.get("train_seconds"))]
    rows += [_row(f"{n} student", r, r["params"], r["train_seconds"]) for n, r in students.items()]
    summary = {"rows": rows, "seconds": round(time.perf_counter() - t0, 1), "config": str(path),
               "environment": versions()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    return summary


def _row(name: str, report: dict, params: int | None, seconds: float | None) -> dict:
    scores = report.get("scores", {})
    return {
        "model": name,
        "params": params,
        "dev_f1": scores.get("dev", {}).get("f1"),
        "test_f1": scores.get("test", {}).get("f1"),
        "train_seconds": seconds,
    }
