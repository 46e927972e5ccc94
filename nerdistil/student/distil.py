"""``nerdistil distil`` and ``finetune``: train a student, save a Hugging Face model folder and a report."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from nerdistil import softlabels, trainer
from nerdistil.align import Collator
from nerdistil.config import StudentConfig
from nerdistil.data.conll import Sentence, bio_labels, entity_types, read_conll
from nerdistil.errors import UserError
from nerdistil.losses import class_weights, ner_loss
from nerdistil.metrics import full_report
from nerdistil.runio import check_out, staging, versions, write_model_run
from nerdistil.student.crf_loss import crf_loss
from nerdistil.student.data import loader, make_examples
from nerdistil.student.model import build_student
from nerdistil.tokclf import count_parameters, predict

log = logging.getLogger(__name__)


class StudentData:
    """Labels, training sentences (with soft labels when distilling) and gold dev/test sets."""

    def __init__(self, cfg: StudentConfig, distil: bool) -> None:
        self.temperature: float | None = None
        self.meta: dict = {}
        self.train: list[Sentence] = []
        self.probs: list[np.ndarray] | None = None
        self.edges: list[np.ndarray | None] | None = None  # the teacher's pair marginals (alpha_pair), when stored
        self.evals: dict[str, list[Sentence]] = {}
        if cfg.soft_labels:
            self._from_soft_labels(Path(cfg.soft_labels), distil, cfg.unlabeled, bool(cfg.alpha_pair))
        elif cfg.corpus and not distil:
            self._from_corpus(cfg)
        else:
            need = "--soft-labels TEACH_OUT" if distil else "--corpus DIR (or --soft-labels TEACH_OUT)"
            raise UserError(f"no training data: pass {need}")
        if not any(s.tags for s in self.train) and not distil:
            raise UserError("fine-tuning needs gold tags, and the training data has none")

    def _from_soft_labels(self, folder: Path, distil: bool, unlabeled: bool, pairs: bool = False) -> None:
        if not folder.exists():
            raise UserError("no such folder; pass the --out folder of a `nerdistil teach` run", folder)
        sl = folder / "soft_labels" if (folder / "soft_labels").is_dir() else folder
        ds = softlabels.load(sl)
        self.labels = softlabels.label_names(ds)
        self.meta = softlabels.meta(ds)  # the dataset says its temperature, kind and teachers
        self.temperature = self.meta.get("temperature")
        report = sl.parent / "report.json"
        if self.temperature is None and report.is_file():  # soft labels written before the metadata existed
            self.temperature = json.loads(report.read_text()).get("temperature")
        parts = ["train"] + (["unlabeled"] if distil and unlabeled and "unlabeled" in ds else [])
        probs: list[np.ndarray] = []
        edges: list[np.ndarray] = []
        # pair marginals (labels² a word) are read only for the pairwise term that uses them
        with_edges = distil and pairs and all("edges" in ds[part].column_names for part in parts)
        for part in parts:
            for row in softlabels.rows(ds[part]):  # Arrow batches, unpacked once per batch
                tags = [self.labels[i] for i in row["tags"]] if row["has_gold"] else None
                if tags is None and not distil:
                    continue
                self.train.append(Sentence(row["tokens"], tags))
                p = row["probs"]
                if distil and not (np.isfinite(p).all() and np.abs(p.sum(-1) - 1).max(initial=0) < 1e-3):
                    raise UserError(
                        f"the soft labels of {part} sentence {len(probs) + 1} are not distributions "
                        "(NaN, inf or rows not summing to 1); relabel with `nerdistil teach`",
                        sl,
                    )
                probs.append(p)
                if with_edges:
                    edges.append(softlabels.pair_marginals(row["edges"], len(self.labels)))
        self.probs = probs if distil else None
        self.edges = edges if with_edges else None
        for part in ("dev", "test"):
            if part in ds:
                self.evals[part] = [Sentence(r["tokens"], [self.labels[i] for i in r["tags"]])
                                    for r in softlabels.rows(ds[part]) if r["has_gold"]]  # fmt: skip

    def _from_corpus(self, cfg: StudentConfig) -> None:
        folder, d = Path(cfg.corpus), cfg.data
        if not (folder / "train.txt").is_file():
            raise UserError("the corpus folder needs train.txt (dev.txt and test.txt are optional)", folder)
        sets = {
            name: read_conll(folder / f"{name}.txt", d.token_col, d.tag_col, d.scheme, repair=d.repair_tags)
            for name in ("train", "dev", "test")
            if (folder / f"{name}.txt").is_file()
        }
        self.labels = bio_labels(entity_types(s for v in sets.values() for s in v))
        self.train = sets.pop("train")
        self.evals = sets


def low_confidence_words(data: StudentData, min_confidence: float) -> int:
    """How many teacher-only words lose their KD target to ``min_confidence``."""
    if not data.probs or min_confidence <= 0:
        return 0
    return int(sum((p.max(-1) < min_confidence).sum() for s, p in zip(data.train, data.probs) if not s.tags))


def check_head(cfg: StudentConfig, distil: bool, data: StudentData) -> bool:
    """Whether the student has a CRF head; a setting the head cannot honour is a one-line error."""
    if cfg.head not in ("softmax", "crf"):
        raise UserError(f"head must be softmax or crf, got {cfg.head!r}")
    crf = cfg.head == "crf"
    if cfg.alpha_pair and not (crf and distil):
        raise UserError("alpha_pair (the pairwise KD term) needs distil with --head crf")
    if cfg.alpha_pair < 0:
        raise UserError(f"alpha_pair must be >= 0, got {cfg.alpha_pair}")
    if crf and cfg.label_all_subwords:
        raise UserError("--head crf scores each word once (its first subword): drop --label-all-subwords")
    if crf and distil and cfg.alpha_pair and data.edges is None:
        raise UserError("alpha_pair needs the teacher's pair marginals: relabel with `nerdistil teach "
                        "--edge-marginals` (the soft labels have none)", cfg.soft_labels)  # fmt: skip
    return crf


def run_student(cfg: StudentConfig, distil: bool) -> dict:
    """Train a student (distil: CE_w + KD; finetune: CE_w only) and write its model folder."""
    from transformers import set_seed

    inputs = [cfg.soft_labels, cfg.corpus, cfg.student]
    check_out(cfg.out, inputs, cfg.overwrite)  # before any work: never replace what nerdistil did not write
    if distil and cfg.alpha_ce == 0 and cfg.alpha_kd == 0:
        raise UserError("--alpha-ce and --alpha-kd are both 0: the student would learn nothing; give one a weight")
    set_seed(cfg.seed)
    data = StudentData(cfg, distil)
    labels, label2id = data.labels, {label: i for i, label in enumerate(data.labels)}
    alpha_ce, alpha_kd = (cfg.alpha_ce, cfg.alpha_kd) if distil else (1.0, 0.0)
    loss_weights = {"ce": alpha_ce, "kd": alpha_kd}  # ner_loss's named terms (weight 0: not computed)
    crf = check_head(cfg, distil, data)
    if crf and distil:
        loss_weights["pair"] = cfg.alpha_pair
    temperature = cfg.temperature or data.temperature or 1.0  # 1: the documented default
    if distil and data.temperature and cfg.temperature and abs(cfg.temperature - data.temperature) > 1e-9:
        log.warning("student temperature %s differs from the soft labels' %s", cfg.temperature, data.temperature)

    model, tokenizer = build_student(cfg.student, labels, cfg.student_layers, cfg.head)
    gold_ids = [label2id[t] for s in data.train if s.tags for t in s.tags]
    weight = class_weights(gold_ids, len(labels), cfg.class_weight_power) if cfg.class_weight_power else None
    if cfg.teacher_only_ratio is not None and not 0 <= cfg.teacher_only_ratio < 1:
        raise UserError(f"teacher_only_ratio must be in [0, 1), got {cfg.teacher_only_ratio}")
    examples = make_examples(tokenizer, data.train, label2id, data.probs, use_gold=alpha_ce > 0,
                             max_length=cfg.max_length, label_all_subwords=cfg.label_all_subwords,
                             min_confidence=cfg.min_confidence if distil else 0.0,
                             edges=data.edges if crf and distil and cfg.alpha_pair else None)  # fmt: skip
    train_loader = loader(examples, Collator(tokenizer.pad_token_id, len(labels)), cfg.batch_size, True, cfg.seed,
                          cfg.group_by_length, cfg.teacher_only_ratio if distil else None)  # fmt: skip

    def loss_fn(m: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        w = None if weight is None else weight.to(out.logits.device)
        if crf:
            return crf_loss(getattr(m, "module", m).crf, out.logits, batch, weights=loss_weights,
                            temperature=temperature, weight=w, kd_class_weights=cfg.kd_class_weights)  # fmt: skip
        return ner_loss(out.logits, batch["labels"], batch["soft"], batch["soft_mask"], weights=loss_weights,
                        temperature=temperature, weight=w, kd_weight=w if cfg.kd_class_weights else None)  # fmt: skip

    def score(m: torch.nn.Module, part: str) -> dict:
        sents = data.evals[part]
        return full_report([s.tags for s in sents], predict(m, tokenizer, [s.tokens for s in sents], labels,
                                                            max_length=cfg.max_length))  # fmt: skip

    dev_f1 = (lambda m: score(m, "dev")["f1"]) if "dev" in data.evals else None
    # StudentConfig has no adam_eps or grad_accum: the student loop's are fixed
    tcfg = trainer.TrainConfig.from_config(cfg, adam_eps=1e-8, grad_accum=1, metric="f1", maximize=True)
    acc = trainer.make_accelerator(tcfg)
    with staging(cfg.out, cfg.overwrite, cfg.resume, main=acc.is_main_process, inputs=inputs) as tmp:
        model, result = trainer.train(model, train_loader, loss_fn, tcfg, dev_f1, tmp / "tensorboard", acc,
                                        checkpoint_dir=tmp / "checkpoint", resume=cfg.resume)  # fmt: skip
        acc.wait_for_everyone()  # every process is done with the checkpoint before it goes
        if not acc.is_main_process:  # only the main process scores, writes and renames
            return {}
        shutil.rmtree(tmp / "checkpoint", ignore_errors=True)
        model = model.cpu()
        report = {
            "mode": "distil" if distil else "finetune",
            "student": cfg.student,
            "student_layers": cfg.student_layers or model.config.num_hidden_layers,
            "params": count_parameters(model),
            "labels": labels,
            "alpha_ce": alpha_ce,
            "alpha_kd": alpha_kd,
            "head": cfg.head,
            "alpha_pair": loss_weights.get("pair", 0.0),
            "temperature": temperature if alpha_kd else None,
            "class_weights": None if weight is None else dict(zip(labels, weight.tolist())),
            "kd_class_weights": bool(distil and cfg.kd_class_weights and weight is not None),
            "train_sentences": len(data.train),
            "teacher_only_sentences": sum(not s.tags for s in data.train),
            "teacher_only_ratio": cfg.teacher_only_ratio if distil else None,
            "min_confidence": cfg.min_confidence if distil else None,
            "kd_words_below_min_confidence": low_confidence_words(data, cfg.min_confidence) if distil else 0,
            "train_windows": len(examples),
            "best_epoch": result.best_epoch,
            "train_seconds": round(result.seconds, 1),
            "history": result.history,
            "scores": {part: score(model, part) for part in data.evals},
            "seed": cfg.seed,
            **trainer.where(acc, cfg.mixed_precision),
            "environment": versions(),
        }
        head = getattr(model, "crf", None)
        if head is not None:  # saved beside: transformers loads the folder as a plain token classifier
            del model.crf
        write_model_run(tmp, model, tokenizer, cfg, report)
        if head is not None:
            head.save(tmp)
            model.crf = head
    return report
