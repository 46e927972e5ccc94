"""Raw tweets to words the way WNUT-16 splits them.

Mentions, hashtags, URLs and emoji stay whole, contractions split off (``It's`` -> ``It 's``),
punctuation is separated.
"""

from __future__ import annotations

import re

_PATTERNS = [
    r"https?://\S+|www\.\S+",  # URLs
    r"[@＠]\w+",  # mentions
    r"[#＃]\w+",  # hashtags
    r"&(?:amp|lt|gt|quot|apos);",  # HTML entities as one token
    r"\w+(?=n't\b)",  # the word before n't ("do" in "don't")
    r"n't\b",
    r"'(?:s|m|re|ve|ll|d)\b",  # contraction suffixes
    r"\d+(?:[.,:]\d+)*",  # numbers, times
    r"\w+(?:[-.]\w+)*",  # words, hyphenated words, abbreviations
    r"(?:[:;=8][-o*']?[)\](\[dDpP/\\|])",  # ASCII emoticons
    r"\.{2,}|[!?]{2,}",  # runs of dots / marks
    r"\S",  # anything else: one character (emoji, punctuation)
]
_TOKEN_RE = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.UNICODE)


_JOINED = ("\u200d", "\ufe0f", "\ufe0e")  # zero-width joiner, variation selectors


def tokenize(text: str) -> list[str]:
    """Split one raw tweet into words; never returns empty strings.

    Time is linear in the line's length, adversarial lines too (``"@" * 10**6``, a megabyte of emoji
    joined by zero-width joiners): no pattern backtracks past the word it starts in, and a word's
    pieces are joined once, not appended to one by one.
    """
    out: list[str] = []
    pieces: list[str] = []  # the pieces of the word being built
    for tok in _TOKEN_RE.findall(text):
        # keep emoji sequences joined by zero-width joiners / variation selectors together
        if pieces and (tok in _JOINED or pieces[-1].endswith("\u200d")):
            pieces.append(tok)
        else:
            if pieces:
                out.append(pieces[0] if len(pieces) == 1 else "".join(pieces))
            pieces = [tok]
    if pieces:
        out.append(pieces[0] if len(pieces) == 1 else "".join(pieces))
    return out


def tokenize_spans(text: str) -> list[tuple[str, int, int]]:
    """``tokenize`` with character offsets: (word, start, end) per word, ``text[start:end]`` covering it.

    The words are exactly ``tokenize(text)``; a word joined from pieces (an emoji sequence) spans from
    its first piece's start to its last piece's end.
    """
    out: list[tuple[str, int, int]] = []
    pieces: list[str] = []
    start = end = 0
    for m in _TOKEN_RE.finditer(text):
        tok = m.group()
        if pieces and (tok in _JOINED or pieces[-1].endswith("\u200d")):
            pieces.append(tok)
            end = m.end()
            continue
        if pieces:
            out.append(("".join(pieces), start, end))
        pieces, start, end = [tok], m.start(), m.end()
    if pieces:
        out.append(("".join(pieces), start, end))
    return out
