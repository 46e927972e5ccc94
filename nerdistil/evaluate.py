"""``nerdistil evaluate``: seqeval scores of a student, a teacher of any kind or an export on a CoNLL file."""

from __future__ import annotations

import logging
from pathlib import Path

from nerdistil.data.conll import read_conll, split_tag
from nerdistil.deploy.loader import load_tagger
from nerdistil.metrics import full_report

log = logging.getLogger(__name__)


def run_evaluate(model: str | Path, corpus: str | Path, teacher: str | Path | None = None,
                 trust_teacher: bool = False, device: str = "auto", **read_kwargs) -> dict:  # fmt: skip
    """Score ``model`` on the gold tags of ``corpus``; with ``teacher`` add word-level agreement."""
    sents = read_conll(corpus, **read_kwargs)
    words = [s.tokens for s in sents]
    tagger = load_tagger(model, trust_teacher, device=device)
    known = {split_tag(t)[1] for t in tagger.labels}
    unknown = sorted({split_tag(t)[1] for s in sents for t in s.tags} - known - {None})
    if unknown:  # scored as misses: say so rather than let a low recall speak for itself
        log.warning("%s: gold entity types the model does not know, scored as misses: %s", corpus, ", ".join(unknown))
    pred = tagger.predict(words)
    if len(pred) != len(sents) or any(len(p) != len(s) for p, s in zip(pred, sents)):
        raise RuntimeError("the model returned a different number of tags than words")  # never drop a word
    report = full_report([s.tags for s in sents], pred)
    report.update({"model": str(model), "kind": tagger.kind, "params": tagger.params, "corpus": str(corpus),
                   "unknown_gold_types": unknown})  # fmt: skip
    if teacher is not None:
        tpred = load_tagger(teacher, trust_teacher, device=device).predict(words)
        same = sum(a == b for p, q in zip(pred, tpred) for a, b in zip(p, q))
        report["teacher_agreement"] = {
            "teacher": str(teacher),
            "word_agreement": same / max(1, report["n_words"]),
            "teacher_f1": full_report([s.tags for s in sents], tpred)["f1"],
        }
    return report
