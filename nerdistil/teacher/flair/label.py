"""Soft labels from a Flair tagger: CRF posteriors by forward-backward at a temperature.

Batches are sorted longest first (Flair packs sequences); long sentences go in overlapping word windows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from nerdistil.data.conll import Sentence
from nerdistil.errors import UserError
from nerdistil.teacher.base import Labelled
from nerdistil.teacher.crf import crf_marginals, flair_chain, project, project_pairs, tag_projection
from nerdistil.teacher.flair import vectors
from nerdistil.teacher.flair.embeddings import all_static
from nerdistil.teacher.flair.sentences import bio_map, teacher_tags, to_flair
from nerdistil.teacher.flair.vectors import frozen_transformers as _frozen_transformers
from nerdistil.teacher.flair.vectors import unstrided as _unstrided

SOFT_LABELS = ("posterior", "flair", "hard")

# Sentences longer than MAX_WINDOW_WORDS are labelled in overlapping word windows of that many words,
# WINDOW_CONTEXT words of overlap on each side (see ``word_windows`` and ``label``), so the memory of
# labelling one sentence does not grow with its length.
MAX_WINDOW_WORDS = 256
WINDOW_CONTEXT = 32
WINDOW_BATCH_WORDS = 1024  # windows are labelled this many words a batch (4 windows), not ``batch_size`` windows
# Frozen transformer vectors are computed for this many label batches at a time, in batches sorted by subword
# count (see ``_embed_by_subwords``): word-sorted batches padded tweets' subwords by 45% on augmented WNUT-16.
EMBED_GROUP_BATCHES = 8


def word_windows(n: int, size: int | None = None, context: int | None = None) -> list[tuple[int, int, int, int]]:
    """The word windows that label a sentence of ``n`` words: ``(start, end, keep_from, keep_to)`` each.

    A sentence of at most ``size`` (default ``MAX_WINDOW_WORDS``) words is one window. A longer one
    gets windows of ``size`` words starting every ``size - 2 * context`` words (the last one ends
    at the sentence's end, so it may be shorter); consecutive windows overlap by ``2 * context``
    words. Each word keeps the labels of the window where it is most central, the one that sees
    most context on both sides of it (a sentence's own ends count as complete context): the
    overlap is split at its middle, so ``[keep_from, keep_to)`` ranges tile the sentence and every
    word keeps at least ``context`` words of context on either side, or the sentence's edge.
    """
    size = MAX_WINDOW_WORDS if size is None else size
    context = WINDOW_CONTEXT if context is None else context
    if n <= size:
        return [(0, n, 0, n)]
    if not 0 <= 4 * context <= size:  # overlaps of 2 * context words must not reach each other
        raise ValueError(f"window context {context} must be between 0 and a quarter of the window size {size}")
    stride = size - 2 * context
    spans = [(a, min(a + size, n)) for a in range(0, n - 2 * context, stride)]
    spans = spans[: next(k for k, (_, b) in enumerate(spans) if b == n) + 1]
    cuts = [0] + [(b - 1 + a_next) // 2 + 1 for (_, b), (a_next, _) in zip(spans, spans[1:])] + [n]
    return [(a, b, cuts[k], cuts[k + 1]) for k, (a, b) in enumerate(spans)]


def label(
    tagger, sentences: Sequence[Sentence], corpus_labels: Sequence[str], temperature: float = 1.0,
    batch_size: int = 32, kind: str = "posterior", decode_probs: bool = False, flair_sentences: list | None = None,
    edges: bool = False,
) -> Iterator[Labelled]:  # fmt: skip
    """Yield soft labels and Viterbi tags for each sentence, in input order.

    ``kind`` of soft label: ``posterior``, the CRF's forward-backward marginals at ``temperature``
    (taggers without a CRF: softmax(emissions / T)); ``flair``, Flair's own
    ``return_probabilities_for_all_classes`` scores (a softmax over Viterbi max-scores, not a
    posterior), sharpened or flattened to ``temperature`` as p^(1/T); ``hard``, the one-hot
    Viterbi path. ``decode_probs`` also returns the posteriors at T = 1 (an ensemble decodes
    through their mean: at T > 1 the flatter posteriors would over-predict entities). Batches are
    sorted longest first because Flair packs sequences. ``edges`` (``posterior`` only): also the CRF's
    marginals of adjacent tags at ``temperature``, projected onto corpus label pairs, ``Labelled.edges``
    (a word's pair row comes from the same window as its own row). ``flair_sentences`` (bare Flair copies of
    ``sentences``, as ``to_flair`` makes them) keep their word vectors for the caller: taggers that
    share an embeddings module (``share_embeddings``) then compute them once.

    A sentence longer than ``MAX_WINDOW_WORDS`` words is labelled in overlapping word windows
    (``word_windows``), each one a sentence of its own to the tagger (its own CRF, embeddings and
    ``<START>``/``<STOP>``), so memory does not grow with the sentence's length; its shared Flair
    copy, if any, is not used. Joining the windows: each word's soft-label row (and T = 1 row)
    is the one from the window where it is most central, which sees at least ``WINDOW_CONTEXT``
    words on both sides of it; the CRF posteriors are not renormalised across windows (each row is
    already a distribution). The tags are the windows' Viterbi paths spliced inside each overlap at
    the word nearest the middle where both paths give the same tag, so every step of the joined
    path is a step of one window's path (if they agree nowhere in the overlap, at the middle).
    ``hard`` rows are the one-hot joined path. Shorter sentences are labelled as they always were.
    """
    limit = MAX_WINDOW_WORDS  # the kind is checked by _label_batches, which every path goes through
    if all(len(s) <= limit for s in sentences):
        yield from _label_batches(tagger, sentences, corpus_labels, temperature, batch_size, kind, decode_probs,
                                  flair_sentences, edges=edges)  # fmt: skip
        return
    short = [i for i, s in enumerate(sentences) if len(s) <= limit]
    shared = None if flair_sentences is None else [flair_sentences[i] for i in short]
    short_out = _label_batches(tagger, [sentences[i] for i in short], corpus_labels, temperature, batch_size, kind,
                               decode_probs, shared, edges=edges)  # fmt: skip
    for sent in sentences:
        if len(sent) <= limit:
            yield next(short_out)
        else:
            yield _label_windowed(tagger, sent, corpus_labels, temperature, batch_size, kind, decode_probs, edges)


def _label_windowed(tagger, sent: Sentence, corpus_labels: Sequence[str], temperature: float, batch_size: int,
                    kind: str, decode_probs: bool, edges: bool = False) -> Labelled:  # fmt: skip
    """One long sentence labelled window by window and joined (the rules are in ``label``'s docstring)."""
    words, n = sent.tokens, len(sent.tokens)
    spans = word_windows(n)
    per_batch = max(1, min(batch_size, WINDOW_BATCH_WORDS // MAX_WINDOW_WORDS))
    # frozen vectors one batch of windows at a time, so at most WINDOW_BATCH_WORDS words of them are held
    parts = _label_batches(tagger, [Sentence(words[a:b]) for a, b, _, _ in spans], corpus_labels, temperature,
                           per_batch, kind, decode_probs, embed_group=1, edges=edges)  # fmt: skip
    probs = np.empty((n, len(corpus_labels)), dtype=np.float32)
    probs1 = np.empty_like(probs) if decode_probs else None
    pairs = np.empty((n - 1, len(corpus_labels), len(corpus_labels)), dtype=np.float32) if edges else None
    tags: list[str] = []
    prev_start, prev_tags = 0, []  # the window before, whose tags from word len(tags) on are not yet taken
    for k, ((a, _, keep_from, keep_to), lab) in enumerate(zip(spans, parts)):  # in order, one batch at a time
        if k % per_batch == 0:  # a batch was labelled: return what it freed to the system
            _release_freed_heap()
        probs[keep_from:keep_to] = lab.probs[keep_from - a : keep_to - a]
        if probs1 is not None:
            probs1[keep_from:keep_to] = lab.decode_probs[keep_from - a : keep_to - a]
        if pairs is not None:  # pair (w - 1, w) from word w's window; w - 1 lies in it (keep_from > a for k > 0)
            lo = max(keep_from, 1)
            pairs[lo - 1 : keep_to - 1] = lab.edges[lo - 1 - a : keep_to - 1 - a]
        if a > 0:  # splice the paths in the overlap [a, end of the window before)
            last = keep_from - 1  # the last word whose row came from the window before
            agree = [j for j in range(a, prev_start + len(prev_tags)) if prev_tags[j - prev_start] == lab.tags[j - a]]
            j = min(agree, key=lambda j: (abs(j - last), j)) if agree else last
            tags += prev_tags[len(tags) - prev_start : j + 1 - prev_start]
        prev_start, prev_tags = a, lab.tags
    tags += prev_tags[len(tags) - prev_start :]
    if len(tags) != n:  # cannot happen: the splices are in order
        raise RuntimeError(f"windowed labelling gave {len(tags)} tags for {n} words")
    if kind == "hard":
        index = {t: k for k, t in enumerate(corpus_labels)}
        probs[:] = 0
        probs[np.arange(n), [index[t] for t in tags]] = 1
    return Labelled(probs, tags, probs1, pairs)


@functools.cache
def _malloc_trim():
    """The C library's ``malloc_trim`` where it has one (glibc), else None (macOS, Windows, musl)."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _release_freed_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc; elsewhere nothing).

    After a large block is freed, glibc serves later large blocks from its heap instead of fresh
    mappings, and keeps what they leave free: labelling a 200,000-word line window by window grew
    the process by about 350 MB though nothing was kept. Trimming after each batch of windows
    holds it flat.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _embed_by_subwords(parts: Sequence, sentences: list, batch_size: int) -> None:
    """Compute frozen transformer vectors for Flair ``sentences`` in batches of similar subword counts.

    The tagger's batches are sorted by words (Flair packs its LSTM by them), but a transformer pads
    each batch to its longest subword sequence: a URL or a hashtag is one word and ten subwords.
    Batching by subword count first (counted with each part's own tokenizer) cut the subwords
    computed for augmented WNUT-16 tweets from 1.45 to 1.09 times the real ones; the tagger's
    forward then finds the vectors stored and skips them (Flair's ``embed`` skips embedded
    sentences). Sentences that already hold the vectors (shared between ensemble members) are left
    as they are. A vector can differ from the word-sorted one in the last float bits (another
    padding length), as it already did between batches.
    """
    for part in parts:
        todo = [s for s in sentences if len(s) and not part._everything_embedded([s])]
        if not todo:
            continue
        counts = part.tokenizer([[t.text for t in s] for s in todo], is_split_into_words=True,
                                add_special_tokens=False, verbose=False)["input_ids"]  # fmt: skip
        order = sorted(range(len(todo)), key=lambda k: -len(counts[k]))
        fits = part.tokenizer.model_max_length - part.tokenizer.num_special_tokens_to_add()
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            with _unstrided(part, len(counts[batch[0]]) <= fits):  # longest first
                part.embed([todo[k] for k in batch])


def host_viterbi(tagger, scores: tuple, all_classes: bool, batch: list) -> tuple[list, list]:
    """Flair's Viterbi decoding (``ViterbiDecoder.decode``) of one batch, run on the host with int lengths.

    Flair's decoder loops over words and sentences in Python: with the lengths as a tensor each step
    compares a tensor per sentence, and on a GPU each word's tag and confidence is a ``.item()`` that
    waits for the device. Decoding on the CPU (one copy of the batch's scores, Flair's tensors made
    there too) with the lengths as ints gives Flair's own paths; on a CPU only the ints change.
    """
    import flair

    features, lengths, transitions = scores
    device = flair.device
    flair.device = torch.device("cpu")  # where the decoder makes its score and backpointer tensors
    try:
        decoder = tagger.viterbi_decoder  # Flair's class's own decode, even while ``int_lengths_crf`` stands in
        return type(decoder).decode(decoder, (features.cpu(), lengths.tolist(), transitions.cpu()), all_classes, batch)
    finally:
        flair.device = device


def _batch_posteriors(
    tagger, scores, lengths, batch: list, temperature: float, kind: str, decode_probs: bool, edges: bool = False
) -> tuple[torch.Tensor, torch.Tensor, list[list[str]], torch.Tensor | None]:
    """One batch's soft labels (B, T, K) over the teacher's tags, at T = 1 (``marg1``), its paths and edges.

    ``edges``: the adjacent-tag marginals at T, (B, T - 1, K, K); else None.
    """  # fmt: skip
    pair = None
    if edges and not (tagger.use_crf and kind == "posterior"):
        raise UserError("edge marginals come from a Flair tagger with a CRF and soft-label kind posterior")
    if tagger.use_crf:
        features, lengths, transitions = scores
        features, transitions = features.float(), transitions.float()  # autocast may give fp16
        scores = (features, lengths, transitions)  # Viterbi below decodes the fp32 scores too
        stop = tagger.label_dictionary.get_idx_for_item("<STOP>")
        start_idx = tagger.label_dictionary.get_idx_for_item("<START>")
        chain = flair_chain(features, lengths, start_idx, transitions[stop], temperature, edges)
        marg = chain.log_unary.exp()
        pair = chain.log_edge.exp() if edges else None
        marg1 = marg
        if decode_probs and temperature != 1:  # a second forward-backward only when asked for
            marg1 = crf_marginals(features, lengths, start_idx, transitions[stop])
        decoded, _ = host_viterbi(tagger, scores, False, batch)
        paths = [[tag for tag, _ in sent] for sent in decoded]
    else:
        flat = torch.softmax(scores / temperature, dim=-1)
        flat1 = torch.softmax(scores, dim=-1) if decode_probs else flat
        marg = torch.zeros(len(batch), int(max(lengths)), flat.shape[-1])
        marg1 = torch.zeros_like(marg) if decode_probs else marg
        paths, offset = [], 0
        for b, n in enumerate(lengths.tolist()):
            marg[b, :n] = flat[offset : offset + n]
            if decode_probs:
                marg1[b, :n] = flat1[offset : offset + n]
            paths.append([teacher_tags(tagger)[k] for k in scores[offset : offset + n].argmax(-1).tolist()])
            offset += n
    if kind == "flair" and tagger.use_crf:
        _, all_tags = host_viterbi(tagger, scores, True, batch)
        marg = torch.zeros_like(marg)
        for b, sent in enumerate(all_tags):
            for t, dist in enumerate(sent):
                for lab in dist:
                    marg[b, t, tagger.label_dictionary.get_idx_for_item(lab.value)] = float(lab.score)
        marg = marg.clamp_min(1e-30) ** (1.0 / temperature) * (marg > 0)
        marg = marg / marg.sum(-1, keepdim=True).clamp_min(1e-30)
    elif kind == "hard":
        index = {tag: k for k, tag in enumerate(teacher_tags(tagger))}
        marg = torch.zeros_like(marg)
        for b, path in enumerate(paths):
            for t, tag in enumerate(path):
                marg[b, t, index[tag]] = 1.0
    return marg, marg1, paths, pair


def _label_batches(
    tagger, sentences: Sequence[Sentence], corpus_labels: Sequence[str], temperature: float = 1.0,
    batch_size: int = 32, kind: str = "posterior", decode_probs: bool = False, flair_sentences: list | None = None,
    embed_group: int = EMBED_GROUP_BATCHES, edges: bool = False,
) -> Iterator[Labelled]:  # fmt: skip
    """``label`` without windows: each sentence whole, in batches sorted longest first, yielded in input order.

    Frozen transformer vectors are computed ``embed_group`` batches ahead (``_embed_by_subwords``). Inside
    ``vectors.vector_cache`` (``teach``), a tagger whose embeddings are all frozen takes the vectors of the
    corpus's sentences from it, the very ones it trained on; other sentences (``--unlabeled``) are embedded here.
    """
    if kind not in SOFT_LABELS:
        raise UserError(f"unknown soft-label kind {kind!r}; use one of {', '.join(SOFT_LABELS)}")
    proj = tag_projection(teacher_tags(tagger), corpus_labels)
    bio_of = bio_map(teacher_tags(tagger), corpus_labels)
    tagger.eval()
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    frozen = _frozen_transformers(tagger.embeddings)
    cache = vectors.active() if frozen and all_static(tagger.embeddings) else None
    group = batch_size * embed_group
    results: dict[int, Labelled] = {}
    nxt = 0
    fsents: dict[int, object] = {}
    for start in range(0, len(order), batch_size):
        # no yield inside no_grad: a generator suspended there would leave gradients off for its caller
        with torch.no_grad():
            if start % group == 0:  # the next group's Flair sentences, frozen vectors computed ahead
                gidx = order[start : start + group]
                made = to_flair(Sentence(sentences[i].tokens) for i in gidx) if flair_sentences is None else None
                fsents = {i: flair_sentences[i] if made is None else made[k] for k, i in enumerate(gidx)}
                if cache is not None:
                    cache.attach(frozen, [sentences[i].tokens for i in gidx], [fsents[i] for i in gidx])
                _embed_by_subwords(frozen, list(fsents.values()), batch_size)
            idx = order[start : start + batch_size]
            batch = [fsents.pop(i) for i in idx]
            sentence_tensor, lengths = tagger._prepare_tensors(batch)
            scores = tagger.forward(sentence_tensor, lengths)
            # the CRF, its posteriors and the projection in fp32 even under --mixed-precision (autocast would
            # run their matmuls in fp16/bf16)
            with torch.autocast(sentence_tensor.device.type, enabled=False):
                marg, marg1, paths, pair = _batch_posteriors(tagger, scores, lengths, batch, temperature, kind,
                                                             decode_probs, edges)  # fmt: skip
                probs = project(marg, proj).cpu().numpy()
                probs1 = project(marg1, proj).cpu().numpy() if decode_probs else None
                pairs = project_pairs(pair, proj).cpu().numpy() if pair is not None else None
            for b, i in enumerate(idx):
                n = len(sentences[i])
                one1 = None if probs1 is None else probs1[b, :n].astype(np.float32)
                pair_b = None if pairs is None else pairs[b, : max(n - 1, 0)].astype(np.float32)
                results[i] = Labelled(probs[b, :n].astype(np.float32), [bio_of[t] for t in paths[b]], one1, pair_b)
            if flair_sentences is None:
                for s in batch:
                    s.clear_embeddings()
        while nxt in results:  # yield in input order as soon as possible
            yield results.pop(nxt)
            nxt += 1
