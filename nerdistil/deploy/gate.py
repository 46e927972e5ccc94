"""The int8 gate's evidence: the paired bootstrap of an F1 difference, the gold dev set and the agreement set.

Split from ``export`` so each stays small; ``export`` decides with them.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np

from nerdistil.errors import UserError

log = logging.getLogger(__name__)
MIN_AGREEMENT_TWEETS = 5000
_TAG = re.compile(r"^(O|[BIES]-\S+)$")


def paired_bootstrap(gold: list[list[str]], ref: list[list[str]], cand: list[list[str]], draws: int = 1000,
                     seed: int = 13) -> tuple[float, float, float]:  # fmt: skip
    """F1(candidate) - F1(reference) with a 95% CI, resampling sentences (entity micro F1, conlleval chunks)."""
    from seqeval.metrics.sequence_labeling import get_entities

    def counts(pred: list[list[str]]) -> np.ndarray:  # (n, 3): true positives, predicted, gold per sentence
        rows = []
        for g, p in zip(gold, pred):
            ge, pe = set(get_entities(g)), set(get_entities(p))
            rows.append((len(ge & pe), len(pe), len(ge)))
        return np.asarray(rows, dtype=np.float64).reshape(-1, 3)

    def f1(c: np.ndarray) -> np.ndarray:  # (..., 3) -> (...)
        denom = c[..., 1] + c[..., 2]
        return np.where(denom > 0, 2 * c[..., 0] / np.maximum(denom, 1), 0.0)

    a, b = counts(cand), counts(ref)
    diff = float(f1(a.sum(0)) - f1(b.sum(0)))
    idx = np.random.default_rng(seed).integers(0, len(gold), size=(draws, len(gold)))
    boot = f1(a[idx].sum(1)) - f1(b[idx].sum(1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def _student_split(student: Path, split: str) -> tuple[str, list[list[str]], list[list[str]]] | None:
    """(name, words, gold tags) of a split the student was trained with (its config's corpus or soft labels)."""
    import yaml

    cfg_file = student / "nerdistil_config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    if cfg.get("corpus") and Path(cfg["corpus"], f"{split}.txt").is_file():
        return _gold_file(Path(cfg["corpus"], f"{split}.txt"))
    sl = Path(str(cfg.get("soft_labels") or ""))
    sl = sl / "soft_labels" if (sl / "soft_labels").is_dir() else sl
    if cfg.get("soft_labels") and (sl / "dataset_dict.json").is_file():
        from nerdistil import softlabels

        ds = softlabels.load(sl)
        if split in ds:
            labels = softlabels.label_names(ds)
            rows = [r for r in ds[split] if r["has_gold"]]
            if rows:
                tags = [[labels[i] for i in r["tags"]] for r in rows]
                return f"{sl}[{split}]", [list(r["tokens"]) for r in rows], tags
    return None


def _gold_file(path: str | Path) -> tuple[str, list[list[str]], list[list[str]]]:
    from nerdistil.data.conll import read_conll

    sents = read_conll(path)
    if any(s.tags is None for s in sents):
        raise UserError("the gate needs gold tags (token and tag columns)", path)
    return str(path), [s.tokens for s in sents], [s.tags for s in sents]  # type: ignore[misc]


def gate_corpus(student: Path, corpus: str | Path | None) -> tuple[str, list[list[str]], list[list[str]]]:
    """(name, words, gold tags) to gate on: ``corpus``, else the dev set the student was trained with."""
    found = _gold_file(corpus) if corpus is not None else _student_split(student, "dev")
    if found is None:
        raise UserError("cannot find the student's dev set (its config names none that exists here); pass --corpus "
                        "FILE with gold tags for the quality gate", student)  # fmt: skip
    return found


def _looks_conll(path: Path) -> bool:
    """A ``.conll`` file, or one whose first block of lines (up to a blank line) is ``word ... TAG`` columns."""
    from nerdistil.data.lines import iter_lines

    if path.suffix.lower() == ".conll":
        return True
    block: list[list[str]] = []
    for _, line in iter_lines(path):
        if not line.strip():
            if block:
                break
            continue
        block.append(line.split())
        if len(block) > 500:
            return False
    return bool(block) and all(2 <= len(f) <= 4 and _TAG.match(f[-1]) for f in block)


def agreement_set(student: Path, path: str | Path | None = None, pretokenized: bool = False, seed: int = 13,
                  min_tweets: int = MIN_AGREEMENT_TWEETS) -> tuple[dict, list[list[str]]]:  # fmt: skip
    """(description, words) of the unlabeled tweets on which int8 graphs are compared with the fp32 graph.

    ``path``: raw tweets one a line (nerdistil's tweet tokenizer), words separated by spaces with ``pretokenized``,
    or a CoNLL file (its tags ignored). Without it: transfer tweets made from the student's train tweets by
    ``nerdistil.data.augment.augment``, ceil(min_tweets / train tweets) copies of each, seeded. Fewer than
    ``min_tweets`` tweets is allowed, with a warning: the agreement F1 then resolves less.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError("no such agreement-corpus file", path)
        if _looks_conll(path):
            from nerdistil.data.conll import read_conll

            words, kind = [s.tokens for s in read_conll(path, tag_col=None) if s.tokens], "conll"
        else:
            from nerdistil.data.conll import read_unlabeled

            words = [s.tokens for s in read_unlabeled(path, pretokenized)]
            kind = "pretokenized" if pretokenized else "tweets"
        info: dict = {"source": str(path), "kind": kind}
    else:
        from nerdistil.data.augment import augment
        from nerdistil.data.conll import Sentence

        train = _student_split(student, "train")
        if train is None:
            raise UserError("cannot find the student's train tweets to make the int8 agreement set from (its config "
                            "names none that exists here); pass --agreement-corpus FILE of unlabeled tweets",
                            student)  # fmt: skip
        name, tokens, tags = train
        gold = [Sentence(w, t) for w, t in zip(tokens, tags)]
        copies = math.ceil(max(1, min_tweets) / len(tokens))
        words = [s.tokens for s in augment(gold, copies, seed)]
        if len(words) < min_tweets:  # a copy that came out as its source is skipped: one more round makes up for it
            copies += 1
            words = [s.tokens for s in augment(gold, copies, seed)]
        info = {"source": f"augment({name})", "kind": "augmented train", "train_tweets": len(tokens),
                "copies": copies, "seed": seed}  # fmt: skip
    info.update(tweets=len(words), words=sum(map(len, words)), min_tweets=min_tweets)
    if len(words) < min_tweets:
        log.warning("the int8 agreement set %s holds %d tweets, fewer than %d: its agreement F1 resolves less",
                    info["source"], len(words), min_tweets)  # fmt: skip
    return info, words


def _n_entities(tags: list[list[str]], types: set[str] | None = None) -> int:
    """Entities in ``tags`` (only those of ``types`` when given)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return sum(types is None or e[0] in types for t in tags for e in get_entities(t))
