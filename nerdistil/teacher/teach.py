"""``nerdistil teach``: a corpus folder in, a teacher and its soft labels out."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from nerdistil import softlabels, trust
from nerdistil.config import TeachConfig
from nerdistil.data.conll import (
    Sentence,
    bio_labels,
    entity_types,
    read_conll,
    read_unlabeled,  # noqa: F401 (read_unlabeled: its old home)
)
from nerdistil.data.lines import count_lines
from nerdistil.errors import UserError
from nerdistil.metrics import entity_report, full_report
from nerdistil.runio import check_out, staging, versions, write_config, write_json
from nerdistil.teacher import base
from nerdistil.teacher.crf import tag_projection
from nerdistil.teacher.ensemble import train_folds
from nerdistil.teacher.labelling import Procs, check_reusable_labels, check_rows, fault, label_split
from nerdistil.trainer import device_name, resolve_device

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")


def read_corpus(cfg: TeachConfig) -> dict[str, list[Sentence]]:
    """train.txt (required), dev.txt and test.txt (optional) from the corpus folder."""
    folder = Path(cfg.corpus)
    if not folder.is_dir():
        raise UserError("corpus folder not found; create one with `nerdistil data wnut16 DIR`", folder)
    if not (folder / "train.txt").is_file():
        raise UserError("the corpus folder needs train.txt (dev.txt and test.txt are optional)", folder)
    d = cfg.data
    return {
        name: read_conll(folder / f"{name}.txt", d.token_col, d.tag_col, d.scheme, repair=d.repair_tags)
        for name in SPLITS
        if (folder / f"{name}.txt").is_file()
    }


def teacher_files(cfg: TeachConfig) -> list[str]:
    """The existing tagger files to load (none: train ``cfg.ensemble`` of them)."""
    if cfg.teacher is None:
        return []
    return [cfg.teacher] if isinstance(cfg.teacher, str) else [str(t) for t in cfg.teacher]


def decoded_f1(ds, labels: Sequence[str]) -> float:
    """Entity F1 of a stored split's teacher tags against its gold tags."""
    gold, pred = [], []
    for r in softlabels.rows(ds):
        gold.append([labels[i] for i in r["tags"]])
        pred.append([labels[i] for i in r["teacher_tags"]])
    return entity_report(gold, pred)["f1"]


def _member(cfg: TeachConfig, k: int, given: list[base.Teacher], corpus: dict[str, list[Sentence]],
            labels: list[str], tmp: Path, trainer, folds: list[int] | None = None):  # fmt: skip
    """Member k: a given teacher, or one trained here (seed + k; without train fold k when ``folds``).

    Returns (teacher, report entry).
    """
    done = tmp / "members" / f"{k}.json"
    earlier = json.loads(done.read_text()) if done.is_file() else None
    if earlier and earlier.get("cross_fit", False) != cfg.cross_fit:
        earlier = None  # trained for the other kind of run: train it again
    if given:
        teacher = given[k]
        info = {"file": teacher.identity["source"], "sha256": teacher.identity["sha256"], "kind": teacher.kind,
                "trained": False}  # fmt: skip
    elif earlier and trust.sha256(tmp / earlier["file"]) == earlier["sha256"]:
        # an interrupted run trained this member already: this run wrote the file, so it is trusted
        info = earlier
        teacher = base.load_teacher(tmp / info["file"], trust_teacher=True, kind=info.get("kind", "auto"))
        log.info("resume: reusing trained member %d (%s)", k + 1, info["file"])
    else:
        if "dev" not in corpus:
            raise UserError("training a teacher needs dev.txt to choose the best epoch", cfg.corpus)
        work = tmp / f"teacher{k}"
        shutil.rmtree(work, ignore_errors=True)  # an interrupted run's half-trained member: start clean
        t0 = time.perf_counter()
        train = corpus["train"] if folds is None else [s for s, f in zip(corpus["train"], folds) if f != k]
        teacher, best = trainer.train(train, corpus["dev"], dataclasses.replace(cfg, seed=cfg.seed + k), work,
                                      entity_types(s for part in corpus.values() for s in part))  # fmt: skip
        name = "teacher.pt" if k == 0 else f"teacher_{k + 1}.pt"
        shutil.move(str(best), tmp / name)
        suffix = "" if k == 0 else f"_{k + 1}"
        for keep in ("training.log", "loss.tsv"):
            if (work / keep).is_file():
                shutil.move(str(work / keep), tmp / f"teacher{suffix}_{keep}")
        shutil.rmtree(work, ignore_errors=True)
        seconds = round(time.perf_counter() - t0, 1)
        info = {"file": name, "sha256": trust.sha256(tmp / name), "kind": teacher.kind, "trained": True,
                "embeddings": cfg.embeddings, "epochs": cfg.epochs, "seed": cfg.seed + k, "train_seconds": seconds,
                "cross_fit": cfg.cross_fit, "train_sentences": len(train)}  # fmt: skip
        teacher.identity = {"kind": teacher.kind, "source": name, "sha256": info["sha256"]}
        done.parent.mkdir(exist_ok=True)
        write_json(done, info)
        fault("NERDISTIL_FAULT_KILL_AFTER_MEMBER", k + 1)
    tag_projection(teacher.tags, labels)  # a label set mismatch fails now, before any labelling
    teacher.check_kind(cfg.soft_labels, cfg.edge_marginals)
    info["tags"] = teacher.tags
    info["params"] = teacher.params
    return teacher, info


