"""Structure-level distillation (issue 30): softmax and CRF students, with and without KD, on the bundled split.

    HF_HUB_OFFLINE=1 python benchmarks/crf_student.py --seeds 13 14 15
    HF_HUB_OFFLINE=1 python benchmarks/crf_student.py --seeds 13 --layers 3

The config's teacher (``configs/wnut16.yaml``: the cross-fitted mpnet ensemble) labels the bundled WNUT-16 split
once, with its adjacent-tag marginals (``teach --edge-marginals``), into ``OUT/teacher``. For every seed the same
student is trained five ways (``VARIANTS``): fine-tuned on gold with a softmax head and with a CRF head, distilled
with a softmax head (token KD, today's default), with a CRF head and posterior KD (Wang et al. 2020), and with the
pairwise term added (``--alpha-pair``). A run folder holding ``report.json`` is reused, so a rerun only trains
what is missing. Every student then tags the test split through ``nerdistil.deploy.loader.load_tagger`` (a CRF
student decodes with its transitions) and the script writes ``benchmarks/results/NAME.json`` and the NAME
section of ``benchmarks/RESULTS.md`` (``--name``, default ``crf_student``, ``crf_student_3l`` with ``--layers 3``):
dev and test F1 (mean ± sd over seeds), the share of the teacher's test F1, each variant against softmax + token
KD (pooled over seeds, 95% paired bootstrap CI over tweets, ``cv.compare``) and per-type F1.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.data import wnut16
from nerdistil.data.conll import read_conll
from nerdistil.pipeline import RunConfig
from nerdistil.teacher.teach import run_teach

sys.path.insert(0, str(Path(__file__).parent))
from cv import compare, fold_tags, model_summary  # noqa: E402
from distil_vs_finetune import student  # noqa: E402
from results_md import update_section  # noqa: E402

# name -> (mode, overrides of the config's finetune/distil section); alpha_pair filled in from --alpha-pair
VARIANTS: dict[str, tuple[str, dict]] = {
    "softmax, fine-tuned": ("finetune", {}),
    "softmax, token KD": ("distil", {}),
    "CRF, fine-tuned": ("finetune", {"head": "crf"}),
    "CRF, posterior KD": ("distil", {"head": "crf"}),
    "CRF, posterior + pairwise KD": ("distil", {"head": "crf", "alpha_pair": None}),
}
REFERENCE = "softmax, token KD"
BASELINE = {
    "softmax, token KD": "softmax, fine-tuned",
    "CRF, posterior KD": "CRF, fine-tuned",
    "CRF, posterior + pairwise KD": "CRF, fine-tuned",
}  # a distilled variant's fine-tuned partner


def folder(mode: str, over: dict, layers: int | None, seed: int) -> str:
    """``distil_crf_pair1.0_s13``: the run folder of a variant."""
    name = mode + (str(layers) if layers else "")
    if over.get("head") == "crf":
        name += "_crf"
    if over.get("alpha_pair"):
        name += f"_pair{over['alpha_pair']:g}"
    return f"{name}_s{seed}"


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/wnut16.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    ap.add_argument("--layers", type=int, default=None, help="student_layers (default: the config's, 6)")
    ap.add_argument("--alpha-pair", type=float, default=1.0, help="weight of the pairwise KD term")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    ap.add_argument("--out", default="runs/crfkd")
    ap.add_argument("--draws", type=int, default=2000, help="bootstrap draws of the paired CIs")
    ap.add_argument("--name", default=None, help="results JSON and RESULTS.md section name (default: crf_student, "
                    "crf_student_3l for --layers 3)")  # fmt: skip
    args = ap.parse_args(argv)

    run = cfgmod.load(RunConfig, args.config, "run")
    if not (Path(run.corpus) / "train.txt").is_file():
        wnut16.write_split(run.corpus, run.split_seed)
    out = Path(args.out)
    teacher_dir = out / "teacher"
    if (teacher_dir / "report.json").is_file():
        teacher = json.loads((teacher_dir / "report.json").read_text())
    else:
        teacher = run_teach(cfgmod.load(cfgmod.TeachConfig, args.config, "teach", {
            "corpus": run.corpus, "out": str(teacher_dir), "edge_marginals": True}))  # fmt: skip
    test = read_conll(Path(run.corpus) / "test.txt")
    gold = {0: [s.tags for s in test]}
    layers = {"student_layers": args.layers} if args.layers else {}

    preds: dict[str, dict] = {}
    reports: dict[str, list[dict]] = {}
    for name in args.variants:
        mode, over = VARIANTS[name]
        over = {**over, **layers}
        if "alpha_pair" in over:
            over["alpha_pair"] = args.alpha_pair
        preds[name], reports[name] = {}, []
        for seed in args.seeds:
            run_dir = out / folder(mode, over, args.layers, seed)
            reports[name].append(student(args.config, mode, run_dir, seed, soft_labels=str(teacher_dir), **over))
            preds[name][seed] = {0: fold_tags(run_dir, test, run_dir / "test_tags.json", teacher=False)}
    teacher_tags = fold_tags(teacher_dir, test, teacher_dir / "test_tags.json", teacher=True)
    t_sum = model_summary(gold, {"teacher": {0: teacher_tags}})

    rows = {}
    for name in args.variants:
        s = model_summary(gold, preds[name])
        rows[name] = {
            "summary": s,
            "dev_f1": [r["scores"]["dev"]["f1"] for r in reports[name]],
            "test_f1": [r["scores"]["test"]["f1"] for r in reports[name]],
            "train_seconds": [r.get("train_seconds") for r in reports[name]],
            "pct_of_teacher": s["pooled_f1"] / t_sum["pooled_f1"],
        }
        if REFERENCE in preds and name != REFERENCE:
            rows[name]["vs_reference"] = compare(gold, preds[REFERENCE], preds[name], model_summary(
                gold, preds[REFERENCE]), s, args.draws, 13)  # fmt: skip
        base = BASELINE.get(name)
        if base in preds:  # what KD adds to the same head fine-tuned on gold
            rows[name]["vs_fine_tuned"] = compare(gold, preds[base], preds[name], model_summary(gold, preds[base]), s,
                                                  args.draws, 13)  # fmt: skip
    results = {"config": args.config, "seeds": args.seeds, "layers": args.layers or 6, "alpha_pair": args.alpha_pair,
               "teacher": {"test_f1": t_sum["pooled_f1"], "dev_f1": teacher["scores"]["dev"]["f1"],
                           "per_type": t_sum["per_type"]}, "variants": rows}  # fmt: skip
    name = args.name or "crf_student" + (f"_{args.layers}l" if args.layers else "")
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path(f"benchmarks/results/{name}.json").write_text(json.dumps(results, indent=1, default=str))
    command = "HF_HUB_OFFLINE=1 python benchmarks/crf_student.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    update_section("benchmarks/RESULTS.md", name.replace("_", "-"), f"CRF student and structure-level KD, "
                   f"{results['layers']}-layer student, bundled split, {len(args.seeds)} seed(s)",
                   table(results, command))  # fmt: skip
    print(table(results, command))
    return results


def table(results: dict, command: str) -> str:
    """The section's Markdown: the command, the main table, the per-type table."""
    t = results["teacher"]
    seeds = results["seeds"]
    lines = [f"    {command}", "",
             f"Teacher (cross-fitted mpnet ensemble, `configs/wnut16.yaml`): dev F1 {t['dev_f1']:.4f}, test F1 "
             f"{t['test_f1']:.4f}. {results['layers']}-layer MiniLM student, {len(seeds)} seed(s) "
             f"({', '.join(map(str, seeds))}); pairwise weight {results['alpha_pair']:g}. Test F1 pooled over seeds; "
             f"Δ against softmax + token KD with a 95% paired bootstrap CI over test tweets.", "",
             "| student | dev F1 | test F1 | pooled test F1 | % of teacher | Δ vs softmax + token KD [95% CI] "
             "| Δ vs same head fine-tuned [95% CI] |", "|---|---|---|---|---|---|---|"]  # fmt: skip

    def ci(v: dict | None, empty: str) -> str:
        return f"{v['diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]" if v else empty

    for name, r in results["variants"].items():
        lines.append(f"| {name} | {mean_sd(r['dev_f1'])} | {mean_sd(r['test_f1'])} | {r['summary']['pooled_f1']:.4f} "
                     f"| {100 * r['pct_of_teacher']:.1f}% | {ci(r.get('vs_reference'), '(reference)')} "
                     f"| {ci(r.get('vs_fine_tuned'), '')} |")  # fmt: skip
    types = sorted(t["per_type"])
    names = list(results["variants"])
    lines += ["", "Per entity type (test F1, pooled over seeds; support = gold entities):", "",
              "| type | support | teacher | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]  # fmt: skip
    for ty in types:
        cells = [f"{results['variants'][n]['summary']['per_type'].get(ty, {}).get('f1', 0.0):.3f}" for n in names]
        lines.append(f"| {ty} | {t['per_type'][ty]['support']} | {t['per_type'][ty]['f1']:.3f} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
