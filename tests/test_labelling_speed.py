"""What labelling's speed-ups keep (issue 15): vectors batched by subword count, Flair's Viterbi on the host."""

from pathlib import Path

import numpy as np
import pytest

from nerdistil.data.conll import Sentence, read_conll
from nerdistil.teacher.flair import embeddings as fe
from nerdistil.teacher.flair import label as fl

CORPUS = Path(__file__).parent / "data" / "corpus"
LABELS = ["O", "B-person", "I-person", "B-loc", "I-loc"]


@pytest.fixture(scope="module")
def tagger(tiny_student):
    """An untrained BiLSTM-CRF on the tiny frozen BERT: labelling does not care whether it learned anything."""
    import torch
    from flair.data import Dictionary
    from flair.models import SequenceTagger

    torch.manual_seed(3)
    types = Dictionary(add_unk=False)
    types.span_labels = True  # entity types: Flair makes its BIOES tags from them
    for t in ("person", "loc"):
        types.add_item(t)
    model = SequenceTagger(hidden_size=8, embeddings=fe.build_embeddings(str(tiny_student), [], []),
                           tag_dictionary=types, tag_type="ner", use_crf=True, tag_format="BIOES")  # fmt: skip
    return model.eval()


@pytest.fixture
def embed_calls(monkeypatch) -> list[list]:
    """The Flair sentences of every call that computes frozen transformer vectors, in call order."""
    from flair.embeddings import TransformerWordEmbeddings

    calls: list[list] = []
    original = TransformerWordEmbeddings._add_embeddings_internal

    def spy(self, flair_sentences):
        calls.append(list(flair_sentences))
        return original(self, flair_sentences)

    monkeypatch.setattr(TransformerWordEmbeddings, "_add_embeddings_internal", spy)
    return calls


def sentences() -> list[Sentence]:
    """Tweets whose word and subword counts disagree: some words are URLs of many subwords."""
    words = [w for s in read_conll(CORPUS / "train.txt") for w in s.tokens]
    rng = np.random.default_rng(0)
    out = []
    for k in range(70):
        n = int(rng.integers(1, 12))
        ws = [str(w) for w in rng.choice(words, n)]
        if k % 3 == 0:  # one word, many subwords
            ws[int(rng.integers(n))] = "http://t.co/" + "x7q" * int(rng.integers(1, 6))
        out.append(Sentence(ws))
    return out


def test_vectors_are_computed_once_a_sentence_in_subword_sorted_batches(tagger, embed_calls):
    tok = tagger.embeddings.tokenizer
    sents = sentences()
    count = {" ".join(s.tokens): len(tok(list(s.tokens), is_split_into_words=True)["input_ids"]) for s in sents}
    batch_size = 4
    out = list(fl.label(tagger, sents, LABELS, batch_size=batch_size))
    batches = [[count[" ".join(t.text for t in s)] for s in call] for call in embed_calls]
    assert len(out) == len(sents) and sum(len(b) for b in batches) == len(sents)  # each sentence embedded once
    group = batch_size * fl.EMBED_GROUP_BATCHES
    assert len(sents) > 2 * group  # several groups
    flat = [c for b in batches for c in b]
    for g in range(0, len(flat), group):  # within a group, longest subword sequences first
        assert flat[g : g + group] == sorted(flat[g : g + group], reverse=True)
    # the groups are the word-sorted label order cut every `group` sentences: subword padding can only shrink
    by_words = sorted(sents, key=lambda s: -len(s))
    padded_before = sum(max(count[" ".join(s.tokens)] for s in by_words[i : i + batch_size]) * len(
        by_words[i : i + batch_size]) for i in range(0, len(sents), batch_size))  # fmt: skip
    padded_now = sum(max(b) * len(b) for b in batches)
    assert padded_now < padded_before


