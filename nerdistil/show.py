"""What the commands print: one function per report kind, rich tables on stdout.

The commands in ``nerdistil.cli`` run the work and hand its report here; nothing in this module
computes anything but the text.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(stderr=False)


def _wide(width: int) -> Console:
    """A console that does not squeeze a wide table when stdout is a file or a pipe."""
    return Console(width=None if console.is_terminal else width)


def _table(title: str, columns: tuple[str, ...], justify: str = "right") -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    return table


def wnut16(out_dir: Path, counts: dict[str, int]) -> None:
    """``data wnut16``: the tweets per split written."""
    console.print(f"wrote {out_dir}: " + ", ".join(f"{k} {v} tweets" for k, v in counts.items()), soft_wrap=True)


def augment(out_file: Path, made: int, gold: int) -> None:
    """``data augment``: how many transfer tweets were made."""
    console.print(f"wrote {out_file}: {made} transfer tweets from {gold} gold ones", soft_wrap=True)


def teach(out: str, report: dict) -> None:
    """``teach``: the teacher's scores per split, its ensemble members and the soft-label check."""
    table = _table(f"teacher: {out}", ("split", "sentences", "entity F1", "precision", "recall",
                                       "F1 (posterior argmax)"))  # fmt: skip
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


def student(out: str, report: dict) -> None:
    """``distil`` / ``finetune``: the student's dev/test scores, size and training time."""
    table = _table(f"{report['mode']}: {out}", ("split", "entity F1", "precision", "recall", "strict F1"))
    for part, s in report["scores"].items():
        table.add_row(part, f"{s['f1']:.4f}", f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['strict']['f1']:.4f}")
    console.print(table)
    console.print(
        f"{report['params'] / 1e6:.1f}M parameters, {report['student_layers']} layers, best epoch "
        f"{report['best_epoch']}, {report['train_seconds']} s of training"
    )


def evaluate(model: Path, corpus: Path, report: dict) -> None:
    """``evaluate``: precision, recall and F1 per type, averaged, strict; teacher agreement if asked."""
    table = _table(f"{model} on {corpus} ({report['n_sentences']} sentences, {report['n_words']} words)",
                   ("type", "precision", "recall", "F1", "support"))  # fmt: skip
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


def export(student: Path, out: Path, meta: dict) -> None:
    """``export``: every candidate graph's dev F1 difference (with its CI) and agreement with fp32, and the decision."""
    gate = meta["gate"]
    agree = gate.get("agreement")
    where = f"dev: {gate['sentences']} sentences of {gate['corpus']}"
    if agree:
        where += f"; agreement: {agree['tweets']} tweets of {agree['source']}, {agree['fp32_entities']} fp32 entities"
    table = _table(f"export {student} -> {out} ({where})",
                   ("graph", "dev F1", "F1 - PyTorch F1", "95% CI of the difference", "dev word agreement",
                    f"span F1 vs fp32 (min {gate.get('min_agreement', '-')})", "gate", "p50 ms (batch 1)",
                    "MB"))  # fmt: skip

    def num(v: float | None, spec: str = ".4f") -> str:  # null: undefined (no gold entities)
        return "undefined" if v is None else format(v, spec)

    table.add_row("PyTorch student", num(gate["pytorch_f1"]), "-", "-", "-", "-", "-", "-", "-")
    for c in gate["candidates"]:
        lo, hi = c["ci95"]
        a = c.get("agreement_f1")
        span = ("reference" if agree else "-") if c["name"] == "fp32" else "undefined" if a is None else f"{a:.4f}"
        verdict = "kept" if c["name"] == gate["chosen"] else "refused" if c.get("refused") else "-"
        ci = "undefined" if lo is None else f"[{lo:+.4f}, {hi:+.4f}]"
        table.add_row(c["name"], num(c["f1"]), num(c["f1_diff"], "+.4f"), ci,
                      f"{c['word_agreement']:.4f}", span, verdict, f"{c['p50_ms_batch1']:.2f}",
                      f"{c['mb']:.1f}")  # fmt: skip
    wide = _wide(180)
    wide.print(table)
    wide.print(f"decision: {gate['decision']}", soft_wrap=True)


def predict(output: Path | None, stats: dict) -> None:
    """``predict``: throughput, when the tags went to a file (stdout holds the tags otherwise)."""
    if output is not None and str(output) != "-":
        console.print(f"predict: {stats['lines']} lines, {stats['words']} words in {stats['seconds']:.1f} s "
                      f"({stats['lines_per_s'] or 0:.0f} lines/s, {stats['model_kind']}) -> {output}")  # fmt: skip


