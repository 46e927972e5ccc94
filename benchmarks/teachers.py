"""Teacher configurations on the bundled split: dev F1 (for choosing), test F1 and training cost.

    HF_HUB_OFFLINE=1 python benchmarks/teachers.py --seeds 13
    HF_HUB_OFFLINE=1 python benchmarks/teachers.py --seeds 13 14 15 --only ens3-minilm-all

Each configuration is a ``nerdistil teach`` run (the ``teach`` section of ``--config`` plus the
overrides below) written to ``--out/<name>_s<seed>``; finished runs are reused, so the script can be
rerun to add seeds or configurations. Writes ``benchmarks/results/teachers.json`` and the teachers
section of ``benchmarks/RESULTS.md``. Choose on dev F1, never on test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from nerdistil import config as cfgmod
from nerdistil.data import wnut16
from nerdistil.pipeline import RunConfig
from nerdistil.teacher.teach import run_teach

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402

# name -> (description, teach overrides)
CONFIGS: dict[str, tuple[str, dict]] = {
    "minilm": ("BiLSTM-CRF, frozen MiniLM last layer (the default)", {"embeddings": "minilm"}),
    "minilm-all": ("BiLSTM-CRF, frozen MiniLM, mean of all layers", {"embeddings": "minilm-all"}),
    "chars+minilm-all": (
        "BiLSTM-CRF, stacked: corpus word embeddings + char LSTM + MiniLM all-layer mean",
        {"embeddings": "chars,minilm-all"},
    ),
    "minilm-ft": (
        "linear CRF on MiniLM fine-tuned with it (FLERT recipe), 10 epochs",
        {"embeddings": "minilm-ft", "epochs": 10, "batch_size": 16},
    ),  # fmt: skip
    "ens3-minilm-all": (
        "ensemble of 3 minilm-all BiLSTM-CRFs (mean posteriors)",
        {"embeddings": "minilm-all", "ensemble": 3},
    ),  # fmt: skip
    "mpnet-all": (
        "BiLSTM-CRF, frozen all-mpnet-base-v2 (110M, 12 layers, 768 wide; `pip install '.[mpnet]'`), "
        "mean of all layers",
        {"embeddings": "mpnet-all"},
    ),  # fmt: skip
    "ens3-mpnet-all": (
        "ensemble of 3 mpnet-all BiLSTM-CRFs (mean posteriors; members share the encoder's word vectors)",
        {"embeddings": "mpnet-all", "ensemble": 3},
    ),  # fmt: skip
    "ens3cf-mpnet-all": (
        "cross-fitted ensemble of 3 mpnet-all BiLSTM-CRFs (`--cross-fit`: member k trains without train fold k and "
        "labels it; dev/test: mean posteriors)",
        {"embeddings": "mpnet-all", "ensemble": 3, "cross_fit": True},
    ),  # fmt: skip
    "ens3-chars+minilm-all": (
        "ensemble of 3 chars+minilm-all BiLSTM-CRFs (mean posteriors)",
        {"embeddings": "chars,minilm-all", "ensemble": 3},
    ),  # fmt: skip
}


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


def train_fit(run: Path) -> float:
    """Entity F1 of a teacher's stored train labels against the gold tags (runs made before teach reported it)."""
    from nerdistil import softlabels
    from nerdistil.teacher.teach import decoded_f1

    stored = softlabels.load(run / "soft_labels")
    return decoded_f1(stored["train"], softlabels.label_names(stored))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/wnut16.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13])
    ap.add_argument("--out", default="runs/bench/teachers")
    ap.add_argument("--only", nargs="*", default=None, help="configs to run (default: all; none: the table only)")
    ap.add_argument("--default-teacher", default="runs/bench/teacher", help="the default teacher's run, for its row")
    ap.add_argument("--rescored", default="runs/bench/teachers_rescored",
                    help="relabelled copies of older ensemble runs, whose scores replace the originals'")  # fmt: skip
    args = ap.parse_args()
    run = cfgmod.load(RunConfig, args.config, "run")
    if not (Path(run.corpus) / "train.txt").is_file():
        wnut16.write_split(run.corpus, run.split_seed)

    for name in CONFIGS if args.only is None else args.only:  # `--only` alone: just rebuild the table
        for seed in args.seeds:
            out = Path(args.out) / f"{name}_s{seed}"
            if (out / "report.json").is_file():
                continue
            over = {**CONFIGS[name][1], "corpus": run.corpus, "out": str(out), "seed": seed, "overwrite": True}
            run_teach(cfgmod.load(cfgmod.TeachConfig, args.config, "teach", over))

    results = Path("benchmarks/results/teachers.json")
    previous = {r["name"]: r for r in json.loads(results.read_text())} if results.is_file() else {}
    ran = set(CONFIGS if args.only is None else args.only)
    rows = []  # every configuration with at least one finished run, in CONFIGS order
    for name, (desc, over) in CONFIGS.items():
        if name not in ran and name in previous:  # not run now: the recorded row (its run folders may be gone)
            rows.append({**previous[name], "carried": True})
            continue
        paths = sorted(Path(args.out).glob(f"{name}_s*/report.json"))
        reps = [json.loads(p.read_text()) for p in paths]
        rescored = False
        for r, p in zip(reps, paths):
            # an ensemble trained before its decoding changed, relabelled from its own member files
            # (`nerdistil teach --teacher M1 --teacher M2 ...`): the scores of the current code
            again = Path(args.rescored) / p.parent.name / "report.json"
            if again.is_file():
                r["scores"] = json.loads(again.read_text())["scores"]
                rescored = True
        if rescored:
            desc += " [scores: members relabelled with `teach --teacher` x N]"
        if reps:
            rows.append({"name": name, "description": desc, "overrides": over, "seeds": [r["seed"] for r in reps],
                         "dev_f1": [r["scores"]["dev"]["f1"] for r in reps],
                         "test_f1": [r["scores"]["test"]["f1"] for r in reps],
                         "members_dev_f1": [[m["scores"]["dev"] for m in r["members"]] for r in reps],
                         "train_seconds": [r["train_seconds"] for r in reps], "params": reps[0]["params"],
                         "train_fit_f1": [r["train_fit_f1"] if "train_fit_f1" in r else train_fit(p.parent)
                                          for r, p in zip(reps, paths)]})  # fmt: skip
    default = Path(args.default_teacher) / "report.json"
    if default.is_file() and not any(r["name"] == "minilm" for r in rows):  # the default, as the other scripts ran it
        r = json.loads(default.read_text())
        rows.insert(0, {"name": "minilm", "description": CONFIGS["minilm"][0] + f" [{args.default_teacher}]",
                        "overrides": {}, "seeds": [r["seed"]], "dev_f1": [r["scores"]["dev"]["f1"]],
                        "test_f1": [r["scores"]["test"]["f1"]], "members_dev_f1": [[r["scores"]["dev"]["f1"]]],
                        "train_seconds": [r["train_seconds"]], "params": r["params"]})  # fmt: skip
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps([{k: v for k, v in r.items() if k != "carried"} for r in rows], indent=2))
    lines = [
        "```",
        "HF_HUB_OFFLINE=1 python benchmarks/teachers.py --seeds " + " ".join(map(str, args.seeds))
        + (" --only " + " ".join(args.only) if args.only else ""),
        "```",
        "",
        "Bundled WNUT-16 split (seed 13), each teacher trained by `nerdistil teach` on the 2-core CPU (train time is "
        "the whole configuration, every ensemble member included). Entity-level micro F1 of the stored soft labels' "
        "decoding (Viterbi for one tagger, the best valid BIO path through the averaged posteriors for an ensemble). "
        "Mean ± standard deviation where there are several seeds. Train times of `minilm-all` and `minilm-ft` were "
        "inflated by a test suite running beside them (about 1 and 5 minutes); an uncontended `minilm-all` epoch "
        "takes 7 s, a `minilm-ft` one 54 s. Train F1 (fit): the stored train labels' decoding against the gold "
        "tags the teacher trained on (with `--cross-fit`, each tweet's label comes from the member that did not "
        "see it). Rows marked † were not run by this command: they are carried from "
        "`benchmarks/results/teachers.json`, written by the earlier runs of this script (the commands in git history).",
        "",
        "| teacher | seeds | params | dev F1 | test F1 | members' dev F1 | train F1 (fit) | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        members = "; ".join("/".join(f"{x:.3f}" for x in m) for m in r["members_dev_f1"]) if max(
            len(m) for m in r["members_dev_f1"]) > 1 else "-"  # fmt: skip
        lines.append(
            f"| `{r['name']}`{' †' if r.get('carried') else ''}: {r['description']} | {len(r['seeds'])} | "
            f"{r['params'] / 1e6:.1f}M | "
            f"{mean_sd(r['dev_f1'])} | {mean_sd(r['test_f1'])} | {members} | "
            f"{mean_sd(r['train_fit_f1']) if r.get('train_fit_f1') else '-'} | "
            f"{statistics.mean(r['train_seconds']) / 60:.1f} min |"
        )
    update_section("benchmarks/RESULTS.md", "teachers", "Teacher configurations (issue: stronger teachers)",
                   "\n".join(lines))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
