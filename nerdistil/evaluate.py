"""``nerdistil evaluate``: seqeval scores of a Flair teacher file or a student folder on a CoNLL file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from nerdistil.data.conll import Sentence, bio_labels, read_conll, split_tag
from nerdistil.errors import UserError
from nerdistil.metrics import full_report

log = logging.getLogger(__name__)
Predictor = Callable[[Sequence[Sequence[str]]], list[list[str]]]


def load_predictor(model: str | Path, trust_teacher: bool = False) -> tuple[Predictor, str, int, list[str]]:
    """A words-to-BIO-tags function for a Flair tagger file or a student folder; returns (fn, kind, params, labels)."""
    path = Path(model)
    if path.is_file():
        from nerdistil.teacher import flair_teacher as ft

        tagger = ft.load_teacher(path, trust_teacher)
        types = {split_tag(t)[1] for t in ft.teacher_tags(tagger) if t not in ("<START>", "<STOP>", "<unk>")}
        labels = bio_labels(t for t in types if t)

        def teacher_fn(sents: Sequence[Sequence[str]]) -> list[list[str]]:
            return [lab.tags for lab in ft.label(tagger, [Sentence(list(s)) for s in sents], labels, 1.0)]

        return teacher_fn, "flair", sum(p.numel() for p in tagger.parameters()), labels
    if path.is_dir():
        from nerdistil.ner import count_parameters, load_student, predict

        student, tokenizer, labels = load_student(path)

        def student_fn(sents: Sequence[Sequence[str]]) -> list[list[str]]:
            return predict(student, tokenizer, sents, labels)

        return student_fn, "transformers", count_parameters(student), labels
    raise UserError("no such model file or folder", path)


def run_evaluate(model: str | Path, corpus: str | Path, teacher: str | Path | None = None,
                 trust_teacher: bool = False, **read_kwargs) -> dict:  # fmt: skip
    """Score ``model`` on the gold tags of ``corpus``; with ``teacher`` add word-level agreement."""
    sents = read_conll(corpus, **read_kwargs)
    words = [s.tokens for s in sents]
    fn, kind, params, labels = load_predictor(model, trust_teacher)
    known = {split_tag(t)[1] for t in labels}
    unknown = sorted({split_tag(t)[1] for s in sents for t in s.tags} - known - {None})
    if unknown:  # scored as misses: say so rather than let a low recall speak for itself
        log.warning("%s: gold entity types the model does not know, scored as misses: %s", corpus, ", ".join(unknown))
    pred = fn(words)
    if len(pred) != len(sents) or any(len(p) != len(s) for p, s in zip(pred, sents)):
        raise RuntimeError("the model returned a different number of tags than words")  # never drop a word
    report = full_report([s.tags for s in sents], pred)
    report.update({"model": str(model), "kind": kind, "params": params, "corpus": str(corpus),
                   "unknown_gold_types": unknown})  # fmt: skip
    if teacher is not None:
        tfn, _, _, _ = load_predictor(teacher, trust_teacher)
        tpred = tfn(words)
        same = sum(a == b for p, q in zip(pred, tpred) for a, b in zip(p, q))
        report["teacher_agreement"] = {
            "teacher": str(teacher),
            "word_agreement": same / max(1, report["n_words"]),
            "teacher_f1": full_report([s.tags for s in sents], tpred)["f1"],
        }
    return report
