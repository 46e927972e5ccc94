"""Does masked-LM distillation beat MLM training alone? The offline demo, plus its baseline.

    HF_HUB_OFFLINE=1 python benchmarks/lm_distil.py --config configs/lm_demo.yaml

Runs ``nerdistil run configs/lm_demo.yaml`` (MiniLM-L6 + MLM head adapted to the bundled tweets
as the teacher, a 3-layer student distilled from it, lm-eval), then trains the same 3-layer
student (same layers copied from the same teacher, same epochs, batch size and learning rate,
so the same number of steps) with the MLM loss alone, and scores all of them on the held-out
tweets with the same masks. Writes ``benchmarks/results/lm_distil.json`` and the LM section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.lm.evaluate import markdown, run_lm_eval
from nerdistil.lm.train import run_lm
from nerdistil.pipeline import RunConfig, run_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/lm_demo.yaml")
    args = ap.parse_args()

    t0 = time.perf_counter()
    summary = run_pipeline(args.config)
    demo_seconds = time.perf_counter() - t0
    run = cfgmod.load(RunConfig, args.config, "run")
    out = Path(run.out)
    distil_cfg = cfgmod.load(cfgmod.LMConfig, args.config, "lm_distil")
    baseline = out / "student_mlm_only"
    if (baseline / "report.json").is_file():
        base_report = json.loads((baseline / "report.json").read_text())
    else:  # same student construction and schedule, MLM loss only
        cfg = dataclasses.replace(
            distil_cfg, model=str(out / "teacher_mlm"), teacher=None, corpus=str(Path(run.corpus) / "train.txt"),
            eval_corpus=str(Path(run.corpus) / "test.txt"), out=str(baseline), overwrite=True,
        )  # fmt: skip
        base_report = run_lm(cfg, distil=False)
    student_report = json.loads((out / "student_mlm" / "report.json").read_text())
    teacher_report = json.loads((out / "teacher_mlm" / "report.json").read_text())
    models = [str(out / "teacher_mlm"), str(out / "student_mlm"), str(baseline), "minilm"]
    ev = run_lm_eval(models, str(Path(run.corpus) / "test.txt"))
    names = {
        models[0]: "teacher: MiniLM-L6 + MLM head, lm-finetune",
        models[1]: "3-layer student, lm-distil",
        models[2]: "3-layer student, MLM loss only",
        models[3]: "MiniLM-L6, not adapted (MLM head untrained)",
    }
    reports = {models[0]: teacher_report, models[1]: student_report, models[2]: base_report}
    result = {"config": args.config, "demo_seconds": demo_seconds, "eval": ev,
              "steps": {m: reports[m]["steps"] for m in reports},
              "train_seconds": {m: reports[m]["train_seconds"] for m in reports}}  # fmt: skip
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/lm_distil.json").write_text(json.dumps(result, indent=2))

    ppl = ev["perplexity"]
    lines = [
        "```",
        f"HF_HUB_OFFLINE=1 python benchmarks/lm_distil.py --config {args.config}",
        "```",
        "",
        f"Train: the bundled WNUT-16 train split as raw tweets (1,915); held out: the test split (240 tweets). "
        f"Perplexity is exp(mean NLL) of the masked tokens under one fixed masking seed ({ev['mask_seed']}), so every "
        f"model is scored on the same {ev['masked_tokens'][models[0]]} masked tokens. 2-core CPU. The demo "
        f"(`nerdistil run {args.config}`: teacher adaptation, distillation, lm-eval) took {demo_seconds / 60:.1f} min.",
        "",
        "| model | layers | params | held-out perplexity | optimiser steps | train time |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        r = reports.get(m)
        layers = len(r["layers"]) if r else 6
        params = f"{r['params'] / 1e6:.1f}M" if r else "-"
        steps = r["steps"] if r else "-"
        secs = f"{r['train_seconds']:.0f} s" if r else "-"
        lines.append(f"| {names[m]} | {layers} | {params} | {ppl[m]:.2f} | {steps} | {secs} |")
    better = ppl[models[1]] < ppl[models[2]]
    lines += [
        "",
        f"Distillation {'beats' if better else 'does not beat'} MLM training alone at the same steps: held-out "
        f"perplexity {ppl[models[1]]:.2f} against {ppl[models[2]]:.2f}.",
        "",
        "Mean top-10 embedding-neighbour overlap over the words "
        + ", ".join(ev["words"]) + ":",
        "",
        "| models | overlap |",
        "|---|---|",
    ]  # fmt: skip
    lines += [f"| {' vs '.join(names[x] for x in pair.split(' | '))} | {v:.1f}% |" for pair, v in ev["overlap"].items()]
    lines += ["", "<details><summary>Neighbour tables</summary>", "", markdown({**ev, "perplexity": {}, "overlap": {}}),
              "</details>"]  # fmt: skip
    update_section("benchmarks/RESULTS.md", "lm-distil", "Language-model distillation: distilled vs MLM-only student",
                   "\n".join(lines))  # fmt: skip
    print("\n".join(lines[:20]))
    print({"summary_rows": summary["rows"]})


if __name__ == "__main__":
    main()
