"""Teacher training speed on this CPU: this code against a git commit's, and whether they train the same teacher.

    HF_HUB_OFFLINE=1 python benchmarks/teach_speed.py --against 027c2bf

Trains the default teacher (`nerdistil teach`, default config: frozen MiniLM-L6, BiLSTM-CRF, 20 epochs, dev
scored every epoch) on the bundled split with this code and with the code of git commit REF (a worktree under
``--out``), in ``--rounds`` interleaved rounds (the one to go first alternates, so a shared machine's slow minutes
fall on both alike), and reports each round's training time (``train_seconds`` of report.json: the epochs, dev
scoring and model saving, without the labelling), the median speed-up, and whether the two teachers' weights are
bitwise equal (same seed). Run it on an otherwise idle machine. Writes ``benchmarks/results/teach_speed_ab.json``
and the ``teach-speed-ab`` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from label_speed import interleaved, nerdistil  # noqa: E402
from results_md import update_section  # noqa: E402

from nerdistil.data.conll import read_conll  # noqa: E402


def same_weights(a: Path, b: Path) -> bool:
    """Whether two Flair teacher files hold bitwise the same weights."""
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=False)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=False)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", metavar="REF", required=True, help="git commit whose code to time against")
    ap.add_argument("--corpus", default="data/wnut16")
    ap.add_argument("--out", default="runs/teach_speed")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    ap.add_argument("--epochs", type=int, default=None, help="teach epochs (default: the default config's)")
    ap.add_argument("--json", default="benchmarks/results/teach_speed_ab.json")
    args = ap.parse_args()
    command = "HF_HUB_OFFLINE=1 python benchmarks/teach_speed.py " + shlex.join(sys.argv[1:])
    out, corpus = Path(args.out), Path(args.corpus).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not (corpus / "train.txt").is_file():
        nerdistil("data", "wnut16", corpus)
    epochs = [] if args.epochs is None else ["--epochs", str(args.epochs)]

    def teach(name: str, code: Path, r: int) -> float:
        run = (out / f"{name}_{r}").resolve()
        nerdistil("teach", "--corpus", corpus, "--out", run, "--device", "cpu", "--overwrite", *epochs, cwd=code)
        return json.loads((run / "report.json").read_text())["train_seconds"]

    seconds, speedups = interleaved(args.against, out, args.rounds, teach)
    last = {name: json.loads((out / f"{name}_{args.rounds - 1}" / "report.json").read_text()) for name in seconds}
    f1 = {name: report["scores"]["test"]["f1"] for name, report in last.items()}
    same = same_weights(out / "ref_0" / "teacher.pt", out / "this_0" / "teacher.pt")
    result = {"command": command, "against": args.against, "epochs": args.epochs, "train_seconds": seconds,
              "speedups": speedups, "median_speedup": float(np.median(speedups)), "bitwise_same_weights": same,
              "test_f1": f1}  # fmt: skip
    Path(args.json).write_text(json.dumps(result, indent=2))
    epochs_note = "" if args.epochs is None else f", {args.epochs} epochs"
    n_train = len(read_conll(corpus / "train.txt"))
    lines = ["```", command, "```", "",
             f"`nerdistil teach` with the default config{epochs_note} on `{args.corpus}` ({n_train:,} train tweets, "
             f"dev scored every epoch), this code and commit `{args.against}` in {args.rounds} interleaved rounds on "
             "the CPU (2 threads); time = `train_seconds` (training, dev scoring and model saving, not the "
             "labelling).",
             "", f"| round | `{args.against}` s | this code s | speed-up |", "|---|---|---|---|"]  # fmt: skip
    for r, (b, a) in enumerate(zip(seconds["ref"], seconds["this"])):
        lines.append(f"| {r + 1} | {b:.1f} | {a:.1f} | {b / a:.2f}x |")
    lines += [
        "",
        f"Median speed-up **{np.median(speedups):.2f}x**. The two teachers' weights (round 1): "
        f"{'bitwise equal' if same else 'NOT bitwise equal'}; test F1 {f1['ref']:.4f} (`{args.against}`) and "
        f"{f1['this']:.4f} (this code).",
    ]
    update_section("benchmarks/RESULTS.md", "teach-speed-ab", f"Teacher training speed on the CPU: this code "
                   f"against {args.against}", "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
