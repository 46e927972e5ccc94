"""The Flair BiLSTM-CRF teacher: model, embeddings, sentences and CRF-posterior labelling."""

from __future__ import annotations

import logging
import os
import re

# what Flair's console log keeps by default: warnings and errors, and at most one progress line a minute made of
# its epoch and dev lines; per-iteration lines, the model dump, the training-parameter listing, "Test data not
# provided setting final score to 0" (nerdistil scores test itself) and "SequenceTagger predicts: Dictionary with
# 43 tags" go to each member's training.log only
_EPOCH = re.compile(r"^EPOCH (\d+) done: loss ([0-9.eE+-]+)")
_DEV = re.compile(r"^DEV : loss ([0-9.eE+-]+) - f1-score \(micro avg\)\s+([0-9.]+)")


class _Quiet(logging.Filter):
    """Drops Flair's chatty INFO lines from the console unless verbose (``teach --verbose``, NERDISTIL_VERBOSE=1).

    A teacher's epochs become one line a minute at most (``teacher epoch 7: loss ..., dev F1 ...``), so a
    3-member, 20-epoch ensemble logs about a dozen lines, not 180.
    """

    verbose = os.environ.get("NERDISTIL_VERBOSE") == "1"
    every_s = 60.0

    def __init__(self) -> None:
        super().__init__()
        self.epoch: tuple[str, str] | None = None
        self.last = -float("inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno >= logging.WARNING or not record.name.startswith("flair"):
            return True
        text = record.getMessage().lstrip()
        if m := _EPOCH.match(text):
            self.epoch = (m.group(1), m.group(2))
            return False
        m = _DEV.match(text)
        if m is None or self.epoch is None or record.created - self.last < self.every_s:
            return False
        self.last = record.created
        record.msg, record.args = (f"teacher epoch {self.epoch[0]}: loss {float(self.epoch[1]):.4f}, dev loss "
                                   f"{float(m.group(1)):.4f}, dev F1 {float(m.group(2)):.4f}"), ()  # fmt: skip
        return True


_QUIET = _Quiet()


def quiet_console(verbose: bool | None = None) -> None:
    """Put the filter on Flair's console handlers (not its training.log); ``verbose`` keeps every line.

    Flair's own progress bars (its dev evaluation each epoch, its corpus statistics) are drawn only on a terminal:
    in a log file they were 60 lines of ``0/4 [00:00<?, ?it/s]`` a teacher run.
    """
    if verbose is not None:
        _Quiet.verbose = verbose or os.environ.get("NERDISTIL_VERBOSE") == "1"
    for handler in logging.getLogger("flair").handlers:
        if type(handler) is logging.StreamHandler and _QUIET not in handler.filters:
            handler.addFilter(_QUIET)
    _terminal_only_bars()


def _terminal_only_bars() -> None:
    """Flair's ``Tqdm.tqdm`` with ``disable=None`` (tqdm: no bar where the stream is not a terminal) unless verbose."""
    from flair.file_utils import Tqdm

    if getattr(Tqdm.tqdm, "nerdistil", False):
        return
    original = Tqdm.tqdm

    def tqdm(*args, **kwargs):
        if not _Quiet.verbose:
            kwargs["disable"] = True if kwargs.get("disable") else None
        return original(*args, **kwargs)

    tqdm.nerdistil = True  # type: ignore[attr-defined]
    Tqdm.tqdm = staticmethod(tqdm)  # type: ignore[method-assign]
