"""A frozen encoder's word vectors of a run's corpus: computed once, shared, and kept on disk (issue 27).

The members of an ensemble on one frozen transformer (``mpnet-all``), every cross-fit fold, every epoch
and the labelling of train/dev/test need the same word vectors. ``vector_cache`` (entered by ``teach``
through ``FlairTrainer.corpus_vectors``) names the corpus, its *unit*: the distinct sentences (token
tuples) of train, dev and test. The first part that asks computes the vectors of the whole unit in one
canonical pass, the transformer in eval mode (no dropout), fp32, sentences sorted by subword count (ties
by their words) in fixed batches, so a sentence's vector depends only on the unit and the encoder, never
on which member, fold or split asked first. (A vector depends on its batch's padding in the last float
bits, so caching sentences computed in other batches would not be bitwise the same.) The vectors are
read from, or written to, ``ROOT/<key>.safetensors``, the key holding every input of those bits: the
encoder's weights (SHA-256 of its tensors), Flair settings (layers, layer_mean, subtoken_pooling...),
model config, tokenizer, the unit's sentences, the batching, and the numerics (library versions,
device, CPU kind and threads, TF32).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = "nerdistil-word-vectors/1"  # change it when the computation changes: old files then never match
BATCH_SUBWORDS = 4096  # padded subword positions a batch of the canonical pass...
BATCH_SENTENCES = 128  # ...and sentences a batch at most
_SKIP_SETTINGS = {"name", "base_model_name", "training", "_is_full_backward_hook", "force_device"}  # not in the bits
_SKIP_CONFIG = {"_name_or_path", "transformers_version", "torch_dtype", "dtype"}  # the weights' hash has the dtype


def default_root() -> Path:
    """``$NERDISTIL_CACHE/vectors``, or ``~/.cache/nerdistil/vectors``."""
    return Path(os.environ.get("NERDISTIL_CACHE") or Path.home() / ".cache" / "nerdistil").expanduser() / "vectors"


def cache_root(setting: str | None) -> Path | None:
    """The folder of a ``vector_cache`` setting: ``auto`` is ``default_root()``; ``none`` or empty: no disk cache."""
    if setting is None or setting.strip().lower() in ("", "none"):
        return None
    return default_root() if setting.strip() == "auto" else Path(setting).expanduser()


def frozen_transformers(embeddings) -> list:
    """The frozen Flair transformer word embeddings in (stacked) embeddings: the parts whose vectors are cached.

    Not those that read neighbouring sentences as context (``use_context``): Flair links a sentence to
    the others of the first batch that embeds it, so another batch would give other vectors.
    """
    from flair.embeddings import TokenEmbeddings, TransformerEmbeddings

    parts = getattr(embeddings, "embeddings", None) or [embeddings]
    return [p for p in parts
            if isinstance(p, TransformerEmbeddings) and isinstance(p, TokenEmbeddings) and p.static_embeddings
            and p.token_embedding and not getattr(p, "context_length", 0)]  # fmt: skip


@contextlib.contextmanager
def unstrided(part, fits: bool) -> Iterator[None]:
    """Flair's plain path for a batch whose sentences all fit the transformer's input (``fits``).

    With ``allow_long_sentences`` Flair runs every batch through its strided path, which copies each
    sentence's hidden states into a 512-position tensor one sentence at a time (about a sixth of the
    labeller's time besides the networks on a CPU; on a GPU each sentence's boolean indexing waits
    for the device), though a tweet never overflows. For a batch that fits, the model gets the same
    input ids and mask, and each word the same vector, bitwise (tested); a batch with a longer
    sentence keeps Flair's strided path.
    """
    if not (fits and part.allow_long_sentences):
        yield
        return
    stride = part.stride
    part.allow_long_sentences, part.stride = False, 0  # Flair's own settings without long sentences
    try:
        yield
    finally:
        part.allow_long_sentences, part.stride = True, stride


def _sha256_json(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def weights_sha256(module) -> str:
    """SHA-256 of a module's tensors (names, dtypes, shapes, bytes): the weights that compute, from any file."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """SHA-256 of what a Hugging Face tokenizer does: its pipeline (vocabulary, normalizer...) and limits."""
    import tempfile

    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: its JSON, less the truncation/padding left by the last call
        state = json.loads(backend.to_str())
        state.pop("truncation", None), state.pop("padding", None)
        h.update(json.dumps(state, sort_keys=True).encode())
    else:  # a slow one: its saved files
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            for f in sorted(Path(tmp).iterdir()):
                h.update(f.name.encode() + f.read_bytes())
    limits = {"max": tokenizer.model_max_length, "special": tokenizer.all_special_tokens,
              "sides": [tokenizer.padding_side, tokenizer.truncation_side]}  # fmt: skip
    h.update(json.dumps(limits, sort_keys=True).encode())
    return h.hexdigest()


