"""``nerdistil evaluate``: seqeval scores of a student, a teacher of any kind or an export on a CoNLL file."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from nerdistil.data.conll import read_conll, split_tag
from nerdistil.metrics import full_report

log = logging.getLogger(__name__)
Predictor = Callable[[Sequence[Sequence[str]]], list[list[str]]]


def load_predictor(model: str | Path, trust_teacher: bool = False, kind: str = "auto", device: str = "auto",
                   ) -> tuple[Predictor, str, int, list[str]]:  # fmt: skip
    """A words-to-BIO-tags function for any model: (fn, kind, params, labels).

    A student folder, a teacher of any kind (``teacher.base.KINDS``: file, folder or hub name), a `nerdistil
    teach` output folder (an ensemble run as labelling runs it: ``teacher.ensemble.Ensemble``) or an export
    folder (scored through the torch-free runtime, as deployed).
    """
    from nerdistil.runtime import CONFIG

    if (Path(model) / CONFIG).is_file():
        from nerdistil.runtime import Tagger

        tagger = Tagger.load(model)
        from nerdistil.student.export import graph_params

        return (lambda sents: tagger.decode(sents)[0]), "export", graph_params(model), list(tagger.labels)
    from nerdistil.teacher.ensemble import load_ensemble
    from nerdistil.trainer import resolve_device

    teacher = load_ensemble(model, trust_teacher, kind, resolve_device(device))
    return teacher.predict, teacher.kind, teacher.params, teacher.labels


def run_evaluate(model: str | Path, corpus: str | Path, teacher: str | Path | None = None,
                 trust_teacher: bool = False, device: str = "auto", **read_kwargs) -> dict:  # fmt: skip
    """Score ``model`` on the gold tags of ``corpus``; with ``teacher`` add word-level agreement."""
    sents = read_conll(corpus, **read_kwargs)
    words = [s.tokens for s in sents]
    fn, kind, params, labels = load_predictor(model, trust_teacher, device=device)
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
        tfn, _, _, _ = load_predictor(teacher, trust_teacher, device=device)
        tpred = tfn(words)
        same = sum(a == b for p, q in zip(pred, tpred) for a, b in zip(p, q))
        report["teacher_agreement"] = {
            "teacher": str(teacher),
            "word_agreement": same / max(1, report["n_words"]),
            "teacher_f1": full_report([s.tags for s in sents], tpred)["f1"],
        }
    return report