def run(config: Path, summary: dict) -> None:
    """``run``: the lm-eval tables if any, then one row per trained model."""
    if summary.get("lm_eval"):
        lm_eval(summary["lm_eval"])
    lm = any("perplexity" in r for r in summary["rows"])
    cols = ("model", "parameters", "held-out perplexity", "train time") if lm else (
        "model", "parameters", "dev F1", "test F1", "train time")  # fmt: skip
    table = _table(f"nerdistil run {config} ({summary['seconds']:.0f} s)", cols)
    f = lambda v, d=4: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for r in summary["rows"]:
        params = f"{r['params'] / 1e6:.1f}M" if r["params"] else "-"
        secs = f"{r['train_seconds']:.0f} s" if r["train_seconds"] else "-"
        scores = [f(r.get("perplexity"), 2)] if lm else [f(r["dev_f1"]), f(r["test_f1"])]
        table.add_row(r["model"], params, *scores, secs)
    console.print(table)
    if summary.get("final"):
        final(summary["final"], summary.get("export"))


def final(rows: list[dict], export: dict | None = None) -> None:
    """``run``'s last table: what the shipped export keeps of the teacher's F1 and how much faster it is."""
    first = next(k for k in rows[0] if k.startswith("p50_ms_batch")).removeprefix("p50_ms_batch")
    last = next(k for k in rows[0] if k.startswith("tweets_per_s_batch")).removeprefix("tweets_per_s_batch")
    table = _table("teacher, students and the shipped export, measured in this run (test tweets, end to end)",
                   ("model", "dev F1", "test F1", "% of teacher", "params", "disk MB", f"p50 ms b{first}",
                    f"tweets/s b{last}", f"speed-up (x) b{first}", f"speed-up (x) b{last}"))  # fmt: skip
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        name = r["model"] + (f" ({export['chosen']})" if export and r["model"] == "shipped export" else "")
        table.add_row(name, f(r["dev_f1"], ".4f"), f(r["test_f1"], ".4f"), f(r["pct_of_teacher_test_f1"], ".1f"),
                      "-" if not r["params"] else f"{r['params'] / 1e6:.1f}M", f(r["disk_mb"], ".1f"),
                      f(r[f"p50_ms_batch{first}"], ".2f"), f(r[f"tweets_per_s_batch{last}"], ".1f"),
                      f(r[f"speedup_batch{first}"], ".1f"), f(r[f"speedup_batch{last}"], ".1f"))  # fmt: skip
    _wide(160).print(table)
    if export:
        _wide(160).print(f"export: {export['decision']}", soft_wrap=True)


def bench(report: dict) -> None:
    """``bench-latency``: one row per model, backend, padding and batch size."""
    n_sentences, threads = report["n_sentences"], report["machine"]["threads"]
    table = _table(f"bench-latency: {n_sentences} sentences, {threads} threads, end to end (tokenize + forward + "
                   "decode)", ("model", "backend", "padding", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms",
                               "sent/s", "words/s", "params", "disk MB", "peak RSS MB", "speed-up", "F1"))  # fmt: skip
    for r in report["results"]:
        table.add_row(r["model"], r["backend"], r["padding"], str(r["batch_size"]), f"{r['p50_ms']:.2f}",
                      f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}", f"{r['sentences_per_s']:.1f}",
                      f"{r['words_per_s']:.0f}", f"{r['params'] / 1e6:.1f}M", f"{r['disk_mb']:.1f}",
                      f"{r['peak_rss_mb']:.0f}",
                      "-" if r["speedup_vs_teacher"] is None else f"{r['speedup_vs_teacher']:.2f}x",
                      "-" if r["f1"] is None else f"{r['f1']:.4f}")  # fmt: skip
    _wide(220).print(table)


def preprocess(input_file: Path, output_file: Path, stats) -> None:
    """``preprocess``: characters and tweets each cleaning step removed."""
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


def lm(out: str, report: dict) -> None:
    """``lm-distil`` / ``lm-finetune``: size, steps, time and held-out perplexity before and after."""
    held = report["held_out"]
    console.print(
        f"{report['mode']}: {out}: layers {report['layers']}, {report['params'] / 1e6:.1f}M parameters, "
        f"{report['steps']} steps in {report['train_seconds']} s"
        + (f"; held-out perplexity {held['perplexity_before']:.2f} -> {held['perplexity']:.2f}" if held else "")
    )


def lm_eval(report: dict) -> None:
    """``lm-eval``: perplexity, nearest-neighbour and neighbour-overlap tables."""
    models, k = report["models"], report["k"]
    wide = _wide(200)
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
