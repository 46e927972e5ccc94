"""``nerdistil lm-eval``: held-out perplexity on fixed masks, embedding neighbours and their overlap."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch

from nerdistil.settings import LM_EVAL_WORDS


def neighbours(model, tokenizer, word: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` vocabulary entries nearest to ``word`` by cosine similarity of input embeddings.

    A word of several subwords is represented by the mean of their embeddings; its own subwords
    and special tokens are excluded from the neighbours.
    """
    emb = model.get_input_embeddings().weight.detach().float()  # (V, H)
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not ids:
        return []
    vec = emb[ids].mean(0)
    sims = torch.nn.functional.cosine_similarity(emb, vec.unsqueeze(0), dim=-1)
    sims[ids] = -2.0
    sims[[i for i in tokenizer.all_special_ids if i < len(sims)]] = -2.0
    top = sims.topk(k)
    return [(tokenizer.convert_ids_to_tokens(int(i)), float(s)) for s, i in zip(top.values, top.indices)]


def overlap(a: Sequence[tuple[str, float]], b: Sequence[tuple[str, float]]) -> float:
    """Percentage of ``a``'s neighbours that are also ``b``'s (the lists have the same length)."""
    if not a:
        return float("nan")
    return 100.0 * len({t for t, _ in a} & {t for t, _ in b}) / len(a)


def run_lm_eval(models: Sequence[str], corpus: str | None, words: Sequence[str] = LM_EVAL_WORDS, k: int = 10,
                seed: int = 0, max_length: int = 128) -> dict:  # fmt: skip
    """Perplexity (same masks for every model), top-k neighbours per word, pairwise mean overlap."""
    from nerdistil.lm.preprocess import read_tweets
    from nerdistil.lm.train import load_mlm, perplexity

    tweets = read_tweets(corpus, "auto") if corpus else None
    report: dict = {"models": list(models), "words": list(words), "k": k, "mask_seed": seed, "perplexity": {},
                    "masked_tokens": {}, "neighbours": {}, "overlap": {}}  # fmt: skip
    for name in models:
        model, tok = load_mlm(name)
        model.eval()
        if tweets:
            ppl, n = perplexity(model, tok, tweets, seed, max_length=max_length)
            report["perplexity"][name], report["masked_tokens"][name] = ppl, n
        report["neighbours"][name] = {w: neighbours(model, tok, w, k) for w in words}
    for a, b in combinations(models, 2):
        per_word = [overlap(report["neighbours"][a][w], report["neighbours"][b][w]) for w in words]
        report["overlap"][f"{a} | {b}"] = sum(per_word) / len(per_word)
    return report


def markdown(report: dict) -> str:
    """Neighbour tables (one per word, models side by side), overlaps and perplexities as markdown."""
    models = report["models"]
    lines = []
    if report["perplexity"]:
        lines += ["| model | held-out perplexity | masked tokens |", "|---|---|---|"]
        lines += [f"| {m} | {report['perplexity'][m]:.2f} | {report['masked_tokens'][m]} |" for m in models]
        lines.append("")
    if report["overlap"]:
        lines += [f"| models | mean top-{report['k']} neighbour overlap |", "|---|---|"]
        lines += [f"| {pair} | {v:.1f}% |" for pair, v in report["overlap"].items()]
        lines.append("")
    for w in report["words"]:
        lines += [f"**{w}**", "", "| rank | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
        for r in range(report["k"]):
            cells = []
            for m in models:
                nb = report["neighbours"][m][w]
                cells.append(f"{nb[r][0]} ({nb[r][1]:.2f})" if r < len(nb) else "")
            lines.append(f"| {r + 1} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
