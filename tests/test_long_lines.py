"""One very long input line: the teacher labels it in word windows, the tweet tokenizer stays linear."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nerdistil import softlabels
from nerdistil.data.conll import Sentence, read_conll
from nerdistil.data.tweets import tokenize
from nerdistil.teacher.flair import label as fl
from nerdistil.teacher.flair import model as fm
from nerdistil.teacher.flair import sentences as fs

CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    labels = json.loads((tiny_teacher / "report.json").read_text())["labels"]
    return fm.load_tagger(tiny_teacher / "teacher.pt"), labels


@pytest.fixture
def small_windows(monkeypatch):
    """Windows of 8 words with 2 words of context each side, so a 40-word sentence needs several."""
    monkeypatch.setattr(fl, "MAX_WINDOW_WORDS", 8)
    monkeypatch.setattr(fl, "WINDOW_CONTEXT", 2)


def corpus_words(n: int) -> list[str]:
    """The first n words of the test corpus's train tweets, one after another (entities included)."""
    words = [w for s in read_conll(CORPUS / "train.txt") for w in s.tokens]
    assert len(words) >= n
    return words[:n]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 100, 1001])
@pytest.mark.parametrize(("size", "context"), [(8, 2), (8, 0), (12, 3), (256, 32)])
def test_each_word_keeps_the_window_where_it_is_most_central(n, size, context):
    spans = fl.word_windows(n, size, context)
    assert spans[0][0] == spans[0][2] == 0 and spans[-1][1] == spans[-1][3] == n
    for k, (a, b, keep_from, keep_to) in enumerate(spans):
        assert b - a <= size and a <= keep_from < keep_to <= b
        assert keep_from == (spans[k - 1][3] if k else 0)  # the kept ranges tile the sentence

        def context_of(i: int, a: int, b: int) -> float:  # a sentence's own edge is complete context
            return min(i - a if a > 0 else np.inf, b - 1 - i if b < n else np.inf)

        for i in range(keep_from, keep_to):
            assert context_of(i, a, b) >= min(context, n)
            assert context_of(i, a, b) == max(context_of(i, a2, b2) for a2, b2, _, _ in spans if a2 <= i < b2)


@pytest.mark.parametrize("kind", ["posterior", "flair", "hard"])
def test_a_long_sentence_is_labelled_in_windows(teacher, small_windows, kind):
    tagger, labels = teacher
    words = corpus_words(41)
    short_a, short_b = Sentence(words[:5]), Sentence(words[10:18])  # 8 words: at the limit, not windowed
    out = list(fl.label(tagger, [short_a, Sentence(words), short_b], labels, 2.0, kind=kind, decode_probs=True))
    joined = out[1]
    assert joined.probs.shape == (len(words), len(labels)) and joined.probs.dtype == np.float32
    assert len(joined.tags) == len(words) and set(joined.tags) <= set(labels)
    np.testing.assert_allclose(joined.probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(joined.decode_probs.sum(-1), 1.0, atol=1e-5)

    spans = fl.word_windows(len(words))
    assert len(spans) > 3
    windows = [Sentence(words[a:b]) for a, b, _, _ in spans]
    together = list(fl.label(tagger, windows, labels, 2.0, kind=kind, decode_probs=True))  # the same batches
    alone = [next(fl.label(tagger, [w], labels, 2.0, kind=kind, decode_probs=True)) for w in windows]
    for (a, _, keep_from, keep_to), lab, lab1 in zip(spans, together, alone):
        # each word's row is the one it gets from its window labelled as a sentence (alone: up to the float
        # rounding of another batch shape)
        rows = slice(keep_from - a, keep_to - a)
        np.testing.assert_array_equal(joined.decode_probs[keep_from:keep_to], lab.decode_probs[rows])
        np.testing.assert_allclose(joined.decode_probs[keep_from:keep_to], lab1.decode_probs[rows], atol=1e-6)
        if kind != "hard":
            np.testing.assert_array_equal(joined.probs[keep_from:keep_to], lab.probs[rows])
            np.testing.assert_allclose(joined.probs[keep_from:keep_to], lab1.probs[rows], atol=1e-6)
    # every step of the joined path is a step of one window's path
    for i in range(len(words) - 1):
        steps = {tuple(lab.tags[i - a : i - a + 2]) for (a, b, _, _), lab in zip(spans, together) if a <= i < b - 1}
        assert (joined.tags[i], joined.tags[i + 1]) in steps
    if kind == "hard":  # one-hot rows of the joined path
        assert [labels[k] for k in joined.probs.argmax(-1)] == joined.tags and set(joined.probs.flat) == {0.0, 1.0}

    # sentences at or under the limit are labelled exactly as without the long one beside them
    without = list(fl.label(tagger, [short_a, short_b], labels, 2.0, kind=kind, decode_probs=True))
    for got, want in zip([out[0], out[2]], without):
        np.testing.assert_array_equal(got.probs, want.probs)
        np.testing.assert_array_equal(got.decode_probs, want.decode_probs)
        assert got.tags == want.tags


def test_sentences_under_the_limit_take_the_unwindowed_path(teacher):
    tagger, labels = teacher
    test = read_conll(CORPUS / "test.txt")
    assert max(len(s) for s in test) <= fl.MAX_WINDOW_WORDS
    for got, want in zip(fl.label(tagger, test, labels, 2.0), fl._label_batches(tagger, test, labels, 2.0)):
        np.testing.assert_array_equal(got.probs, want.probs)
        assert got.tags == want.tags


def test_shared_flair_copies_of_long_sentences_are_not_embedded(teacher, small_windows):
    tagger, labels = teacher
    words = corpus_words(30)
    sents = [Sentence(words[:6]), Sentence(words)]
    shared = fs.to_flair(sents)
    got = list(fl.label(tagger, sents, labels, 2.0, flair_sentences=shared))
    want = list(fl.label(tagger, sents, labels, 2.0))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.probs, w.probs)
        assert g.tags == w.tags
    assert shared[0][0].embedding.numel() > 0  # the short sentence kept its vectors for the caller
    assert shared[1][0].embedding.numel() == 0  # the long one was labelled from fresh window copies


