"""``nerdistil run CONFIG``: data, teacher, fine-tuned baseline, distilled student, export, bench, one table.

The config has a top-level ``run`` section (output root, corpus) and one section per stage
(``teach``, ``finetune``, ``distil``) with the same keys as those commands' configs, plus ``export``
(the distilled student as the shipped ONNX folder, ``nerdistil export``) and ``bench`` (teacher, both
students and the export timed end to end on the test tweets, ``nerdistil bench-latency``). A stage
whose folder already holds a finished run (``report.json``) is reused when its config and inputs are the
ones that made it (``nerdistil.stages``), so an interrupted pipeline restarts where it stopped; a stage
whose config changed is redone, and every stage after it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.errors import UserError
from nerdistil.runio import protected, versions, write_json
from nerdistil.stages import Records, record

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


@dataclass
class ExportStage:
    """The ``export`` section: the distilled student as one ONNX graph, int8 only behind the gate."""

    enabled: bool = True
    quantize: str = "auto"  # auto, int8 or none (nerdistil export --quantize)
    max_f1_drop: float = 0.01  # refuse int8 when the dev CI shows a larger loss
    min_agreement: float = 0.99  # keep int8 when its entity spans agree with fp32's at this F1 (transfer tweets)


@dataclass
class BenchStage:
    """The ``bench`` section: end-to-end latency of teacher, students and export on the test tweets."""

    enabled: bool = True
    batch_sizes: str | int = "1,32"  # comma-separated; the table shows p50 ms at the first, tweets/s at the last
    repeats: int = 2  # interleaved rounds, each model in a fresh process
    warmup: int = 3  # untimed batches before each timed pass
    threads: int | None = None  # default: all cores


def run_pipeline(path: str | Path, overwrite: bool = False, sets: Sequence[str] = ()) -> dict:
    """Run every stage of the config; returns the summary (also written to OUT/summary.json).

    NER stages (teach, finetune, distil) run when any of their sections is present; the
    language-model stages (lm_finetune, lm_distil, lm_eval) when theirs are. ``sets`` are
    ``--set SECTION.KEY=VALUE`` items: each goes to its section as if the file held it.
    """
    by_section = _route_sets(sets)
    run = cfgmod.load(RunConfig, path, "run", sets=by_section.get("run", ()))
    raw = cfgmod.load_yaml(Path(path).read_text(), str(path)) or {}
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

    ran: list[str] = []  # stages redone in this call: every later stage is redone too (its inputs changed)
    records = Records(out)
    splits = [corpus / f"{s}.txt" for s in ("train", "dev", "test")]

    def stage(name: str, fn, cfg, after: Sequence[str] = (), files: Sequence[Path] = ()) -> dict:
        """Run stage ``name`` or reuse its folder; ``after``: the stages whose results it reads, ``files``: others."""
        folder = Path(cfg.out)
        report_file = folder / "report.json"
        now = record(cfg, [*splits, *files, *(out / a / "report.json" for a in after)])
        changes = records.changes(name, now, folder) if report_file.is_file() else None
        if report_file.is_file() and not overwrite and not ran and changes is not None and not changes:
            log.info("%s: reusing the finished run in %s (same config and inputs; --overwrite redoes it)", name, folder)
            return json.loads(report_file.read_text())
        why = ""
        if report_file.is_file():
            why = (" (redone: --overwrite)" if overwrite else f" (redone: {ran[-1]} before it was redone)" if ran
                   else f" (redone: changed since the finished run: {'; '.join(changes)})" if changes
                   else " (redone: no record of what made the finished run)")  # fmt: skip
        log.info("%s: writing %s%s", name, folder, why)
        ran.append(name)
        report = fn(replace(cfg, overwrite=True))
        records.save(name, now)
        return report

    rows: list[dict] = []
    extra: dict = {}
    if NER_SECTIONS & set(raw) or not {"lm_finetune", "lm_distil", "lm_eval"} & set(raw):
        ner = _ner_stages(path, raw, out, corpus, stage, run, by_section)
        rows += ner.pop("rows")
        extra.update(ner)
    if {"lm_finetune", "lm_distil", "lm_eval"} & set(raw):
        lm_rows, extra["lm_eval"] = _lm_stages(path, raw, out, corpus, stage, by_section)
        rows += lm_rows
    summary = {"rows": rows, **extra, "seconds": round(time.perf_counter() - t0, 1), "config": str(path),
               "environment": versions()}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    write_json(out / "report.json", summary)  # the same numbers, under the name every other run folder uses
    return summary


NER_SECTIONS = {"teach", "finetune", "distil", "export", "bench"}


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
    return cfgmod.load_yaml(text, f"--set {name}={cfgmod.clip(text)}")


def _ner_stages(path, raw: dict, out: Path, corpus: Path, stage, run: RunConfig,
                sets: dict[str, list[str]]) -> dict:  # fmt: skip
    """teach, finetune, distil, then (when the config has their sections) export and bench.

    Returns ``{"rows": [...], "final": [...] or None, ...}``: the training rows, and with a bench stage the one
    table of item 3 (teacher, both students and the shipped export, measured in this run).
    """
    from nerdistil.student.distil import run_student
    from nerdistil.teacher.teach import run_teach

    # every section is checked (types, ranges, --set keys) before the first stage trains
    export_cfg = cfgmod.load(ExportStage, path, "export", sets=sets.get("export", ()))
    bench_cfg = cfgmod.load(BenchStage, path, "bench", sets=sets.get("bench", ()))
    do_export = ("export" in raw or "export" in sets) and export_cfg.enabled
    do_bench = ("bench" in raw or "bench" in sets) and bench_cfg.enabled
    sizes = _batch_sizes(bench_cfg.batch_sizes)
    over = {"corpus": str(corpus), "out": str(out / "teacher")}
    if run.augment_copies > 0:  # transfer tweets made from the gold ones (nerdistil data augment)
        over.update(unlabeled=str(write_transfer(corpus / "train.txt", out, run)), pretokenized=True)
    teach_cfg = cfgmod.load(cfgmod.TeachConfig, path, "teach", over, sets.get("teach", ()))
    student_cfgs = {}
    for name in ("finetune", "distil"):
        over = {"soft_labels": str(out / "teacher"), "out": str(out / name)}
        student_cfgs[name] = cfgmod.load(cfgmod.StudentConfig, path, name, over, sets.get(name, ()))
    teacher = stage("teach", run_teach, teach_cfg, files=[Path(teach_cfg.unlabeled)] if teach_cfg.unlabeled else [])
    students = {name: stage(name, lambda c, d=(name == "distil"): run_student(c, d), cfg, ["teacher"])
                for name, cfg in student_cfgs.items()}  # fmt: skip
    kind = teacher.get("teacher", {}).get("kind")
    name = f"teacher ({kind})" if kind else "teacher"
    rows = [_row(name, teacher, teacher.get("params"), teacher.get("train_seconds"))]
    rows += [_row(f"{n} student", r, r["params"], r["train_seconds"]) for n, r in students.items()]
    result: dict = {"rows": rows}
    export_dir = out / "export"
    if do_export:
        from nerdistil.deploy.export import run_export

        def export(staged: _Staged) -> dict:
            cfg: ExportStage = staged.cfg  # type: ignore[assignment]
            return run_export(out / "distil", export_dir, cfg.quantize, max_f1_drop=cfg.max_f1_drop,
                              min_agreement=cfg.min_agreement, overwrite=True)  # fmt: skip

        t = time.perf_counter()
        meta = stage("export", export, _Staged(export_cfg, export_dir), ["distil"])
        gate = meta.get("gate", {})
        result["export"] = {"folder": str(export_dir), "chosen": gate.get("chosen"), "decision": gate.get("decision"),
                            "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
    if do_bench:
        models = [("teacher", out / "teacher"), ("fine-tuned student", out / "finetune"),
                  ("distilled student", out / "distil")]  # fmt: skip
        if do_export:
            models.append(("shipped export", export_dir))
        t = time.perf_counter()
        bench = stage("bench", lambda c: _bench(c, models, corpus, out / "bench", sizes),
                      _Staged(bench_cfg, out / "bench"), [p.name for _, p in models])  # fmt: skip
        result["bench_seconds"] = round(time.perf_counter() - t, 1)
        result["final"] = final_table(bench, teacher, students, models, sizes)
    return result


@dataclass
class _Staged:
    """A stage section with the folder ``stage`` checks for a finished run."""

    cfg: object
    out: Path
    overwrite: bool = False


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UserError(f"bench.batch_sizes takes whole numbers of at least 1 like 1,32, got {text!r}")
    return sizes


def _bench(staged: _Staged, models: list[tuple[str, Path]], corpus: Path, out: Path, sizes: list[int]) -> dict:
    """Time every model end to end on the test tweets and score the export on dev and test; OUT/report.json."""
    from nerdistil.bench import run_bench_latency
    from nerdistil.evaluate import run_evaluate
    from nerdistil.runio import staging

    cfg: BenchStage = staged.cfg  # type: ignore[assignment]
    teacher, *students = [path for _, path in models]
    with staging(out, overwrite=True) as tmp:
        report = run_bench_latency(teacher, students, corpus / "test.txt", ",".join(map(str, sizes)),
                                   threads=cfg.threads, repeats=cfg.repeats, warmup=cfg.warmup, trust_teacher=True,
                                   plot_out=tmp / "latency.png")  # fmt: skip
        report["names"] = {str(path): name for name, path in models}
        # the export's dev and test F1 (the other models' are in their own stage reports)
        report["scores"] = {name: {s: run_evaluate(path, corpus / f"{s}.txt")["f1"] for s in ("dev", "test")}
                            for name, path in models if name == "shipped export"}  # fmt: skip
        report["config"] = dataclasses.asdict(cfg)
        report["environment"] = versions()
        write_json(tmp / "report.json", report)
    return report


def final_table(bench: dict, teacher: dict, students: dict[str, dict], models: list[tuple[str, Path]],
                sizes: list[int]) -> list[dict]:  # fmt: skip
    """One row per model of the bench stage: F1, % of the teacher's test F1, size, speed and speed-up.

    p50 ms at the first batch size, tweets/s at the last, and the speed-ups over the teacher at both, all measured
    in this run; F1 from the stage reports (the export's scored in the bench stage).
    """
    by_path: dict[str, dict[int, dict]] = {}
    for spec, r in zip(_specs_by_row(bench), bench["results"]):
        by_path.setdefault(spec, {})[r["batch_size"]] = r
    first, last = sizes[0], sizes[-1]
    scores = {"teacher": teacher.get("scores", {}), "fine-tuned student": students["finetune"].get("scores", {}),
              "distilled student": students["distil"].get("scores", {})}  # fmt: skip
    rows = []
    base = by_path.get(str(models[0][1]), {})
    teacher_test = (scores["teacher"].get("test") or {}).get("f1")
    for name, path in models:
        timed = by_path.get(str(path), {})
        if name in scores:
            dev, test = ((scores[name].get(s) or {}).get("f1") for s in ("dev", "test"))
        else:
            dev, test = (bench.get("scores", {}).get(name, {}).get(s) for s in ("dev", "test"))
        b1, bl = timed.get(first, {}), timed.get(last, {})
        t1, tl = base.get(first, {}), base.get(last, {})
        rows.append({
            "model": name, "backend": b1.get("backend"), "dev_f1": dev, "test_f1": test,
            "pct_of_teacher_test_f1": None if not teacher_test or test is None else 100 * test / teacher_test,
            "params": b1.get("params"), "disk_mb": b1.get("disk_mb"),
            f"p50_ms_batch{first}": b1.get("p50_ms"), f"tweets_per_s_batch{last}": bl.get("sentences_per_s"),
            f"speedup_batch{first}": _ratio(t1.get("p50_ms"), b1.get("p50_ms")),
            f"speedup_batch{last}": _ratio(bl.get("sentences_per_s"), tl.get("sentences_per_s")),
        })  # fmt: skip
    return rows


def _specs_by_row(bench: dict) -> list[str]:
    """The model path of every row of a bench report, in its order (rows go spec by spec, batch size by size)."""
    per_spec = len(bench["results"]) // max(1, len(bench["specs"]))
    return [spec["path"] for spec in bench["specs"] for _ in range(per_spec)]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


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