def numerics(device) -> dict:
    """What else a float's last bits depend on: library versions, device, CPU kind and threads, TF32."""
    import flair
    import torch
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "flair": flair.__version__,
           "device": device.type, "matmul_precision": torch.get_float32_matmul_precision()}  # fmt: skip
    if device.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   tf32=[torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32])  # fmt: skip
    else:
        out.update(cpu=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads())
    return out


def encoder_key(part) -> dict:
    """Everything a frozen transformer part's vectors depend on, besides the sentences (JSON-able)."""
    import flair

    def plain(v: object) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return isinstance(v, (bool, int, float, str, type(None)))

    config = part.model.config
    return {
        "format": FORMAT,
        "batch": [BATCH_SUBWORDS, BATCH_SENTENCES],
        "class": type(part).__name__,
        "settings": {k: v for k, v in vars(part).items() if plain(v) and k not in _SKIP_SETTINGS},
        "config": {k: v for k, v in config.to_dict().items() if k not in _SKIP_CONFIG},
        "attention": getattr(config, "_attn_implementation", None),
        "weights": weights_sha256(part.model),
        "tokenizer": tokenizer_sha256(part.tokenizer),
        "numerics": numerics(flair.device),
    }


def compute(part, unit: Sequence[tuple[str, ...]]):
    """The vectors of every sentence of ``unit`` (in its order), one (words, dim) float32 table on the CPU.

    The canonical pass: eval mode (Flair would run a frozen transformer with dropout while its tagger
    trains), autocast off, sentences sorted by subword count (a stable sort: ties keep the unit's order)
    in batches of at most ``BATCH_SUBWORDS`` padded positions and ``BATCH_SENTENCES`` sentences; a
    sentence longer than the transformer's input goes alone through Flair's strided path.
    """
    import flair
    import torch
    from tqdm.auto import tqdm

    from nerdistil.data.conll import Sentence
    from nerdistil.teacher.flair.sentences import to_flair

    counts = [len(ids) for ids in part.tokenizer([list(s) for s in unit], is_split_into_words=True,
                                                 add_special_tokens=False, verbose=False)["input_ids"]]  # fmt: skip
    order = sorted(range(len(unit)), key=lambda i: -counts[i])
    fits = part.tokenizer.model_max_length - part.tokenizer.num_special_tokens_to_add()
    batches: list[list[int]] = []  # longest first: a batch's first sentence sets its padded length
    for i in order:
        b = batches[-1] if batches else []
        if b and counts[b[0]] <= fits and len(b) < BATCH_SENTENCES and (len(b) + 1) * counts[b[0]] <= BATCH_SUBWORDS:
            b.append(i)
        else:
            batches.append([i])
    rows: list = [None] * len(unit)
    was = part.training
    part.eval()
    log.info("computing the frozen encoder's word vectors of %d sentences (once: every member, fold, epoch and the "
             "labelling share them)", len(unit))  # fmt: skip
    bar = tqdm(total=len(unit), desc="word vectors", unit=" sentences", disable=None)
    try:
        with torch.no_grad(), torch.autocast(flair.device.type, enabled=False):
            for batch in batches:
                bar.update(len(batch))
                fs = to_flair(Sentence(list(unit[i])) for i in batch)
                with unstrided(part, counts[batch[0]] <= fits):
                    part.embed(fs)
                table = torch.stack([t._embeddings[part.name] for s in fs for t in s]).float().cpu()
                for i, piece in zip(batch, table.split([len(s) for s in fs])):
                    rows[i] = piece
    finally:
        bar.close()
        part.train(was)
    return torch.cat(rows) if rows else torch.zeros(0, part.embedding_length)


class Vectors:
    """One encoder's vectors of a unit: a (words, dim) table, each sentence's rows where ``index`` says."""

    def __init__(self, unit: Sequence[tuple[str, ...]], table) -> None:
        self.table = table
        self.index: dict[tuple[str, ...], int] = {}
        offset = 0
        for s in unit:
            self.index[s] = offset
            offset += len(s)
        self._on: dict[str, object] = {"cpu": table}  # device -> the table there

    def rows(self, tokens: tuple[str, ...], device):
        """The sentence's (words, dim) rows, a view of the table on ``device`` (copied there once)."""
        key = str(device)
        if key not in self._on:
            self._on[key] = self.table.to(device)
        start = self.index[tokens]
        return self._on[key][start : start + len(tokens)]


