"""The Flair BiLSTM-CRF teacher: model, embeddings, sentences and CRF-posterior labelling."""

from __future__ import annotations

import logging
import os
import re

# what Flair's console log keeps by default: one summary line per epoch and its dev score, warnings and errors;
# per-iteration lines, the model dump, the training-parameter listing, "Test data not provided setting final score
# to 0" (nerdistil scores test itself) and "SequenceTagger predicts: Dictionary with 43 tags" go to its file log only
_KEEP = re.compile(r"^(EPOCH \d+ done|DEV :|.*epochs without improvement|Loading model from best epoch)")


class _Quiet(logging.Filter):
    """Drops Flair's chatty INFO lines from the console unless verbose (``teach --verbose``, NERDISTIL_VERBOSE=1)."""

    verbose = os.environ.get("NERDISTIL_VERBOSE") == "1"

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.levelno >= logging.WARNING or not record.name.startswith("flair"):
            return True
        return bool(_KEEP.match(record.getMessage().lstrip()))


_QUIET = _Quiet()


def quiet_console(verbose: bool | None = None) -> None:
    """Put the filter on Flair's console handlers (not its training.log); ``verbose`` keeps every line."""
    if verbose is not None:
        _Quiet.verbose = verbose or os.environ.get("NERDISTIL_VERBOSE") == "1"
    for handler in logging.getLogger("flair").handlers:
        if type(handler) is logging.StreamHandler and _QUIET not in handler.filters:
            handler.addFilter(_QUIET)
