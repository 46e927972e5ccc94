"""Word -> subword alignment on real tokenizers: WordPiece, byte-level BPE, SentencePiece Unigram.

The tiny tokenizers are trained here with the ``tokenizers`` library (no downloads), wrapped as
transformers fast tokenizers, saved, and loaded back through ``load_tokenizer``.
"""

import numpy as np
import pytest
import torch
from tokenizers import (
    ByteLevelBPETokenizer,
    SentencePieceUnigramTokenizer,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, BertTokenizerFast, RobertaTokenizerFast, XLMRobertaTokenizerFast

from nerdistil.align import IGNORE, Collator, first_subword_positions, is_byte_level, load_tokenizer, windows

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "pack my box with five dozen liquor jugs",
    "sphinx of black quartz judge my vow",
    "how vexingly quick daft zebras jump",
    "the five boxing wizards jump quickly",
    "jackdaws love my big sphinx of quartz",
    "we went to new york city on monday",
    "barack obama visited paris and london",
    "apple and google opened offices in berlin",
    "the weather in seattle is rainy today",
    "i love watching football with my friends",
    "she bought a new phone from amazon yesterday",
    "manchester united won the match last night",
    "our team is flying to tokyo next week",
    "the concert at madison square garden was amazing",
    "microsoft released a new version of windows",
    "justin bieber posted a video on twitter",
    "they drove from boston to chicago in a day",
    "the president spoke about the economy",
    "my brother works at a hospital in toronto",
]

# rare long words split into many subwords by every tokenizer here
WORDS = ["Barack", "Obama", "visited", "antidisestablishmentarianism", "in", "Photosynthesis", "quizzically", "!"]
TAGS = [1, 2, 0, 3, 0, 4, 0, 0]
VOCAB = ["the", "new", "photosynthesis", "quizzically", "york", "antidisestablishmentarianism", "a", "obama", ","]


def _train_wordpiece(path):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(path)
    return path


def _train_byte_bpe(path):
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        CORPUS, vocab_size=300, min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    path.mkdir()
    tok.save_model(str(path))
    fast = RobertaTokenizerFast(
        vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"), model_max_length=512
    )
    fast.save_pretrained(path)
    return path


def _train_unigram(path):
    tok = SentencePieceUnigramTokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, vocab_size=200, special_tokens=specials, unk_token="<unk>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    fast = XLMRobertaTokenizerFast(
        tokenizer_object=tok._tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("toks")
    return {
        "wordpiece": _train_wordpiece(root / "wordpiece"),
        "bytebpe": _train_byte_bpe(root / "bytebpe"),
        "unigram": _train_unigram(root / "unigram"),
    }


@pytest.fixture(scope="module")
def minilm():
    from nerdistil.assets import minilm_path

    return load_tokenizer(str(minilm_path()))


KINDS = ["wordpiece", "bytebpe", "unigram", "minilm"]
EXPECTED_CLASS = {
    "wordpiece": BertTokenizerFast,
    "bytebpe": RobertaTokenizerFast,
    "unigram": XLMRobertaTokenizerFast,
    "minilm": BertTokenizerFast,
}


@pytest.fixture(scope="module", params=KINDS)
def tok(request, tok_dirs, minilm):
    if request.param == "minilm":
        t = minilm
    else:
        t = load_tokenizer(str(tok_dirs[request.param]))
    assert isinstance(t, EXPECTED_CLASS[request.param])
    return t


def _subword_counts(tok, words):
    enc = tok(list(words), is_split_into_words=True, add_special_tokens=False)
    return np.bincount([w for w in enc.word_ids() if w is not None], minlength=len(words))


def _check_window_labels(win, tags, label_all=False):
    """Labels: the word's tag at its first subword (or every subword), IGNORE elsewhere."""
    assert len(win.input_ids) == len(win.word_ids) == len(win.labels) == len(win.soft_pos)
    prev = None
    for t, w in enumerate(win.word_ids):
        if w is None:
            assert win.labels[t] == IGNORE
            assert win.soft_pos[t] == -1
        elif w != prev or label_all:
            assert win.labels[t] == (IGNORE if tags is None else tags[w])
            assert win.soft_pos[t] == w
        else:
            assert win.labels[t] == IGNORE
            assert win.soft_pos[t] == -1
        prev = w


