"""Transfer tweets made from gold ones: mention and word swaps that keep the tags right."""

from collections import Counter

import pytest

from nerdistil.data.augment import augment, mentions, run_augment
from nerdistil.data.conll import Sentence, _check_sequence, read_conll
from nerdistil.errors import UserError
from nerdistil.teacher.teach import read_unlabeled


def test_mentions_by_hand():
    tags = ["B-person", "I-person", "O", "B-geo-loc", "B-geo-loc", "I-geo-loc", "O", "B-company"]
    assert mentions(tags) == [(0, 2, "person"), (3, 4, "geo-loc"), (4, 6, "geo-loc"), (7, 8, "company")]
    assert mentions(["O", "O"]) == []


def _parts(s: Sentence) -> tuple[list[tuple[str, ...]], list[str], list[str]]:
    """(mention word tuples, mention types, words outside mentions)."""
    spans = mentions(s.tags)
    inside = {i for a, b, _ in spans for i in range(a, b)}
    outside = [w for i, w in enumerate(s.tokens) if i not in inside]
    return [tuple(s.tokens[a:b]) for a, b, _ in spans], [t for _, _, t in spans], outside


def test_swaps_keep_the_tags_right(corpus_dir):
    gold = read_conll(corpus_dir / "train.txt")
    pool = Counter(m for s in gold for m, t in zip(*_parts(s)[:2]))
    vocab = {w for s in gold for w in _parts(s)[2]}
    made = list(augment(gold, copies=3, seed=5, p_mention=0.7, p_word=0.3))
    assert 0 < len(made) <= 3 * len(gold)
    by_line: dict[int, list[Sentence]] = {}
    for m in made:
        by_line.setdefault(m.line, []).append(m)
    src = {s.line: s for s in gold}
    for line, versions in by_line.items():
        s = src[line]
        s_mentions, s_types, s_out = _parts(s)
        for m in versions:
            assert m.tokens != s.tokens  # every made tweet is new text
            assert len(m.tokens) == len(m.tags)
            assert _check_sequence(m.tags, "BIO") is None  # valid BIO
            m_mentions, m_types, m_out = _parts(m)
            assert m_types == s_types  # the same entities in the same order, each of its own type
            assert all(x in pool for x in m_mentions)  # swapped in from mentions the corpus has
            assert len(m_out) == len(s_out) and set(m_out) <= vocab  # outside words stay outside words
    # something of both kinds was swapped
    assert any(_parts(m)[0] != _parts(src[m.line])[0] for m in made)
    assert any(_parts(m)[2] != _parts(src[m.line])[2] for m in made)


def test_augment_is_deterministic_per_seed(corpus_dir):
    gold = read_conll(corpus_dir / "train.txt")
    a = [(s.tokens, s.tags) for s in augment(gold, 2, seed=1)]
    assert a == [(s.tokens, s.tags) for s in augment(gold, 2, seed=1)]
    assert a != [(s.tokens, s.tags) for s in augment(gold, 2, seed=2)]


def test_cli_writes_pretokenized_text_that_teach_reads_back_exactly(cli, corpus_dir, tmp_path):
    out, conll = tmp_path / "aug.txt", tmp_path / "aug.conll"
    code, stdout, _ = cli("data", "augment", corpus_dir / "train.txt", out, "--copies", "2", "--conll", conll)
    assert code == 0 and "transfer tweets" in stdout
    made = read_conll(conll)
    # --pretokenized: the words come back exactly (a tweet tokenizer would split "U.S." or "&lt;3" its own way)
    assert [s.tokens for s in read_unlabeled(out, pretokenized=True)] == [s.tokens for s in made]
    code, _, err = cli("data", "augment", corpus_dir / "train.txt", out, "--copies", "0")
    assert code == 2 and "--copies must be at least 1" in err


def test_run_augment_checks_then_writes(corpus_dir, tmp_path):
    out, conll = tmp_path / "aug.txt", tmp_path / "aug.conll"
    with pytest.raises(UserError, match="--p-word must be in"):
        run_augment(corpus_dir / "train.txt", out, p_word=1.5)
    assert not out.exists()
    made, gold = run_augment(corpus_dir / "train.txt", out, copies=1, seed=3, conll=conll)
    assert gold == len(read_conll(corpus_dir / "train.txt")) and 0 < made <= gold
    assert len(out.read_text().splitlines()) == made == len(read_conll(conll))
