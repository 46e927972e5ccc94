"""Run folders: atomic outputs, resolved configs, library versions, JSON reports.

nerdistil never deletes what it did not write: ``--out`` may only replace a folder that holds a
finished nerdistil run (recognised by the manifest :data:`MANIFEST` that :func:`staging` writes, or
by an older run's ``report.json``), never the working directory, the user's home, an input or a
folder that holds an input. The staging folder is always a sibling of ``--out``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import platform
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import yaml

from nerdistil.errors import UserError

log = logging.getLogger(__name__)
PACKAGES = ("nerdistil", "torch", "flair", "transformers", "datasets", "seqeval", "scikit-learn", "accelerate")
MANIFEST = ".nerdistil-run.json"  # written last into every finished run folder: what nerdistil put there
STREAM = "-"  # --input - / --output -: stdin / stdout, streamed (no temporary file, no rename)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def finished_run(folder: Path) -> list[str] | None:
    """The entries nerdistil wrote into ``folder`` if it holds a finished nerdistil run, else None."""
    manifest = folder / MANIFEST
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        if manifest.is_file():
            return [str(e) for e in json.loads(manifest.read_text())["entries"]] + [MANIFEST]
        report = json.loads((folder / "report.json").read_text())  # a run from before the manifest
        if "nerdistil" in report["environment"]["libraries"]:
            return _entries(folder)
    return None


def _show(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def protected(out: Path, inputs: Iterable[str | Path | None]) -> str | None:
    """Why ``out`` (resolved) must never be replaced, or None."""
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if out == cwd or out in cwd.parents:
        return "is the current directory or one of its parents"
    if out == home or out in home.parents:
        return "is your home folder or one of its parents"
    for given in inputs:
        if given is None or str(given) == "":
            continue
        p = Path(given).expanduser().resolve()
        if out == p:
            return "is one of this command's inputs"
        if out in p.parents:
            return f"holds one of this command's inputs ({given})"
    return None


def _check_writable(path: Path) -> None:
    """The nearest existing folder at or above ``path`` must be a folder we may write into."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create it: {probe} is a file, not a folder; choose another path", path)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write here: no write permission in {probe}; choose another path", path)


def check_out(out: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False) -> Path:
    """Refuse an output folder nerdistil may not write (or replace) before any work starts; returns it resolved.

    An existing ``out`` must be empty, or hold a finished nerdistil run and ``overwrite`` be given.
    Nothing else is ever replaced: the current directory, the home folder, inputs and the folders
    holding them are refused even when empty.
    """
    given = out
    out = Path(out).expanduser().resolve()
    why = protected(out, inputs)
    if why:
        raise UserError(f"the output folder {why}; nerdistil never replaces it: choose a new --out", given)
    if out.exists():
        if not out.is_dir():
            raise UserError("the output path is a file, not a folder; nerdistil never replaces it: choose another "
                            "--out", given)  # fmt: skip
        entries = _entries(out)
        if entries:
            ours = finished_run(out)
            if ours is None:
                raise UserError(f"the output folder holds {len(entries)} entries nerdistil did not write "
                                f"({_show(entries)}); nerdistil never deletes them, even with --overwrite: choose a "
                                "new or empty --out", given)  # fmt: skip
            foreign = [e for e in entries if e not in ours]
            if foreign:
                raise UserError(f"the output folder holds a finished nerdistil run and entries it did not write "
                                f"({_show(foreign)}); move those away or choose another --out", given)  # fmt: skip
            if not overwrite:
                raise UserError("the output folder already holds a finished nerdistil run; pass --overwrite to "
                                "replace it or choose another --out", given)  # fmt: skip
    _check_writable(out)
    return out


