"""Labelling speed of the Flair teacher on this CPU, fp32 against `--mixed-precision bf16` (issue 15).

    HF_HUB_OFFLINE=1 python benchmarks/label_speed.py --teacher runs/bench/teacher/teacher.pt

Labels the tweets of `nerdistil data augment --copies 10` (made from the bundled train split, about 19,000) with
`nerdistil teach --teacher T --unlabeled FILE --pretokenized`, once per precision, each in its own process, and
reports tweets per second (unlabeled tweets over the whole labelling time, which also covers the 2,394 gold
tweets: the rate `benchmarks/gpu.sh` prints) and, for bf16, how far its soft labels and tags are from fp32's on
the same tweets. fp32 stays the default: bf16 (autocast over the teacher's network; the CRF's posteriors stay
fp32) is opt-in and changes the soft labels in the last bits. Run it on an otherwise idle machine. Writes
``benchmarks/results/label_speed.json`` and the ``label-speed`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def nerdistil(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "nerdistil", *map(str, args)], check=True, env=ENV)


def compare(a_dir: Path, b_dir: Path, split: str = "unlabeled") -> dict:
    """Max |p_a - p_b| over every stored probability and the share of equal tags, on one split."""
    from nerdistil import softlabels

    a, b = softlabels.load(a_dir / "soft_labels")[split], softlabels.load(b_dir / "soft_labels")[split]
    worst, same, words = 0.0, 0, 0
    for ra, rb in zip(softlabels.rows(a), softlabels.rows(b)):
        worst = max(worst, float(np.abs(np.asarray(ra["probs"]) - np.asarray(rb["probs"])).max()))
        same += int((np.asarray(ra["teacher_tags"]) == np.asarray(rb["teacher_tags"])).sum())
        words += len(ra["teacher_tags"])
    return {"max_abs_prob_diff": worst, "tag_agreement": same / max(1, words), "words": words}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="runs/bench/teacher/teacher.pt")
    ap.add_argument("--corpus", default="data/wnut16")
    ap.add_argument("--out", default="runs/label_speed")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "fp16", "bf16"])
    ap.add_argument("--json", default="benchmarks/results/label_speed.json")
    args = ap.parse_args()
    command = "HF_HUB_OFFLINE=1 python benchmarks/label_speed.py " + shlex.join(sys.argv[1:])
    out, corpus = Path(args.out), Path(args.corpus)
    out.mkdir(parents=True, exist_ok=True)
    tweets = out / f"augment{args.copies}.txt"
    if not tweets.is_file():
        nerdistil("data", "augment", corpus / "train.txt", tweets, "--copies", args.copies)
    rows = {}
    for precision in args.precisions:
        run = out / f"labelled_{precision}"
        t0 = time.perf_counter()
        nerdistil(
            "teach",
            "--teacher",
            args.teacher,
            "--trust-teacher",
            "--corpus",
            corpus,
            "--unlabeled",
            tweets,
            "--pretokenized",
            "--out",
            run,
            "--device",
            "cpu",
            "--mixed-precision",
            precision,
            "--overwrite",
        )
        wall = time.perf_counter() - t0
        report = json.loads((run / "report.json").read_text())
        n = report["soft_labels"]["splits"]["unlabeled"]
        rows[precision] = {"unlabeled_tweets": n, "label_seconds": report["label_seconds"], "command_seconds":
                           round(wall, 1), "tweets_per_s": round(n / report["label_seconds"], 1),
                           "all_tweets_per_s": round(sum(report["soft_labels"]["splits"].values())
                                                     / report["label_seconds"], 1),
                           "device_name": report["device_name"], "test_f1": report["scores"]["test"]["f1"]}  # fmt: skip
        if precision != "no" and "no" in rows:
            rows[precision].update(compare(out / "labelled_no", run))
    result = {"command": command, "teacher": args.teacher, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=2))
    first = next(iter(rows.values()))
    lines = ["```", command, "```", "",
             f"`teach --teacher --unlabeled` on {first['unlabeled_tweets']:,} tweets (`data augment "
             f"--copies {args.copies}` of the train split) plus the 2,394 gold tweets, "
             f"{first['device_name']}, 2 threads, label batch 32; rate = unlabeled tweets / "
             "labelling time (all tweets / labelling time in brackets).", "",
             "| precision | labelling s | tweets/s | teacher test F1 (its own tags) | max abs soft-label diff vs fp32 "
             "| tag agreement vs fp32 |", "|---|---|---|---|---|---|"]  # fmt: skip
    for p, r in rows.items():
        diff = f"{r['max_abs_prob_diff']:.4f}" if "max_abs_prob_diff" in r else "-"
        agree = f"{r['tag_agreement']:.4%}" if "tag_agreement" in r else "-"
        rate = f"{r['tweets_per_s']:.0f} ({r['all_tweets_per_s']:.0f})"
        lines.append(f"| {'fp32' if p == 'no' else p} | {r['label_seconds']:.1f} | {rate} | "
                     f"{r['test_f1']:.4f} | {diff} | {agree} |")  # fmt: skip
    update_section(
        "benchmarks/RESULTS.md", "label-speed", "Labelling speed on the CPU: fp32 and bf16", "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
