"""Inference with any Hugging Face token classifier over words: the student's and a transformer teacher's.

One loader (``load``, with one-line errors for every broken folder), one batching loop over word
windows (``window_logits``), and two readings of it: per-word logits for soft labels
(``word_logits``) and valid-BIO tags (``predict``). Shared by the student and teacher packages, so
neither imports the other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from nerdistil.align import Collator, Window, first_subword_positions, load_tokenizer, windows
from nerdistil.crf import attach_head, read_head
from nerdistil.errors import UserError
from nerdistil.tags import bio_scores, bio_transitions, viterbi

log = logging.getLogger(__name__)


def check_folder(path: str | Path, role: str = "student") -> Path:
    """A trained token-classifier folder (a student, or a teacher: ``role``), checked without loading weights.

    Every way a folder can be broken gives ``path: what is wrong; what to do`` instead of a traceback.
    """
    import json

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"no such {role} folder; pass the --out folder of `nerdistil distil` or `finetune`", path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"not a {role} model folder (no config.json); pass a distil/finetune --out folder", path)
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"config.json is not valid JSON ({e}); retrain or restore the folder", path) from None
    if not isinstance(cfg, dict) or not any(str(a).endswith("ForTokenClassification")
                                            for a in cfg.get("architectures") or []):  # fmt: skip
        raise UserError("the model has no token-classification head (config.json names no *ForTokenClassification "
                        "architecture); pass a distil/finetune --out folder", path)  # fmt: skip
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise UserError(f"the {role} folder has no weights (model.safetensors); retrain or restore it", path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise UserError(f"the {role} folder has no tokenizer; save one with tokenizer.save_pretrained", path)
    from safetensors import SafetensorError, safe_open

    for weights in sorted(path.glob("*.safetensors")):  # the header and the file's size, without reading tensors
        try:
            with safe_open(str(weights), framework="np"):
                pass
        except (SafetensorError, OSError) as e:
            raise UserError(f"{weights.name} is damaged ({str(e).splitlines()[0]}); retrain or restore the folder",
                            path) from None  # fmt: skip
    return path


def load_classifier(path: str | Path, role: str = "student"):
    """The one loader of a trained token-classifier folder: (model in eval mode, tokenizer, labels)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForTokenClassification

    path = check_folder(path, role)
    try:
        model = AutoModelForTokenClassification.from_pretrained(path)
        tokenizer = load_tokenizer(str(path))
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load the {role} ({first}); the folder is damaged: retrain or restore it",
                        path) from None  # fmt: skip
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    scores = read_head(path)
    if scores is not None:  # a CRF student: its transitions decode it (``predict``)
        attach_head(model, labels, scores)
    return model.eval(), tokenizer, labels


def sha256_weights(folder: Path) -> str:
    """One SHA-256 over a model folder's weight files (name and content, in name order): its identity."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted([*folder.glob("*.safetensors"), *folder.glob("pytorch_model*.bin")]):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    return h.hexdigest()


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def window_logits(model, tokenizer, sentences: Sequence[Sequence[str]], num_labels: int, batch_size: int = 32,
                  max_length: int | None = None, pad_to: int | None = None,
                  sort: bool = True) -> Iterator[tuple[Window, list[int], np.ndarray]]:  # fmt: skip
    """Run the model over every sentence's word windows; yield (window, its words, (words, L) float32 logits).

    The logits are each word's first subword's. Windows of a sentence are disjoint, so every word
    comes from exactly one window. ``sort`` batches similar lengths together (little padding);
    ``pad_to`` pads every batch to a fixed length (to measure what fixed padding costs).
    """
    if hasattr(model, "eval"):
        model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    wins = [w for i, words in enumerate(sentences) for w in windows(tokenizer, words, i, None, max_length)]
    if sort:
        wins.sort(key=lambda w: len(w.input_ids))
    collate = Collator(tokenizer.pad_token_id, num_labels, pad_to)
    for s in range(0, len(wins), batch_size):
        chunk = wins[s : s + batch_size]
        batch = collate([(w, None) for w in chunk])
        with torch.no_grad():  # no yield inside no_grad: it would leave gradients off for the caller
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            logits = out.logits.float().cpu().numpy()  # (B, T, L)
        for b, w in enumerate(chunk):
            first = first_subword_positions(w.word_ids)  # word -> position
            words = sorted(first)
            yield w, words, logits[b, [first[i] for i in words]]


def word_logits(model, tokenizer, sentences: Sequence[Sequence[str]], num_labels: int, batch_size: int = 32,
                max_length: int | None = None) -> list[np.ndarray]:  # fmt: skip
    """One (n_words, L) float32 logit matrix a sentence, in input order; no word is left without a row."""
    out = [np.full((len(s), num_labels), np.nan, dtype=np.float32) for s in sentences]
    for w, words, logits in window_logits(model, tokenizer, sentences, num_labels, batch_size, max_length):
        out[w.sid][words] = logits
    for i, m in enumerate(out):
        if np.isnan(m).any():  # never silently drop a word
            raise RuntimeError(f"sentence {i}: some words got no logits")
    return out


def predict(model, tokenizer, sentences: Sequence[Sequence[str]], labels: Sequence[str], batch_size: int = 32,
            max_length: int | None = None, pad_to: int | None = None, sort: bool = True,
            constrained: bool = True, crf=None) -> list[list[str]]:  # fmt: skip
    """BIO tags for every word of every sentence, from each word's first-subword log-probabilities.

    With ``constrained`` (the default) the tags are the most likely *valid* BIO sequence under the
    model's per-word log-probabilities (Viterbi over each window; I-X only after B-X or I-X), so the
    decoder never emits a broken entity; without it, the per-word argmax. A CRF student (``model.crf``, or
    ``crf`` = its (transitions, start, end) for a model without it, e.g. an ONNX one) adds its learned
    transition scores to the path, as the exported graph does. Works for PyTorch and ONNX Runtime (Optimum)
    token classifiers alike.
    """
    out: list[list[str | None]] = [[None] * len(s) for s in sentences]
    allowed = bio_transitions(labels) if constrained else None
    if crf is None and getattr(model, "crf", None) is not None:
        crf = model.crf.numpy_scores()
    scores = bio_scores(allowed, crf) if allowed is not None else None
    for w, words, logits in window_logits(model, tokenizer, sentences, len(labels), batch_size, max_length, pad_to,
                                          sort):  # fmt: skip
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        path = viterbi(logp, *scores) if scores is not None else logp.argmax(-1).tolist()
        for j, word in enumerate(words):
            out[w.sid][word] = labels[path[j]]
    for i, tags in enumerate(out):
        if any(t is None for t in tags):  # never silently drop a word
            raise RuntimeError(f"sentence {i}: {tags.count(None)} word(s) got no prediction")
    return out  # type: ignore[return-value]