def check_file_out(path: str | Path | None, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse an output file (``--json``, ``--markdown``) that is an input, a folder, or not writable."""
    if path is None:
        return
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        raise UserError("is a folder; give a file name to write to", path)
    for given in inputs:
        if given is not None and Path(given).expanduser().resolve() == p:
            raise UserError("is one of this command's inputs; nerdistil never overwrites an input: choose another "
                            "file", path)  # fmt: skip
    _check_writable(p.parent)
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError("cannot write it: no write permission; choose another file", path)


def check_plain_file_out(path: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False) -> Path:
    """Refuse a ``--output`` file that nerdistil must not write; returns it (user-expanded, not resolved).

    Never an input or anything inside an input folder (a model in use), never a symlink, FIFO, device or
    socket (``-`` streams to stdout instead), never a missing or unwritable folder, and an existing file
    only with ``overwrite``.
    """
    p = Path(path).expanduser()
    if p.is_symlink():
        raise UserError("is a symbolic link; nerdistil writes only plain files, never through a link: give the "
                        "target's path, or --output - to stream to stdout", path)  # fmt: skip
    if p.is_dir():
        raise UserError("is a folder; give a file name to write to", path)
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        raise UserError("is not a plain file (a FIFO, device or socket); nerdistil writes only plain files: use "
                        "--output - to stream to stdout", path)  # fmt: skip
    resolved = p.resolve()
    for given in inputs:
        if given is None or str(given) in ("", STREAM):
            continue
        q = Path(given).expanduser().resolve()
        if resolved == q:
            raise UserError("is one of this command's inputs; nerdistil never overwrites an input: choose another "
                            "file", path)  # fmt: skip
        if q in resolved.parents:
            raise UserError(f"is inside {given}, a folder this command reads; nerdistil never writes into it: "
                            "choose a path outside it", path)  # fmt: skip
    if not resolved.parent.is_dir():
        raise UserError(f"no such folder {resolved.parent}; create it first or choose another path", path)
    _check_writable(resolved.parent)
    if p.exists():
        if not overwrite:
            raise UserError("already exists; pass --overwrite to replace it, or choose another file", path)
        if not os.access(p, os.W_OK):
            raise UserError("cannot write it: no write permission; choose another file", path)
    return p


@contextlib.contextmanager
def file_out(path: str | Path | None, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
             ) -> Iterator[IO[str]]:  # fmt: skip
    """A text stream that becomes ``path`` only when the block succeeds (None or ``-``: stdout, streamed).

    It writes to a temporary file of its own, unique, beside ``path`` (``.NAME.XXXX.partial``), removed
    when the block fails and renamed over ``path`` when it succeeds: a file that exists under its name is
    finished, and no file nerdistil did not create is ever deleted. A full disk or a folder that turns
    read-only is a one-line error.
    """
    if path is None or str(path) == STREAM:
        yield sys.stdout
        return
    p = check_plain_file_out(path, inputs, overwrite)
    fd, tmp = tempfile.mkstemp(dir=p.resolve().parent, prefix=f".{p.name}.", suffix=".partial")
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)  # the permissions of a file opened for writing, not mkstemp's 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)  # a failed run leaves nothing that looks finished
        if isinstance(e, OSError) and e.errno is not None and e.filename in (None, tmp):  # writing it failed
            raise UserError(f"cannot write it ({e.strerror}); nothing was written: free space or choose another "
                            "path", path) from None  # fmt: skip
        raise


@contextlib.contextmanager
def staging(out: str | Path, overwrite: bool = False, resume: bool = False, main: bool = True,
            inputs: Iterable[str | Path | None] = (), resumable: bool = True) -> Iterator[Path]:  # fmt: skip
    """Yield a temporary sibling folder that becomes ``out`` only when the block succeeds.

    An interrupted run leaves ``.NAME.partial`` behind, never a folder that looks finished;
    ``resume`` reuses it (its checkpoint) instead of starting afresh. ``out`` is checked by
    :func:`check_out` (with ``overwrite`` it may replace only a finished nerdistil run). In a
    multi-process run only the main process (``main``) creates, checks and renames anything; the
    others just get the path. A run that cannot resume (``resumable=False``: ``export``) removes its
    staging folder on any failure, Ctrl-C included; a full disk is a one-line error either way.
    """
    resolved = Path(out).expanduser().resolve()
    tmp = resolved.parent / f".{resolved.name}.partial"
    if not main:
        yield tmp
        return
    inputs = list(inputs)
    check_out(out, inputs, overwrite)
    if resume and not tmp.is_dir():
        raise UserError(f"nothing to resume: no interrupted run ({tmp.name}) next to it; run without --resume", out)
    if tmp.exists() and not resume:
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder ({e.strerror}); choose another --out", out) from None
    try:
        yield tmp
    except BaseException as e:
        worth = resumable and any((tmp / keep).exists() for keep in ("checkpoint", "members", "labels"))
        if not worth and (isinstance(e, UserError) or not resumable):  # leave no debris
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"; the interrupted run is kept in {tmp.name}" if tmp.exists() else ""
            raise UserError(f"the disk is full ({e.strerror}){kept}: free space and run again", out) from None
        raise
    write_json(tmp / MANIFEST, {"entries": [e for e in _entries(tmp) if e != MANIFEST]})
    if resolved.exists():
        check_out(out, inputs, overwrite=True)  # still only our own finished run: replace it
        shutil.rmtree(resolved)
    os.replace(tmp, resolved)


def versions() -> dict[str, Any]:
    """Python, platform, thread count and the versions of the libraries a result depends on."""
    import torch

    libs = {}
    for name in PACKAGES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "libraries": libs,
    }


def strict(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, so the JSON is valid for every parser."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # NumPy / torch scalars
        return strict(obj.item())
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (``null`` for undefined scores; ``NaN`` and ``Infinity`` are not JSON)."""
    return json.dumps(strict(obj), indent=indent, default=str, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty strict JSON, written to a temporary name and renamed (a failure leaves no ``.tmp`` behind)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    text = dumps(obj) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write it ({e.strerror}); choose another path", path) from None


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (a temporary name, then renamed); a failure is one line, no debris."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write it ({e.strerror}); choose another path", path) from None


def write_config(path: str | Path, cfg: Any) -> None:
    """Save a resolved config dataclass as YAML, so ``--config`` reproduces the run."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def write_model_run(folder: Path, model, tokenizer, cfg: Any, report: dict) -> None:
    """A Hugging Face model folder (safetensors + tokenizer) with nerdistil's config and report beside it."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_config(folder / "nerdistil_config.yaml", cfg)
    write_json(folder / "report.json", report)
