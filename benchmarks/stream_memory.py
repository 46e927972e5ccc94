"""Peak memory of `nerdistil teach --unlabeled` against the size of the unlabeled file.

    HF_HUB_OFFLINE=1 python benchmarks/stream_memory.py --lines 1000 10000 100000

Writes synthetic tweets (lengths drawn from the bundled training tweets' length distribution, words
drawn from their vocabulary), labels each file with the given teacher in its own process and
records that process's peak resident memory (``ru_maxrss`` of the child). That peak counts
file-backed pages of the memory-mapped Arrow files the process reads back (joining the chunks,
writing the shards, the row-sum check) as well as its own (anonymous) memory, so it is an upper
bound on what the labeller holds. Writes ``benchmarks/results/stream_memory.json`` and a section
of ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
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
WRAPPER = """
import json, resource, sys, threading, time
from nerdistil.cli import main
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="runs/bench/teacher/teacher.pt")
    ap.add_argument("--corpus", default="data/wnut16")
    ap.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--work", default="runs/bench/stream")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.lines:
        raw = work / f"tweets_{n}.txt"
        if not raw.is_file():
            synthetic(raw, n, Path(args.corpus))
        args_ = ["teach", "--corpus", args.corpus, "--teacher", args.teacher, "--unlabeled", str(raw),
                 "--out", str(work / f"labelled_{n}"), "--overwrite", "--trust-teacher"]  # fmt: skip
        peak_file = work / f"peak_{n}.json"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", WRAPPER, str(peak_file), *args_], check=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL)  # fmt: skip
        seconds = time.perf_counter() - t0
        peak = json.loads(peak_file.read_text())
        report = json.loads((work / f"labelled_{n}" / "report.json").read_text())
        disk = sum(p.stat().st_size for p in (work / f"labelled_{n}" / "soft_labels" / "unlabeled").glob("*.arrow"))
        rows.append({"lines": n, "file_mb": raw.stat().st_size / 2**20, "peak_rss_mb": peak["maxrss_kb"] / 1024,
                     "peak_anon_mb": peak["anon_kb"] / 1024, "peak_file_mb": peak["file_kb"] / 1024,
                     "seconds": seconds, "sentences": report["soft_labels"]["splits"]["unlabeled"],
                     "shards": len(list((work / f"labelled_{n}" / "soft_labels" / "unlabeled").glob("*.arrow"))),
                     "soft_labels_mb": disk / 2**20})  # fmt: skip
        print(rows[-1], flush=True)
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/stream_memory.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "```",
        f"HF_HUB_OFFLINE=1 python benchmarks/stream_memory.py --teacher {args.teacher} --lines "
        + " ".join(map(str, args.lines)),
        "```",
        "",
        "Synthetic tweets shaped like the bundled training tweets, labelled by the default MiniLM BiLSTM-CRF teacher "
        "(`nerdistil teach --teacher ... --unlabeled FILE`, which also labels the gold splits). Peak RSS is the whole "
        "`teach` process's (the teacher, MiniLM and Python included); the soft labels are float32 words x 21 labels. "
        "It includes the file-backed pages of the memory-mapped Arrow files the process reads back after labelling "
        "(joining the chunks, writing the shards, checking every row), which the kernel can drop; the growth with "
        "the file is about 3x the soft-label size and has not yet been split into anonymous and file-backed memory.",
        "",
        "| lines | file MB | peak RSS MB | peak anonymous MB | peak file-backed MB | soft labels on disk MB | shards "
        "| time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['lines']:,} | {r['file_mb']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} | "
              f"{r['peak_file_mb']:.0f} | {r['soft_labels_mb']:.0f} | {r['shards']} | {r['seconds'] / 60:.1f} min |"
              for r in rows]  # fmt: skip
    update_section("benchmarks/RESULTS.md", "stream-memory", "Streaming labeller: peak memory against file size",
                   "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
