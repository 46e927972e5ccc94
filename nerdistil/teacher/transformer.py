"""A Hugging Face token classifier as teacher: any fine-tuned NER model, a folder or a hub name.

Soft labels are per word: the softmax at T of the word's first-subword logits (a CRF student's CRF marginals at
T, and its pair marginals when asked), summed onto the
corpus's BIO labels (``crf.tag_projection``: the same name matching as for Flair, BIOES folded into
BIO, a corpus label the model cannot produce a one-line error). Stored tags are the valid-BIO Viterbi
path through the T = 1 probabilities. The word-level contract lets teacher and student use different
tokenizers (mpnet's and MiniLM's): the student aligns the rows to its own subwords.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from nerdistil import tokclf
from nerdistil.crf import forward_backward
from nerdistil.data.conll import Sentence
from nerdistil.errors import UserError
from nerdistil.tags import decode_posteriors
from nerdistil.teacher.base import Labelled, Teacher
from nerdistil.teacher.crf import project_pairs, tag_projection


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _softmax_posteriors(logits: np.ndarray, temperature: float, edges: bool) -> tuple[np.ndarray, None]:
    """A softmax head's per-word distributions at T (no pair marginals: its words are independent)."""
    return _softmax(logits.astype(np.float64) / temperature), None


def _renormalised(p: np.ndarray) -> np.ndarray:
    return p / p.sum(-1, keepdims=True)


class TransformerTeacher(Teacher):
    """A token classifier's first-subword softmax at T, mapped onto the corpus labels."""

    kind = "transformer"

    def __init__(self, model, tokenizer, identity: dict) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.identity = identity
        self.params = tokclf.count_parameters(model)
        self.edge_marginals = getattr(model, "crf", None) is not None  # a CRF student as teacher

    @classmethod
    def load(cls, source: str, sha256: str | None = None) -> TransformerTeacher:
        """A token-classifier folder (checked file by file) or a hub name (cache or network)."""
        from transformers import AutoModelForTokenClassification

        from nerdistil.align import load_tokenizer

        if Path(source).expanduser().is_dir():
            model, tokenizer, _ = tokclf.load_classifier(Path(source).expanduser(), role="teacher")
            identity = {"kind": cls.kind, "source": str(Path(source).expanduser().resolve()),
                        "sha256": sha256 or tokclf.sha256_weights(Path(source).expanduser())}  # fmt: skip
            return cls(model, tokenizer, identity)
        try:
            model = AutoModelForTokenClassification.from_pretrained(source)
            tokenizer = load_tokenizer(source)
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"cannot load the transformer teacher {source!r} ({first}); give a model folder or a "
                            "hub name you can reach") from None  # fmt: skip
        return cls(model, tokenizer, {"kind": cls.kind, "source": source, "sha256": None})

    def to(self, device) -> TransformerTeacher:
        """The model on ``device``; ``tokclf`` feeds each batch there and brings the logits back once."""
        self.model.to(device)
        return self

    def label(self, sentences: Sequence[Sentence], corpus_labels: Sequence[str], temperature: float = 1.0,
              kind: str = "posterior", decode_probs: bool = False, batch_size: int = 32, *, edges: bool = False,
              ) -> Iterator[Labelled]:  # fmt: skip
        """Per word: softmax(logits / T) projected onto ``corpus_labels``; tags: the valid-BIO Viterbi path.

        A CRF student used as teacher (``model.crf``): its CRF marginals at T instead of the softmax (forward-
        backward of ``nerdistil.crf``), and with ``edges`` its adjacent-tag marginals; tags: the valid-BIO path
        through its T = 1 marginals.
        """
        self.check_kind(kind, edges)
        proj = tag_projection(self.tags, corpus_labels)  # (K, L)
        index = {label: j for j, label in enumerate(corpus_labels)}
        words = [s.tokens for s in sentences]
        posteriors = self._crf_posteriors if self.edge_marginals else _softmax_posteriors
        at = 1.0 if kind == "hard" else temperature  # hard labels are the T = 1 path, one-hot
        for logits in tokclf.word_logits(self.model, self.tokenizer, words, len(self.tags), batch_size):
            probs, pairs = posteriors(logits, at, edges)  # one forward-backward gives both (a CRF)
            probs = _renormalised(probs @ proj)
            p1 = probs if at == 1 else _renormalised(posteriors(logits, 1.0, False)[0] @ proj)
            tags = decode_posteriors(p1, corpus_labels)
            if kind == "hard":
                probs = np.zeros_like(p1)
                probs[np.arange(len(tags)), [index[t] for t in tags]] = 1.0
            if pairs is not None:
                pairs = project_pairs(torch.from_numpy(pairs), proj).numpy()
            yield Labelled(probs.astype(np.float32), tags, p1.astype(np.float32) if decode_probs else None,
                           None if pairs is None else pairs.astype(np.float32))  # fmt: skip

    def _crf_posteriors(self, logits: np.ndarray, temperature: float, edges: bool):
        """A CRF head's (words, K) marginals at T and, with ``edges``, its (words - 1, K, K) pair marginals."""
        n, K = logits.shape
        if n == 0:
            return np.zeros((0, K)), (np.zeros((0, K, K)) if edges else None)
        head = self.model.crf
        with torch.no_grad():
            e = torch.from_numpy(logits.astype(np.float32)).unsqueeze(0).to(head.transitions.device)
            chain = forward_backward(*head.potentials(e, temperature), [n], edges)
        pairs = chain.log_edge[0].exp().double().cpu().numpy() if edges else None
        return chain.log_unary[0].exp().double().cpu().numpy(), pairs

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[str]]:
        """The valid-BIO Viterbi over each window's per-word log-probabilities (as ``evaluate`` scores students)."""
        if all(t == "O" or t[:2] in ("B-", "I-") for t in self.tags):
            return tokclf.predict(self.model, self.tokenizer, sentences, self.tags, batch_size)
        return [lab.tags for lab in self.label([Sentence(list(s)) for s in sentences], self.labels)]  # BIOES
