r"""CoNLL column files: read, validate, repair, convert between tag schemes, write.

A file holds one token a line, columns separated by tabs (or, when a line has no tab, by
spaces), sentences separated by blank lines (empty, or only spaces and tabs). Lines end at
``\n``, ``\r\n`` or ``\r`` and nothing else (``nerdistil.data.lines``): a form feed, U+0085 or
U+2028 inside a line is part of its token. A ``-DOCSTART-`` line between sentences (first column
exactly ``-DOCSTART-``, after a blank line, another marker or the start of the file) marks a
document and is skipped; inside a sentence it is an ordinary word. Every error a user can cause
names the file and line (``UserError``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nerdistil.data.lines import iter_lines
from nerdistil.errors import UserError

log = logging.getLogger(__name__)

SCHEMES = ("BIO", "BIOES")
_TAG_RE = re.compile(r"^(?:O|([BIES])-(\S+))$")


@dataclass
class Sentence:
    """One sentence: its words, its gold tags (None when unlabeled) and where it starts."""

    tokens: list[str]
    tags: list[str] | None = None
    line: int = 0  # 1-based line of the first token in the source file (0: not from a file)

    def __len__(self) -> int:
        return len(self.tokens)


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-person"`` -> ``("B", "person")``; ``"O"`` -> ``("O", None)``; raises ValueError otherwise."""
    m = _TAG_RE.match(tag)
    if not m:
        raise ValueError(tag)
    if tag == "O":
        return "O", None
    return m.group(1), m.group(2)


def detect_scheme(tag_seqs: Iterable[Sequence[str]]) -> str:
    """BIOES when any S- or E- tag occurs, else BIO (IOB2)."""
    for tags in tag_seqs:
        for tag in tags:
            if tag[:2] in ("S-", "E-"):
                return "BIOES"
    return "BIO"