def test_labels_equal_each_tweet_labelled_alone_up_to_float_rounding(tagger):
    """Sorting by subwords changes a tweet's padding, not its soft labels beyond float rounding, nor its tags."""
    sents = sentences()
    together = list(fl.label(tagger, sents, LABELS, temperature=2.0, batch_size=4))
    for sent, lab in zip(sents, together):
        alone = next(fl.label(tagger, [sent], LABELS, temperature=2.0, batch_size=1))
        np.testing.assert_allclose(lab.probs, alone.probs, atol=1e-5)
        assert lab.tags == alone.tags and lab.probs.shape == (len(sent), len(LABELS))


def test_shared_sentences_already_embedded_keep_their_vectors_and_the_rest_are_embedded_once(tagger, embed_calls):
    """Ensemble members share Flair sentences: vectors another member computed are reused as they are."""
    import torch

    from nerdistil.teacher.flair.sentences import to_flair

    sents = sentences()[:40]
    shared = to_flair(Sentence(s.tokens) for s in sents)
    with torch.no_grad():
        tagger.embeddings.embed(shared[:25:2])  # some already hold vectors, as after another member's labelling
    before = {i: torch.stack([t.get_embedding() for t in shared[i]]) for i in range(0, 25, 2)}
    embed_calls.clear()  # only the labelling's own calls
    out = list(fl.label(tagger, sents, LABELS, flair_sentences=shared, batch_size=4))
    assert len(out) == len(sents)
    embedded = [id(s) for call in embed_calls for s in call]
    assert sorted(embedded) == sorted(id(s) for i, s in enumerate(shared) if i not in before)  # each once
    for i, vectors in before.items():
        assert torch.equal(torch.stack([t.get_embedding() for t in shared[i]]), vectors)


@pytest.fixture
def strided_calls(monkeypatch) -> list:
    """One entry per call of Flair's strided combination: three for each batch on its strided path (input ids,
    hidden states, word ids)."""
    from flair.embeddings import transformer as ft

    calls: list = []
    original = ft.combine_strided_tensors
    monkeypatch.setattr(ft, "combine_strided_tensors", lambda *a: calls.append(1) or original(*a))
    return calls


def subword_vectors(part, sents: list[Sentence], flairs_path: bool = False) -> list:
    """Each sentence's frozen vectors from ``_embed_by_subwords`` (batches of 4); ``flairs_path``: with Flair's
    strided path for every batch, as before the fit test."""
    import contextlib

    import torch

    from nerdistil.teacher.flair.sentences import to_flair

    flair_sentences = to_flair(sents)
    with pytest.MonkeyPatch.context() as m, torch.no_grad():
        if flairs_path:
            m.setattr(fl, "_unstrided", lambda part, fits: contextlib.nullcontext())
        fl._embed_by_subwords([part], flair_sentences, 4)
    return [torch.stack([t.get_embedding() for t in s]) for s in flair_sentences]


def test_batches_that_fit_skip_flairs_strided_path_and_keep_every_vector_bitwise(tagger, strided_calls):
    """Flair's strided path (for sentences longer than the transformer's input) only where a batch needs it."""
    import torch

    part = tagger.embeddings
    tok = part.tokenizer
    fits = tok.model_max_length - tok.num_special_tokens_to_add()
    assert part.allow_long_sentences and part.stride == tok.model_max_length // 2  # as nerdistil builds it
    sents = [*sentences()[:11], Sentence(["http://t.co/x7qx7q"] * fits)]  # one sentence overflows the input
    assert len(tok(list(sents[-1].tokens), is_split_into_words=True, add_special_tokens=False)["input_ids"]) > fits
    ours = subword_vectors(part, sents)
    assert len(strided_calls) == 3  # one batch (the long sentence's) took the strided path: ids, states, word ids
    assert part.allow_long_sentences and part.stride == tok.model_max_length // 2  # restored
    strided_calls.clear()
    flairs = subword_vectors(part, sents, flairs_path=True)
    assert len(strided_calls) == 3 * 3  # all three batches
    assert all(torch.equal(a, b) for a, b in zip(ours, flairs))  # the same batches, the same vectors bitwise


