"""``nerdistil predict``: tag raw tweets (or CoNLL words) with an export folder, a student or a teacher.

The input is streamed: lines are read a buffer at a time, sorted by length inside the buffer (little
padding), tagged in batches and written back in input order, so memory does not grow with the file.
An empty line gives an empty result, never a skipped line. Output goes to ``OUT.partial`` and is
renamed when complete; a failure removes it.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from nerdistil.errors import UserError
from nerdistil.runio import strict
from nerdistil.runtime import CONFIG, entities

FORMATS = ("jsonl", "conll")
INPUT_FORMATS = ("tweets", "conll")


class Predictor:
    """Words or raw tweets -> per-item dicts, the same shape for every kind of model."""

    def __init__(self, model: str | Path, trust_teacher: bool = False, threads: int | None = None,
                 device: str = "auto") -> None:  # fmt: skip
        path = Path(model)
        self.kind = "export" if (path / CONFIG).is_file() else None
        if self.kind == "export":
            from nerdistil.runtime import Tagger

            self.tagger = Tagger.load(path, threads)
            self._words_fn: Callable | None = None
        else:  # a student folder or a teacher of any kind: PyTorch, tags without confidences
            from nerdistil.evaluate import load_predictor

            self._words_fn, self.kind, _, _ = load_predictor(path, trust_teacher, device=device)

    def tag_words(self, sentences: Sequence[Sequence[str]], batch_size: int) -> list[dict]:
        """Per sentence of words: words, tags, scores (None without an export) and entities by word index."""
        if self._words_fn is None:
            return self.tagger.tag_words(sentences, batch_size)
        nonempty = [i for i, s in enumerate(sentences) if len(s)]
        tags: list[list[str]] = [[] for _ in sentences]
        for i, t in zip(nonempty, self._words_fn([sentences[i] for i in nonempty]) if nonempty else []):
            tags[i] = t
        return [{"words": list(w), "tags": t, "scores": None, "entities": entities(t)}
                for w, t in zip(sentences, tags)]  # fmt: skip

    def tag(self, tweets: Sequence[str], batch_size: int) -> list[dict]:
        """Per raw tweet: words, tags, scores and entities with character offsets into the tweet."""
        if self._words_fn is None:
            return self.tagger.tag(tweets, batch_size)
        from nerdistil.data.tweets import tokenize_spans

        spans = [tokenize_spans(t) for t in tweets]
        out = self.tag_words([[w for w, _, _ in sp] for sp in spans], batch_size)
        for tweet, sp, r in zip(tweets, spans, out):
            r["text"] = tweet
            r["entities"] = entities(r["tags"], None, tweet, sp)
        return out


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
                threads: int | None = None, device: str = "auto") -> dict:  # fmt: skip
    """Tag every line of ``input_file`` into ``output`` (stdout if None); returns counts and throughput."""
    from nerdistil.runio import check_file_out

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if input_format not in INPUT_FORMATS:
        raise UserError(f"--input-format must be one of {', '.join(INPUT_FORMATS)}, got {input_format!r}")
    for name, value in (("--batch-size", batch_size), ("--buffer", buffer)):
        if value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    path = Path(input_file)
    if not path.is_file():
        raise UserError("no such input file" if not path.is_dir() else "is a folder; pass a file", path)
    check_file_out(output, [input_file, model])
    predictor = Predictor(model, trust_teacher, threads, device)
    tmp = None if output is None else Path(output).with_name(Path(output).name + ".partial")
    n = words = 0
    t0 = time.perf_counter()
    f = sys.stdout if tmp is None else open(tmp, "w", encoding="utf-8")
    try:
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
    except BaseException:
        if tmp is not None:
            f.close()
            tmp.unlink(missing_ok=True)  # a failed run leaves nothing that looks finished
        raise
    if tmp is not None:
        f.close()
        os.replace(tmp, output)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    return {"lines": n, "words": words, "seconds": seconds, "lines_per_s": n / seconds if seconds else None,
            "model_kind": predictor.kind}  # fmt: skip