def _check_sequence(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """Return (index, problem) of the first invalid transition in ``tags``, or None."""
    prev_p, prev_t = "O", None
    for i, tag in enumerate(tags):
        p, t = split_tag(tag)
        if scheme == "BIO":
            if p in ("S", "E"):
                return i, f"tag {tag!r} is not in the BIO scheme"
            if p == "I" and (prev_p == "O" or prev_t != t):
                return i, f"{tag!r} follows {tags[i - 1] if i else 'the sentence start'!r}"
        else:
            inside = prev_p in ("B", "I")
            if p in ("I", "E") and (not inside or prev_t != t):
                return i, f"{tag!r} follows {tags[i - 1] if i else 'the sentence start'!r}"
            if p in ("B", "S", "O") and inside:
                return i, f"{tags[i - 1]!r} is not closed by an I-/E- tag before {tag!r}"
        prev_p, prev_t = p, t
    if scheme == "BIOES" and prev_p in ("B", "I"):
        return len(tags) - 1, f"{tags[-1]!r} ends the sentence without an E- tag"
    return None


def repair_bio(tags: list[str]) -> tuple[list[str], int]:
    """Turn every I-X that does not continue an X entity into B-X; return (tags, n_repaired)."""
    out, n = [], 0
    prev_t: str | None = None
    for tag in tags:
        p, t = split_tag(tag)
        if p == "I" and prev_t != t:
            tag, n = f"B-{t}", n + 1
        out.append(tag)
        prev_t = t
    return out, n


def bio_to_bioes(tags: Sequence[str]) -> list[str]:
    """Convert a valid BIO sequence to BIOES."""
    out = []
    for i, tag in enumerate(tags):
        p, t = split_tag(tag)
        nxt = tags[i + 1] if i + 1 < len(tags) else "O"
        continues = nxt == f"I-{t}"
        if p == "B":
            out.append(f"B-{t}" if continues else f"S-{t}")
        elif p == "I":
            out.append(f"I-{t}" if continues else f"E-{t}")
        else:
            out.append(tag)
    return out


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """Convert BIOES to BIO: S-X -> B-X, E-X -> I-X."""
    out = []
    for tag in tags:
        p, t = split_tag(tag)
        out.append({"S": f"B-{t}", "E": f"I-{t}"}.get(p, tag))
    return out


def entity_types(sentences: Iterable[Sentence]) -> list[str]:
    """Sorted entity types that occur in the gold tags."""
    types = {split_tag(tag)[1] for s in sentences if s.tags for tag in s.tags}
    return sorted(t for t in types if t)


def bio_labels(types: Iterable[str]) -> list[str]:
    """The BIO label list for these entity types: O first, then B-/I- per type (sorted)."""
    labels = ["O"]
    for t in sorted(types):
        labels += [f"B-{t}", f"I-{t}"]
    return labels


_SPACES = re.compile(r" +")


def _split_columns(line: str) -> list[str]:
    """Tab-separated columns (spaces around them dropped), or, with no tab, space-separated ones.

    Only tabs and spaces separate columns: other whitespace (a form feed, U+00A0, U+2028) is part
    of its column.
    """
    if "\t" in line:
        return [c.strip(" ") for c in line.split("\t")]
    return _SPACES.split(line.strip(" "))


def read_conll(
    path: str | Path,
    token_col: int = 0,
    tag_col: int | None = -1,
    scheme: str = "auto",
    to_bio: bool = True,
    repair: bool = False,
) -> list[Sentence]:
    """Read a CoNLL column file into sentences with validated tags.

    Args:
        path: the file.
        token_col: index of the token column.
        tag_col: index of the tag column (negative counts from the end); None reads tokens only.
        scheme: "auto", "BIO" (same as IOB2) or "BIOES".
        to_bio: convert BIOES tags to BIO, the scheme nerdistil works in.
        repair: turn an I-X that starts an entity (after O or another type) into B-X, with a
            warning; without it such a tag is an error.
    """
    path = Path(path)
    if str(path) != "-" and not path.is_file():  # "-": stdin
        if path.is_dir():
            raise UserError("is a folder, not a CoNLL file; pass one of its files (e.g. test.txt)", path)
        raise UserError("no such file; check the path", path)

    scheme = scheme.upper()
    if scheme == "IOB2":
        scheme = "BIO"
    if scheme not in ("AUTO", *SCHEMES):
        raise UserError(f"unknown tag scheme {scheme!r}; use auto, BIO, IOB2 or BIOES")

    sentences: list[Sentence] = []
    tag_lines: list[list[int]] = []
    tokens: list[str] = []
    tags: list[str] = []
    lines_of: list[int] = []
    n_cols: int | None = None

    def flush() -> None:
        if tokens:
            sentences.append(Sentence(list(tokens), list(tags) if tag_col is not None else None, lines_of[0]))
            tag_lines.append(list(lines_of))
        tokens.clear()
        tags.clear()
        lines_of.clear()

    for lineno, line in iter_lines(path):
        if not line.strip(" \t"):
            flush()
            continue
        cols = _split_columns(line)
        if cols[0] == "-DOCSTART-" and not tokens:  # a document marker; inside a sentence, a word
            continue
        if n_cols is None:
            n_cols = len(cols)
            tag_idx = None if tag_col is None else (tag_col if tag_col >= 0 else n_cols + tag_col)
            if not 0 <= token_col < n_cols or (
                tag_idx is not None and (not 0 <= tag_idx < n_cols or tag_idx == token_col)
            ):
                raise UserError(
                    f"found {n_cols} column(s), need a token column ({token_col}) and a separate tag column "
                    f"({tag_col}); check the file format, or set data.token_col / data.tag_col in a --config file",
                    path,
                    lineno,
                )
        elif len(cols) != n_cols:
            raise UserError(
                f"expected {n_cols} columns like the first token line, found {len(cols)}: {line!r}", path, lineno
            )
        token = cols[token_col]
        if not token:
            raise UserError("empty token", path, lineno)
        tokens.append(token)
        lines_of.append(lineno)
        if tag_col is not None:
            tag = cols[tag_col]
            try:
                split_tag(tag)
            except ValueError:
                raise UserError(
                    f"tag {tag!r} is not O or PREFIX-TYPE with a B/I/E/S prefix; fix the tag or the tag column",
                    path,
                    lineno,
                ) from None
            tags.append(tag)
    flush()

    if not sentences:
        raise UserError("the file holds no sentences (empty or only blank lines)", path)
    if tag_col is None:
        return sentences

    if scheme == "AUTO":
        scheme = detect_scheme(s.tags for s in sentences if s.tags)
    n_repaired = 0
    for sent, lines in zip(sentences, tag_lines):
        assert sent.tags is not None
        bad = _check_sequence(sent.tags, scheme)
        if bad and scheme == "BIO" and repair:
            sent.tags, n = repair_bio(sent.tags)
            n_repaired += n
            bad = _check_sequence(sent.tags, scheme)
        if bad:
            i, problem = bad
            hint = ""
            if scheme == "BIO" and "follows" in problem:  # export and predict take no --repair-tags: fix the file
                hint = (f"; fix the file, or let teach, distil, finetune or evaluate repair it (--repair-tags turns "
                        f"it into B-{split_tag(sent.tags[i])[1] or ''})")  # fmt: skip
            raise UserError(f"invalid {scheme} tag sequence: {problem}{hint}", path, lines[i])
        if to_bio and scheme == "BIOES":
            sent.tags = bioes_to_bio(sent.tags)
    if n_repaired:
        log.warning("%s: repaired %d I- tag(s) that started an entity into B- tags", path, n_repaired)
    return sentences


def write_conll(path: str | Path, sentences: Iterable[Sentence], extra: Sequence[Sequence[str]] | None = None) -> None:
    """Write sentences as ``token TAB tag`` lines (plus optional extra columns), blank line between."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for i, sent in enumerate(sentences):
            for j, token in enumerate(sent.tokens):
                cols = [token]
                if sent.tags is not None:
                    cols.append(sent.tags[j])
                if extra is not None:
                    cols.append(extra[i][j])
                f.write("\t".join(cols) + "\n")
            f.write("\n")


def read_unlabeled(path: str | Path, pretokenized: bool = False) -> Iterator:
    """Stream raw tweets, one a line, as tokenized sentences; blank lines are skipped (they hold no words).

    The file is read line by line, never whole, so it may be far larger than memory. Output of
    ``nerdistil preprocess`` (one clean tweet a line) is read the same way; ``pretokenized`` lines
    (``nerdistil data augment``) are split on whitespace, keeping their words exactly. Each sentence
    keeps its 1-based line number.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("no such unlabeled-text file", path)
    from nerdistil.data.tweets import tokenize

    seen = 0
    for lineno, line in iter_lines(path):  # \n, \r\n or \r; decoded a line at a time: errors point at their line
        tokens = line.split() if pretokenized else tokenize(line)
        if tokens:
            seen += 1
            yield Sentence(tokens, None, lineno)
    if not seen:
        raise UserError("the unlabeled-text file holds no tweets", path)
