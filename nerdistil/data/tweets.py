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


def tokenize(text: str) -> list[str]:
    """Split one raw tweet into words; never returns empty strings."""
    tokens = _TOKEN_RE.findall(text)
    # keep emoji sequences joined by zero-width joiners / variation selectors together
    out: list[str] = []
    for tok in tokens:
        if out and (tok in ("\u200d", "\ufe0f", "\ufe0e") or out[-1].endswith("\u200d")):
            out[-1] += tok
        else:
            out.append(tok)
    return out
