"""Entity-level scores with seqeval, in the default (conlleval) and strict IOB2 modes."""

from __future__ import annotations

from collections.abc import Sequence

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2


def entity_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], strict: bool = False) -> dict:
    """Micro precision/recall/F1, macro and weighted F1, and per-type scores.

    Returns ``{"f1", "precision", "recall", "macro_f1", "weighted_f1", "per_type":
    {TYPE: {"precision", "recall", "f1", "support"}}, "n_sentences", "n_words"}``.
    """
    if len(gold) != len(pred) or any(len(g) != len(p) for g, p in zip(gold, pred)):
        raise RuntimeError("predictions and gold tags differ in sentence or word counts")
    kwargs = {"mode": "strict", "scheme": IOB2} if strict else {}
    rep = classification_report(
        [list(g) for g in gold], [list(p) for p in pred], output_dict=True, zero_division=0, **kwargs
    )
    per_type = {
        k: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for k, v in rep.items()
        if not k.endswith(" avg")
    }
    micro = rep.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    return {
        "f1": micro["f1-score"],
        "precision": micro["precision"],
        "recall": micro["recall"],
        "macro_f1": rep.get("macro avg", {}).get("f1-score", 0.0),
        "weighted_f1": rep.get("weighted avg", {}).get("f1-score", 0.0),
        "per_type": per_type,
        "n_sentences": len(gold),
        "n_words": sum(len(g) for g in gold),
    }


def full_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """The default-mode report with the strict-mode one under ``"strict"``."""
    rep = entity_report(gold, pred)
    rep["strict"] = entity_report(gold, pred, strict=True)
    return rep