def test_teach_labels_a_long_unlabeled_line(tiny_teacher, corpus_dir, cli, small_windows, tmp_path):
    line = " ".join(corpus_words(100))
    raw = tmp_path / "long.txt"
    raw.write_text(f"{line}\nObama visits London today\n", encoding="utf-8")
    code, _, err = cli("teach", "--corpus", corpus_dir, "--teacher", tiny_teacher / "teacher.pt", "--unlabeled", raw,
                       "--out", tmp_path / "t")  # fmt: skip
    assert code == 0, err
    stored = softlabels.load(tmp_path / "t" / "soft_labels")
    rows = stored["unlabeled"].with_format("numpy")
    words = tokenize(line)
    assert len(words) > 4 * fl.MAX_WINDOW_WORDS and list(rows[0]["tokens"]) == words
    probs = np.stack(rows[0]["probs"])
    assert probs.shape == (len(words), len(softlabels.label_names(stored))) and len(rows[0]["teacher_tags"]) == len(
        words
    )
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert len(rows[1]["tokens"]) == 4


def test_a_labeller_left_half_way_leaves_gradients_on(teacher, small_windows):
    """A generator suspended inside ``torch.no_grad`` would turn gradients off for whoever resumes or drops it."""
    tagger, labels = teacher
    words = corpus_words(30)
    for sents in (
        [Sentence(words[:5]), Sentence(words[5:9])],
        [Sentence(words[:5]), Sentence(words), Sentence(words[:3])],
    ):
        gen = fl.label(tagger, sents, labels, 2.0, batch_size=1)
        next(gen)
        assert torch.is_grad_enabled()
        next(gen)
        del gen
        assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("line", "n_tokens"),
    [
        ("@" * 1_000_000, 1_000_000),
        ("a." * 500_000, 2),
        ("http://" + "a" * 1_000_000, 1),
        ("a " * 500_000, 500_000),
        ("\u200d" * 1_000_000, 1),
        ("\U0001f600\u200d" * 500_000, 1),  # one emoji sequence joined by zero-width joiners
        ("\U0001f600\ufe0f" * 500_000, 500_000),
        ("don't " * 150_000, 300_000),
    ],
)
def test_tweet_tokenizer_is_linear_on_adversarial_megabyte_lines(line, n_tokens):
    t0 = time.perf_counter()
    tokens = tokenize(line)
    assert time.perf_counter() - t0 < 10  # a quadratic pattern or join takes minutes to hours here
    assert len(tokens) == n_tokens and "".join(tokens) == line.replace(" ", "")
