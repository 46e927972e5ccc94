"""How an int8 export's quality depends on its recipe and on batching (issue 14's gate findings).

    HF_HUB_OFFLINE=1 python benchmarks/int8_recipes.py --students runs/bench/distil_s13 runs/bench/distil4_s13

For each student folder, builds the graphs `nerdistil export` can ship (fp32; dynamic int8 of the weights with
per-channel and with per-tensor scales, embedding tables included; per-channel with the embedding tables kept fp32;
fp32 and per-channel after Optimum's attention fusion), each joined to the in-graph
BIO decoder, and tags the dev and test splits through `nerdistil.deploy.runtime.Tagger` at batch 1, 8 and 32: with the
runtime's batches of one subword length ("no padding") and with length-sorted batches cut every N windows, as the
runtime did before ("padded"). Reports entity F1, word agreement with the fp32 graph and the p50 latency at batch 1
(2 threads). Run the timing on an otherwise idle machine. Writes ``benchmarks/results/int8_recipes.json`` and the
``int8-recipes`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402


def padded_decode(tagger, sentences: list[list[str]], batch_size: int) -> list[list[str]]:
    """The runtime's decoding before it batched by length: length-sorted windows cut every ``batch_size``."""
    from nerdistil.align import first_subword_positions, windows

    wins = [w for i, words in enumerate(sentences) for w in windows(tagger.tokenizer, list(words), i, None,
                                                                     tagger.max_length)]  # fmt: skip
    wins.sort(key=lambda w: len(w.input_ids))
    tags: list[list] = [[None] * len(s) for s in sentences]
    for s in range(0, len(wins), batch_size):
        chunk = wins[s : s + batch_size]
        firsts = [first_subword_positions(w.word_ids) for w in chunk]
        out, _ = tagger.session.run(["tags", "scores"], tagger._batch(chunk, firsts))
        for b, (w, first) in enumerate(zip(chunk, firsts)):
            for j, word in enumerate(sorted(first)):
                tags[w.sid][word] = tagger.labels[int(out[b, j])]
    return tags


def build(student: Path, work: Path) -> dict[str, Path]:
    """The candidate graphs of one student, each with the decoder: name -> file."""
    from nerdistil.deploy.export import compose, export_encoder
    from nerdistil.deploy.quantize import quantize_encoder

    cfg = json.loads((student / "config.json").read_text())
    labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    graphs = {}
    for fuse in (False, True):
        enc = export_encoder(student, work / f"fuse{int(fuse)}", fuse)
        tag = " (attention fused)" if fuse else ""
        cands = [(f"fp32{tag}", enc), (f"int8 per-channel{tag}", quantize_encoder(enc, True))]
        if not fuse:  # the recipes that differ in what gets quantized, on the plain graph
            cands += [("int8 per-channel, embedding tables fp32", quantize_encoder(enc, True, embeddings=False)),
                      ("int8 per-tensor", quantize_encoder(enc, False))]  # fmt: skip
        for name, src in cands:
            graphs[name] = work / f"{len(graphs)}.onnx"
            compose(src, labels, graphs[name], int8=not name.startswith("fp32"))
    return graphs


def main() -> None:
    import onnxruntime as ort
    from seqeval.metrics import f1_score

    from nerdistil.data.conll import read_conll
    from nerdistil.deploy.export import run_export
    from nerdistil.deploy.runtime import Tagger

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", nargs="+", default=["runs/bench/distil_s13", "runs/bench/distil4_s13"])
    ap.add_argument("--corpus", default="data/wnut16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="benchmarks/results/int8_recipes.json")
    args = ap.parse_args()
    command = "HF_HUB_OFFLINE=1 python benchmarks/int8_recipes.py " + shlex.join(sys.argv[1:])
    splits = {s: read_conll(Path(args.corpus) / f"{s}.txt") for s in ("dev", "test")}
    rows = []
    for student in map(Path, args.students):
        layers = json.loads((student / "config.json").read_text())["num_hidden_layers"]
        with tempfile.TemporaryDirectory() as tmp:
            shell = Path(tmp) / "export"  # an export folder for its tokenizer and settings; sessions are swapped in
            run_export(student, shell, "none", Path(args.corpus) / "dev.txt", draws=10)
            tagger = Tagger.load(shell, args.threads)
            tagger.pad_multiple = 1  # "no padding" means none: every graph here, fp32 or int8, runs unpadded
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            ref: dict[str, list] = {}
            for name, graph in build(student, Path(tmp)).items():
                tagger.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
                tagger.inputs = [i.name for i in tagger.session.get_inputs()]
                row = {"student": str(student), "layers": layers, "graph": name, "mb": graph.stat().st_size / 2**20}
                for split, sents in splits.items():
                    words, gold = [s.tokens for s in sents], [s.tags for s in sents]
                    for mode in ("no padding", "padded"):
                        for bs in (1, 8, 32):
                            if mode == "padded" and bs == 1:
                                continue
                            pred = (
                                tagger.decode(words, bs)[0]
                                if mode == "no padding"
                                else padded_decode(tagger, words, bs)
                            )
                            key = f"{split} {mode} b{bs}"
                            ref.setdefault(split, pred)  # the first graph is fp32: the reference
                            same = sum(a == b for p, q in zip(pred, ref[split]) for a, b in zip(p, q))
                            row[key] = {"f1": f1_score(gold, pred), "agreement": same / sum(map(len, words))}
                test = [s.tokens for s in splits["test"]]
                for w in test[:10]:
                    tagger.decode([w])
                times = []
                for _ in range(3):
                    for w in test:
                        t0 = time.perf_counter()
                        tagger.decode([w])
                        times.append(time.perf_counter() - t0)
                row["p50_ms_batch1"] = float(np.median(times) * 1000)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
    Path(args.json).write_text(json.dumps({"command": command, "threads": args.threads, "rows": rows}, indent=2))
    lines = ["```", command, "```", "",
             "Entity F1 (word agreement with the fp32 graph) through `nerdistil.Tagger`. \"no padding\": the "
             "runtime's batches of one subword length; \"padded\": length-sorted batches cut every N windows (the "
             f"runtime before this change). p50: batch 1 on test, {args.threads} threads.", "",
             "| student | graph | MB | dev b1 | dev b32 no padding | dev b32 padded | test b1 | test b32 no padding | "
             "test b32 padded | p50 ms b1 |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        cells = [f"{r[k]['f1']:.4f} ({r[k]['agreement']:.2%})" for k in ("dev no padding b1", "dev no padding b32",
                 "dev padded b32", "test no padding b1", "test no padding b32", "test padded b32")]  # fmt: skip
        lines.append(f"| {r['layers']}-layer | {r['graph']} | {r['mb']:.1f} | {' | '.join(cells)} | "
                     f"{r['p50_ms_batch1']:.2f} |")  # fmt: skip
    update_section("benchmarks/RESULTS.md", "int8-recipes", "int8 recipes and batching", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
