"""One line rule for every reader of user text: lines end at \\n, \\r\\n or \\r, nothing else.

Python's ``str.splitlines`` also breaks at U+0085, U+2028, U+2029, form feed, vertical tab and
\\x1c-\\x1e; no reader may. Also: ``-DOCSTART-`` is special only between sentences, ``preprocess``
reads CoNLL only when told to, and its regular expressions run in linear time.
"""

import time

import pytest

from nerdistil.data.conll import read_conll
from nerdistil.data.lines import count_lines, iter_lines, split_lines
from nerdistil.errors import UserError
from nerdistil.lm.preprocess import (
    HTML_ENTITY_RE,
    HTML_TAG_RE,
    MENTION_RE,
    SPACE_RE,
    URL_RE,
    Stats,
    Steps,
    clean,
    preprocess,
    read_tweets,
)
from nerdistil.teacher.teach import read_unlabeled

ENDS = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}
NOT_ENDS = ["\x85", "\u2028", "\u2029", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"]


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return p


@pytest.mark.parametrize("end", ENDS.values(), ids=ENDS.keys())
def test_every_reader_splits_the_same_lines(tmp_path, end):
    words = [f"w{i}{sep}x" for i, sep in enumerate(NOT_ENDS)]  # each a single line holding a non-line-end
    # tweets: one a line, a blank line between the two halves
    tweets = words[:4] + [""] + words[4:]
    text = end.join(tweets) + end
    assert split_lines(text) == tweets
    p = _write(tmp_path, "tweets.txt", text)
    assert [ln for _, ln in iter_lines(p)] == tweets
    assert count_lines(p) == len(tweets)
    assert read_tweets(p) == words
    got = list(read_unlabeled(p, pretokenized=True))
    assert [s.line for s in got] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert all(len(s.tokens) == 2 for s in got)  # the separator splits words (it is whitespace), never the line
    # CoNLL: one token a line, the same lines
    conll = _write(tmp_path, "c.txt", end.join(w if not w else f"{w}\tO" for w in tweets) + end)
    sents = read_conll(conll)
    assert [s.tokens for s in sents] == [words[:4], words[4:]]
    assert [s.line for s in sents] == [1, 6]
    assert read_tweets(conll, "conll") == [" ".join(words[:4]), " ".join(words[4:])]


def test_split_lines_and_splitlines_agree_on_the_three_line_ends():
    for text in ["", "a", "a\n", "a\r\nb", "a\r\rb\r", "\n\n", "a\n\rb", "\r\n\r\n"]:
        assert split_lines(text) == text.splitlines(), repr(text)
    assert split_lines("a\u2028b\x85c\x0cd") == ["a\u2028b\x85c\x0cd"]


@pytest.mark.parametrize("block", [1, 2, 3, 5, 1 << 20])
def test_line_ends_split_across_blocks(tmp_path, block):
    p = _write(tmp_path, "f.txt", "\ufeffab\r\ncd\r\ref\ngh\r\n\r\nij")
    assert list(iter_lines(p, block_size=block)) == [(1, "ab"), (2, "cd"), (3, ""), (4, "ef"), (5, "gh"), (6, ""),
                                                     (7, "ij")]  # fmt: skip
    assert count_lines(p, block_size=block) == 7


def test_old_mac_files_are_many_tweets(tmp_path):
    p = _write(tmp_path, "raw.txt", "Obama visits London\rhello world\r\rbye\r")
    assert [(s.tokens, s.line) for s in read_unlabeled(p)] == [
        (["Obama", "visits", "London"], 1),
        (["hello", "world"], 2),
        (["bye"], 4),
    ]
    assert read_tweets(p) == ["Obama visits London", "hello world", "bye"]


@pytest.mark.parametrize("end", ENDS.values(), ids=ENDS.keys())
def test_error_line_numbers_follow_the_line_ends(tmp_path, end):
    p = _write(tmp_path, "f.txt", end.encode().join([b"ok\tO", b"", b"fine\tO", b"bad\xff\tO", b"never"]))
    for read in (read_conll, read_tweets, lambda q: list(read_unlabeled(q))):
        with pytest.raises(UserError, match=r"f.txt:4: invalid UTF-8 byte 0xff"):
            read(p)
    p = _write(tmp_path, "f.txt", end.join(["a\tO", "b\tO", "c\tI-person", ""]))
    with pytest.raises(UserError, match=r"f.txt:3: .*--repair-tags"):
        read_conll(p)


def test_separator_inside_a_conll_line_is_no_column_or_sentence_break(tmp_path):
    p = _write(tmp_path, "f.txt", "Obama\u2028B-person\nvisits\u2028O\n")  # no tab, no space: one column
    with pytest.raises(UserError, match=r"f.txt:1: found 1 column"):
        read_conll(p)
    p = _write(tmp_path, "f.txt", "Obama B-person\nform\x0cfeed O\n\x0c\nParis B-geo-loc\n")
    with pytest.raises(UserError, match=r"f.txt:3: expected 2 columns"):  # a form feed alone is no blank line
        read_conll(p)
    (s,) = read_conll(_write(tmp_path, "f.txt", "Obama B-person\nform\x0cfeed O\n"))
    assert s.tokens == ["Obama", "form\x0cfeed"]


def test_docstart_is_a_marker_only_between_sentences(tmp_path):
    text = "-DOCSTART- -X- O\n\nObama B-person\n-DOCSTART- O\nsmiles O\n\n-DOCSTART- O\n-DOCSTART- O\nhi O\n"
    sents = read_conll(_write(tmp_path, "f.txt", text))
    assert [s.tokens for s in sents] == [["Obama", "-DOCSTART-", "smiles"], ["hi"]]
    assert sents[0].tags == ["B-person", "O", "O"] and [s.line for s in sents] == [3, 9]


def test_preprocess_takes_a_tab_separated_file_as_one_tweet_a_line(tmp_path, cli):
    rows = [f"{100 + i}\tTweet number {i} by @user" for i in range(5)]
    src = _write(tmp_path, "tweets.tsv", "\r".join(rows) + "\r")  # old-Mac line ends too
    out = tmp_path / "clean.txt"
    code, stdout, err = cli("preprocess", src, out)
    assert code == 0, err
    assert out.read_text(encoding="utf-8").splitlines() == [f"{100 + i} Tweet number {i} by" for i in range(5)]
    code, _, err = cli("preprocess", src, out, "--input-format", "csv")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--input-format" in err


def test_preprocess_reads_conll_when_told(tmp_path, cli):
    src = _write(tmp_path, "c.txt", "-DOCSTART- O\n\nObama\tB-person\nvisits\tO\r\n\r\nhi\tO\n")
    out = tmp_path / "clean.txt"
    code, _, err = cli("preprocess", src, out, "--input-format", "conll")
    assert code == 0, err
    assert out.read_text(encoding="utf-8").splitlines() == ["Obama visits", "hi"]
    code, _, err = cli("preprocess", src, out)  # the default: one tweet a line, tags and all
    assert code == 0, err
    assert out.read_text(encoding="utf-8").splitlines() == ["DOCSTART O", "Obama B person", "visits O", "hi O"]


def test_auto_reads_conll_only_with_a_tag_column(tmp_path):
    assert read_tweets(_write(tmp_path, "c.txt", "Obama\tB-person\nvisits\tO\n"), "auto") == ["Obama visits"]
    assert read_tweets(_write(tmp_path, "t.tsv", "1\tObama visits\n2\tO\n"), "auto") == ["1\tObama visits", "2\tO"]
    with pytest.raises(UserError, match="unknown input format"):
        read_tweets(tmp_path / "t.tsv", "csv")


def _adversarial(n: int = 1 << 20) -> dict[str, str]:
    def rep(s: str) -> str:
        return s * (n // len(s))

    return {
        "a.a.a.": rep("a."),
        "a-a-a-": rep("a-"),
        "a.a.com": rep("a.a.com"),
        "x.co": rep("x.co"),
        "http://": rep("http://"),
        "http:// ": rep("http:// "),
        "www.": rep("www."),
        "@": rep("@"),
        "@a:": rep("@a:"),
        "&amp": rep("&amp"),
        "&amp;&": rep("&amp;&"),
        "&#x": rep("&#x"),
        "&aaaa": "&" + rep("a"),
        "<": rep("<"),
        "<a": rep("<a"),
        "</a ": rep("</a "),
        "spaces": rep(" \t"),
    }


@pytest.mark.parametrize("name", list(_adversarial(8)))
def test_regexes_run_in_linear_time_on_1mb_lines(name):
    line = _adversarial()[name]
    for pattern in (URL_RE, MENTION_RE, HTML_TAG_RE, HTML_ENTITY_RE, SPACE_RE):
        t = time.perf_counter()
        pattern.sub(" ", line)
        assert time.perf_counter() - t < 5, (name, pattern.pattern)  # quadratic would take hours


def test_clean_and_read_1mb_adversarial_lines_in_seconds(tmp_path):
    lines = _adversarial()
    p = _write(tmp_path, "big.txt", "\n".join(lines[k] for k in ("a.a.a.", "x.co", "<a", "&amp", "@a:")) + "\n")
    t = time.perf_counter()
    tweets = read_tweets(p)
    assert len(tweets) == 5
    out, stats = preprocess(tweets, Steps())
    assert time.perf_counter() - t < 30  # about 1 s a megabyte (the per-character steps); quadratic: hours
    assert stats.tweets_in == 5
    t = time.perf_counter()
    clean(lines["a-a-a-"], Steps(), Stats())
    assert time.perf_counter() - t < 10


def test_url_rule_unchanged_on_ordinary_text():
    st = Stats()
    assert clean("see ..foo.com/x now, a.b.CO/y and www.z.org", Steps(punctuation=False), st) == "see now and"
    assert st.chars_removed["urls"] == len("foo.com/x") + len("a.b.CO/y") + len("www.z.org")
    assert clean("x .com/y mail.me", Steps()) == "x com y mail me"  # no host before the dot / no path: not a URL


def test_bench_latency_refuses_max_sentences_below_one(tiny_teacher, tiny_distilled, corpus_dir, cli):
    code, out, err = cli("bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", tiny_distilled,
                         "--corpus", corpus_dir / "test.txt", "--max-sentences", "-1")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--max-sentences must be at least 1" in err
