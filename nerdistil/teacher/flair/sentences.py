"""Nerdistil sentences as Flair sentences, and Flair's tags back as corpus BIO tags."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nerdistil.data.conll import Sentence, bioes_to_bio
from nerdistil.tags import bio_spans

TAG_TYPE = "ner"


def to_flair(sentences: Iterable[Sentence]) -> list:
    """Nerdistil sentences -> Flair sentences, gold BIO tags attached as spans when present."""
    from flair.data import Sentence as FlairSentence

    out = []
    for sent in sentences:
        fs = FlairSentence(list(sent.tokens))
        if len(fs) != len(sent.tokens):  # Flair must never re-tokenize: one Flair token a word
            raise RuntimeError(f"Flair changed the tokenization of sentence at line {sent.line}")
        if sent.tags:
            for etype, start, end in bio_spans(sent.tags):
                fs[start:end].add_label(TAG_TYPE, etype)
        out.append(fs)
    return out


def char_dictionary(sentences: Iterable[Sentence]):
    """A Flair character dictionary built from the corpus (Flair's default one is downloaded)."""
    from flair.data import Dictionary

    chars = Dictionary(add_unk=True)
    for sent in sentences:
        for token in sent.tokens:
            for ch in token:
                chars.add_item(ch)
    return chars


def teacher_tags(tagger) -> list[str]:
    """The tagger's tag list in index order (BIOES or BIO, with <START>/<STOP> for a CRF)."""
    return [t.decode() if isinstance(t, bytes) else t for t in tagger.label_dictionary.idx2item]


def bio_map(tags: Sequence[str], corpus_labels: Sequence[str]) -> dict[str, str]:
    """Teacher tag -> corpus BIO tag for decoded paths (unknown types and specials -> O)."""
    out = {}
    for tag in tags:
        try:
            bio = bioes_to_bio([tag])[0]
        except ValueError:
            bio = "O"
        out[tag] = bio if bio in corpus_labels else "O"
    return out


def flair_tags(tagger, batch: list[list[str]]) -> list[list[str]]:
    """Flair's own inference (Viterbi), spans turned back into BIO tags: the teacher as people run it."""
    from flair.data import Sentence

    sents = [Sentence(list(words)) for words in batch]
    tagger.predict(sents, mini_batch_size=max(1, len(sents)))
    out = []
    for s in sents:
        tags = ["O"] * len(s)
        for span in s.get_spans(tagger.label_type):
            idx = [t.idx - 1 for t in span.tokens]
            value = span.get_label(tagger.label_type).value
            tags[idx[0]] = f"B-{value}"
            for i in idx[1:]:
                tags[i] = f"I-{value}"
        out.append(tags)
    return out
