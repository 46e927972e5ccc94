"""Which Flair teacher files may be unpickled: those nerdistil wrote itself, or those the user vouches for.

Flair model files are pickles, and loading a pickle runs code. nerdistil records the SHA-256 of
every teacher file it writes in a small registry (``$NERDISTIL_HOME/trusted_teachers.json``,
default ``~/.cache/nerdistil``); any other file needs ``--trust-teacher`` (``trust_teacher: true``
in a config), in the spirit of Hugging Face's ``trust_remote_code``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nerdistil.errors import UserError


def registry_path() -> Path:
    """Where the SHA-256 registry lives."""
    home = os.environ.get("NERDISTIL_HOME") or Path.home() / ".cache" / "nerdistil"
    return Path(home) / "trusted_teachers.json"


def sha256(path: str | Path) -> str:
    """SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load() -> dict[str, str]:
    p = registry_path()
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def record(path: str | Path, digest: str | None = None) -> str:
    """Remember a teacher file nerdistil wrote; returns its SHA-256."""
    digest = digest or sha256(path)
    reg = _load()
    reg[digest] = str(Path(path).resolve())
    p = registry_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(reg, indent=1))
    os.replace(tmp, p)
    return digest


def check(path: str | Path, trust: bool = False) -> str:
    """Refuse to unpickle a Flair file nerdistil did not write, unless ``trust``; returns its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such teacher model file; check the path", path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save: a zip, or an old-style pickle
        raise UserError("not a model file (a Flair tagger .pt file is a zip or pickle archive; this one is not): give "
                        "a Flair .pt file, a model folder, an export folder or a hub name", path)  # fmt: skip
    digest = sha256(path)
    if trust or digest in _load():
        return digest
    raise UserError(
        "refusing to load this Flair file: Flair models are pickles and loading one runs code, and nerdistil did "
        f"not write this one (SHA-256 {digest[:16]}...); if you trust it, pass --trust-teacher "
        "(trust_teacher: true in a config)",
        path,
    )
