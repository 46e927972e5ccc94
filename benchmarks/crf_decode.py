"""Is the CRF student's lower recall a decision threshold? Decode the CV's trained students other ways (issue 30).

    HF_HUB_OFFLINE=1 python benchmarks/crf_decode.py --out runs/cv

For every fold's trained student (``cv.py``'s run folders; nothing is trained here) the word logits of its dev and
test folds are decoded with

* ``viterbi``: the shipped decoding (the most likely valid BIO path; a CRF student's learned transitions added);
* ``max-marginal`` (CRF students): the most likely valid BIO path through the CRF's per-word marginals
  (forward-backward of ``nerdistil.crf``), the way a softmax student's per-word distributions are decoded;

each with a bias of -delta on the O tag's score (delta = 0 is the plain decoding; delta > 0 trades precision for
recall). Pooled F1 (seqeval, every tweet once) per delta, and the delta chosen on each fold's dev set applied to its
test set. The section ``crf-decode`` of ``benchmarks/RESULTS.md`` holds the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402

DELTAS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def decodings(logits: np.ndarray, labels: list[str], crf, deltas=DELTAS) -> dict[str, list[list[str]]]:
    """Tag paths of one sentence's (n, L) word logits: ``{"viterbi δ": tags, "max-marginal δ": tags}``.

    A sentence is decoded whole; the shipped decoder runs each window alone, which is the same for every sentence
    that fits in one window (every bundled tweet: the longest has 75 of 512 subwords).
    """
    import torch

    from nerdistil.crf import MASKED, chain_potentials, forward_backward
    from nerdistil.tags import bio_scores, bio_transitions, viterbi

    allowed = bio_transitions(labels)
    scores, plain = bio_scores(allowed, crf), bio_scores(allowed)
    o = labels.index("O")
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    out: dict[str, list[list[str]]] = {}
    kinds = [("viterbi", logp, scores)]
    if crf is not None:
        finite = [torch.from_numpy(np.where(np.isfinite(x), x, MASKED)).float() for x in scores]
        chain = forward_backward(*chain_potentials(torch.from_numpy(logits)[None], *finite), [len(logits)])
        kinds.append(("max-marginal", chain.log_unary[0].numpy(), plain))
    for name, base, sc in kinds:
        for d in deltas:
            e = base.copy()
            e[:, o] -= d
            out[f"{name} {d:g}"] = [labels[k] for k in viterbi(e, *sc)]
    return out


def _scores(gold: list, pred: list) -> dict[str, float]:
    from nerdistil.metrics import entity_report

    return {k: v for k, v in entity_report(gold, pred).items() if k in ("f1", "precision", "recall")}


def run(out: Path, student: str, folds: int) -> dict:
    """Pooled dev and test F1 / P / R per decoding, and the per-fold dev choice of delta applied to test."""
    from nerdistil.data.conll import read_conll
    from nerdistil.tokclf import load_classifier, word_logits

    pred: dict[str, dict[str, list]] = {"dev": {}, "test": {}}
    gold: dict[str, list] = {"dev": [], "test": []}
    per_fold: list[dict[str, dict[str, tuple]]] = []
    for fold in range(folds):
        model, tok, labels = load_classifier(out / "folds" / str(fold) / student)
        crf = model.crf.numpy_scores() if getattr(model, "crf", None) is not None else None
        mine: dict[str, dict[str, tuple]] = {}
        for split in ("dev", "test"):
            sents = read_conll(out / "folds" / str(fold) / f"{split}.txt")
            tags: dict[str, list] = {}
            for lg in word_logits(model, tok, [s.tokens for s in sents], len(labels)):
                for k, path in decodings(lg, labels, crf).items():
                    tags.setdefault(k, []).append(path)
            g = [s.tags for s in sents]
            gold[split] += g
            for k, p in tags.items():
                pred[split].setdefault(k, []).extend(p)
                mine.setdefault(k, {})[split] = (_scores(g, p)["f1"], p, g)
        per_fold.append(mine)
        print(f"fold {fold} done", flush=True)
    rows = {}
    for k in pred["test"]:
        rows[k] = {split: _scores(gold[split], pred[split][k]) for split in ("dev", "test")}
    for name in {k.split(" ")[0] for k in pred["test"]}:  # delta chosen on each fold's dev set
        p, g, chosen = [], [], []
        for mine in per_fold:
            best = max((k for k in mine if k.startswith(name + " ")), key=lambda k: mine[k]["dev"][0])
            chosen.append(best.split(" ")[1])
            p += mine[best]["test"][1]
            g += mine[best]["test"][2]
        rows[f"{name}, delta chosen on dev ({', '.join(chosen)})"] = {"test": _scores(g, p)}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/cv", help="cv.py's --out (its fold run folders are read)")
    ap.add_argument("--students", nargs="+", default=["distil_head-crf__teacher_s13", "distil__teacher_s13"])
    ap.add_argument("--json", default="benchmarks/results/crf_decode.json")
    ap.add_argument("--results-md", default="benchmarks/RESULTS.md")
    args = ap.parse_args()
    out = Path(args.out)
    folds = len(json.loads((out / "folds" / "folds.json").read_text())["test_index"])
    result = {s: run(out, s, folds) for s in args.students}
    Path(args.json).write_text(json.dumps(result, indent=2))
    lines = [
        "    HF_HUB_OFFLINE=1 python benchmarks/crf_decode.py " + " ".join(sys.argv[1:]),
        "",
        f"Each fold's trained student of the 5-fold CV (`{args.out}`, nothing retrained) decoded other ways; "
        "pooled over all folds (every tweet once). Decoding: `viterbi` is what ships; `max-marginal` the best "
        "valid BIO path through the CRF's forward-backward marginals; delta: a bias of -delta on O's score.",
        "",
        "| student | decoding | delta | dev F1 | test F1 | test P | test R |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, rows in result.items():
        for k, r in rows.items():
            name, _, d = k.partition(" ")
            dev = f"{r['dev']['f1']:.4f}" if "dev" in r else ""
            t = r["test"]
            lines.append(f"| {s} | {name if dev else k} | {d if dev else ''} | {dev} | {t['f1']:.4f} | "
                         f"{t['precision']:.3f} | {t['recall']:.3f} |")  # fmt: skip
    if args.results_md:
        update_section(
            args.results_md, "crf-decode", "CRF student: decoding and the O bias (5-fold CV)", "\n".join(lines)
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
