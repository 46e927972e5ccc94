"""``nerdistil preprocess``: raw tweets to a clean language-model corpus, step by step, with counts.

Steps, in order, each on by default: HTML tags and entities, URLs, user mentions, punctuation,
non-alphanumeric characters, repeated whitespace, then exact duplicates (after normalisation:
case-folded, whitespace collapsed). Tweets left empty are dropped. The non-alphanumeric step is
Unicode-aware: letters and digits of every script, combining marks and emoji are kept (emoji
only go with ``drop_emoji``).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from nerdistil.errors import UserError

log = logging.getLogger(__name__)

# Every pattern runs in linear time on any line. A bare domain ("foo.com/x") is tried only where a
# run of [\w.-] characters starts (one try per run, not one per word boundary inside it: "a.a.a..."
# was quadratic); the run's leading dots and hyphens ("..foo.com/") are kept out of the URL (group 1).
URL_RE = re.compile(
    r"(?:https?://|www\.)\S+|(?<![\w.-])[.-]*(\w[\w.-]*\.(?:com|org|net|ly|co|io|gl|me)/\S*)", re.IGNORECASE
)
MENTION_RE = re.compile(r"(?<!\w)[@＠]\w+:?")
HTML_TAG_RE = re.compile(r"</?[A-Za-z][^<>]{0,200}>")
HTML_ENTITY_RE = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
SPACE_RE = re.compile(r"\s+")
EMOJI_EXTRA = {0x200D, 0xFE0F, 0xFE0E, 0x20E3}  # joiners, variation selectors, keycap


def is_emoji(ch: str) -> bool:
    """Emoji and their joiners: pictographs, symbols, flags, skin tones."""
    cp = ord(ch)
    return (
        cp in EMOJI_EXTRA
        or 0x1F000 <= cp <= 0x1FAFF  # pictographs, emoticons, transport, flags, skin tones
        or 0x2600 <= cp <= 0x27BF  # miscellaneous symbols, dingbats
        or 0x2B00 <= cp <= 0x2BFF
        or 0xE0020 <= cp <= 0xE007F  # tag sequences (subdivision flags)
    )


def _keep_alnum(ch: str, keep_emoji: bool) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in "LNMZ" or ch.isspace() or (keep_emoji and is_emoji(ch))


@dataclass
class Steps:
    """Which steps run (all by default)."""

    html: bool = True
    urls: bool = True
    mentions: bool = True
    punctuation: bool = True
    non_alnum: bool = True
    whitespace: bool = True
    dedupe: bool = True
    drop_emoji: bool = False


@dataclass
class Stats:
    """Characters removed by each step, tweets dropped as empty or duplicate."""

    tweets_in: int = 0
    tweets_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    chars_removed: dict[str, int] = field(default_factory=dict)
    tweets_removed: dict[str, int] = field(default_factory=dict)


def clean(text: str, steps: Steps, stats: Stats | None = None) -> str:
    """Apply the character-level steps to one tweet."""

    def step(name: str, fn) -> None:
        # fn returns (new text, characters it removed); removed characters become a space where
        # that keeps words apart, and the whitespace step then counts only the extra spaces
        nonlocal text
        text, removed = fn(text)
        if stats is not None:
            stats.chars_removed[name] = stats.chars_removed.get(name, 0) + removed

    def sub(*patterns: re.Pattern):
        # what a pattern removes: its group 1 where it has one and that matched, else the whole match
        def fn(t: str) -> tuple[str, int]:
            n = 0

            def repl(m: re.Match) -> str:
                nonlocal n
                if m.re.groups and m.group(1) is not None:
                    n += m.end(1) - m.start(1)
                    return m.group()[: m.start(1) - m.start()] + " "
                n += m.end() - m.start()
                return " "

            for p in patterns:
                t = p.sub(repl, t)
            return t, n

        return fn

    def chars(drop) -> Callable[[str], tuple[str, int]]:
        def fn(t: str) -> tuple[str, int]:
            out = ["" if drop(c) else c for c in t]
            return "".join(c if c else " " for c in out), sum(1 for c in out if not c)

        return fn

    if steps.html:
        step("html", sub(HTML_TAG_RE, HTML_ENTITY_RE))
    if steps.urls:
        step("urls", sub(URL_RE))
    if steps.mentions:
        step("mentions", sub(MENTION_RE))
    if steps.punctuation:
        step("punctuation", chars(lambda c: unicodedata.category(c).startswith("P")))
    if steps.non_alnum:
        keep = not steps.drop_emoji
        step("non_alnum", chars(lambda c: not _keep_alnum(c, keep)))
    if steps.whitespace:
        step("whitespace", lambda t: (SPACE_RE.sub(" ", t).strip(), len(t) - len(SPACE_RE.sub(" ", t).strip())))
    return text


def normalise(text: str) -> str:
    """The key for duplicate detection: case-folded, whitespace collapsed."""
    return SPACE_RE.sub(" ", text.casefold()).strip()


def preprocess(tweets: Iterable[str], steps: Steps) -> tuple[list[str], Stats]:
    """Clean every tweet, drop empty ones and (optionally) duplicates; returns (tweets, stats)."""
    stats = Stats()
    out: list[str] = []
    seen: set[str] = set()
    for tweet in tweets:
        stats.tweets_in += 1
        stats.chars_in += len(tweet)
        text = clean(tweet, steps, stats)
        if not text.strip():
            stats.tweets_removed["empty"] = stats.tweets_removed.get("empty", 0) + 1
            continue
        if steps.dedupe:
            key = normalise(text)
            if key in seen:
                stats.tweets_removed["duplicates"] = stats.tweets_removed.get("duplicates", 0) + 1
                continue
            seen.add(key)
        out.append(text)
    stats.tweets_out = len(out)
    stats.chars_out = sum(len(t) for t in out)
    return out, stats


INPUT_FORMATS = ("tweets", "conll", "auto")


def read_tweets(path: str | Path, input_format: str = "tweets") -> list[str]:
    r"""The tweets of a file: one a line (``tweets``), or a CoNLL file's sentences joined with spaces (``conll``).

    Lines end at ``\n``, ``\r\n`` or ``\r`` only (``nerdistil.data.lines``); blank lines hold no tweet.
    A ``tweets`` file is never taken for CoNLL: a tab is part of its tweet (``id<TAB>text`` stays one
    tweet a line). ``auto`` (the language-model commands' corpora) reads CoNLL only when the first
    non-blank line is ``word<TAB>...<TAB>tag`` with a valid BIO/BIOES tag, and says which it chose.
    """
    from nerdistil.data.conll import read_conll, split_tag
    from nerdistil.data.lines import iter_lines

    if input_format not in INPUT_FORMATS:
        raise UserError(f"unknown input format {input_format!r}; use {' or '.join(INPUT_FORMATS[:2])}")
    path = Path(path)
    if not path.is_file():
        raise UserError("no such input file", path)
    if input_format == "auto":
        first = next((ln for _, ln in iter_lines(path) if ln.strip()), "")
        cols = first.split("\t")
        try:
            conll = len(cols) >= 2 and " " not in cols[0].strip(" ") and bool(split_tag(cols[-1].strip(" ")))
        except ValueError:
            conll = False
        input_format = "conll" if conll else "tweets"
        log.info("%s: read as %s", path, "CoNLL (sentences joined)" if conll else "tweets, one a line")
    if input_format == "conll":
        return [" ".join(s.tokens) for s in read_conll(path, tag_col=None)]
    return [ln for _, ln in iter_lines(path) if ln.strip()]


def step_names() -> list[str]:
    """The switchable steps, in order."""
    return [f.name for f in fields(Steps) if f.name != "drop_emoji"]
