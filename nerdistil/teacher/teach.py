"""``nerdistil teach``: a corpus folder in, a teacher and its soft labels out."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np
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
from nerdistil.trust import check as trust_check_file

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


def teacher_files(cfg: TeachConfig) -> list[str]:
    """The existing tagger files to load (none: train ``cfg.ensemble`` of them)."""
    if cfg.teacher is None:
        return []
    return [cfg.teacher] if isinstance(cfg.teacher, str) else [str(t) for t in cfg.teacher]


def average(member_probs: list[np.ndarray]) -> np.ndarray:
    """The mean of the members' [words x labels] posteriors: still a distribution in every row."""
    return np.mean(np.stack(member_probs), axis=0).astype(np.float32)


def decode_posteriors(probs: np.ndarray, labels: list[str]) -> list[str]:
    """The best valid BIO path through an ensemble's averaged posteriors (per-word argmax under BIO rules)."""
    from nerdistil.ner import bio_transitions, bio_viterbi

    path = bio_viterbi(np.log(np.clip(probs, 1e-12, None)), bio_transitions(labels))
    return [labels[k] for k in path]


def _member(cfg: TeachConfig, k: int, files: list[str], corpus: dict[str, list[Sentence]], labels: list[str],
            tmp: Path):  # fmt: skip
    """Load member k from its file, or train it (seed + k); returns (tagger, report entry)."""
    if files:
        tagger = ft.load_teacher(files[k], cfg.trust_teacher)
        info = {"file": str(Path(files[k]).resolve()), "sha256": trust.sha256(files[k]), "trained": False}
    else:
        if "dev" not in corpus:
            raise UserError("training a teacher needs dev.txt to choose the best epoch", cfg.corpus)
        work = tmp / f"flair{k}"
        t0 = time.perf_counter()
        tagger, best = ft.train_teacher(corpus["train"], corpus["dev"], dataclasses.replace(cfg, seed=cfg.seed + k),
                                        work)  # fmt: skip
        name = "teacher.pt" if k == 0 else f"teacher_{k + 1}.pt"
        shutil.move(str(best), tmp / name)
        suffix = "" if k == 0 else f"_{k + 1}"
        for keep in ("training.log", "loss.tsv"):
            if (work / keep).is_file():
                shutil.move(str(work / keep), tmp / f"teacher{suffix}_{keep}")
        shutil.rmtree(work, ignore_errors=True)
        seconds = round(time.perf_counter() - t0, 1)
        info = {"file": name, "sha256": trust.sha256(tmp / name), "trained": True, "embeddings": cfg.embeddings,
                "epochs": cfg.epochs, "seed": cfg.seed + k, "train_seconds": seconds}  # fmt: skip
    tag_projection(ft.teacher_tags(tagger), labels)  # a label set mismatch fails now, before any labelling
    info["tags"] = ft.teacher_tags(tagger)
    info["params"] = sum(p.numel() for p in tagger.parameters())
    return tagger, info


def run_teach(cfg: TeachConfig) -> dict:
    """Train (or load) the teacher or teacher ensemble, label every split, write the run folder."""
    corpus = read_corpus(cfg)
    labels = bio_labels(entity_types(s for part in corpus.values() for s in part))
    label2id = {label: i for i, label in enumerate(labels)}
    unlabeled = read_unlabeled(cfg.unlabeled) if cfg.unlabeled else []
    files = teacher_files(cfg)
    n = len(files) or cfg.ensemble
    if n < 1:
        raise UserError(f"--ensemble must be at least 1, got {n}")
    for f in files:  # every file is checked (exists, trusted) before any work
        trust_check_file(f, cfg.trust_teacher)
    report: dict = {"labels": labels, "temperature": cfg.temperature, "seed": cfg.seed, "ensemble": n}
    parts = dict(corpus)
    if unlabeled:
        parts["unlabeled"] = unlabeled
    probs: dict[str, list[list[np.ndarray]]] = {name: [[] for _ in sents] for name, sents in parts.items()}
    viterbi: dict[str, list[list[str]]] = {}
    members: list[dict] = []
    train_s = label_s = 0.0
    with staging(cfg.out, cfg.overwrite) as tmp:
        for k in range(n):
            t0 = time.perf_counter()
            tagger, info = _member(cfg, k, files, corpus, labels, tmp)
            train_s += time.perf_counter() - t0
            t1 = time.perf_counter()
            info["scores"] = {}
            for name, sents in parts.items():
                desc = f"labelling {name}" + (f" (member {k + 1}/{n})" if n > 1 else "")
                pred = []
                for i, lab in enumerate(tqdm(ft.label(tagger, sents, labels, cfg.temperature), total=len(sents),
                                             desc=desc)):  # fmt: skip
                    probs[name][i].append(lab.probs)
                    pred.append(lab.tags)
                if n == 1:
                    viterbi[name] = pred
                if name in ("dev", "test"):
                    info["scores"][name] = entity_report([s.tags for s in sents], pred)["f1"]
            label_s += time.perf_counter() - t1
            members.append(info)
            del tagger
        report["teacher"] = {key: members[0][key] for key in members[0] if key != "scores"}
        report["members"] = members
        report["params"] = sum(m["params"] for m in members)
        report["train_seconds"] = round(train_s, 1)

        t1 = time.perf_counter()
        data, scores, agreement = {}, {}, {}
        for name, sents in parts.items():
            rows, pred, argmax_tags = [], [], []
            for i, sent in enumerate(sents):
                p = probs[name][i][0] if n == 1 else average(probs[name][i])
                probs[name][i] = []  # free the members' copies as we go
                tags = viterbi[name][i] if n == 1 else decode_posteriors(p, labels)
                rows.append(softlabels.row(sent.tokens, sent.tags, tags, p, label2id))
                pred.append(tags)
                argmax_tags.append([labels[k] for k in p.argmax(-1)])
            data[name] = softlabels.build(rows, labels, tmp / ".cache")
            same = sum(a == b for p, q in zip(pred, argmax_tags) for a, b in zip(p, q))
            agreement[name] = same / max(1, sum(len(p) for p in pred))
            if name in ("dev", "test"):
                scores[name] = full_report([s.tags for s in sents], pred)
                scores[name]["posterior_argmax_f1"] = entity_report([s.tags for s in sents], argmax_tags)["f1"]
        DatasetDict(data).save_to_disk(str(tmp / "soft_labels"))
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        report["label_seconds"] = round(label_s + time.perf_counter() - t1, 1)

        stored = softlabels.load(tmp / "soft_labels")
        report["soft_labels"] = {
            "splits": {k: v.num_rows for k, v in stored.items()},
            "max_row_sum_error": max(softlabels.max_row_error(v) for v in stored.values()),
            "viterbi_posterior_argmax_agreement": agreement,
            "decoding": "CRF Viterbi" if n == 1 else f"best valid BIO path through the mean of {n} members' posteriors",
        }
        report["scores"] = scores
        report["environment"] = versions()
        write_config(tmp / "config.yaml", cfg)
        write_json(tmp / "report.json", report)
    for m in members:  # nerdistil wrote these pickles: later loads need no --trust-teacher
        if m["trained"]:
            trust.record(Path(cfg.out) / m["file"], m["sha256"])
    return report
