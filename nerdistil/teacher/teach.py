"""``nerdistil teach``: a corpus folder in, a teacher and its soft labels out."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from datasets import DatasetDict
from tqdm.auto import tqdm

from nerdistil import softlabels, trust
from nerdistil.config import TeachConfig
from nerdistil.data.conll import Sentence, bio_labels, entity_types, read_conll
from nerdistil.data.tweets import tokenize
from nerdistil.errors import UserError
from nerdistil.metrics import entity_report, full_report
from nerdistil.runio import staging, versions, write_config, write_json
from nerdistil.teacher import flair_teacher as ft
from nerdistil.teacher.crf import tag_projection

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


def read_unlabeled(path: str | Path) -> list[Sentence]:
    """One raw tweet a line -> tokenized sentences (blank lines skipped; they hold no words)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such unlabeled-text file", path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"invalid UTF-8 ({e.reason}); re-encode the file as UTF-8", path) from None
    out = [Sentence(tokenize(line), None, i) for i, line in enumerate(lines, 1) if line.strip()]
    out = [s for s in out if s.tokens]
    if not out:
        raise UserError("the unlabeled-text file holds no tweets", path)
    return out


def run_teach(cfg: TeachConfig) -> dict:
    """Train (or load) the teacher, label every split, write the run folder; returns the report."""
    corpus = read_corpus(cfg)
    labels = bio_labels(entity_types(s for part in corpus.values() for s in part))
    label2id = {label: i for i, label in enumerate(labels)}
    unlabeled = read_unlabeled(cfg.unlabeled) if cfg.unlabeled else []
    report: dict = {"labels": labels, "temperature": cfg.temperature, "seed": cfg.seed}
    t0 = time.perf_counter()
    with staging(cfg.out, cfg.overwrite) as tmp:
        if cfg.teacher:
            tagger = ft.load_teacher(cfg.teacher, cfg.trust_teacher)
            tag_projection(ft.teacher_tags(tagger), labels)  # a label set mismatch fails now, before any work
            report["teacher"] = {"file": str(Path(cfg.teacher).resolve()), "sha256": trust.sha256(cfg.teacher),
                                 "trained": False}  # fmt: skip
        else:
            if "dev" not in corpus:
                raise UserError("training a teacher needs dev.txt to choose the best epoch", cfg.corpus)
            work = tmp / "flair"
            tagger, best = ft.train_teacher(corpus["train"], corpus["dev"], cfg, work)
            shutil.move(str(best), tmp / "teacher.pt")
            for keep in ("training.log", "loss.tsv"):
                if (work / keep).is_file():
                    shutil.move(str(work / keep), tmp / f"teacher_{keep}")
            shutil.rmtree(work, ignore_errors=True)
            report["teacher"] = {"file": "teacher.pt", "sha256": trust.sha256(tmp / "teacher.pt"), "trained": True,
                                 "embeddings": cfg.embeddings, "epochs": cfg.epochs}  # fmt: skip
        report["teacher"]["tags"] = ft.teacher_tags(tagger)
        report["params"] = sum(p.numel() for p in tagger.parameters())
        report["train_seconds"] = round(time.perf_counter() - t0, 1)

        t1 = time.perf_counter()
        parts = dict(corpus)
        if unlabeled:
            parts["unlabeled"] = unlabeled
        data, scores, agreement = {}, {}, {}
        for name, sents in parts.items():
            rows, pred, argmax_tags = [], [], []
            bar = tqdm(ft.label(tagger, sents, labels, cfg.temperature), total=len(sents), desc=f"labelling {name}")
            for sent, lab in zip(sents, bar):
                rows.append(softlabels.row(sent.tokens, sent.tags, lab.tags, lab.probs, label2id))
                pred.append(lab.tags)
                argmax_tags.append([labels[k] for k in lab.probs.argmax(-1)])
            data[name] = softlabels.build(rows, labels, tmp / ".cache")
            same = sum(a == b for p, q in zip(pred, argmax_tags) for a, b in zip(p, q))
            agreement[name] = same / max(1, sum(len(p) for p in pred))
            if name in ("dev", "test"):
                scores[name] = full_report([s.tags for s in sents], pred)
                scores[name]["posterior_argmax_f1"] = entity_report([s.tags for s in sents], argmax_tags)["f1"]
        DatasetDict(data).save_to_disk(str(tmp / "soft_labels"))
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        report["label_seconds"] = round(time.perf_counter() - t1, 1)

        stored = softlabels.load(tmp / "soft_labels")
        report["soft_labels"] = {
            "splits": {k: v.num_rows for k, v in stored.items()},
            "max_row_sum_error": max(softlabels.max_row_error(v) for v in stored.values()),
            "viterbi_posterior_argmax_agreement": agreement,
        }
        report["scores"] = scores
        report["environment"] = versions()
        write_config(tmp / "config.yaml", cfg)
        write_json(tmp / "report.json", report)
    if report["teacher"]["trained"]:  # nerdistil wrote this pickle: later loads need no --trust-teacher
        trust.record(Path(cfg.out) / "teacher.pt", report["teacher"]["sha256"])
    return report
