"""The student model: a pretrained encoder with nerdistil's label set on top, optionally fewer layers.

Loading a trained student (or any token classifier) is ``nerdistil.tokclf.load``: one loader for the
student, the transformer teacher, ``evaluate`` and ``bench-latency``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from nerdistil.align import load_tokenizer
from nerdistil.assets import resolve_model_name
from nerdistil.crf import attach_head
from nerdistil.errors import UserError
from nerdistil.layers import evenly_spaced, num_layers, select_layers

log = logging.getLogger(__name__)


def keep_layers(model: torch.nn.Module, k: int) -> list[int]:
    """Keep ``k`` evenly spaced transformer layers of ``model`` (DistilBERT's recipe); returns their indices."""
    return select_layers(model, evenly_spaced(num_layers(model), k))


def build_student(name: str, labels: Sequence[str], layers: int | None = None, head: str = "softmax"):
    """A token classifier with our label set on top of a pretrained encoder; returns (model, tokenizer).

    ``head="crf"`` adds a CRF layer over the words (``model.crf``, ``nerdistil.crf.CrfHead``).
    """
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
    if head == "crf":
        attach_head(model, labels)
    return model, tokenizer
