"""Raw tweets to words the way WNUT-16 splits them.

Mentions, hashtags, URLs and emoji stay whole, contractions split off (``It's`` -> ``It 's``),
punctuation is separated.
"""

from __future__ import annotations

import re
import unicodedata


def _mark_class() -> str:
    r"""Every combining mark (Unicode category M*) as a regex class body: they belong to the word they follow.

    ``\w`` does not match them, so a decomposed accent (``"Zu\u0308rich"``) or an Indic vowel sign split
    a word in three; taken into words, every word is split as its NFC form would be, while offsets still
    slice the original string (nothing is normalised).
    """
    ranges: list[tuple[int, int]] = []
    for cp in [*range(0x300, 0x20000), *range(0xE0100, 0xE01F0)]:
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)


_W = f"[\\w{_mark_class()}]"  # a word character: \w or a combining mark
_PATTERNS = [
    r"https?://\S+|www\.\S+",  # URLs
    rf"[@＠]{_W}+",  # mentions
    rf"[#＃]{_W}+",  # hashtags
    r"&(?:amp|lt|gt|quot|apos);",  # HTML entities as one token
    rf"{_W}+(?=n't\b)",  # the word before n't ("do" in "don't")
    r"n't\b",
    r"'(?:s|m|re|ve|ll|d)\b",  # contraction suffixes
    r"\d+(?:[.,:]\d+)*",  # numbers, times
    rf"{_W}+(?:[-.]{_W}+)*",  # words, hyphenated words, abbreviations
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
    return [w for w, _, _ in tokenize_spans(text)]


def tokenize_spans(text: str) -> list[tuple[str, int, int]]:
    """``tokenize`` with character offsets: (word, start, end) per word, ``text[start:end]`` covering it.

    Emoji sequences stay one word: a zero-width joiner or variation selector joins the piece right
    after it (or itself to the piece right before it), never across a space. A word joined from pieces
    spans from its first piece's start to its last piece's end.
    """
    out: list[tuple[str, int, int]] = []
    pieces: list[str] = []
    start = end = 0
    for m in _TOKEN_RE.finditer(text):
        tok = m.group()
        if pieces and m.start() == end and (tok in _JOINED or pieces[-1].endswith("\u200d")):
            pieces.append(tok)
            end = m.end()
            continue
        if pieces:
            out.append((pieces[0] if len(pieces) == 1 else "".join(pieces), start, end))
        pieces, start, end = [tok], m.start(), m.end()
    if pieces:
        out.append((pieces[0] if len(pieces) == 1 else "".join(pieces), start, end))
    return out
