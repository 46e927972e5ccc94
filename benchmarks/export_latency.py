"""Deployed students: `nerdistil export` folders against the Flair teacher, end to end, and `predict` throughput.

    HF_HUB_OFFLINE=1 python benchmarks/export_latency.py --bench-dir runs/bench            # train, export, measure
    HF_HUB_OFFLINE=1 python benchmarks/export_latency.py --bench-dir runs/bench --stage train   # only train/export
    # the strong teacher (a teach folder: the cross-fitted mpnet ensemble), its own students in their own bench dir:
    HF_HUB_OFFLINE=1 python benchmarks/export_latency.py --bench-dir runs/bench_mpnet --config configs/wnut16.yaml \
        --teacher runs/wnut16/teacher

Reuses (or trains, seed 13, ``--config``) the teacher and the 6-, 4- and 3-layer students distilled from it in
``--bench-dir``. The teacher is ``--teacher``, a `nerdistil teach` output folder (default: the MiniLM teacher
``BENCH_DIR/teacher``, trained with `configs/wnut16_quick.yaml`, the old `configs/wnut16.yaml`, so the old rows
stay reproducible and are labelled "MiniLM teacher"); an ensemble is timed as deployed (every member, one shared
encoder pass a batch, the mean posteriors decoded). Another teacher's rows go to their own JSON and RESULTS.md
section (``--name``, default ``export_latency_BENCHDIRNAME``), so they never replace the MiniLM rows. Exports each
(`--quantize auto`, gated on dev), measures the exports on the test split
(`run_export` with `--corpus test.txt`: fp32 parity with the PyTorch student and the int8 drop), runs one
`nerdistil bench-latency` over the test tweets with the teacher, the PyTorch students and the export folders
(timed as deployed: the torch-free runtime; an int8 graph the dev gate refused is timed too, from its test-gated
copy), and times `nerdistil predict` on 10,000 tweets. Writes
``benchmarks/results/export_latency.json`` and the ``export-latency`` section of RESULTS.md. Run the
measuring stage on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
LAYERS = (6, 4, 3)  # the distilled students exported and timed


def nerdistil(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "nerdistil", *args], check=True, env=ENV)


def train(bench: Path, config: str, corpus: Path, teacher: Path) -> dict[int, Path]:
    """The students distilled from ``teacher`` (a teach folder, trained with ``config`` when missing)."""
    from nerdistil import config as cfgmod
    from nerdistil.student.distil import run_student

    if not (corpus / "train.txt").is_file():
        nerdistil("data", "wnut16", str(corpus))
    if not (teacher / "report.json").is_file():
        nerdistil("teach", "--config", config, "--corpus", str(corpus), "--out", str(teacher), "--overwrite")
    students = {}
    for layers in LAYERS:
        folder = bench / ("distil_s13" if layers == 6 else f"distil{layers}_s13")
        taught = folder / "nerdistil_config.yaml"  # a student of another teacher is never reused
        if taught.is_file() and Path(yaml.safe_load(taught.read_text())["soft_labels"]).resolve() != teacher.resolve():
            raise SystemExit(f"{folder} was distilled from another teacher; give another --bench-dir for {teacher}")
        if not (folder / "report.json").is_file():
            over = {"soft_labels": str(teacher), "out": str(folder), "student_layers": layers, "seed": 13}
            cfg = cfgmod.load(cfgmod.StudentConfig, config, "distil", over)
            run_student(dataclasses.replace(cfg, overwrite=True), distil=True)
        students[layers] = folder
    return students


def export(students: dict[int, Path], bench: Path, corpus: Path) -> dict:
    from nerdistil.deploy.export import run_export

    out = {}
    for layers, folder in students.items():
        shipped = bench / f"export_{folder.name}"
        if not (shipped / "nerdistil.json").is_file():  # the deployable folder: int8 if it passes the gate on dev
            run_export(folder, shipped, "auto", overwrite=True)
        on_test = bench / f"export_{folder.name}_on_test"  # measurement only: fp32 and int8 scored on test
        if not (on_test / "nerdistil.json").is_file():
            run_export(folder, on_test, "int8", corpus / "test.txt", max_f1_drop=1.0, min_agreement=0.0, overwrite=True)
        gates = {
            k: json.loads((d / "nerdistil.json").read_text())["gate"]
            for k, d in (("shipped_gate", shipped), ("test_gate", on_test))
        }
        out[layers] = {"export": str(shipped), "on_test": str(on_test), **gates}
    return out


def predict_throughput(export_dir: str, corpus: Path, bench: Path, n: int = 10_000) -> dict:
    """`nerdistil predict` on n tweets (made from the train tweets by `data augment`), batch 32."""
    tweets = bench / "predict_10k.txt"
    if not tweets.is_file():
        made = bench / "augment.txt"
        nerdistil("data", "augment", str(corpus / "train.txt"), str(made), "--copies", "6")
        lines = made.read_text().splitlines()[:n]
        assert len(lines) == n, len(lines)
        tweets.write_text("\n".join(lines) + "\n")
    out = bench / "predict_10k.jsonl"
    t0 = time.perf_counter()
    nerdistil("predict", export_dir, "--input", str(tweets), "--output", str(out), "--batch-size", "32")
    seconds = time.perf_counter() - t0
    return {"tweets": n, "seconds": round(seconds, 1), "tweets_per_s": round(n / seconds, 1),
            "note": "whole command: process start, model load, tokenization, graph, JSON lines out"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config",
        default="configs/wnut16_quick.yaml",
        help="teach and distil settings (default: the MiniLM teacher's, formerly configs/wnut16.yaml)",
    )
    ap.add_argument("--bench-dir", default="runs/bench")
    ap.add_argument(
        "--teacher",
        default=None,
        help="a `nerdistil teach` output folder, an ensemble included (default: BENCH_DIR/teacher, the "
        "MiniLM teacher); its students are distilled into BENCH_DIR",
    )
    ap.add_argument("--teacher-label", default=None, help="the teacher's name in the tables (default: from its report)")
    ap.add_argument("--name", default=None, help="results JSON benchmarks/results/NAME.json and RESULTS.md section "
                    "(default: export_latency for the MiniLM teacher, else export_latency_BENCHDIRNAME)")  # fmt: skip
    ap.add_argument("--corpus", default="data/wnut16")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--stage", choices=("train", "all"), default="all")
    args = ap.parse_args()
    bench, corpus = Path(args.bench_dir), Path(args.corpus)
    default_teacher = args.teacher is None or Path(args.teacher) == bench / "teacher"
    teacher = bench / "teacher" if args.teacher is None else Path(args.teacher)
    students = train(bench, args.config, corpus, teacher)
    exports = export(students, bench, corpus)
    if args.stage == "train":
        return
    args.teacher_label = args.teacher_label or ("MiniLM teacher" if default_teacher else teacher_label(teacher))
    args.name = args.name or ("export_latency" if default_teacher else f"export_latency_{bench.name}")
    result_json = Path(f"benchmarks/results/{args.name}.json")
    # one member: its file, as before (the old command, unchanged); an ensemble: the folder, timed as deployed
    members = json.loads((teacher / "report.json").read_text()).get("members") or [{}]
    timed = teacher / "teacher.pt" if len(members) == 1 else teacher
    # an int8 graph the dev gate refused is timed too (its test-gated copy, int8 by construction), so the table
    # shows what shipping it would buy
    refused = [exports[k]["on_test"] for k in LAYERS if exports[k]["shipped_gate"]["chosen"] == "fp32"]
    cmd = ["bench-latency", "--teacher", str(timed),
           *[a for k in LAYERS for a in ("--student", str(students[k]), "--student", exports[k]["export"])],
           *[a for d in refused for a in ("--student", d)],
           "--corpus", str(corpus / "test.txt"), "--batch-sizes", args.batch_sizes, "--json", str(result_json),
           "--trust-teacher"]  # fmt: skip
    nerdistil(*cmd)
    report = json.loads(result_json.read_text())
    report["exports"] = exports
    report["predict"] = {layers: predict_throughput(exports[layers]["export"], corpus, bench) for layers in LAYERS}
    result_json.write_text(json.dumps(report, indent=2))
    write_section(report, args, cmd)


def teacher_label(teacher: Path) -> str:
    """A teach folder's teacher in words, from its report: "cross-fitted ensemble of 3 mpnet-all BiLSTM-CRFs"."""
    report = json.loads((teacher / "report.json").read_text())
    members = report.get("members") or [{}]
    emb = members[0].get("embeddings") or "Flair"
    if len(members) == 1:
        return f"{emb} teacher (Flair BiLSTM-CRF)"
    return f"{'cross-fitted ' if report.get('cross_fit') else ''}ensemble of {len(members)} {emb} BiLSTM-CRFs"


