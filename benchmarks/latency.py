"""Teacher vs 6-, 4- and 3-layer students (distilled and fine-tuned), batch 1/8/32, four backends.

    HF_HUB_OFFLINE=1 python benchmarks/latency.py --bench-dir runs/bench

Uses the teacher and the seed-13 6-layer students of ``benchmarks/distil_vs_finetune.py`` (same
``--bench-dir``), trains the 4- and 3-layer ones (``--student-layers K``) if they are missing, then
runs one ``nerdistil bench-latency`` over the bundled test split and writes
``benchmarks/results/latency.json``, ``benchmarks/results/latency.png`` and the latency section
of ``benchmarks/RESULTS.md``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.student.distil import run_student

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/wnut16.yaml")
    ap.add_argument("--bench-dir", default="runs/bench")
    ap.add_argument("--corpus", default="data/wnut16/test.txt")
    ap.add_argument("--batch-sizes", default="1,8,32")
    args = ap.parse_args()
    bench = Path(args.bench_dir)
    teacher = bench / "teacher" / "teacher.pt"
    if not (bench / "distil_s13" / "report.json").is_file() or not teacher.is_file():
        sys.exit(f"run benchmarks/distil_vs_finetune.py --out {bench} first")
    students = []  # (folder, label): 6-, 4- and 3-layer students, distilled and fine-tuned (seed 13)
    for layers in (6, 4, 3):
        for mode in ("distil", "finetune"):
            folder = bench / (f"{mode}_s13" if layers == 6 else f"{mode}{layers}_s13")
            if not (folder / "report.json").is_file():
                over = {"soft_labels": str(bench / "teacher"), "out": str(folder), "student_layers": layers}
                cfg = cfgmod.load(cfgmod.StudentConfig, args.config, mode, over)
                run_student(dataclasses.replace(cfg, overwrite=True), distil=mode == "distil")
            label = "distilled" if mode == "distil" else "fine-tuned"
            students.append((folder, f"{layers}-layer student, {label}"))

    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "nerdistil",
        "bench-latency",
        "--teacher",
        str(teacher),
        *[a for folder, _ in students for a in ("--student", str(folder))],
        "--corpus",
        args.corpus,
        "--batch-sizes",
        args.batch_sizes,
        "--padding",
        "dynamic,fixed:300",
        "--onnx",
        "--json",
        "benchmarks/results/latency.json",
        "--plot",
        "benchmarks/results/latency.png",
        "--trust-teacher",
    ]  # fmt: skip (our own teacher)
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    report = json.loads(Path("benchmarks/results/latency.json").read_text())
    rows = report["results"]
    t1 = next(r for r in rows if r["model"].startswith("teacher:") and r["batch_size"] == 1)
    names = {folder.name: label for folder, label in students}
    lines = [
        "```",
        "HF_HUB_OFFLINE=1 python benchmarks/latency.py --bench-dir " + args.bench_dir,
        "# which runs:",
        "# nerdistil " + " ".join(cmd[3:]),
        "```",
        "",
        f"{report['n_sentences']} test tweets ({report['n_words']} words), in order, the same for every model; "
        f"{report['machine']['threads']} threads on {report['machine']['cpu']} ({report['machine']['cores']} cores), "
        f"torch {report['machine']['torch']}, onnxruntime {report['machine'].get('onnxruntime', '-')}. "
        "Latency is end to end, words in and tags out: tokenization, the forward pass and decoding are inside the "
        f"timing for teacher and students alike. Models are timed in {report['repeats']} interleaved rounds: in each, "
        "every model in turn is loaded in a fresh process (peak RSS is that process's) and makes one timed pass per "
        f"batch size after {report['warmup_batches']} warm-up batches. Test F1 is entity-level "
        "micro F1 (seqeval) of that exact model and backend.",
        "",
        "| model | backend | padding | batch | p50 ms | p90 ms | p99 ms | sentences/s | params | disk MB | "
        "peak RSS MB | speed-up vs teacher (p50) | test F1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = "teacher (Flair BiLSTM-CRF)" if r["model"].startswith("teacher:") else names.get(r["model"], r["model"])
        lines.append(
            f"| {name} | {r['backend']} | {r['padding']} | {r['batch_size']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['sentences_per_s']:.1f} | {r['params'] / 1e6:.1f}M | {r['disk_mb']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['speedup_vs_teacher']:.2f}x | {r['f1']:.4f} |"
        )
    ok = [
        r for r in rows if not r["model"].startswith("teacher:") and r["batch_size"] == 1 and r["f1"] >= 0.95 * t1["f1"]
    ]
    if ok:
        best = max(ok, key=lambda r: r["speedup_vs_teacher"])
        lines += ["", f"Best student configuration at batch size 1 with test F1 within 5% of the teacher's "
                  f"({t1['f1']:.4f}): **{names.get(best['model'], best['model'])}, {best['backend']}**, p50 "
                  f"{best['p50_ms']:.2f} ms against the teacher's {t1['p50_ms']:.2f} ms: "
                  f"**{best['speedup_vs_teacher']:.1f}x faster**, test F1 {best['f1']:.4f} "
                  f"({best['f1'] / t1['f1']:.1%} of the teacher's)."]  # fmt: skip
    else:
        lines += ["", "No student configuration kept test F1 within 5% of the teacher's at batch size 1."]
    lines += ["", "![latency against batch size](results/latency.png)"]
    update_section("benchmarks/RESULTS.md", "latency", "Latency: teacher against students (bench-latency)",
                   "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
