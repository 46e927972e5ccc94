"""Peak memory of `nerdistil teach --unlabeled` against the size of the unlabeled file.

    HF_HUB_OFFLINE=1 python benchmarks/stream_memory.py --lines 1000 10000 100000
    HF_HUB_OFFLINE=1 python benchmarks/stream_memory.py --long-line-words 20000 200000 --no-windows 20000

Writes synthetic tweets (lengths drawn from the bundled training tweets' length distribution, words
drawn from their vocabulary), labels each file with the given teacher in its own process and
records that process's peak resident memory (``ru_maxrss`` of the child). That peak counts
file-backed pages of the memory-mapped Arrow files the process reads back (joining the chunks,
writing the shards, the row-sum check) as well as its own (anonymous) memory, so it is an upper
bound on what the labeller holds. ``--long-line-words N`` instead writes one single line of N such
words (200,000 words is about 1 MB) and records the same for it: the teacher labels an over-long
sentence in word windows, so the peak should not grow with N (``--no-windows N`` also measures the
labeller without them, as it was before, on the N-word line). Writes
``benchmarks/results/stream_memory.json`` and a section of ``RESULTS.md``; a run of one kind keeps
the other kind's stored rows, and a long-line run keeps the stored rows of other lengths.
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

from nerdistil.data.conll import read_conll

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402

# Runs `nerdistil` in the child and records its peaks however the CLI exits: ru_maxrss (all resident
# pages), and, sampled every 50 ms from /proc/self/status, RssAnon (the process's own heap: what
# the labeller holds) and RssFile (file-backed pages, e.g. memory-mapped Arrow files, which the
# kernel can drop and reread).
# STREAM_MEMORY_NO_WINDOWS=1 turns the teacher's word windows off (every sentence whole, as before them).
WRAPPER = """
import json, os, resource, sys, threading, time
from nerdistil.cli import main
if os.environ.get("STREAM_MEMORY_NO_WINDOWS"):
    from nerdistil.teacher.flair import label as flair_label
    flair_label.MAX_WINDOW_WORDS = sys.maxsize
