"""The Flair teacher: a SequenceTagger (BiLSTM-CRF) trained here or loaded from a file, behind ``Teacher``.

Loading a Flair model file unpickles it, which can run arbitrary code: ``base.load_teacher`` loads
only files nerdistil wrote or the user trusts.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from nerdistil.config import TeachConfig
from nerdistil.data.conll import Sentence
from nerdistil.errors import UserError
from nerdistil.teacher.base import Labelled, Teacher
from nerdistil.teacher.flair import quiet_console, vectors
from nerdistil.teacher.flair.embeddings import (
    EmbeddingCache,
    all_static,
    build_embeddings,
    fine_tuned,
    share_embeddings,
)
from nerdistil.teacher.flair.label import SOFT_LABELS, host_viterbi, label
from nerdistil.teacher.flair.sentences import TAG_TYPE, flair_tags, teacher_tags, to_flair
from nerdistil.teacher.flair.vectors import frozen_transformers


def train_teacher(train: list[Sentence], dev: list[Sentence], cfg: TeachConfig, work_dir: Path,
                  cache: EmbeddingCache | None = None, types: Sequence[str] = (), device=None):  # fmt: skip
    """Train a Flair tagger with a CRF on train, select the best epoch on dev; returns (tagger, model file).

    Frozen embeddings get a BiLSTM-CRF trained with SGD; fine-tuned ones (``minilm-ft``) a
    linear-CRF head trained with AdamW together with the transformer. With a ``cache``, frozen
    embeddings and their vectors are taken from it (filled by the first member that trains). Embeddings
    that are all frozen take their transformer parts' vectors from ``vectors.active()`` (``teach``'s
    corpus, maybe from disk), else from a ``vectors.VectorCache`` of ``train`` and ``dev``; either way
    computed in eval mode. (Flair itself computes them in the first epoch, with the tagger and so the
    frozen transformer in train mode: one draw of its dropout, then reused in every epoch.) Entity
    ``types`` missing from ``train`` (a cross-fit fold without a rare type) still get tags, so every
    member predicts the corpus's whole label set.
    """
    import flair
    from flair.data import Corpus
    from flair.datasets import FlairDatapointDataset
    from flair.models import SequenceTagger
    from flair.trainers import ModelTrainer

    quiet_console(cfg.verbose)
    if device is not None:
        flair.device = device  # every tensor Flair makes goes there
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
    frozen = frozen_transformers(embeddings) if all_static(embeddings) else []
    if frozen:  # the frozen vectors in eval mode, once a corpus: Flair's training finds them and never embeds
        _vector_cache(train + dev, cache).attach(frozen, [s.tokens for s in train + dev], f_train + f_dev)
    tuned = fine_tuned(cfg.embeddings)
    tagger = SequenceTagger(
        hidden_size=cfg.hidden_size, embeddings=embeddings, tag_dictionary=tag_dict, tag_type=TAG_TYPE,
        use_crf=True, tag_format="BIOES", use_rnn=not tuned, reproject_embeddings=not tuned,
        word_dropout=cfg.word_dropout, locked_dropout=cfg.locked_dropout,
    )  # fmt: skip
    trainer = ModelTrainer(tagger, corpus)
    common = {"mini_batch_size": cfg.batch_size, "max_epochs": cfg.epochs, "save_final_model": False,
              "create_file_logs": True, "use_amp": cfg.mixed_precision != "no"}  # fmt: skip
    with int_lengths_crf(tagger), warnings.catch_warnings():
        # Flair's own call of torch.cuda.amp.GradScaler (deprecated in torch): not the user's to fix
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler.*")
        if tuned:  # AdamW with warm-up and linear decay; every epoch scored on dev, the best one kept
            trainer.fine_tune(str(work_dir), learning_rate=cfg.fine_tune_lr, use_final_model_for_eval=False,
                              embeddings_storage_mode="none", **common)  # fmt: skip
        else:  # SGD with annealing on plateaus; frozen vectors attached above, or Flair computes and keeps them
            # on a GPU the cached vectors stay there: moving each token's vector to the device every batch was
            # most of a GPU epoch (261,816 single-tensor copies in a 4-epoch profile)
            storage = "gpu" if flair.device.type == "cuda" else "cpu"
            trainer.train(str(work_dir), learning_rate=cfg.learning_rate, patience=cfg.patience,
                          embeddings_storage_mode=storage, **common)  # fmt: skip
    best = work_dir / "best-model.pt"
    if not best.is_file():  # no dev improvement was ever recorded; keep the last state
        tagger.save(best)
    tagger = SequenceTagger.load(best)
    if cache is None or cache.embeddings is not embeddings:
        for s in f_train + f_dev:
            s.clear_embeddings()
    return tagger, best


def _vector_cache(sentences: list[Sentence], cache: EmbeddingCache | None) -> vectors.VectorCache:
    """The run's ``vectors.active()`` cache if it holds ``sentences``; else one of them (kept in ``cache``)."""
    words = [s.tokens for s in sentences]
    for held in (vectors.active(), cache.vectors if cache is not None else None):
        if held is not None and held.covers(words):
            return held
    made = vectors.VectorCache(None, words)
    if cache is not None:
        cache.vectors = made
    return made