# ---------------------------------------------------------------- loading


def test_byte_level_loader_turns_on_prefix_space(tok_dirs):
    plain = AutoTokenizer.from_pretrained(str(tok_dirs["bytebpe"]), use_fast=True)
    assert not plain.add_prefix_space  # so load_tokenizer has something to do
    tok = load_tokenizer(str(tok_dirs["bytebpe"]))
    assert is_byte_level(tok)
    assert tok.add_prefix_space
    # a word gets the same subwords at the start of a sentence as in the middle
    enc = tok(["obama", "obama"], is_split_into_words=True, add_special_tokens=False)
    ids = enc["input_ids"]
    assert ids[: len(ids) // 2] == ids[len(ids) // 2 :]


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_not_byte_level(tok_dirs, kind):
    assert not is_byte_level(load_tokenizer(str(tok_dirs[kind])))


def test_minilm_not_byte_level(minilm):
    assert not is_byte_level(minilm)


# ---------------------------------------------------------------- alignment


def test_first_subword_alignment(tok):
    counts = _subword_counts(tok, WORDS)
    assert counts.max() > 1, "test words must split into several subwords"
    assert (counts > 0).all()
    (win,) = windows(tok, WORDS, sid=7, tags=TAGS)
    assert win.sid == 7 and win.start == 0
    # specials at both ends, nothing else without a word
    assert win.word_ids[0] is None and win.word_ids[-1] is None
    assert win.input_ids[0] in tok.all_special_ids and win.input_ids[-1] in tok.all_special_ids
    assert sum(w is None for w in win.word_ids) == tok.num_special_tokens_to_add(pair=False)
    assert {w for w in win.word_ids if w is not None} == set(range(len(WORDS)))
    # word ids run in order and each word's subwords are contiguous, one per subword of the plain encoding
    inner = [w for w in win.word_ids if w is not None]
    assert inner == sorted(inner)
    assert np.bincount(inner, minlength=len(WORDS)).tolist() == counts.tolist()
    _check_window_labels(win, TAGS)
    assert sum(lab != IGNORE for lab in win.labels) == len(WORDS)
    firsts = first_subword_positions(win.word_ids)
    assert [win.labels[firsts[i]] for i in range(len(WORDS))] == TAGS
    # the input ids are the tokenizer's own for the sentence
    assert win.input_ids == tok(WORDS, is_split_into_words=True)["input_ids"]


def test_label_all_subwords(tok):
    (win,) = windows(tok, WORDS, tags=TAGS, label_all_subwords=True)
    _check_window_labels(win, TAGS, label_all=True)
    for t, w in enumerate(win.word_ids):
        assert win.labels[t] == (IGNORE if w is None else TAGS[w])
    assert sum(lab != IGNORE for lab in win.labels) == int(_subword_counts(tok, WORDS).sum())


def test_unlabeled_sentence(tok):
    (win,) = windows(tok, WORDS, tags=None)
    assert all(lab == IGNORE for lab in win.labels)
    # soft rows still sit at the first subwords
    assert sorted(p for p in win.soft_pos if p >= 0) == list(range(len(WORDS)))
    _check_window_labels(win, None)


def test_empty_sentence_rejected(tok):
    with pytest.raises(ValueError):
        windows(tok, [])


@pytest.mark.parametrize("kind", ["wordpiece", "minilm"])
@pytest.mark.parametrize("ghost", ["\u200d", "\ufe0f"])
def test_word_without_subwords_becomes_unk(tok_dirs, minilm, kind, ghost):
    tok = minilm if kind == "minilm" else load_tokenizer(str(tok_dirs[kind]))
    assert tok.tokenize(ghost) == []  # the premise: this word vanishes in the tokenizer
    words = ["obama", ghost, "visited", ghost]
    tags = [1, 2, 0, 3]
    (win,) = windows(tok, words, tags=tags)
    assert {w for w in win.word_ids if w is not None} == set(range(4))
    firsts = first_subword_positions(win.word_ids)
    assert win.input_ids[firsts[1]] == tok.unk_token_id
    assert win.input_ids[firsts[3]] == tok.unk_token_id
    assert win.word_ids.count(1) == 1 and win.word_ids.count(3) == 1
    assert [win.labels[firsts[i]] for i in range(4)] == tags
    assert sum(lab != IGNORE for lab in win.labels) == 4
    _check_window_labels(win, tags)


def test_only_ghost_words(minilm):
    (win,) = windows(minilm, ["\u200d"], tags=[5])
    assert win.input_ids == [minilm.cls_token_id, minilm.unk_token_id, minilm.sep_token_id]
    assert win.labels == [IGNORE, 5, IGNORE]


# ---------------------------------------------------------------- windows


def _check_windows(tok, words, tags, wins, max_length):
    counts = _subword_counts(tok, words)
    budget = max_length - tok.num_special_tokens_to_add(pair=False)
    assert len(wins) > 1
    pos = 0
    for k, win in enumerate(wins):
        assert len(win.input_ids) <= max_length
        ws = [w for w in win.word_ids if w is not None]
        assert win.start == pos == ws[0]
        assert sorted(set(ws)) == list(range(win.start, ws[-1] + 1))  # a consecutive run of words
        _check_window_labels(win, tags)
        firsts = first_subword_positions(win.word_ids)
        assert sorted(firsts) == list(range(win.start, ws[-1] + 1))
        for w, t in firsts.items():
            assert win.labels[t] == tags[w]
        assert sum(lab != IGNORE for lab in win.labels) == len(firsts)
        # greedy: the next word would not have fit
        if k + 1 < len(wins):
            assert len(ws) + min(int(counts[ws[-1] + 1]), budget) > budget
        pos = ws[-1] + 1
    assert pos == len(words)  # every word exactly once
    all_ws = [w for win in wins for w in first_subword_positions(win.word_ids)]
    assert all_ws == list(range(len(words)))


@pytest.mark.parametrize("max_length", [32, 17])
def test_long_sentence_split_into_windows(tok, max_length):
    rng = np.random.default_rng(0)
    words = [VOCAB[i] for i in rng.integers(0, len(VOCAB), 300)]
    tags = rng.integers(0, 5, 300).tolist()
    wins = windows(tok, words, sid=3, tags=tags, max_length=max_length)
    assert all(w.sid == 3 for w in wins)
    _check_windows(tok, words, tags, wins, max_length)
    # no subword lost: the windows' subwords are the sentence's subwords (a word longer than the
    # whole budget keeps its first subwords)
    budget = max_length - tok.num_special_tokens_to_add(pair=False)
    enc = tok(words, is_split_into_words=True, add_special_tokens=False)
    per_word = [[] for _ in words]
    for i, w in zip(enc["input_ids"], enc.word_ids()):
        per_word[w].append(i)
    expected = [i for ids in per_word for i in ids[:budget]]
    inner = [i for win in wins for i, w in zip(win.input_ids, win.word_ids) if w is not None]
    assert inner == expected


def test_long_sentence_default_max_length_minilm(minilm):
    rng = np.random.default_rng(1)
    words = [VOCAB[i] for i in rng.integers(0, len(VOCAB), 2000)]
    tags = rng.integers(0, 9, 2000).tolist()
    wins = windows(minilm, words, tags=tags)
    assert int(_subword_counts(minilm, words).sum()) > 2 * 512
    assert len(wins) >= 3
    _check_windows(minilm, words, tags, wins, 512)
    assert max(len(w.input_ids) for w in wins[:-1]) > 400  # windows are filled, not tiny


def test_word_longer_than_budget_is_truncated_not_lost(tok):
    words = ["obama", "antidisestablishmentarianism", "york", "a"]
    counts = _subword_counts(tok, words)
    max_length = tok.num_special_tokens_to_add(pair=False) + 4
    assert counts[1] > 4
    wins = windows(tok, words, tags=[1, 2, 3, 4], max_length=max_length)
    seen = [w for win in wins for w in first_subword_positions(win.word_ids)]
    assert seen == [0, 1, 2, 3]
    assert all(len(win.input_ids) <= max_length for win in wins)
    long_win = next(win for win in wins if 1 in win.word_ids)
    assert long_win.word_ids.count(1) == 4
    for win in wins:
        _check_window_labels(win, [1, 2, 3, 4])


def test_short_sentence_single_window_with_max_length(tok):
    n = len(tok(WORDS, is_split_into_words=True)["input_ids"])
    assert len(windows(tok, WORDS, tags=TAGS, max_length=n)) == 1
    assert len(windows(tok, WORDS, tags=TAGS, max_length=n - 1)) == 2


# ---------------------------------------------------------------- collator


def test_collator_pads_to_longest_and_places_soft_rows(tok):
    L = 4
    rng = np.random.default_rng(2)
    sents = [WORDS, ["obama", "in", "york"], WORDS[:5]]
    tags = [TAGS, [1, 0, 2], TAGS[:5]]
    probs = [rng.dirichlet(np.ones(L), len(s)).astype(np.float32) for s in sents]
    probs[1] = None
    wins = [windows(tok, s, sid=i, tags=t)[0] for i, (s, t) in enumerate(zip(sents, tags))]
    batch = Collator(tok.pad_token_id, L)(list(zip(wins, probs)))

    T = max(len(w.input_ids) for w in wins)
    assert T < 512  # dynamic padding, not a fixed length
    B = len(wins)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["labels"].shape == (B, T)
    assert batch["soft"].shape == (B, T, L) and batch["soft"].dtype == torch.float32
    assert batch["soft_mask"].shape == (B, T) and batch["soft_mask"].dtype == torch.bool
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
    assert len({len(w.input_ids) for w in wins}) > 1  # some rows really are padded

    for b, (win, p) in enumerate(zip(wins, probs)):
        n = len(win.input_ids)
        assert batch["input_ids"][b, :n].tolist() == win.input_ids
        assert torch.all(batch["input_ids"][b, n:] == tok.pad_token_id)
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (T - n)
        assert batch["labels"][b, :n].tolist() == win.labels
        assert torch.all(batch["labels"][b, n:] == IGNORE)
        firsts = first_subword_positions(win.word_ids)
        if p is None:
            assert not batch["soft_mask"][b].any()
            assert torch.all(batch["soft"][b] == 0)
            continue
        expected_mask = torch.zeros(T, dtype=torch.bool)
        expected_mask[list(firsts.values())] = True
        assert torch.equal(batch["soft_mask"][b], expected_mask)
        for w, t in firsts.items():
            np.testing.assert_allclose(batch["soft"][b, t].numpy(), p[w], rtol=0, atol=0)
        assert torch.all(batch["soft"][b][~expected_mask] == 0)


def test_collator_label_all_subwords_and_offset_windows(minilm):
    L = 3
    rng = np.random.default_rng(3)
    words = [VOCAB[i] for i in rng.integers(0, len(VOCAB), 40)]
    tags = rng.integers(0, L, 40).tolist()
    probs = rng.dirichlet(np.ones(L), 40).astype(np.float32)
    wins = windows(minilm, words, tags=tags, max_length=24, label_all_subwords=True)
    assert len(wins) > 1
    batch = Collator(minilm.pad_token_id, L)([(w, probs) for w in wins])
    for b, win in enumerate(wins):
        for t, w in enumerate(win.word_ids):
            if w is None:
                assert not batch["soft_mask"][b, t]
                assert batch["labels"][b, t] == IGNORE
            else:  # every subword carries its (sentence-level) word's row, also in later windows
                assert batch["soft_mask"][b, t]
                np.testing.assert_array_equal(batch["soft"][b, t].numpy(), probs[w])
                assert batch["labels"][b, t] == tags[w]


# ---------------------------------------------------------------- first_subword_positions


def test_first_subword_positions():
    assert first_subword_positions([None, 0, 0, 1, 2, 2, 2, None]) == {0: 1, 1: 3, 2: 4}
    assert first_subword_positions([None, 5, 5, 6, None, None]) == {5: 1, 6: 3}
    assert first_subword_positions([None, None]) == {}
    assert first_subword_positions([]) == {}
    # a word id reappearing later keeps its first position
    assert first_subword_positions([0, 1, 0]) == {0: 0, 1: 1}