peak = {"anon_kb": 0, "file_kb": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            key = {"RssAnon": "anon_kb", "RssFile": "file_kb"}.get(line.split(":")[0])
            if key:
                peak[key] = max(peak[key], int(line.split()[1]))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
try:
    main(sys.argv[2:])
finally:
    peak["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    open(sys.argv[1], "w").write(json.dumps(peak))
"""


def synthetic(path: Path, n: int, corpus: Path, seed: int = 0) -> None:
    """n tweets shaped like the corpus's training tweets: its length distribution, its vocabulary."""
    train = read_conll(corpus / "train.txt")
    lengths = np.array([len(s.tokens) for s in train])
    vocab = np.array([w for s in train for w in s.tokens])
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for k in rng.choice(lengths, size=n):
            f.write(" ".join(rng.choice(vocab, size=int(k))) + "\n")


def long_line(path: Path, n_words: int, corpus: Path, seed: int = 0) -> None:
    """One line of n_words words drawn from the corpus's training vocabulary (written in blocks)."""
    vocab = np.array([w for s in read_conll(corpus / "train.txt") for w in s.tokens])
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n_words, 10_000):
            f.write((" " if start else "") + " ".join(rng.choice(vocab, size=min(10_000, n_words - start))))
        f.write("\n")


def measure(args: argparse.Namespace, raw: Path, name: str, no_windows: bool = False) -> dict:
    """Run `nerdistil teach --teacher T --unlabeled raw` in a child; its peaks, time and output sizes."""
    out = Path(args.work) / f"labelled_{name}"
    args_ = ["teach", "--corpus", args.corpus, "--teacher", args.teacher, "--unlabeled", str(raw),
             "--out", str(out), "--overwrite", "--trust-teacher"]  # fmt: skip
    peak_file = Path(args.work) / f"peak_{name}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if no_windows:
        env["STREAM_MEMORY_NO_WINDOWS"] = "1"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", WRAPPER, str(peak_file), *args_], check=True, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    seconds = time.perf_counter() - t0
    peak = json.loads(peak_file.read_text())
    report = json.loads((out / "report.json").read_text())
    shards = list((out / "soft_labels" / "unlabeled").glob("*.arrow"))
    return {"file_mb": raw.stat().st_size / 2**20, "peak_rss_mb": peak["maxrss_kb"] / 1024,
            "peak_anon_mb": peak["anon_kb"] / 1024, "peak_file_mb": peak["file_kb"] / 1024, "seconds": seconds,
            "label_seconds": report["label_seconds"], "sentences": report["soft_labels"]["splits"]["unlabeled"],
            "shards": len(shards), "soft_labels_mb": sum(p.stat().st_size for p in shards) / 2**20}  # fmt: skip


def _mb(row: dict, key: str) -> str:
    return f"{row[key]:.0f}" if key in row else "–"  # rows from before the anonymous / file-backed split: –


def files_table(part: dict) -> list[str]:
    """The file-size table (Markdown lines) from its stored part."""
    command = part.get("command", "HF_HUB_OFFLINE=1 python benchmarks/stream_memory.py --teacher "
                       "runs/bench/teacher/teacher.pt --lines 1000 10000 100000")  # fmt: skip
    note = f" Teacher: {part['teacher_note']}." if part.get("teacher_note") else ""
    lines = [
        "```",
        command,
        "```",
        "",
        "Synthetic tweets shaped like the bundled training tweets, labelled by the default MiniLM BiLSTM-CRF teacher "
        "(`nerdistil teach --teacher ... --unlabeled FILE`, which also labels the gold splits). Peak RSS is the whole "
        "`teach` process's (the teacher, MiniLM and Python included); the soft labels are float32 words x 21 labels. "
        "It includes the file-backed pages of the memory-mapped Arrow files the process reads back after labelling "
        "(joining the chunks, writing the shards, checking every row), which the kernel can drop; the growth with the "
        "file is about 3x the soft-label size. Anonymous memory is what the process itself holds (–: not measured "
        "separately in that run)." + note,
        "",
        "| lines | file MB | peak RSS MB | peak anonymous MB | peak file-backed MB | soft labels on disk MB "
        "| shards | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in part["rows"]:
        lines.append(f"| {r['lines']:,} | {r['file_mb']:.1f} | {r['peak_rss_mb']:.0f} | {_mb(r, 'peak_anon_mb')} "
                     f"| {_mb(r, 'peak_file_mb')} | {r['soft_labels_mb']:.0f} | {r['shards']} "
                     f"| {r['seconds'] / 60:.1f} min |")  # fmt: skip
    return lines


def long_line_table(part: dict) -> list[str]:
    """The one-long-line table (Markdown lines) from its stored part."""
    note = f" Teacher: {part['teacher_note']}." if part.get("teacher_note") else ""
    lines = [
        "### One over-long line",
        "",
        "```",
        part["command"],
        "```",
        "",
        "One single line of N words drawn from the training tweets' vocabulary (200,000 words is about 1 MB), "
        "labelled by `nerdistil teach --teacher ... --unlabeled FILE` as above. The teacher labels a sentence of more "
        "than `MAX_WINDOW_WORDS` (256) words in overlapping word windows (`nerdistil/teacher/flair/label.py`), so "
        "labelling "
        "holds the same memory however long the line; the peak still grows by about 0.6 KB a word, mostly the line's "
        "soft labels made into one Arrow row (`softlabels.save_chunk`). Rows without windows label the line as one "
        "sentence, as before them. Time is "
        "the whole `teach` run, the gold splits' 2,394 tweets included; label time is the labelling of all splits. "
        "Times come from a 2-core machine shared with other jobs and vary with their load (up to 3x between runs)."
        + note,
        "",
        "| words | file MB | windows | peak RSS MB | peak anonymous MB | peak file-backed MB | label time | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in part["rows"]:
        lines.append(f"| {r['words']:,} | {r['file_mb']:.2f} | {'yes' if r['windows'] else 'no'} "
                     f"| {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} | {r['peak_file_mb']:.0f} "
                     f"| {r['label_seconds'] / 60:.1f} min | {r['seconds'] / 60:.1f} min |")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="runs/bench/teacher/teacher.pt")
    ap.add_argument("--corpus", default="data/wnut16")
    ap.add_argument("--lines", type=int, nargs="+", help="tweets per file (default 10,000 and 100,000)")
    ap.add_argument("--long-line-words", type=int, nargs="+", help="words of one single-line file each")
    ap.add_argument("--no-windows", type=int, nargs="+", default=[],
                    help="of the --long-line-words, those also to measure without the word windows")  # fmt: skip
    ap.add_argument("--teacher-note", default="", help="a note on the teacher, for the tables")
    ap.add_argument("--work", default="runs/bench/stream")
    args = ap.parse_args()
    if not args.lines and not args.long_line_words:
        args.lines = [10_000, 100_000]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = Path("benchmarks/results/stream_memory.json")
    stored = json.loads(results.read_text()) if results.is_file() else {}
    if isinstance(stored, list):  # the older layout: the rows of the file-size table alone
        stored = {"files": {"rows": stored}}
    command = f"HF_HUB_OFFLINE=1 python benchmarks/stream_memory.py --teacher {args.teacher}"
    if args.work != "runs/bench/stream":
        command += f" --work {args.work}"
    if args.teacher_note:
        command += f" --teacher-note {shlex.quote(args.teacher_note)}"
    if args.lines:
        rows = []
        for n in args.lines:
            raw = work / f"tweets_{n}.txt"
            if not raw.is_file():
                synthetic(raw, n, Path(args.corpus))
            rows.append({"lines": n, **measure(args, raw, str(n))})
            print(rows[-1], flush=True)
        stored["files"] = {"command": f"{command} --lines {' '.join(map(str, args.lines))}",
                           "teacher_note": args.teacher_note, "rows": rows}  # fmt: skip
    if args.long_line_words:
        rows = stored.get("long_line", {}).get("rows", [])  # rows of other lengths are kept
        for n in args.long_line_words:
            raw = work / f"long_line_{n}.txt"
            if not raw.is_file():
                long_line(raw, n, Path(args.corpus))
            for windows in [True, False] if n in args.no_windows else [True]:
                name = f"long_{n}" + ("" if windows else "_no_windows")
                row = {"words": n, "windows": windows, **measure(args, raw, name, no_windows=not windows)}
                rows = [r for r in rows if (r["words"], r["windows"]) != (n, windows)] + [row]
                print(row, flush=True)
        rows.sort(key=lambda r: (r["words"], not r["windows"]))
        command += f" --long-line-words {' '.join(str(n) for n in sorted({r['words'] for r in rows}))}"
        if any(not r["windows"] for r in rows):
            command += f" --no-windows {' '.join(str(r['words']) for r in rows if not r['windows'])}"
        stored["long_line"] = {"command": command, "teacher_note": args.teacher_note, "rows": rows}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(stored, indent=2))
    lines = files_table(stored["files"]) if "files" in stored else []
    if "long_line" in stored:
        lines += ["", *long_line_table(stored["long_line"])]
    update_section("benchmarks/RESULTS.md", "stream-memory", "Streaming labeller: peak memory against file size",
                   "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