def run_teach(cfg: TeachConfig) -> dict:
    """Train (or load) the teacher or teacher ensemble, label every split, write the run folder.

    Gold splits are labelled in memory; ``--unlabeled`` text is streamed from its file through the
    teacher into Arrow shards, so its size is bounded by disk, not memory.
    """
    files = teacher_files(cfg)
    inputs = [cfg.corpus, cfg.unlabeled, *files]
    check_out(cfg.out, inputs, cfg.overwrite)  # before any work: never replace what nerdistil did not write
    corpus = read_corpus(cfg)
    labels = bio_labels(entity_types(s for part in corpus.values() for s in part))
    if cfg.unlabeled:
        # fails now (missing, not UTF-8, empty), before any training
        next(read_unlabeled(cfg.unlabeled, cfg.pretokenized))
    n = len(files) or cfg.ensemble
    if n < 1:
        raise UserError(f"--ensemble must be at least 1, got {n}")
    procs = Procs.from_env()
    device = resolve_device(cfg.device)  # under torchrun: this process's GPU
    procs.device = str(device)
    if cfg.label_batch_size is None:  # big label batches where a GPU has room for them
        cfg = dataclasses.replace(cfg, label_batch_size=256 if device.type == "cuda" else 32)
    # every given teacher is loaded (kind detected, trust checked, hashed once) before any work
    given = [base.load_teacher(f, cfg.trust_teacher, cfg.teacher_kind, device) for f in files]
    if cfg.cross_fit and (files or n < 2):
        raise UserError("--cross-fit trains the ensemble's members on train folds: it needs --ensemble 2 or more "
                        "and no --teacher files")  # fmt: skip
    folds = train_folds(len(corpus["train"]), n, cfg.seed) if cfg.cross_fit else None
    if procs.world > 1 and not given:
        raise UserError("under torchrun, teach labels with given teachers: train the teacher in one process, then "
                        "pass it with --teacher")  # fmt: skip
    report: dict = {"labels": labels, "temperature": cfg.temperature, "seed": cfg.seed, "ensemble": n,
                    "cross_fit": cfg.cross_fit,
                    "soft_label_kind": cfg.soft_labels, "edge_marginals": cfg.edge_marginals}  # fmt: skip
    trainer = None if given else base.trainer(device=device)  # frozen embeddings: later members reuse vectors
    words = [s.tokens for part in corpus.values() for s in part]  # a frozen encoder's vectors of them: cached
    with (
        staging(cfg.out, cfg.overwrite, cfg.resume, main=procs.rank == 0, inputs=inputs) as tmp,
        trainer.corpus_vectors(cfg.vector_cache, words) if trainer else contextlib.nullcontext(),
    ):
        procs.barrier()  # the first process made the staging folder
        t0 = time.perf_counter()
        teachers, members = [], []
        for k in range(n):
            teacher, info = _member(cfg, k, given, corpus, labels, tmp, trainer, folds)
            teachers.append(teacher)
            members.append(info)
        if trainer is not None:
            trainer.close()
        by_kind: dict[type, list[base.Teacher]] = {}
        for t in teachers:
            by_kind.setdefault(type(t), []).append(t)
        if sum(cls.prepare_ensemble(ts) for cls, ts in by_kind.items()):
            log.info("ensemble members share one embeddings module: each sentence is embedded once")
        report["teacher"] = dict(members[0])
        report["members"] = members
        report["params"] = sum(m["params"] for m in members)
        report["train_seconds"] = round(time.perf_counter() - t0, 1)

        t1 = time.perf_counter()
        parts: dict[str, Iterable[Sentence]] = dict(corpus)
        totals = {name: len(sents) for name, sents in corpus.items()}
        if cfg.unlabeled:
            parts["unlabeled"] = read_unlabeled(cfg.unlabeled, cfg.pretokenized)
            totals["unlabeled"] = count_lines(cfg.unlabeled)
        scores, reused = {}, 0
        for m in members:
            m["scores"] = {}
        if procs.rank == 0:
            check_reusable_labels(cfg, tmp / "labels", members, [Path(cfg.corpus) / f"{s}.txt" for s in SPLITS]
                                  + ([Path(cfg.unlabeled)] if cfg.unlabeled else []))  # fmt: skip
        procs.barrier()  # the first process has cleared stale chunks
        for name, sents in parts.items():
            if name in ("dev", "test") and procs.rank != 0:
                continue  # small gold splits: labelled whole by the first process, then scored
            share = Procs(device=procs.device) if name in ("dev", "test") else procs  # gold splits: all chunks, here
            out = label_split(name, sents, totals[name], teachers, labels, tmp / "labels" / name, cfg, folds, share)
            reused += out.reused
            if out.gold:
                scores[name] = full_report(out.gold, out.pred)
                for m, mp in zip(members, out.member_pred):
                    m["scores"][name] = entity_report(out.gold, mp)["f1"]
        procs.barrier()  # every process has written its chunks
        if procs.rank != 0:
            return {}  # the first process joins the chunks in input order and writes the run
        if reused:
            log.info("resume: reused %d labelled chunks", reused)
        data = {name: softlabels.join_chunks(tmp / "labels" / name, labels, cfg.edge_marginals) for name in parts}
        teachers_meta = [{"kind": m["kind"], "source": m["file"], "sha256": m["sha256"]} for m in members]
        meta = {"temperature": cfg.temperature, "kind": cfg.soft_labels, "cross_fit": cfg.cross_fit,
                "edge_marginals": cfg.edge_marginals, "teachers": teachers_meta}  # fmt: skip
        softlabels.save(data, tmp / "soft_labels", meta, cfg.shard_size)
        shutil.rmtree(tmp / "labels", ignore_errors=True)
        report["label_seconds"] = round(time.perf_counter() - t1, 1)
        report["processes"] = procs.world  # torchrun: labelling shared out chunk by chunk
        report.update(device=str(device), device_name=device_name(device), mixed_precision=cfg.mixed_precision,
                      label_batch_size=cfg.label_batch_size)  # fmt: skip

        stored = softlabels.load(tmp / "soft_labels")
        agreement = {}
        for name, ds in stored.items():
            agreement[name] = softlabels.decoded_argmax_agreement(ds)
        for name in scores:  # the entity F1 of the posteriors' per-word argmax, for comparison
            rs = list(softlabels.rows(stored[name]))
            argmax = [[labels[k] for k in r["probs"].argmax(-1)] for r in rs]
            gold = [[labels[i] for i in r["tags"]] for r in rs]
            scores[name]["posterior_argmax_f1"] = entity_report(gold, argmax)["f1"]
        if "train" in stored:  # how closely the stored train labels follow the gold tags the teacher trained on
            report["train_fit_f1"] = decoded_f1(stored["train"], labels)
        decoding = teachers[0].decoding if n == 1 else f"best valid BIO path, mean of {n} members' T=1 posteriors"
        if folds:
            decoding += "; train: cross-fitted, each tweet labelled by the member trained without its fold"
        report["soft_labels"] = {
            "splits": {k: v.num_rows for k, v in stored.items()},
            "max_row_sum_error": max(softlabels.max_row_error(v) for v in stored.values()),
            "viterbi_posterior_argmax_agreement": agreement,
            "decoding": decoding,
            "reused_chunks": reused,
        }
        check_rows(report["soft_labels"]["max_row_sum_error"], cfg)  # a failed check never finishes the folder
        shutil.rmtree(tmp / "members", ignore_errors=True)  # resume bookkeeping; the report holds the same
        report["scores"] = scores
        report["environment"] = versions()
        write_config(tmp / "config.yaml", cfg)
        write_json(tmp / "report.json", report)
    for m in members:  # nerdistil wrote these pickles: later loads need no --trust-teacher
        if m["trained"]:
            trust.record(Path(cfg.out) / m["file"], m["sha256"])
    return report