@contextlib.contextmanager
def int_lengths_crf(tagger) -> Iterator[None]:
    """While ``tagger`` trains: Flair's CRF loss and Viterbi decoding, step for step, looping over int lengths.

    Flair's ``ViterbiLoss`` loops over word steps and compares every sentence's length as a 0-d
    tensor at each step (thousands of tiny tensor operations a batch), and the per-epoch dev
    evaluation's Viterbi decoding waits for the device twice a word on a GPU. With those loops over
    ints (Flair's target formatting still gets its tensor; the decoding runs on the host, as in
    labelling) the loss, its gradients and the paths are Flair's own, bitwise on a CPU (tested, and
    a whole training run), so a teacher trains exactly as before, only faster. Set on the tagger's
    loss and decoder objects and removed afterwards: the saved model holds nothing of it (Flair
    saves the weights and settings, not these objects).
    """
    from flair.models.sequence_tagger_utils.viterbi import ViterbiLoss

    loss, decoder = tagger.loss_function, tagger.viterbi_decoder
    if not isinstance(loss, ViterbiLoss):  # a tagger without a CRF: nothing to change
        yield
        return
    loss.forward = functools.partial(_viterbi_loss, loss)
    decoder.decode = functools.partial(host_viterbi, tagger)
    try:
        yield
    finally:
        del loss.forward, decoder.decode


def _viterbi_loss(loss, features_tuple: tuple, targets: torch.Tensor) -> torch.Tensor:
    """Flair 0.15's ``ViterbiLoss.forward``, the same operations in the same order, with the lengths as ints."""
    import flair
    from torch.nn.utils.rnn import pack_padded_sequence

    features, lengths_tensor, transitions = features_tuple
    lengths = lengths_tensor.tolist()
    batch_size, seq_len = features.size(0), features.size(1)
    targets, matrix_indices = loss._format_targets(targets, lengths_tensor)
    matrix_indices = torch.tensor(matrix_indices, dtype=torch.long).unsqueeze(2).to(flair.device)
    scores_at_targets = torch.gather(features.view(batch_size, seq_len, -1), 2, matrix_indices)
    scores_at_targets = pack_padded_sequence(scores_at_targets, lengths_tensor, batch_first=True)[0]
    to_stop = transitions[np.repeat(loss.stop_tag, batch_size), [t[n - 1] for t, n in zip(targets, lengths)]]
    gold_score = scores_at_targets.sum() + to_stop.sum()
    scores_upto_t = torch.zeros(batch_size, loss.tagset_size, device=flair.device, dtype=features.dtype)
    for t in range(max(lengths)):
        b = sum(n > t for n in lengths)  # the batch is sorted longest first: the sentences still running
        if t == 0:
            scores_upto_t[:b] = scores_upto_t[:b] + features[:b, t, :, loss.start_tag]
        else:
            scores_upto_t[:b] = loss._log_sum_exp(features[:b, t, :, :] + scores_upto_t[:b].unsqueeze(1), dim=2)
    all_paths_scores = loss._log_sum_exp(scores_upto_t + transitions[loss.stop_tag].unsqueeze(0), dim=1).sum()
    return all_paths_scores - gold_score


def load_tagger(path: str | Path):
    """Load a Flair SequenceTagger model file (a pickle: ``base.load_teacher`` checked trust first)."""
    from flair.models import SequenceTagger

    quiet_console()
    path = Path(path)
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


