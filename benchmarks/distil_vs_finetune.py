"""Distilled student against the fine-tuned baseline and the teacher, over several seeds.

    HF_HUB_OFFLINE=1 python benchmarks/distil_vs_finetune.py --config configs/wnut16.yaml --seeds 13 14 15

One teacher (the config's ``teach`` section) labels the bundled WNUT-16 split; for every seed the
same student is fine-tuned on gold tags and distilled from the teacher with that seed's data
order and head initialisation. Writes ``benchmarks/results/distil_vs_finetune.json`` and the
table section of ``benchmarks/RESULTS.md``. ``--grid`` also tries alpha settings, selected on dev.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.data import wnut16
from nerdistil.student.distil import run_student
from nerdistil.teacher.teach import run_teach

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


def describe(teacher: dict) -> str:
    """A teacher's embeddings and ensemble size, from its report."""
    t = teacher.get("teacher", {})
    names = {"minilm": "frozen MiniLM-L6 last layer", "minilm-all": "frozen MiniLM-L6, mean of all layers",
             "minilm-ft": "fine-tuned MiniLM-L6", "mpnet-all": "frozen all-mpnet-base-v2 (110M), mean of all layers",
             "data/models/all-mpnet-base-v2@all": "frozen all-mpnet-base-v2 (110M), mean of all layers"}  # fmt: skip
    emb = (
        names.get(t.get("embeddings"), t.get("embeddings"))
        or f"loaded from {os.path.relpath(Path(t.get('file', '?')).parent)}"
    )
    n = teacher.get("ensemble", 1)
    extra = teacher.get("soft_labels", {}).get("splits", {}).get("unlabeled")
    return (
        f"Flair BiLSTM-CRF, {emb}"
        + (f", {'cross-fitted ' if teacher.get('cross_fit') else ''}ensemble of {n}" if n > 1 else "")
        + f", T = {teacher['temperature']:g}"
        + (f", plus {extra:,} teacher-labelled transfer tweets" if extra else "")
    )


