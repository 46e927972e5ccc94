r"""The one line rule for every file of user text: a line ends at ``\n``, ``\r\n`` or ``\r``, nothing else.

Python's ``str.splitlines`` also breaks at ``\x0b``, ``\x0c``, ``\x1c``-``\x1e``, ``\x85``, U+2028 and
U+2029; here those stay inside their line, as part of its text. Files are UTF-8 (a leading byte-order
mark is dropped), read as bytes a block at a time and decoded a line at a time, so a file may be
larger than memory and an invalid byte is reported at its own 1-based line.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from nerdistil.errors import UserError

_EOL = re.compile(r"\r\n?|\n")
_EOL_BYTES = re.compile(rb"\r\n?|\n")
BLOCK = 1 << 20


def split_lines(text: str) -> list[str]:
    r"""``text`` cut at ``\n``, ``\r\n`` and ``\r`` only, without the line ends (like ``splitlines``)."""
    lines = _EOL.split(text)
    if lines[-1] == "":  # text ends with a line end (or is empty): no line after it
        lines.pop()
    return lines


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"invalid UTF-8 byte {raw[e.start]:#04x}; re-encode the file as UTF-8", path, lineno) from None


def iter_lines(path: str | Path, block_size: int = BLOCK) -> Iterator[tuple[int, str]]:
    """Stream ``(line number, line)`` from a UTF-8 file, 1-based, line ends removed.

    Args:
        path: the file (the caller checks that it exists, to word its own message); ``-`` reads stdin.
        block_size: bytes read at a time; a line may span any number of blocks.

    Raises:
        UserError: ``path:line: invalid UTF-8 byte ...`` at the first line that does not decode.
    """
    stdin = str(path) == "-"  # `--input -`: standard input, streamed the same way
    path = Path(path) if not stdin else Path("<stdin>")
    lineno = 0
    head: list[bytes] = []  # the current line's start, from earlier blocks
    with contextlib.nullcontext(sys.stdin.buffer) if stdin else open(path, "rb") as f:
        cr = False  # the previous block ended with \r: a \n opening this block belongs to that line end
        read = f.read1 if stdin else f.read  # a pipe: what has arrived, not a wait for a full block
        while block := read(block_size):
            if cr and block[:1] == b"\n":
                block = block[1:]
            cr = block[-1:] == b"\r"
            pieces = _EOL_BYTES.split(block)  # \r and \n never occur inside a multi-byte UTF-8 character
            for piece in pieces[:-1]:
                lineno += 1
                if head:
                    head.append(piece)
                    piece, head = b"".join(head), []
                yield lineno, _decode(piece, path, lineno)
            if pieces[-1]:
                head.append(pieces[-1])
    if head:
        yield lineno + 1, _decode(b"".join(head), path, lineno + 1)


def count_lines(path: str | Path, block_size: int = BLOCK) -> int:
    """Lines in a file under the same rule (a last line without a line end counts), in blocks."""
    n, cr, last = 0, False, b""
    with open(path, "rb") as f:
        while block := f.read(block_size):
            n += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
            if cr and block[:1] == b"\n":
                n -= 1  # a \r\n split across two blocks
            cr = block[-1:] == b"\r"
            last = block[-1:]
    return n + (last not in (b"", b"\n", b"\r"))
