"""Labelling speed of the Flair teacher on this CPU, fp32 against `--mixed-precision bf16` (issue 15).

    HF_HUB_OFFLINE=1 python benchmarks/label_speed.py --teacher runs/bench/teacher/teacher.pt

Labels the tweets of `nerdistil data augment --copies 10` (made from the bundled train split, about 19,000) with
`nerdistil teach --teacher T --unlabeled FILE --pretokenized`, once per precision, each in its own process, and
reports tweets per second (unlabeled tweets over the whole labelling time, which also covers the 2,394 gold
tweets: the rate `benchmarks/gpu.sh` prints) and, for bf16, how far its soft labels and tags are from fp32's on
the same tweets. fp32 stays the default: bf16 (autocast over the teacher's network; the CRF's posteriors stay
fp32) is opt-in and changes the soft labels in the last bits. Run it on an otherwise idle machine. Writes
``benchmarks/results/label_speed.json`` and the ``label-speed`` section of RESULTS.md.

    HF_HUB_OFFLINE=1 python benchmarks/label_speed.py --precisions no --against a7b03b7

``--against REF`` also times this code against the code of git commit REF (checked out in a worktree under
``--out``) in ``--rounds`` interleaved rounds on the first ``--ab-lines`` tweets, fp32: each round runs both, the
one to go first alternating, so a shared machine's slow minutes fall on both alike. It reports each round's rate,
the median speed-up, and how far the two codes' soft labels and tags are apart (``label-speed-ab-REF`` section
of RESULTS.md, ``label_speed_ab_REF.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def nerdistil(*args: str, cwd: Path | None = None) -> None:
    """Run ``python -m nerdistil ARGS``; from ``cwd`` when given, so that folder's ``nerdistil`` is the one run."""
    subprocess.run([sys.executable, "-m", "nerdistil", *map(str, args)], check=True, env=ENV, cwd=cwd)


def worktree(ref: str, out: Path) -> Path:
    """The code of git commit ``ref`` in a worktree under ``out`` (made once), checked to be what Python imports."""
    git = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    sha = subprocess.run([*git, "rev-parse", "--verify", f"{ref}^{{commit}}"], check=True, capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    tree = (out / f"code_{sha[:10]}").resolve()
    if not (tree / "nerdistil").is_dir():
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), sha], check=True)
    where = subprocess.run([sys.executable, "-c", "import nerdistil; print(nerdistil.__file__)"], cwd=tree, env=ENV,
                           check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    if not Path(where).resolve().is_relative_to(tree):
        raise SystemExit(f"python run from {tree} imports nerdistil from {where}, not from the worktree")
    return tree


def interleaved(ref: str, out: Path, rounds: int,
                run: Callable[[str, Path, int], float]) -> tuple[dict[str, list[float]], list[float]]:  # fmt: skip
    """Seconds of ``run(name, code folder, round)`` for this code ("this") and commit ``ref``'s ("ref") each round,
    the one to go first alternating (a shared machine's slow minutes fall on both alike), and the speed-ups."""
    codes = {"this": Path(__file__).resolve().parents[1], "ref": worktree(ref, out)}
    seconds: dict[str, list[float]] = {name: [] for name in codes}
    for r in range(rounds):
        for name in list(codes)[r % 2 :] + list(codes)[: r % 2]:
            seconds[name].append(run(name, codes[name], r))
    return seconds, [b / a for a, b in zip(seconds["this"], seconds["ref"])]


def against(args: argparse.Namespace, tweets: Path, out: Path, command: str) -> None:
    """This code against commit ``args.against``: interleaved fp32 rounds, speed-up and soft-label distance."""
    subset = out / f"first{args.ab_lines}.txt"
    with tweets.open() as f, subset.open("w") as g:
        picked = [line for _, line in zip(range(args.ab_lines), f)]
        g.writelines(picked)

    def label(name: str, code: Path, r: int) -> float:
        run = (out / f"ab_{name}_{r}").resolve()
        nerdistil("teach", "--teacher", Path(args.teacher).resolve(), "--trust-teacher", "--corpus",
                  Path(args.corpus).resolve(), "--unlabeled", subset.resolve(), "--pretokenized", "--out", run,
                  "--device", "cpu", "--overwrite", cwd=code)  # fmt: skip
        return json.loads((run / "report.json").read_text())["label_seconds"]

    seconds, speedups = interleaved(args.against, out, args.rounds, label)
    splits = json.loads((out / "ab_this_0" / "report.json").read_text())["soft_labels"]["splits"]
    tweets_n = sum(splits.values())
    diffs = {s: compare(out / "ab_ref_0", out / "ab_this_0", s) for s in splits}
    result = {"command": command, "against": args.against, "tweets": tweets_n, "label_seconds": seconds,
              "speedups": speedups, "median_speedup": float(np.median(speedups)), "soft_label_diff": diffs}  # fmt: skip
    Path(args.json).with_name(f"label_speed_ab_{args.against}.json").write_text(json.dumps(result, indent=2))
    worst = max(d["max_abs_prob_diff"] for d in diffs.values())
    words = sum(d["words"] for d in diffs.values())
    agree = sum(d["tag_agreement"] * d["words"] for d in diffs.values()) / words
    lines = [
        "```",
        command,
        "```",
        "",
        f"`teach --teacher --unlabeled`, fp32, on the first {len(picked):,} augmented tweets plus the "
        f"{tweets_n - len(picked):,} gold ones ({tweets_n:,} tweets), this code and commit `{args.against}` "
        f"in {args.rounds} interleaved rounds on the CPU; rate = all tweets / labelling time.",
        "",
        f"| round | `{args.against}` s | tweets/s | this code s | tweets/s | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r, (b, a) in enumerate(zip(seconds["ref"], seconds["this"])):
        lines.append(f"| {r + 1} | {b:.1f} | {tweets_n / b:.0f} | {a:.1f} | {tweets_n / a:.0f} | {b / a:.2f}x |")
    lines += [
        "",
        f"Median speed-up **{np.median(speedups):.2f}x**. Soft labels against `{args.against}`'s (round 1, "
        f"every split): max abs difference {worst:.1e}, tags equal on {agree:.4%} of {words:,} words.",
    ]
    update_section("benchmarks/RESULTS.md", f"label-speed-ab-{args.against}", f"Labelling speed on the CPU: this "
                   f"code against {args.against}", "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


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
    ap.add_argument(
        "--precisions",
        nargs="*",
        default=["no", "bf16"],
        choices=["no", "fp16", "bf16"],
        help="precisions to time on all the augmented tweets (none: only --against)",
    )
    ap.add_argument("--json", default="benchmarks/results/label_speed.json")
    ap.add_argument("--against", metavar="REF", help="also time this code against git commit REF (see above)")
    ap.add_argument("--ab-lines", type=int, default=4000, help="augmented tweets the --against rounds label")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of --against")
    args = ap.parse_args()
    command = "HF_HUB_OFFLINE=1 python benchmarks/label_speed.py " + shlex.join(sys.argv[1:])
    out, corpus = Path(args.out), Path(args.corpus)
    out.mkdir(parents=True, exist_ok=True)
    tweets = out / f"augment{args.copies}.txt"
    if not tweets.is_file():
        nerdistil("data", "augment", corpus / "train.txt", tweets, "--copies", args.copies)
    if args.against:
        against(args, tweets, out, command)
    if not args.precisions:
        return
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