def test_the_fit_test_holds_at_the_boundary(tagger, strided_calls):
    """A sentence of exactly the input's room takes the plain path, one subword more the strided one; both give
    Flair's vectors bitwise (an off-by-one would truncate the last words of the first or skip the second)."""
    import torch

    part = tagger.embeddings
    tok = part.tokenizer
    fits = tok.model_max_length - tok.num_special_tokens_to_add()
    one = next(w for s in sentences() for w in s.tokens if len(tok.tokenize(w)) == 1 and w.isalpha())
    for n, calls in ((fits, 0), (fits + 1, 3)):
        words = [one] * n
        assert len(tok(words, is_split_into_words=True, add_special_tokens=False)["input_ids"]) == n
        strided_calls.clear()
        (ours,) = subword_vectors(part, [Sentence(words)])
        assert len(strided_calls) == calls, n
        (flairs,) = subword_vectors(part, [Sentence(words)], flairs_path=True)
        assert ours.shape[0] == n and torch.equal(ours, flairs) and bool(ours[-1].abs().sum() > 0)


def test_flairs_settings_come_back_when_embedding_fails(tagger, monkeypatch):
    from flair.embeddings import TransformerWordEmbeddings

    from nerdistil.teacher.flair.sentences import to_flair

    def boom(self, sentences):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(TransformerWordEmbeddings, "_add_embeddings_internal", boom)
    part = tagger.embeddings
    stride = part.stride
    with pytest.raises(RuntimeError, match="out of memory"):
        fl._embed_by_subwords([part], to_flair(sentences()[:3]), 4)
    assert part.allow_long_sentences and part.stride == stride


def test_transformers_reading_neighbouring_sentences_are_left_to_flairs_own_batches(tiny_student):
    """A frozen encoder with ``use_context`` embeds a sentence with its batch's neighbours: not batched ahead."""
    from flair.embeddings import StackedEmbeddings, TransformerWordEmbeddings

    plain = fe.build_embeddings(str(tiny_student), [], [])
    context = TransformerWordEmbeddings(str(tiny_student), fine_tune=False, use_context=True)
    tuned = TransformerWordEmbeddings(str(tiny_student), fine_tune=True)
    assert fl._frozen_transformers(plain) == [plain]
    assert fl._frozen_transformers(context) == [] and fl._frozen_transformers(tuned) == []
    assert fl._frozen_transformers(StackedEmbeddings([context, plain])) == [plain]


def test_host_viterbi_gives_flairs_own_paths_and_restores_flairs_device(tagger, monkeypatch):
    import flair
    import torch

    from nerdistil.teacher.flair.sentences import to_flair

    batch = sorted(to_flair(sentences()[:16]), key=lambda s: -len(s))  # Flair packs: longest first
    device = flair.device
    with torch.no_grad():
        scores = tagger.forward(*tagger._prepare_tensors(batch))
        want_paths, want_all = tagger.viterbi_decoder.decode(scores, True, batch)
        got_paths, got_all = fl.host_viterbi(tagger, scores, True, batch)
    assert got_paths == want_paths and flair.device is device
    assert [[[(lab.value, lab.score) for lab in d] for d in s] for s in got_all] == [
        [[(lab.value, lab.score) for lab in d] for d in s] for s in want_all]  # fmt: skip

    def fail(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(tagger.viterbi_decoder), "decode", fail)
    with pytest.raises(RuntimeError, match="boom"):
        fl.host_viterbi(tagger, scores, False, batch)
    assert flair.device is device


def test_torchrun_processes_share_the_gpus_round_robin(monkeypatch):
    """More labelling processes than GPUs: LOCAL_RANK 5 of a 2-GPU machine labels on cuda:1."""
    import torch

    from nerdistil.trainer import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for rank, want in (("0", "cuda:0"), ("1", "cuda:1"), ("5", "cuda:1"), ("6", "cuda:0")):
        monkeypatch.setenv("LOCAL_RANK", rank)
        assert resolve_device("cuda") == torch.device(want) == resolve_device("auto")
    assert resolve_device("cuda:1") == torch.device("cuda:1")  # an explicit GPU is kept
