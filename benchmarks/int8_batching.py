"""int8 and the batch: how many tweets change tags when an int8 export batches windows, and what exactness costs.

Dynamic int8 quantizes each activation tensor with one scale over the whole batch, so a window's result can
depend on its neighbours. ``Tagger`` (and ``predict``, ``serve``) therefore runs an int8 graph's windows one at a
time by default (``exact``); ``--int8-batching`` (``Tagger(exact=False)``) batches them. This script tags the
same tweets both ways (and each tweet alone, the reference), and reports tweets/s and the tweets, words and
confidences that differ from the reference.

    python benchmarks/int8_batching.py --export runs/int8_export --json benchmarks/results/int8_batching.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export", required=True, help="an int8 export folder")
    ap.add_argument("--train", default="data/wnut16/train.txt", help="gold tweets to make transfer tweets from")
    ap.add_argument("--tweets", type=int, default=2394)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default="benchmarks/results/int8_batching.json")
    args = ap.parse_args()
    from nerdistil import Tagger
    from nerdistil.data.augment import augment
    from nerdistil.data.conll import read_conll

    gold = read_conll(args.train)
    words = [s.tokens for s in augment(gold, max(1, -(-args.tweets // len(gold))), 13)][: args.tweets]
    exact, batched = Tagger(args.export, args.threads), Tagger(args.export, args.threads, exact=False)
    if not exact.quantized:
        sys.exit(f"{args.export} is not an int8 export (its gate chose fp32)")
    rows = {}
    for name, tagger in (("exact (default)", exact), ("--int8-batching", batched)):
        tagger.decode(words[:64], args.batch_size)
        t0 = time.perf_counter()
        tags, scores = tagger.decode(words, args.batch_size)
        rows[name] = {"seconds": time.perf_counter() - t0, "tags": tags, "scores": scores}
    ref_tags = rows["exact (default)"]["tags"]
    # the reference: each tweet alone. exact must equal it; batching is compared with it
    alone = [exact.decode([w], 1) for w in words[:300]]
    assert all(a[0][0] == t for a, t in zip(alone, ref_tags[:300])), "exact mode differs from tagging alone"
    report: dict = {"command": "python benchmarks/int8_batching.py " + " ".join(sys.argv[1:]), "tweets": len(words),
                    "words": sum(map(len, words)), "batch_size": args.batch_size, "rows": []}  # fmt: skip
    for name, r in rows.items():
        changed = [i for i, (a, b) in enumerate(zip(r["tags"], ref_tags)) if a != b]
        words_changed = sum(x != y for i in changed for x, y in zip(r["tags"][i], ref_tags[i]))
        conf = max((abs(x - y) for a, b in zip(r["scores"], rows["exact (default)"]["scores"]) for x, y in zip(a, b)),
                   default=0.0)  # fmt: skip
        report["rows"].append({"mode": name, "tweets_per_s": len(words) / r["seconds"], "tweets_changed": len(changed),
                               "words_changed": words_changed, "max_confidence_change": float(conf)})  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print("```\n" + report["command"] + "\n```\n")
    threads = "all cores" if args.threads is None else f"{args.threads} threads"
    print(f"{report['tweets']} transfer tweets ({report['words']} words), batch size {args.batch_size}, {threads}.\n")
    print("| mode | tweets/s | tweets whose tags differ from tagging alone | words | largest confidence change |")
    print("|---|---|---|---|---|")
    for r in report["rows"]:
        print(f"| {r['mode']} | {r['tweets_per_s']:.0f} | {r['tweets_changed']} | {r['words_changed']} | "
              f"{r['max_confidence_change']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