class FlairTeacher(Teacher):
    """A Flair SequenceTagger: CRF posteriors by forward-backward (or Flair's scores, or its Viterbi path)."""

    kind = "flair"
    pickled = True
    soft_label_kinds = SOFT_LABELS
    edge_marginals = True
    decoding = "CRF Viterbi"

    def __init__(self, tagger, identity: dict) -> None:
        self.tagger = tagger.eval()
        self.tags = teacher_tags(tagger)
        self.identity = identity
        self.params = sum(p.numel() for p in tagger.parameters())

    @classmethod
    def load(cls, source: str, sha256: str | None = None) -> FlairTeacher:
        """A tagger file (trust checked by ``base.load_teacher``)."""
        return cls(load_tagger(source), {"kind": cls.kind, "source": str(Path(source).resolve()), "sha256": sha256})

    def label(self, sentences: Sequence[Sentence], corpus_labels: Sequence[str], temperature: float = 1.0,
              kind: str = "posterior", decode_probs: bool = False, batch_size: int = 32,
              flair_sentences: list | None = None, *, edges: bool = False) -> Iterator[Labelled]:  # fmt: skip
        """See ``flair.label.label``; ``flair_sentences`` carry word vectors shared between members."""
        return label(self.tagger, sentences, corpus_labels, temperature, batch_size, kind, decode_probs,
                     flair_sentences, edges=edges)  # fmt: skip

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[str]]:
        """Flair's own inference (``SequenceTagger.predict``, Viterbi): the teacher as people run it."""
        return [tags for s in range(0, len(sentences), batch_size)
                for tags in flair_tags(self.tagger, [list(w) for w in sentences[s : s + batch_size]])]  # fmt: skip

    def to(self, device) -> FlairTeacher:
        """Flair places every tensor it makes on ``flair.device``: set it, and move the tagger there."""
        import flair

        flair.device = device
        self.tagger.to(device)
        return self

    def share_key(self) -> object:
        """Members with one embeddings module label together."""
        return id(self.tagger.embeddings)

    @classmethod
    def prepare_ensemble(cls, teachers: Sequence[Teacher]) -> int:
        """Members on one frozen encoder point at one embeddings module (``share_embeddings``)."""
        return share_embeddings([t.tagger for t in teachers])  # type: ignore[attr-defined]

    @classmethod
    def label_group(cls, teachers, batch, subsets, corpus_labels, temperature, kind, decode_probs, batch_size=32,
                    edges=False):  # fmt: skip
        """Members sharing an encoder embed each sentence once: one set of Flair sentences for all."""
        if len(teachers) == 1:
            return super().label_group(teachers, batch, subsets, corpus_labels, temperature, kind, decode_probs,
                                       batch_size, edges)  # fmt: skip
        shared = to_flair(Sentence(s.tokens) for s in batch)
        try:
            return [list(t.label([batch[i] for i in sub], corpus_labels, temperature, kind, decode_probs,
                                 batch_size, flair_sentences=[shared[i] for i in sub], edges=edges))
                    for t, sub in zip(teachers, subsets)]  # fmt: skip
        finally:
            for s in shared:
                s.clear_embeddings()


class FlairTrainer:
    """Trains ensemble members one after another; frozen embeddings and their vectors are computed once."""

    def __init__(self, device=None) -> None:
        self.cache = EmbeddingCache()
        self.device = device

    def train(self, train: list[Sentence], dev: list[Sentence], cfg: TeachConfig, work_dir: Path,
              types: Sequence[str] = ()) -> tuple[FlairTeacher, Path]:  # fmt: skip
        """One member: (teacher, its best-model file in ``work_dir``)."""
        tagger, best = train_teacher(train, dev, cfg, work_dir, self.cache, types, self.device)
        return FlairTeacher(tagger, {"kind": FlairTeacher.kind}), best

    def corpus_vectors(self, setting: str, sentences: Iterable[Sequence[str]]) -> contextlib.AbstractContextManager:
        """A block in which a frozen encoder's vectors of the corpus ``sentences`` are computed once.

        Every member, fold, epoch and the labelling share them; ``setting`` says where they are kept on
        disk (``vectors.vector_cache``).
        """
        return vectors.vector_cache(setting, sentences)

    def close(self) -> None:
        """Drop the cached Flair sentences (the corpus's vectors live until ``corpus_vectors``' block ends)."""
        self.cache.clear()
