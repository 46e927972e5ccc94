"""The evidence table: which soft labels, which student, how much gold, and what unlabeled tweets add.

    HF_HUB_OFFLINE=1 python benchmarks/transfer_matrix.py --seeds 13 14 15 --variant-seeds 13

Rows (bundled WNUT-16 split, offline default models, the same test split for every row):

1. teachers: the config's MiniLM BiLSTM-CRF (``benchmarks/distil_vs_finetune.py``'s) and a ``chars`` one;
2. the 6-layer student fine-tuned on gold (the baseline) and distilled from CRF posteriors at T = 2
   (both from ``distil_vs_finetune.py``, same ``--bench-dir``);
3. students distilled from other soft labels of the same teacher: posteriors at T = 1 and T = 4,
   Flair's own ``return_probabilities_for_all_classes`` scores, hard (one-hot Viterbi) labels;
4. low resource: gold tags for a seeded 25% of the training tweets, the other 75% given as raw
   text (``teach --unlabeled``): fine-tuned on the 25%, distilled on the 25%, distilled on the 25%
   plus the teacher-labelled 75%;
5. student size: 6-, 4- and 3-layer students with their batch-1 latency, from
   ``benchmarks/results/latency.json`` (``benchmarks/latency.py``).

Every finished run is reused, so the script can be rerun to add seeds. A row whose runs are not on
this machine (run folders are not committed) is carried from the previous
``benchmarks/results/transfer_matrix.json`` and marked, never recomputed from nothing. Writes
``benchmarks/results/transfer_matrix.json`` and the matrix section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from sklearn.model_selection import train_test_split

from nerdistil import config as cfgmod
from nerdistil.data.conll import read_conll, write_conll
from nerdistil.student.distil import run_student
from nerdistil.teacher.teach import run_teach

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402


def teach(cfg_path: str, out: Path, **over) -> dict:
    if (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())
    cfg = cfgmod.load(cfgmod.TeachConfig, cfg_path, "teach", {"out": str(out), "overwrite": True, **over})
    return run_teach(cfg)


def student(cfg_path: str, mode: str, out: Path, seed: int, **over) -> dict:
    if (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())
    cfg = cfgmod.load(cfgmod.StudentConfig, cfg_path, mode, {"out": str(out), "seed": seed, **over})
    return run_student(dataclasses.replace(cfg, overwrite=True), distil=mode == "distil")


def low_resource_corpus(corpus: Path, out: Path, share: float, seed: int) -> Path:
    """``out``/{train,dev,test}.txt with a seeded ``share`` of the gold training tweets, and the rest as raw text."""
    if not (out / "unlabeled.txt").is_file():
        train = read_conll(corpus / "train.txt")
        keep, rest = train_test_split(list(range(len(train))), train_size=share, random_state=seed)
        out.mkdir(parents=True, exist_ok=True)
        write_conll(out / "train.txt", [train[i] for i in sorted(keep)])
        for part in ("dev", "test"):
            (out / f"{part}.txt").write_text((corpus / f"{part}.txt").read_text())
        (out / "unlabeled.txt").write_text("".join(" ".join(train[i].tokens) + "\n" for i in sorted(rest)))
    return out


def summarize(reports: list[dict], types: list[str]) -> dict:
    test = [r["scores"]["test"] for r in reports]
    return {
        "n": len(reports),
        "seeds": [r.get("seed") for r in reports],
        "dev_f1": [r["scores"]["dev"]["f1"] for r in reports],
        "test_f1": [t["f1"] for t in test],
        "per_type": {k: [t["per_type"].get(k, {}).get("f1", 0.0) for t in test] for k in types},
        "train_seconds": [r.get("train_seconds", 0.0) for r in reports],
    }


def fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/wnut16.yaml")
    ap.add_argument("--bench-dir", default="runs/bench")
    ap.add_argument("--corpus", default="data/wnut16")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15], help="seeds of the main and low rows")
    ap.add_argument("--variant-seeds", type=int, nargs="+", default=None, help="seeds of the soft-label rows")
    ap.add_argument("--share", type=float, default=0.25, help="gold share in the low-resource rows")
    ap.add_argument("--low-teacher", default=None, help="teach overrides for the low-resource teacher, as JSON")
    ap.add_argument("--note", default="", help="a sentence for the table's text (e.g. what shared the CPU)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["teachers", "variants", "low"])
    args = ap.parse_args()
    bench, corpus = Path(args.bench_dir), Path(args.corpus)
    mat = bench / "matrix"
    vseeds = args.variant_seeds or args.seeds
    if not (bench / "teacher" / "report.json").is_file():
        sys.exit(f"run benchmarks/distil_vs_finetune.py --out {bench} first")
    teacher_file = str(bench / "teacher" / "teacher.pt")
    types = [t for t, _ in Counter(t[2:] for s in read_conll(corpus / "test.txt") for t in s.tags
                                   if t.startswith("B-")).most_common(3)]  # fmt: skip
    rows: list[dict] = []
    results = Path("benchmarks/results/transfer_matrix.json")
    previous = json.loads(results.read_text())["rows"] if results.is_file() else []
    earlier = {(r["section"], r["name"]): r for r in previous}

    def add(section: str, name: str, reports: list[dict], note: str = "") -> None:
        old = earlier.get((section, name))
        if old and old["n"] > len(reports):  # its runs are (partly) gone: keep the earlier measurement, marked
            rows.append({**old, "carried": True})
        elif reports:
            rows.append({"section": section, "name": name, "note": note, **summarize(reports, types)})

    # 1. teachers
    add("teachers", "teacher: BiLSTM-CRF, frozen MiniLM (the default)", [json.loads((bench / "teacher" /
        "report.json").read_text())])  # fmt: skip
    if "teachers" not in args.skip:
        add("teachers", "teacher: BiLSTM-CRF, corpus word embeddings + char LSTM (`chars`)",
            [teach(args.config, mat / "teacher_chars", corpus=str(corpus), embeddings="chars")])  # fmt: skip

    # 2. baseline and the default distillation
    def existing(pattern: str) -> list[dict]:
        return [json.loads((bench / pattern.format(s) / "report.json").read_text()) for s in args.seeds
                if (bench / pattern.format(s) / "report.json").is_file()]  # fmt: skip

    add("students", "6-layer student fine-tuned on gold (baseline)", existing("finetune_s{}"))
    main_runs = existing("distil_s{}")  # distil_vs_finetune.py's runs, at the config's temperature of their day
    temp = main_runs[0]["temperature"] if main_runs else 2.0
    add("students", f"distilled: CRF posteriors, T = {temp:g} (distil_vs_finetune.py's runs)", main_runs)

    # 3. other soft labels of the same teacher
    if "variants" not in args.skip:
        variants = {
            "distilled: CRF posteriors, T = 1": ("soft_T1", {"temperature": 1.0}),
            "distilled: CRF posteriors, T = 4": ("soft_T4", {"temperature": 4.0}),
            "distilled: Flair's all-class scores (T = 1)": ("soft_flair", {"temperature": 1.0, "soft_labels": "flair"}),
            "distilled: hard teacher labels (one-hot Viterbi, KD at T = 2)": (
                "soft_hard",
                {"soft_labels": "hard", "temperature": 2.0},
            ),
        }
        for folder, over in variants.values():
            teach(args.config, mat / folder, corpus=str(corpus), teacher=teacher_file, trust_teacher=True, **over)
        # seed-major, so an interrupted run leaves every variant with the same seeds done
        for s in vseeds:
            for folder, _ in variants.values():
                student(args.config, "distil", mat / f"{folder}_distil_s{s}", s, soft_labels=str(mat / folder))
        for name, (folder, _) in variants.items():  # every finished seed counts, not only those trained now
            runs = [mat / f"{folder}_distil_s{s}" / "report.json" for s in args.seeds]
            add("students", name, [json.loads(r.read_text()) for r in runs if r.is_file()])

    # 4. low resource
    if "low" not in args.skip:
        low = low_resource_corpus(corpus, mat / f"corpus_{int(args.share * 100)}", args.share, 13)
        over = json.loads(args.low_teacher) if args.low_teacher else {}
        tag = "teacher_low" + ("_" + "_".join(f"{k}-{v}" for k, v in over.items()) if over else "")
        t_low = teach(args.config, mat / tag, corpus=str(low), unlabeled=str(low / "unlabeled.txt"), **over)
        pct = f"{int(args.share * 100)}%"
        add("low", f"teacher trained on {pct} gold" + (f" ({over})" if over else ""), [t_low])
        soft = str(mat / tag)
        add("low", f"fine-tuned on {pct} gold", [student(args.config, "finetune", mat / f"low_finetune_s{s}", s,
                                                         soft_labels=soft) for s in args.seeds])  # fmt: skip
        add("low", f"distilled on {pct} gold alone", [student(args.config, "distil", mat / f"{tag}_distil_s{s}", s,
                                                              soft_labels=soft, unlabeled=False)
                                                      for s in args.seeds])  # fmt: skip
        add("low", f"distilled on {pct} gold + teacher-labelled {100 - int(args.share * 100)}% as raw text",
            [student(args.config, "distil", mat / f"{tag}_distil_u_s{s}", s, soft_labels=soft, unlabeled=True)
             for s in args.seeds])  # fmt: skip

    # 5. student size, from the latency benchmark
    size_rows = []
    lat = Path("benchmarks/results/latency.json")
    if lat.is_file():
        report = json.loads(lat.read_text())
        for r in report["results"]:
            if r["batch_size"] == 1 and r["padding"] in ("dynamic", None):
                size_rows.append(r)

    names = {(r["section"], r["name"]) for r in rows}
    for r in previous:  # rows of sections skipped this time
        if (r["section"], r["name"]) not in names:
            rows.append({**r, "carried": True})
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"rows": rows, "types": types}, indent=2))
    cmd = (f"HF_HUB_OFFLINE=1 python benchmarks/transfer_matrix.py --seeds {' '.join(map(str, args.seeds))}"
           + (f" --variant-seeds {' '.join(map(str, vseeds))}" if args.variant_seeds else "")
           + (f" --low-teacher '{args.low_teacher}'" if args.low_teacher else ""))  # fmt: skip
    lines = ["```", cmd, "```", "",
             "Entity-level micro F1 (seqeval default mode) on the bundled test split (240 tweets), mean ± standard "
             "deviation over the seeds in the *n* column (student seeds: data order and head initialisation; one "
             "teacher per row). Per-type F1 for the three most frequent test types. Train time on the 2-core CPU, "
             "per run. Rows marked † were measured by an earlier run of this command whose run folders are not "
             "on the machine that wrote this table; they are carried over unchanged. " + args.note,
             "",
             f"| row | n | dev F1 | test F1 | {' | '.join(t + ' F1' for t in types)} | train time |",
             "|---|---|---|---|" + "---|" * len(types) + "---|"]  # fmt: skip
    titles = {"teachers": "**Teachers**", "students": "**Students (6-layer MiniLM, full gold)**",
              "low": f"**Low resource: {int(args.share * 100)}% gold**"}  # fmt: skip
    for section in ("teachers", "students", "low"):
        sec = [r for r in rows if r["section"] == section]
        if sec:
            lines.append(f"| {titles[section]} | | | | " + "| " * len(types) + "|")
        for r in sec:
            mark = " †" if r.get("carried") else ""
            lines.append(f"| {r['name']}{mark} | {r['n']} | {fmt(r['dev_f1'])} | {fmt(r['test_f1'])} | "
                         + " | ".join(fmt(r["per_type"][t]) for t in types)
                         + f" | {statistics.mean(r['train_seconds']) / 60:.1f} min |")  # fmt: skip
    if size_rows:
        lines += ["", "Student size (seed 13, from `benchmarks/latency.py`; batch 1, p50 end to end):", "",
                  "| model | backend | params | p50 ms | speed-up vs teacher | test F1 |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['model']} | {r['backend']} | {r['params'] / 1e6:.1f}M | {r['p50_ms']:.2f} | "
                  f"{r['speedup_vs_teacher']:.2f}x | {r['f1']:.3f} |" for r in size_rows]  # fmt: skip
    update_section("benchmarks/RESULTS.md", "transfer-matrix", "Evidence table: soft labels, unlabeled tweets, size",
                   "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
