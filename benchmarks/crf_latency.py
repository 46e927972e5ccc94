"""What a CRF head costs at inference: the CRF student's export against the softmax student's, same encoder.

    HF_HUB_OFFLINE=1 python benchmarks/crf_latency.py --softmax runs/crfkd/distil_s13 --crf runs/crfkd/distil_crf_s13

Exports both students (``run_export``, ``--quantize`` none by default: fp32, so the two graphs differ only in the
decoder's transition scores) into ``--out``, reusing finished exports, then times them with the torch-free
runtime (``nerdistil.deploy.runtime.Tagger``) on the test tweets, after checking that each export tags them as its
PyTorch student does (share of words with the same tag): batch 1 (every tweet alone, p50 and p95 ms)
and batch 32 (tweets/s), in ``--repeats`` interleaved rounds (softmax, CRF, softmax, ...) so that drift of a busy
machine falls on both. Writes ``benchmarks/results/crf_latency.json`` and the ``crf-latency`` section of
``benchmarks/RESULTS.md``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from nerdistil.data.conll import read_conll
from nerdistil.deploy.export import run_export
from nerdistil.deploy.loader import load_tagger
from nerdistil.deploy.runtime import Tagger

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402


def export(student: Path, out: Path, quantize: str, dev: Path) -> dict:
    """The export folder's record, exported now unless a finished one is there."""
    meta = out / "nerdistil.json"
    if not meta.is_file():
        run_export(student, out, quantize, dev, overwrite=True)
    return json.loads(meta.read_text())


def time_once(tagger: Tagger, words: list[list[str]]) -> tuple[list[float], float]:
    """Per-tweet ms at batch 1, and tweets/s at batch 32, for one pass over ``words``."""
    one = []
    for w in words:
        t0 = time.perf_counter()
        tagger.tag_words([w], batch_size=1)
        one.append(1000 * (time.perf_counter() - t0))
    t0 = time.perf_counter()
    tagger.tag_words(words, batch_size=32)
    return one, len(words) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--softmax", type=Path, required=True, help="a softmax-head student folder")
    ap.add_argument("--crf", type=Path, required=True, help="a CRF-head student folder (same encoder)")
    ap.add_argument("--out", type=Path, default=Path("runs/crfkd/exports"))
    ap.add_argument("--corpus", type=Path, default=Path("data/wnut16/test.txt"))
    ap.add_argument("--dev", type=Path, default=Path("data/wnut16/dev.txt"))
    ap.add_argument("--quantize", default="none", choices=["none", "int8"])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    words = [s.tokens for s in read_conll(args.corpus)]
    models = {}
    for name, student in (("softmax", args.softmax), ("crf", args.crf)):
        folder = args.out / f"{name}_{args.quantize}"
        meta = export(student, folder, args.quantize, args.dev)
        models[name] = {"folder": folder, "meta": meta, "tagger": Tagger.load(folder)}
        models[name]["tagger"].tag_words(words[:64], batch_size=32)  # warm-up
        # parity: the export's tags against the PyTorch student's (a CRF student decodes with its transitions)
        ref = load_tagger(student).predict(words)
        got = [r["tags"] for r in models[name]["tagger"].tag_words(words)]
        same = sum(a == b for r, g in zip(ref, got) for a, b in zip(r, g))
        models[name]["parity"] = same / sum(len(w) for w in words)
    batch1: dict[str, list[float]] = {n: [] for n in models}
    batch32: dict[str, list[float]] = {n: [] for n in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            one, tps = time_once(m["tagger"], words)
            batch1[name] += one
            batch32[name].append(tps)
    rows = {}
    for name, m in models.items():
        rows[name] = {
            "head": m["meta"].get("head", "softmax"),
            "quantization": m["meta"].get("gate", {}).get("chosen"),
            "p50_ms_batch1": float(np.percentile(batch1[name], 50)),
            "p95_ms_batch1": float(np.percentile(batch1[name], 95)),
            "tweets_per_s_batch32": statistics.median(batch32[name]),
            "word_parity_with_pytorch": m["parity"],
            "disk_mb": round(sum(f.stat().st_size for f in m["folder"].rglob("*") if f.is_file()) / 2**20, 1),
        }
    ratio = rows["crf"]["p50_ms_batch1"] / rows["softmax"]["p50_ms_batch1"]
    results = {"tweets": len(words), "repeats": args.repeats, "cpus": os.cpu_count(), "models": rows,
               "crf_over_softmax_p50_batch1": ratio}  # fmt: skip
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/crf_latency.json").write_text(json.dumps(results, indent=1))
    command = "HF_HUB_OFFLINE=1 python benchmarks/crf_latency.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    lines = [f"    {command}", "",
             f"{len(words)} test tweets, {args.repeats} interleaved rounds, {os.cpu_count()} CPU cores, ONNX "
             f"Runtime through `Tagger`; the two graphs share the 6-layer encoder and differ in the decoder's scores.",
             "", "| export | quantization | tags = PyTorch student's | p50 ms, batch 1 | p95 ms, batch 1 | tweets/s, "
             "batch 32 | disk MB |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows.values():
        lines.append(f"| {r['head']} head | {r['quantization']} | {100 * r['word_parity_with_pytorch']:.2f}% of words "
                     f"| {r['p50_ms_batch1']:.2f} | {r['p95_ms_batch1']:.2f} "
                     f"| {r['tweets_per_s_batch32']:.0f} | {r['disk_mb']} |")  # fmt: skip
    lines += ["", f"CRF / softmax p50 at batch 1: {ratio:.3f}."]
    update_section("benchmarks/RESULTS.md", "crf-latency", "CRF export against softmax export: latency",
                   "\n".join(lines))  # fmt: skip
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
