"""User-facing errors: one line, exit code 2, no traceback (bugs stay tracebacks)."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error the user caused and can fix: what went wrong, where, and what to do."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
