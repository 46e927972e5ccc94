"""Transfer-set curve (issue 30): the distilled student with 0, 2x and 5x teacher-labelled transfer tweets.

    HF_HUB_OFFLINE=1 python benchmarks/transfer_curve.py --sizes 0 2 5 --head softmax --zero runs/crfkd/distil_s13

For every size k > 0, ``nerdistil data augment train.txt --copies k`` makes k changed versions of every gold train
tweet (k x 1,915 tweets: mention and word swaps), and the config's teacher (``configs/wnut16.yaml``: the
cross-fitted mpnet ensemble, trained with the same seeds on the same cached vectors, so its gold-split soft labels
are the 0x run's; the script checks its test tags against ``--zero-teacher``'s) labels them as the teacher-only
split (``teach --unlabeled --pretokenized``). The student is then distilled with half of every batch drawn from
them (``--teacher-only-ratio 0.5``: an epoch is one pass over the gold tweets in half-gold batches) for half the
config's epochs: the same number of optimizer steps and the same batch size as the 0x run (the config's epochs of
gold-only batches), so the curve measures what the transfer tweets add, not extra training. At 2x the student sees
each transfer tweet twice, at 5x 0.8 times.

Every run folder holding ``report.json`` is reused. ``--zero`` reuses a finished 0x student (``crf_student.py``'s
``distil_s13`` for the softmax head, ``distil_crf_s13`` for the CRF head; same config and seed). Writes
``benchmarks/results/transfer_curve.json`` and the ``transfer-curve`` section of ``benchmarks/RESULTS.md``: dev
and test F1 per size, the share of the teacher's test F1 and each size against 0x (95% paired bootstrap CI over
test tweets, pooled over seeds).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.data import wnut16
from nerdistil.data.augment import run_augment
from nerdistil.data.conll import read_conll
from nerdistil.pipeline import RunConfig
from nerdistil.teacher.teach import run_teach

sys.path.insert(0, str(Path(__file__).parent))
from crf_student import mean_sd  # noqa: E402
from cv import compare, fold_tags, model_summary  # noqa: E402
from distil_vs_finetune import student  # noqa: E402
from results_md import update_section  # noqa: E402

RATIO = 0.5  # share of every batch from the transfer tweets (k > 0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/wnut16.yaml")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 2, 5], help="transfer tweets, in gold train sizes")
    ap.add_argument("--head", choices=["softmax", "crf"], default="softmax", help="the student's head")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13])
    ap.add_argument("--zero", default=None, help="a finished 0x student to reuse (one seed)")
    ap.add_argument("--zero-teacher", default="runs/crfkd/teacher", help="the 0x teacher (trained here if missing)")
    ap.add_argument("--out", default="runs/transfer")
    ap.add_argument("--draws", type=int, default=2000)
    args = ap.parse_args(argv)

    run = cfgmod.load(RunConfig, args.config, "run")
    corpus = Path(run.corpus)
    if not (corpus / "train.txt").is_file():
        wnut16.write_split(corpus, run.split_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs = cfgmod.load(cfgmod.StudentConfig, args.config, "distil").epochs
    if epochs % 2:
        raise SystemExit(f"the config's distil epochs ({epochs}) must be even: k > 0 runs half of them")
    head = {"head": "crf"} if args.head == "crf" else {}
    test = read_conll(corpus / "test.txt")
    gold = {0: [s.tags for s in test]}
    n_train = len(read_conll(corpus / "train.txt"))

    def teacher(k: int) -> Path:
        folder = Path(args.zero_teacher) if k == 0 else out / f"teacher_x{k}"
        if not (folder / "report.json").is_file():
            over = {"corpus": str(corpus), "out": str(folder)}
            if k:
                aug = out / f"augment_x{k}.txt"
                if not aug.is_file():
                    run_augment(corpus / "train.txt", aug, copies=k, seed=13)
                over.update(unlabeled=str(aug), pretokenized=True)
            run_teach(cfgmod.load(cfgmod.TeachConfig, args.config, "teach", over))
        return folder

    rows: dict[int, dict] = {}
    preds: dict[int, dict] = {}
    t0_tags = fold_tags(teacher(0), test, teacher(0) / "test_tags.json", teacher=True)
    for k in args.sizes:
        t_dir = teacher(k)
        t_tags = fold_tags(t_dir, test, t_dir / "test_tags.json", teacher=True)
        over = {**head, "soft_labels": str(t_dir)}
        if k:
            over.update(teacher_only_ratio=RATIO, epochs=epochs // 2)
        preds[k], reports = {}, []
        for seed in args.seeds:
            run_dir = Path(args.zero) if k == 0 and args.zero and len(args.seeds) == 1 else out / (
                f"distil_{args.head}_x{k}_s{seed}")  # fmt: skip
            report = student(args.config, "distil", run_dir, seed, **over)
            expected = (seed, args.head, k > 0, True)
            found = (report.get("seed"), report.get("head", "softmax"), bool(report.get("teacher_only_sentences")),
                     len(report.get("history", [])) <= (epochs if k == 0 else epochs // 2))  # fmt: skip
            if found != expected:
                raise SystemExit(f"{run_dir}: not a {k}x {args.head} student of seed {seed} (its report.json "
                                 "differs); remove it or pass another --zero")  # fmt: skip
            reports.append(report)
            preds[k][seed] = {0: fold_tags(run_dir, test, run_dir / "test_tags.json", teacher=False)}
        t_rep = json.loads((t_dir / "report.json").read_text())
        made = t_rep.get("soft_labels", {}).get("splits", {}).get("unlabeled", 0)  # augment drops repeats
        rows[k] = {"transfer_tweets": made, "gold_train_tweets": n_train,
                   "teacher_test_tags_equal_0x": t_tags == t0_tags,
                   "teacher_test_f1": t_rep["scores"]["test"]["f1"], "teacher_dev_f1": t_rep["scores"]["dev"]["f1"],
                   "dev_f1": [r["scores"]["dev"]["f1"] for r in reports],
                   "test_f1": [r["scores"]["test"]["f1"] for r in reports],
                   "train_seconds": [r.get("train_seconds") for r in reports],
                   "epochs_run": [len(r.get("history", [])) for r in reports],
                   "best_epoch": [r.get("best_epoch") for r in reports],
                   "summary": model_summary(gold, preds[k])}  # fmt: skip
    t_sum = model_summary(gold, {"teacher": {0: t0_tags}})
    for k, r in rows.items():
        r["pct_of_teacher"] = r["summary"]["pooled_f1"] / t_sum["pooled_f1"]
        if k and 0 in preds:
            r["vs_0x"] = compare(gold, preds[0], preds[k], rows[0]["summary"], r["summary"], args.draws, 13)
    command = "HF_HUB_OFFLINE=1 python benchmarks/transfer_curve.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)  # fmt: skip
    results = {"config": args.config, "head": args.head, "seeds": args.seeds, "ratio": RATIO, "epochs": epochs,
               "teacher_test_f1": t_sum["pooled_f1"], "sizes": rows, "command": command}  # fmt: skip
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/transfer_curve.json").write_text(json.dumps(results, indent=1, default=str))
    body = table(results, epochs)
    update_section("benchmarks/RESULTS.md", "transfer-curve", "Transfer-set curve: the distilled student with "
                   "teacher-labelled `data augment` tweets", body)  # fmt: skip
    print(body)
    return results


def table(results: dict, epochs: int) -> str:
    """The section's Markdown."""
    lines = [f"    {results['command']}", "",
             f"{results['head']} head, 6-layer MiniLM student, seed(s) {', '.join(map(str, results['seeds']))}; "
             f"teacher: the default cross-fitted mpnet ensemble (test F1 {results['teacher_test_f1']:.4f}). 0x: "
             f"up to {epochs} epochs of gold-only batches; kx: up to {epochs // 2} epochs of half-gold, "
             f"half-transfer batches (the same step budget and batch size, the same learning-rate schedule). Each "
             f"run keeps its best dev epoch (early stopping, patience 3). Δ: pooled test F1 against 0x, 95% paired "
             f"bootstrap CI over the 240 test tweets.", "",
             "| transfer tweets | dev F1 | test F1 | % of teacher | Δ vs 0x [95% CI] | epochs run (best) | train s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for k, r in results["sizes"].items():
        v = r.get("vs_0x")
        delta = f"{v['diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]" if v else "(reference)"
        secs = [s for s in r["train_seconds"] if s is not None]
        mean_s = sum(secs) / max(1, len(secs))
        runs = ", ".join(f"{n} ({b})" for n, b in zip(r["epochs_run"], r["best_epoch"]))
        lines.append(f"| {k}x ({r['transfer_tweets']:,}) | {mean_sd(r['dev_f1'])} | {mean_sd(r['test_f1'])} "
                     f"| {100 * r['pct_of_teacher']:.1f}% | {delta} | {runs} | {mean_s:.0f} |")  # fmt: skip
    same = all(r["teacher_test_tags_equal_0x"] for r in results["sizes"].values())
    lines += ["", "Teacher test tags of every kx teacher equal to the 0x teacher's: " + ("yes" if same else "NO")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
