"""``nerdistil evaluate``: seqeval scores of a Flair teacher file or a student folder on a CoNLL file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nerdistil.data.conll import Sentence, bio_labels, read_conll, split_tag
from nerdistil.errors import UserError
from nerdistil.metrics import full_report

Predictor = Callable[[Sequence[Sequence[str]]], list[list[str]]]


def load_predictor(model: str | Path, trust_teacher: bool = False) -> tuple[Predictor, str, int]:
    """A words-to-BIO-tags function for a Flair tagger file or a student folder; returns (fn, kind, params)."""
    path = Path(model)
    if path.is_file():
        from nerdistil.teacher import flair_teacher as ft

        tagger = ft.load_teacher(path, trust_teacher)
        types = {split_tag(t)[1] for t in ft.teacher_tags(tagger) if t not in ("<START>", "<STOP>", "<unk>")}
        labels = bio_labels(t for t in types if t)

        def teacher_fn(sents: Sequence[Sequence[str]]) -> list[list[str]]:
            return [lab.tags for lab in ft.label(tagger, [Sentence(list(s)) for s in sents], labels, 1.0)]

        return teacher_fn, "flair", sum(p.numel() for p in tagger.parameters())
    if path.is_dir():
        from transformers import AutoModelForTokenClassification

        from nerdistil.align import load_tokenizer
        from nerdistil.ner import count_parameters, predict

        if not (path / "config.json").is_file():
            raise UserError("not a student model folder (no config.json); pass a distil/finetune --out folder", path)
        if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
            raise UserError("the student folder has no tokenizer; save one with tokenizer.save_pretrained", path)
        student = AutoModelForTokenClassification.from_pretrained(path)
        tokenizer = load_tokenizer(str(path))
        labels = [student.config.id2label[i] for i in range(student.config.num_labels)]

        def student_fn(sents: Sequence[Sequence[str]]) -> list[list[str]]:
            return predict(student, tokenizer, sents, labels)

        return student_fn, "transformers", count_parameters(student)
    raise UserError("no such model file or folder", path)


def run_evaluate(model: str | Path, corpus: str | Path, teacher: str | Path | None = None,
                 trust_teacher: bool = False, **read_kwargs) -> dict:  # fmt: skip
    """Score ``model`` on the gold tags of ``corpus``; with ``teacher`` add word-level agreement."""
    sents = read_conll(corpus, **read_kwargs)
    words = [s.tokens for s in sents]
    fn, kind, params = load_predictor(model, trust_teacher)
    pred = fn(words)
    if len(pred) != len(sents) or any(len(p) != len(s) for p, s in zip(pred, sents)):
        raise RuntimeError("the model returned a different number of tags than words")  # never drop a word
    report = full_report([s.tags for s in sents], pred)
    report.update({"model": str(model), "kind": kind, "params": params, "corpus": str(corpus)})
    if teacher is not None:
        tfn, _, _ = load_predictor(teacher, trust_teacher)
        tpred = tfn(words)
        same = sum(a == b for p, q in zip(pred, tpred) for a, b in zip(p, q))
        report["teacher_agreement"] = {
            "teacher": str(teacher),
            "word_agreement": same / max(1, report["n_words"]),
            "teacher_f1": full_report([s.tags for s in sents], tpred)["f1"],
        }
    return report
