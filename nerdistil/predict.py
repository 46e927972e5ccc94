"""``nerdistil predict``: tag raw tweets (or CoNLL words) with an export folder, a student or a teacher.

The input is streamed: lines are read a buffer at a time, sorted by length inside the buffer (little
padding), tagged in batches and written back in input order, so memory does not grow with the file.
An empty line gives an empty result, never a skipped line. Output goes to a temporary file of its own
beside ``OUT`` and is renamed when complete; a failure removes it (``runio.file_out``). ``-`` reads
stdin or writes stdout, streamed.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from nerdistil.deploy.loader import load_tagger
from nerdistil.errors import UserError
from nerdistil.runio import strict

FORMATS = ("jsonl", "conll")
INPUT_FORMATS = ("tweets", "conll")


def _items(path: Path, input_format: str) -> Iterator[tuple[int, str | list[str]]]:
    """(line, tweet) for raw tweets, (line, words) for CoNLL sentences; streamed."""
    if input_format == "conll":
        from nerdistil.data.conll import read_conll

        for s in read_conll(path, tag_col=None):
            yield s.line, s.tokens
        return
    from nerdistil.data.lines import iter_lines

    yield from iter_lines(path)


def _write(f, item: dict, line: int, fmt: str) -> None:
    if fmt == "jsonl":
        row = {"line": line, **item}
        try:  # plain floats and finite scores, the usual case: no walk over the row
            text = json.dumps(row, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError):  # NumPy scalars, NaN or inf: made strict JSON
            text = json.dumps(strict(row), ensure_ascii=False, allow_nan=False)
        f.write(text + "\n")
    else:
        for w, t in zip(item["words"], item["tags"]):
            f.write(f"{w}\t{t}\n")
        f.write("\n")


def run_predict(model: str | Path, input_file: str | Path, output: str | Path | None = None, fmt: str = "jsonl",
                input_format: str = "tweets", batch_size: int = 32, buffer: int = 4096, trust_teacher: bool = False,
                threads: int | None = None, device: str = "auto", overwrite: bool = False,
                int8_batching: bool = False) -> dict:  # fmt: skip
    """Tag every line of ``input_file`` (``-``: stdin) into ``output`` (None or ``-``: stdout); returns counts."""
    from nerdistil.runio import STREAM, check_plain_file_out, file_out

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if input_format not in INPUT_FORMATS:
        raise UserError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
    for name, value in (("--batch-size", batch_size), ("--buffer", buffer)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("predict runs in one process (it streams one input into one output); run it without "
                        "torchrun")  # fmt: skip
    path = Path(input_file)
    if str(input_file) != STREAM and not path.is_file():
        raise UserError("no such input file" if not path.is_dir() else "is a folder; pass a file", path)
    if output is not None and str(output) != STREAM:
        check_plain_file_out(output, [input_file, model], overwrite)  # before the model loads
    predictor = load_tagger(model, trust_teacher, device=device, threads=threads, exact=not int8_batching)
    n = words = 0
    t0 = time.perf_counter()
    with file_out(output, [input_file, model], overwrite) as f:
        stream = _items(path, input_format)
        with tqdm(desc="predict", unit=" tweets", disable=None) as bar:
            while chunk := list(itertools.islice(stream, buffer)):
                items = [item for _, item in chunk]  # the tagger sorts its windows by length: little padding
                results = (predictor.tag_words(items, batch_size) if input_format == "conll"
                           else predictor.tag(items, batch_size))  # type: ignore[arg-type]  # fmt: skip
                for (line, _), r in zip(chunk, results):
                    _write(f, r, line, fmt)
                    words += len(r["words"])
                n += len(chunk)
                bar.update(len(chunk))
    seconds = time.perf_counter() - t0
    return {"lines": n, "words": words, "seconds": seconds, "lines_per_s": n / seconds if seconds else None,
            "model_kind": predictor.kind}  # fmt: skip