def write_section(report: dict, args, cmd: list[str]) -> None:
    rows = report["results"]
    names = {}
    for layers in LAYERS:
        gate = report["exports"][layers]["shipped_gate"]
        names["distil_s13" if layers == 6 else f"distil{layers}_s13"] = f"{layers}-layer distilled student"
        names[Path(report["exports"][layers]["export"]).name] = f"{layers}-layer export ({gate['chosen']})"
        names[Path(report["exports"][layers]["on_test"]).name] = f"{layers}-layer int8 graph, refused by the dev gate"
    m = report["machine"]
    extra = "" if args.name == "export_latency" else f" --config {args.config} --teacher {args.teacher}"
    lines = ["```", f"HF_HUB_OFFLINE=1 python benchmarks/export_latency.py --bench-dir {args.bench_dir}{extra}",
             "# which runs, after training and exporting:", "# nerdistil " + " ".join(cmd), "```", "",
             f"{report['n_sentences']} test tweets ({report['n_words']} words), the same for every model; "
             f"{m['threads']} threads on {m['cpu']} ({m['cores']} cores). End to end, words in and tags out; "
             f"{report['repeats']} interleaved rounds, in each of which every model in turn is loaded in a fresh "
             "process and makes one timed pass per batch size. An export runs as deployed: "
             "`nerdistil.Tagger` (onnxruntime, tokenizers, numpy; torch never imported in its process), the "
             "valid-BIO decoder inside the graph.", "",
             "| model | backend | batch | p50 ms | p90 ms | sentences/s | disk MB | peak RSS MB | speed-up vs teacher "
             "(p50) | test F1 |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        name = args.teacher_label if r["model"].startswith("teacher:") else names.get(r["model"], r["model"])
        lines.append(f"| {name} | {r['backend']} | {r['batch_size']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['sentences_per_s']:.1f} | {r['disk_mb']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['speedup_vs_teacher']:.2f}x | {r['f1']:.4f} |")  # fmt: skip
    lines += ["", "The gate (`nerdistil export`, paired bootstrap over sentences, 1,000 draws; difference = the "
              "graph's F1 minus the PyTorch student's, so a loss is negative):", "",
              "| student | gate split | PyTorch F1 | graph | F1 | difference | 95% CI of the difference | "
              "word agreement with PyTorch | p50 ms (batch 1) | MB | kept |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for layers in LAYERS:
        for split, gate in (("dev (shipped)", report["exports"][layers]["shipped_gate"]),
                            ("test (measurement)", report["exports"][layers]["test_gate"])):  # fmt: skip
            for c in gate["candidates"]:
                kept = "yes" if split.startswith("dev") and c["name"] == gate["chosen"] else ""
                lo, hi = c["ci95"]
                lines.append(f"| {layers}-layer | {split} | {gate['pytorch_f1']:.4f} | {c['name']} | {c['f1']:.4f} | "
                             f"{-c['drop']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {c['word_agreement']:.4%} | "
                             f"{c['p50_ms_batch1']:.2f} | {c['mb']:.1f} | {kept} |")  # fmt: skip
    lines += ["", "`nerdistil predict` (whole command: start-up, load, tokenize, graph, JSON lines out) on 10,000 "
              "tweets made by `nerdistil data augment --copies 6` from the train tweets, batch 32:", ""]  # fmt: skip
    for layers in LAYERS:
        p = report["predict"][layers]
        lines.append(f"- {layers}-layer export: {p['tweets_per_s']:.0f} tweets/s ({p['seconds']} s)")
    title = "Deployed students: export folders against the teacher"
    if args.name != "export_latency":
        title += f" ({args.teacher_label})"
    update_section("benchmarks/RESULTS.md", args.name.replace("_", "-"), title, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