def student(cfg_path: str, name: str, out: Path, seed: int, **over) -> dict:
    cfg = cfgmod.load(cfgmod.StudentConfig, cfg_path, name, {"out": str(out), "seed": seed, **over})
    report_file = out / "report.json"
    if report_file.is_file():  # resume an interrupted benchmark
        return json.loads(report_file.read_text())
    return run_student(dataclasses.replace(cfg, overwrite=True), distil=name == "distil")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/wnut16.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--grid", action="store_true", help="also try alpha settings on dev (first seed)")
    ap.add_argument(
        "--teacher-run",
        default=None,
        help="an existing `teach` output to distil from (default: train the config's teacher in OUT)",
    )
    ap.add_argument(
        "--finetune-from",
        default=None,
        help="reuse the fine-tuned baselines of this earlier --out (they do not depend on the teacher)",
    )
    ap.add_argument(
        "--finetune-results",
        default=None,
        help="take the fine-tuned baselines from this earlier results JSON (same config and seeds; fine-tuning is "
        "deterministic per seed on CPU, so a rerun gives the same numbers) instead of training them",
    )
    ap.add_argument("--distil", default="{}", help="JSON overrides of the distil section, e.g. "
                    "'{\"kd_class_weights\": true}'")  # fmt: skip
    ap.add_argument("--student", default="{}", help="JSON overrides of both the finetune and distil sections, "
                    "e.g. '{\"student_layers\": 4}' (a 4-layer student, both ways)")  # fmt: skip
    ap.add_argument("--section", default="distil-vs-finetune", help="RESULTS.md section (and results JSON name)")
    args = ap.parse_args()

    run = cfgmod.load(__import__("nerdistil.pipeline", fromlist=["RunConfig"]).RunConfig, args.config, "run")
    if not (Path(run.corpus) / "train.txt").is_file():
        wnut16.write_split(run.corpus, run.split_seed)
    out = Path(args.out)
    teach_cfg = cfgmod.load(
        cfgmod.TeachConfig, args.config, "teach", {"corpus": run.corpus, "out": str(out / "teacher")}
    )
    teacher_dir = Path(args.teacher_run) if args.teacher_run else out / "teacher"
    if (teacher_dir / "report.json").is_file():
        teacher = json.loads((teacher_dir / "report.json").read_text())
    else:
        teacher = run_teach(teach_cfg)
    soft = str(teacher_dir)
    student_over = json.loads(args.student)
    distil_over = {**student_over, **json.loads(args.distil)}

    rows: dict[str, list[dict]] = {"finetune": [], "distil": []}
    layers = str(student_over.get("student_layers", ""))  # finetune4_s13: the name latency.py gives it too
    earlier = json.loads(Path(args.finetune_results).read_text()) if args.finetune_results else None
    if earlier:
        missing = sorted(set(args.seeds) - set(earlier["seeds"]))
        if missing:
            sys.exit(f"{args.finetune_results} has no fine-tuned run for seed(s) {missing}")
        ft = earlier["finetune"]
        at = [earlier["seeds"].index(s) for s in args.seeds]
        rows["finetune"] = [{"scores": {"dev": {"f1": ft["dev_f1"][i]}, "test": {"f1": ft["test_f1"][i]}},
                             "train_seconds": ft["train_seconds"][i], "best_epoch": ft["best_epoch"][i],
                             "params": ft["params"]} for i in at]  # fmt: skip
    for seed in args.seeds:
        ft_dir = Path(args.finetune_from or out) / f"finetune{layers}_s{seed}"
        if not earlier:
            rows["finetune"].append(student(args.config, "finetune", ft_dir, seed, soft_labels=soft, **student_over))
        rows["distil"].append(student(args.config, "distil", out / f"distil{layers}_s{seed}", seed, soft_labels=soft,
                                      **distil_over))  # fmt: skip

    grid = []
    if args.grid:
        base = cfgmod.load(cfgmod.StudentConfig, args.config, "distil")
        for a_ce, a_kd in [(base.alpha_ce, base.alpha_kd), (1.0, 1.0), (1.0, 0.5)]:
            same = (a_ce, a_kd) == (base.alpha_ce, base.alpha_kd)  # the configured setting is the seed run itself
            r = (
                rows["distil"][0]
                if same
                else student(
                    args.config,
                    "distil",
                    out / f"grid_ce{a_ce}_kd{a_kd}",
                    args.seeds[0],
                    soft_labels=soft,
                    alpha_ce=a_ce,
                    alpha_kd=a_kd,
                )
            )
            grid.append({"alpha_ce": a_ce, "alpha_kd": a_kd, "dev_f1": r["scores"]["dev"]["f1"],
                         "test_f1": r["scores"]["test"]["f1"]})  # fmt: skip
        ft = rows["finetune"][0]
        grid.append({"alpha_ce": 1.0, "alpha_kd": 0.0, "dev_f1": ft["scores"]["dev"]["f1"],
                     "test_f1": ft["scores"]["test"]["f1"], "note": "fine-tuning"})  # fmt: skip

    t_test, t_dev = teacher["scores"]["test"]["f1"], teacher["scores"]["dev"]["f1"]
    summary = {"seeds": args.seeds, "config": args.config, "teacher": {"dev_f1": t_dev, "test_f1": t_test,
               "params": teacher.get("params"), "train_seconds": teacher.get("train_seconds")}}  # fmt: skip
    for name, reps in rows.items():
        summary[name] = {
            "dev_f1": [r["scores"]["dev"]["f1"] for r in reps],
            "test_f1": [r["scores"]["test"]["f1"] for r in reps],
            "train_seconds": [r["train_seconds"] for r in reps],
            "best_epoch": [r["best_epoch"] for r in reps],
            "params": reps[0]["params"],
        }
    summary["grid"] = grid
    dm, fm = statistics.mean(summary["distil"]["test_f1"]), statistics.mean(summary["finetune"]["test_f1"])
    summary["distil_minus_finetune"] = dm - fm
    summary["distil_over_teacher"] = dm / t_test
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path(f"benchmarks/results/{args.section.replace('-', '_')}.json").write_text(json.dumps(summary, indent=2))

    lines = [
        "```",
        f"HF_HUB_OFFLINE=1 python benchmarks/distil_vs_finetune.py --config {args.config} --seeds "
        + " ".join(map(str, args.seeds))
        + (" --grid" if args.grid else "")
        + (f" --out {args.out}" if args.out != "runs/bench" else "")
        + (f" --teacher-run {args.teacher_run}" if args.teacher_run else "")
        + (f" --finetune-from {args.finetune_from}" if args.finetune_from else "")
        + (f" --finetune-results {args.finetune_results}" if args.finetune_results else "")
        + (f" --student '{args.student}'" if student_over else "")
        + (f" --distil '{args.distil}'" if json.loads(args.distil) else ""),
        "```",
        "",
        f"Bundled WNUT-16 split (seed 13: 1,915 / 239 / 240 tweets), 2-core CPU, one teacher, "
        f"{len(args.seeds)} student seeds (mean ± standard deviation). Entity-level micro F1, seqeval default mode.",
        "",
        *(
            [
                f"Fine-tuned rows: taken from `{args.finetune_results}` (the same config and seeds, trained by this "
                "script earlier; fine-tuning is deterministic per seed on CPU).",
                "",
            ]
            if earlier
            else []
        ),  # fmt: skip
        "| model | params | dev F1 | test F1 | train time / run |",
        "|---|---|---|---|---|",
        f"| teacher: {describe(teacher)} | {teacher.get('params', 0) / 1e6:.1f}M | "
        f"{t_dev:.4f} | {t_test:.4f} | {teacher.get('train_seconds', 0):.0f} s |",
    ]
    size = f"{student_over['student_layers']}-layer " if "student_layers" in student_over else ""
    for name, label in (("finetune", f"{size}student fine-tuned on gold (baseline)"),
                        ("distil", f"{size}student distilled")):  # fmt: skip
        s = summary[name]
        lines.append(f"| {label} | {s['params'] / 1e6:.1f}M | {mean_sd(s['dev_f1'])} | {mean_sd(s['test_f1'])} | "
                     f"{statistics.mean(s['train_seconds']):.0f} s |")  # fmt: skip
    lines += [
        "",
        f"Distilled minus fine-tuned test F1: {summary['distil_minus_finetune']:+.4f}; "
        f"distilled / teacher test F1: {summary['distil_over_teacher']:.3f}.",
        "",
        "Per seed (test F1): " + "; ".join(
            f"seed {s}: fine-tuned {f:.4f}, distilled {d:.4f}"
            for s, f, d in zip(args.seeds, summary["finetune"]["test_f1"], summary["distil"]["test_f1"])
        ) + ".",
    ]  # fmt: skip
    if grid:
        lines += ["", f"Alpha settings tried (T = 2, seed {args.seeds[0]}; chosen on dev F1):", "",
                  "| alpha_ce | alpha_kd | dev F1 | test F1 |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {g['alpha_ce']} | {g['alpha_kd']} | {g['dev_f1']:.4f} | {g['test_f1']:.4f} |" for g in grid]
    title = "Distilled student vs fine-tuned student vs teacher" + (
        f" ({describe(teacher)})" if args.section != "distil-vs-finetune" else "")  # fmt: skip
    update_section("benchmarks/RESULTS.md", args.section, title, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
