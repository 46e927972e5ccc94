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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from nerdistil import config as cfgmod
from nerdistil.errors import UserError
from nerdistil.runio import protected, versions, write_json

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Where the pipeline reads and writes."""

    out: str = "runs/wnut16"
    corpus: str = "data/wnut16"
    wnut16: bool = True  # write the bundled WNUT-16 split into ``corpus`` if it is not there yet
    split_seed: int = 13
    augment_copies: int = 0  # > 0: the teacher also labels this many made versions of each training tweet
    overwrite: bool = False


def run_pipeline(path: str | Path, overwrite: bool = False, sets: Sequence[str] = ()) -> dict:
    """Run every stage of the config; returns the summary (also written to OUT/summary.json).

    NER stages (teach, finetune, distil) run when any of their sections is present; the
    language-model stages (lm_finetune, lm_distil, lm_eval) when theirs are. ``sets`` are
    ``--set SECTION.KEY=VALUE`` items: each goes to its section as if the file held it.
    """
    by_section = _route_sets(sets)
    run = cfgmod.load(RunConfig, path, "run", sets=by_section.get("run", ()))
    raw = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(raw) - cfgmod.SECTIONS
    if unknown:
        raise UserError(f"unknown section(s) {sorted(unknown)}; use {sorted(cfgmod.SECTIONS)}", path)
    for section, items in by_section.items():  # a section given a --set takes part, as if it were in the file
        raw[section] = raw.get(section) or {}
        if section == "lm_eval":  # no dataclass: its three keys are read from the mapping
            for item in items:
                name, _, text = item.partition("=")
                key = name.strip().split(".", 1)[1]
                if key not in ("models", "words", "corpus"):
                    raise UserError(f"--set {name.strip()}: lm_eval takes models, words or corpus")
                raw[section][key] = _yaml_value(name.strip(), text)
    overwrite = overwrite or run.overwrite
    out = Path(run.out)
    corpus = Path(run.corpus)
    why = protected(out.expanduser().resolve(), [])  # stage folders are checked one by one
    if why:
        raise UserError(f"run.out {why}; nerdistil never writes its stage folders there: choose a new run.out", out)
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

    rows: list[dict] = []
    extra: dict = {}
    if {"teach", "finetune", "distil"} & set(raw) or not {"lm_finetune", "lm_distil", "lm_eval"} & set(raw):
        rows += _ner_stages(path, out, corpus, stage, run, by_section)
    if {"lm_finetune", "lm_distil", "lm_eval"} & set(raw):
        lm_rows, extra["lm_eval"] = _lm_stages(path, raw, out, corpus, stage, by_section)
        rows += lm_rows
    summary = {"rows": rows, **extra, "seconds": round(time.perf_counter() - t0, 1), "config": str(path),
               "environment": versions()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    return summary


def _route_sets(items: Sequence[str]) -> dict[str, list[str]]:
    """``--set`` items by their section (the key's first part, which ``nerdistil run`` requires)."""
    out: dict[str, list[str]] = {}
    for item in items:
        name, eq, _ = item.partition("=")
        section, dot, _ = name.strip().replace("-", "_").partition(".")
        if not eq or not dot or section not in cfgmod.SECTIONS:
            raise UserError(f"--set in `nerdistil run` takes SECTION.KEY=VALUE, SECTION one of "
                            f"{', '.join(sorted(cfgmod.SECTIONS))} (--set distil.epochs=3); got {item!r}")  # fmt: skip
        out.setdefault(section, []).append(item)
    return out


def _yaml_value(name: str, text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"--set {name}: {text!r} is not a YAML value ({getattr(e, 'problem', e)})") from None


def _ner_stages(path, out: Path, corpus: Path, stage, run: RunConfig, sets: dict[str, list[str]]) -> list[dict]:
    from nerdistil.student.distil import run_student
    from nerdistil.teacher.teach import run_teach

    over = {"corpus": str(corpus), "out": str(out / "teacher")}
    if run.augment_copies > 0:  # transfer tweets made from the gold ones (nerdistil data augment)
        over.update(unlabeled=str(write_transfer(corpus / "train.txt", out, run)), pretokenized=True)
    teach_cfg = cfgmod.load(cfgmod.TeachConfig, path, "teach", over, sets.get("teach", ()))
    teacher = stage("teach", run_teach, teach_cfg)
    students = {}
    for name, distil in (("finetune", False), ("distil", True)):
        over = {"soft_labels": str(out / "teacher"), "out": str(out / name)}
        cfg = cfgmod.load(cfgmod.StudentConfig, path, name, over, sets.get(name, ()))
        students[name] = stage(name, lambda c, d=distil: run_student(c, d), cfg)
    kind = teacher.get("teacher", {}).get("kind")
    name = f"teacher ({kind})" if kind else "teacher"
    rows = [_row(name, teacher, teacher.get("params"), teacher.get("train_seconds"))]
    return rows + [_row(f"{n} student", r, r["params"], r["train_seconds"]) for n, r in students.items()]


def write_transfer(train: Path, out: Path, run: RunConfig) -> Path:
    """OUT/transfer.txt: ``run.augment_copies`` made versions of every training tweet, one a line.

    Written afresh every run (milliseconds, deterministic for the seed), so a changed ``augment_copies``
    never meets a stale file; teach's resume check hashes the file, so equal content is reused.
    """
    from nerdistil.data.augment import augment, write_pretokenized
    from nerdistil.data.conll import read_conll

    path = out / "transfer.txt"
    write_pretokenized(path, augment(read_conll(train), run.augment_copies, run.split_seed))
    return path


def _lm_stages(path, raw: dict, out: Path, corpus: Path, stage, sets) -> tuple[list[dict], dict | None]:
    """lm_finetune adapts the teacher MLM to tweets, lm_distil distils it, lm_eval compares them."""
    from nerdistil.lm.evaluate import markdown, run_lm_eval
    from nerdistil.lm.train import run_lm

    defaults = {"corpus": str(corpus / "train.txt"), "eval_corpus": str(corpus / "test.txt")}
    rows, models = [], []
    teacher_dir = out / "teacher_mlm"
    if "lm_finetune" in raw:
        over = {**defaults, "out": str(teacher_dir)}
        cfg = cfgmod.load(cfgmod.LMConfig, path, "lm_finetune", over, sets.get("lm_finetune", ()))
        r = stage("lm_finetune", lambda c: run_lm(c, False), cfg)
        rows.append(_lm_row("teacher MLM (lm-finetune)", r))
        models.append(str(teacher_dir))
    if "lm_distil" in raw:
        over = {**defaults, "out": str(out / "student_mlm")}
        if "lm_finetune" in raw:
            over["teacher"] = str(teacher_dir)
        cfg = cfgmod.load(cfgmod.LMConfig, path, "lm_distil", over, sets.get("lm_distil", ()))
        r = stage("lm_distil", lambda c: run_lm(c, True), cfg)
        rows.append(_lm_row("student MLM (lm-distil)", r))
        models.append(str(out / "student_mlm"))
    report = None
    if "lm_eval" in raw:
        section = raw.get("lm_eval") or {}
        models += list(section.get("models", ["minilm"]))
        words = section.get("words")
        words = words.split(",") if isinstance(words, str) else words
        report = run_lm_eval(
            models, section.get("corpus", defaults["eval_corpus"]), **({"words": words} if words else {})
        )
        write_json(out / "lm_eval.json", report)
        (out / "lm_eval.md").write_text(markdown(report))
    return rows, report


def _lm_row(name: str, report: dict) -> dict:
    held = report.get("held_out") or {}
    return {"model": name, "params": report["params"], "perplexity": held.get("perplexity"),
            "train_seconds": report["train_seconds"]}  # fmt: skip


def _row(name: str, report: dict, params: int | None, seconds: float | None) -> dict:
    scores = report.get("scores", {})
    return {
        "model": name,
        "params": params,
        "dev_f1": scores.get("dev", {}).get("f1"),
        "test_f1": scores.get("test", {}).get("f1"),
        "train_seconds": seconds,
    }