class VectorCache:
    """A run's corpus unit, where its vectors are kept on disk (``root``, None: nowhere) and those made so far."""

    def __init__(self, root: Path | None, sentences: Iterable[Sequence[str]]) -> None:
        self.root = root
        self.unit = sorted({tuple(s) for s in sentences if len(s)})
        self.members = set(self.unit)
        self.unit_key = _sha256_json(self.unit)
        self._vectors: dict[str, Vectors] = {}  # encoder key -> the unit's vectors
        self._keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # part -> (key, description)
        self.computed = 0  # canonical passes run (each one the whole unit, for one encoder)

    def covers(self, sentences: Iterable[Sequence[str]]) -> bool:
        """Whether every non-empty sentence is in the unit."""
        return all(tuple(s) in self.members for s in sentences if len(s))

    def attach(self, parts: Sequence, tokens: Sequence[Sequence[str]], flair_sentences: Sequence) -> None:
        """Give the Flair sentences of the unit (``tokens`` their words) each part's vectors; others are left alone.

        Flair's ``embed`` then skips them (it embeds only sentences without the part's vectors).
        """
        import flair

        todo = [(tuple(w), fs) for w, fs in zip(tokens, flair_sentences) if len(w) and tuple(w) in self.members]
        if not todo:
            return
        for part in parts:
            vectors = self.vectors(part)
            for words, fs in todo:
                for token, row in zip(fs, vectors.rows(words, flair.device)):
                    token.set_embedding(part.name, row)

    def key(self, part) -> tuple[str, dict]:
        """(SHA-256, description) of ``encoder_key(part)``, computed once a part (hashing weights takes a second)."""
        if part not in self._keys:
            described = encoder_key(part)
            self._keys[part] = (_sha256_json(described), described)
        return self._keys[part]

    def vectors(self, part) -> Vectors:
        """The unit's vectors for ``part``: in memory, else from the disk cache, else computed (and saved)."""
        key, described = self.key(part)
        if key not in self._vectors:
            path = self.path(key)
            table = self._load(path, key) if path is not None else None
            if table is None:
                table = compute(part, self.unit)
                self.computed += 1
                if path is not None:
                    self._save(path, table, key, described)
            self._vectors[key] = Vectors(self.unit, table)
        return self._vectors[key]

    def path(self, key: str) -> Path | None:
        """Where the vectors of ``key`` and this unit live on disk (None: no disk cache)."""
        if self.root is None:
            return None
        return self.root / f"{hashlib.sha256((key + self.unit_key).encode()).hexdigest()[:40]}.safetensors"

    def _lengths(self):
        import torch

        return torch.tensor([len(s) for s in self.unit], dtype=torch.int64)

    def _load(self, path: Path, key: str):
        """The table in ``path`` if it is complete and this unit's; else None (a damaged file: a warning)."""
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                table, lengths = f.get_tensor("vectors"), f.get_tensor("lengths")
            expected = {"format": FORMAT, "encoder": key, "unit": self.unit_key}
            if {k: meta.get(k) for k in expected} != expected:
                raise ValueError("it holds another encoder's or corpus's vectors")
            if not (lengths.equal(self._lengths()) and table.shape[0] == int(lengths.sum())):
                raise ValueError("its shapes do not match the corpus")
            if meta.get("sha256") != _checksum(table, lengths):
                raise ValueError("checksum mismatch")
        except Exception as e:  # noqa: BLE001 - any unreadable cache file is recomputed, never fatal
            log.warning("vector cache file %s is unusable (%s: %s); recomputing it", path, type(e).__name__, e)
            return None
        log.info("reusing cached word vectors %s", path)
        return table

    def _save(self, path: Path, table, key: str, described: dict) -> None:
        """Write the table under a unique temporary name, then rename it: a reader never sees a partial file."""
        from safetensors.torch import save_file

        lengths = self._lengths()
        meta = {"format": FORMAT, "encoder": key, "unit": self.unit_key, "sha256": _checksum(table, lengths),
                "sentences": str(len(self.unit)), "key": json.dumps(described, default=str)}  # fmt: skip
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for old in path.parent.glob(".*.tmp"):  # left by a killed run a day ago or more (never read)
                with contextlib.suppress(OSError):
                    if time.time() - old.stat().st_mtime > 86400:
                        old.unlink()
            save_file({"vectors": table.contiguous(), "lengths": lengths}, str(tmp), metadata=meta)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot write the vector cache %s (%s); continuing without it", path, e)
        finally:
            tmp.unlink(missing_ok=True)


def _checksum(table, lengths) -> str:
    """SHA-256 of the table's and lengths' bytes."""
    import torch

    h = hashlib.sha256()
    for t in (table, lengths):
        if t.numel():
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


_ACTIVE: list[VectorCache] = []


@contextlib.contextmanager
def vector_cache(setting: str | None, sentences: Iterable[Sequence[str]]) -> Iterator[VectorCache]:
    """Within the block, frozen vectors of ``sentences`` (a run's corpus) come from one ``VectorCache``.

    ``setting``: a folder, ``auto`` (``default_root()``) or ``none`` (kept in memory only). Training
    (``train_teacher``) and labelling (``label``) find it with ``active()``; on leaving, its vectors are freed.
    """
    cache = VectorCache(cache_root(setting), sentences)
    _ACTIVE.append(cache)
    try:
        yield cache
    finally:
        _ACTIVE.remove(cache)


def active() -> VectorCache | None:
    """The innermost ``vector_cache`` block's cache, or None outside one."""
    return _ACTIVE[-1] if _ACTIVE else None
