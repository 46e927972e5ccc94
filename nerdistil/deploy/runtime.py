"""Torch-free inference over a `nerdistil export` folder: onnxruntime, tokenizers and numpy only.

The exported graph holds the student and nerdistil's valid-BIO decoder, so every caller gets the
same tags as ``nerdistil evaluate``: words go in, decoded word tags and their confidences come out.
Raw tweets are split into words by the tweet tokenizer ``teach --unlabeled`` uses, and every entity
carries character offsets that slice the original string. A sentence longer than the model's limit
is cut into word windows exactly as in training (``nerdistil.align.windows``); no word is dropped.

    from nerdistil import Tagger
    tagger = Tagger.load("runs/wnut16/export")
    tagger.tag(["Obama visits London"])[0]["entities"]

``WordTagger`` is the contract every model nerdistil loads meets (``deploy.loader.load_tagger``): an export
here, a PyTorch student or a teacher of any kind there; evaluate, predict, bench and serve use only it.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nerdistil.errors import UserError
from nerdistil.tags import bio_spans

CONFIG = "nerdistil.json"
MODEL = "model.onnx"
FORMAT = 1
GRAPH_LABELS = "nerdistil.labels"  # the graph's metadata: the labels it was exported with (space-separated)
GRAPH_POSITIONS = "nerdistil.max_positions"  # ... and the subword positions its encoder can embed
# fp32 windows are padded to a multiple of this many subwords and batched with windows of the same padded length:
# a window's padded length depends on it alone (the graph's rows never meet, so neither does its result), while a
# batch of mixed tweets runs as a few full batches instead of one small run per subword length
# (benchmarks/RESULTS.md, "Serving")
PAD_MULTIPLE = 8
GRAPH_INT8 = "nerdistil.int8"  # ... and "1" when its encoder is dynamically quantized


class _Encoding(dict):
    """The slice of a Hugging Face ``BatchEncoding`` that ``align.windows`` reads."""

    def __init__(self, ids: list[int], word_ids: list[int | None]) -> None:
        super().__init__(input_ids=ids)
        self._word_ids = word_ids

    def word_ids(self) -> list[int | None]:
        return self._word_ids


class WordTokenizer:
    """A ``tokenizers.Tokenizer`` behind the small interface of a fast HF tokenizer that windowing uses."""

    def __init__(self, path: str | Path, model_max_length: int, unk_token: str | None, pad_token_id: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(path))
        self.tok.no_padding()
        self.tok.no_truncation()
        self._truncate: int | None = None  # truncation length set now (setting it costs about one encode)
        self._lock = threading.Lock()  # the truncation setting is shared state: one encode at a time (server lanes)
        self.model_max_length, self.unk_token, self.pad_token_id = model_max_length, unk_token, pad_token_id

    def __call__(self, words: list[str], is_split_into_words: bool = True, truncation: bool = False,
                 max_length: int | None = None) -> _Encoding:  # fmt: skip
        """Encode pre-split words with special tokens (truncated to ``max_length`` when asked)."""
        want = max_length if truncation and max_length else None
        with self._lock:
            if want != self._truncate:
                self.tok.enable_truncation(want) if want else self.tok.no_truncation()
                self._truncate = want
            e = self.tok.encode(words, is_pretokenized=True, add_special_tokens=True)
        return _Encoding(e.ids, e.word_ids)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Special tokens the post-processor adds around one sequence (two for BERT's [CLS] ... [SEP])."""
        return self.tok.post_processor.num_special_tokens_to_add(pair) if self.tok.post_processor else 0


@dataclass
class Entity:
    """One entity: its text (a slice of the input), type, character offsets and mean word confidence."""

    text: str
    type: str
    start: int
    end: int
    score: float


def entities(tags: Sequence[str], scores: Sequence[float] | None = None, text: str | None = None,
             spans: Sequence[tuple[str, int, int]] | None = None) -> list[dict]:  # fmt: skip
    """The entities of a tag sequence, one dict each, for the runtime and ``predict`` alike.

    ``start``/``end`` are word indices, or, given the tweet ``text`` and its word ``spans`` ((word, start,
    end) from ``tokenize_spans``), character offsets, with the ``text`` they slice. ``score`` is the mean
    confidence of the entity's words (None without scores).
    """
    out = []
    for typ, a, b in bio_spans(tags):
        score = None if scores is None else float(np.mean(scores[a:b]))
        if spans is None or text is None:
            out.append({"type": typ, "start": a, "end": b, "score": score})
        else:
            start, end = spans[a][1], spans[b - 1][2]
            out.append(asdict(Entity(text[start:end], typ, start, end, score)))  # type: ignore[arg-type]
    return out


def check_labels(labels: object) -> list[str]:
    """The label list of ``nerdistil.json``: unique strings, "O" or B-/I- with a type; else ValueError."""
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError("labels must be a non-empty list of strings")
    bad = [x for x in labels if x != "O" and not (x[:2] in ("B-", "I-") and len(x) > 2)]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if bad or dup or "O" not in labels:
        why = f"not BIO tags: {bad[:3]}" if bad else f"repeated: {dup[:3]}" if dup else "no O tag"
        raise ValueError(f"labels are not a valid BIO label set ({why})")
    return labels


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` as a positive int, else a ``ValueError``/``TypeError`` that says so."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be a positive int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def _items(items: object, what: str) -> list:
    """A list of inputs: a str, bytes, generator or other one-pass iterator is a ``TypeError``, never guessed at."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"expected a list of {what}, got a single {type(items).__name__}: wrap it in a list")
    if not isinstance(items, Sequence):
        raise TypeError(f"expected a list of {what}, got {type(items).__name__}: pass a list (e.g. list(...))")
    return list(items)


def check_tweets(tweets: object) -> list[str]:
    """Raw tweets for ``tag``: a list of str."""
    tweets = _items(tweets, "tweets (str)")
    for i, t in enumerate(tweets):
        if not isinstance(t, str):
            raise TypeError(f"tweet {i} is a {type(t).__name__}, not a str")
    return tweets


def check_sentences(sentences: object) -> list[list[str]]:
    """Pre-split sentences for ``tag_words``: a list of lists of str (a str is not a list of words)."""
    out = []
    for i, s in enumerate(_items(sentences, "sentences (lists of words)")):
        if isinstance(s, (str, bytes)) or not isinstance(s, Sequence):
            raise TypeError(f"sentence {i} is a {type(s).__name__}, not a list of words: use tag() for raw text "
                            "or split it into words")  # fmt: skip
        for j, w in enumerate(s):
            if not isinstance(w, str):
                raise TypeError(f"sentence {i}, word {j} is a {type(w).__name__}, not a str")
        out.append(list(s))
    return out


class WordTagger:
    """Anything that tags pre-split words: ``decode`` is the model's own part, the rest is shared.

    ``kind`` says what it is ("export", "student" or a teacher kind), ``labels`` its tags, ``params`` its
    parameter count (None where it cannot be read) and ``describe()`` the same as one JSON-able dict.
    """

    kind = "model"
    labels: list[str]
    params: int | None = None
    source: str = ""

    def decode(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> tuple[list, list | None]:
        """Word tags for every sentence, in order, and their confidences (None when the model gives none)."""
        raise NotImplementedError

    def predict(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[list[str]]:
        """Only the tags: what ``evaluate`` and ``bench`` score and time."""
        return self.decode(check_sentences(sentences), check_batch_size(batch_size))[0]

    def tag_words(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[dict]:
        """Per sentence of words: ``{"words", "tags", "scores", "entities"}`` (entities by word index)."""
        sentences = check_sentences(sentences)
        tags, scores = self.decode(sentences, check_batch_size(batch_size))
        scores = scores if scores is not None else [None] * len(tags)
        return [{"words": list(words), "tags": t, "scores": s, "entities": entities(t, s)}
                for words, t, s in zip(sentences, tags, scores)]  # fmt: skip

    def tag(self, tweets: Sequence[str], batch_size: int = 32) -> list[dict]:
        """Per raw tweet: words, tags, scores and entities whose ``start:end`` slice the tweet exactly."""
        from nerdistil.data.tweets import tokenize_spans

        tweets = check_tweets(tweets)
        check_batch_size(batch_size)
        spans = [tokenize_spans(t) for t in tweets]  # (word, start, end) per word
        words = [[w for w, _, _ in sp] for sp in spans]
        tags, scores = self.decode(words, batch_size)
        scores = scores if scores is not None else [None] * len(tags)
        return [{"text": tweet, "words": w, "tags": t, "scores": s, "entities": entities(t, s, tweet, sp)}
                for tweet, sp, w, t, s in zip(tweets, spans, words, tags, scores)]  # fmt: skip

    def describe(self) -> dict:
        """What was loaded: kind, source, labels and parameter count."""
        return {"kind": self.kind, "source": self.source, "labels": list(self.labels), "params": self.params}


def graph_params(folder: str | Path) -> int | None:
    """Parameters of an export folder's graph (its initializers), read without their data; None without onnx."""
    try:
        import onnx
    except ImportError:  # the serving install: onnxruntime without onnx
        return None
    graph = onnx.load(str(Path(folder) / MODEL), load_external_data=False).graph
    return sum(int(np.prod(i.dims)) for i in graph.initializer)


class Tagger(WordTagger):
    """Tags words or raw tweets with an exported student; see the module docstring."""

    kind = "export"

    def __init__(self, folder: str | Path, threads: int | None = None, exact: bool = True,
                 spinning: bool = True) -> None:  # fmt: skip
        """Load ``folder``; ``threads`` caps ONNX Runtime's; ``exact=False`` lets an int8 graph batch windows.

        Dynamic int8 quantizes each activation tensor with one scale over the whole batch, so a window's
        int8 tags and confidences can change with the windows beside it; ``exact`` (the default) runs every
        window of an int8 graph alone, so each result is the one it gets alone. fp32 graphs batch either way.
        ``spinning=False`` stops ONNX Runtime's idle threads from spin-waiting for work, for a process that
        needs its cores between runs; it cost the server latency and throughput on 2 cores, so it spins.
        """
        import onnxruntime as ort

        folder = Path(folder)
        cfg_file = folder / CONFIG
        if not cfg_file.is_file() or not (folder / MODEL).is_file():
            raise UserError(f"not a nerdistil export folder (no {CONFIG} or {MODEL}); make one with `nerdistil "
                            "export STUDENT_DIR --out DIR`", folder)  # fmt: skip
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        try:
            self.config = json.loads(cfg_file.read_text(encoding="utf-8"))
            if self.config.get("format") != FORMAT:
                raise UserError(f"export format {self.config.get('format')} is not {FORMAT}; export again", folder)
            self.labels: list[str] = check_labels(self.config["labels"])
            tok = self.config["tokenizer"]
            settings = (int(tok["max_length"]), tok["unk_token"], int(tok["pad_token_id"]))
            if settings[0] < 3:
                raise ValueError(f"tokenizer.max_length {settings[0]} is too small")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(
                f"{CONFIG} is damaged ({type(e).__name__}: {e}); export the student again", folder
            ) from None
        if not (folder / "tokenizer.json").is_file():
            raise UserError("the export folder has no tokenizer.json; export the student again", folder)
        try:
            self.tokenizer = WordTokenizer(folder / "tokenizer.json", *settings)
        except Exception as e:  # tokenizers raises its own untyped errors for a damaged file
            raise UserError(
                f"tokenizer.json cannot be loaded ({str(e).splitlines()[0]}); export again", folder
            ) from None
        self.max_length = settings[0]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(folder / MODEL), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for a damaged file
            raise UserError(f"{MODEL} cannot be loaded ({str(e).splitlines()[0]}); export again", folder) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self._check_graph(folder, meta)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.source = str(folder)
        self._folder = folder
        # the graph says whether it is int8 (so the gate's candidates run as they will ship); an export made before
        # it did says so through the gate's choice
        int8 = meta.get(GRAPH_INT8)
        chosen = (self.config.get("gate") or {}).get("chosen", "fp32")
        self.quantized = int8 == "1" if int8 is not None else chosen != "fp32"
        self.batch_independent = exact or not self.quantized
        # int8 is never padded: dynamic quantization would scale activations over the padded positions too
        self.pad_multiple = 1 if self.quantized else PAD_MULTIPLE

    def _padded(self, n: int) -> int:
        """The subword length a window of ``n`` subwords runs at (never past ``max_length``)."""
        return min(-(-n // self.pad_multiple) * self.pad_multiple, max(n, self.max_length))

    def _check_graph(self, folder: Path, meta: dict[str, str]) -> None:
        """``nerdistil.json`` against the graph's own record ``meta`` (exports made before it was kept: not checked)."""
        if GRAPH_LABELS in meta and meta[GRAPH_LABELS].split(" ") != self.labels:
            graph = meta[GRAPH_LABELS].split(" ")
            raise UserError(f"{CONFIG}'s labels ({len(self.labels)}) are not those {MODEL} was exported with "
                            f"({len(graph)}: {', '.join(graph[:4])}...); restore {CONFIG} or export again",
                            folder)  # fmt: skip
        if GRAPH_POSITIONS in meta and self.max_length > int(meta[GRAPH_POSITIONS]):
            raise UserError(f"{CONFIG}'s tokenizer.max_length {self.max_length} exceeds the {meta[GRAPH_POSITIONS]} "
                            f"positions of {MODEL}; set it to at most that or export again", folder)  # fmt: skip

    @property
    def params(self) -> int | None:  # type: ignore[override]
        """The graph's parameter count (read on first use; None where onnx is not installed)."""
        if not hasattr(self, "_params"):
            self._params = graph_params(self._folder)
        return self._params

    def describe(self) -> dict:
        """The export's record: labels, parameter count, the source's SHA-256, quantization and the gate's record."""
        gate = self.config.get("gate") or {}
        return {**super().describe(), "source_model": self.config.get("source"), "quantization": gate.get("chosen"),
                "gate": {k: gate.get(k) for k in ("decision", "agreement", "min_agreement", "max_f1_drop")},
                "max_length": self.max_length, "format": self.config.get("format")}  # fmt: skip

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> Tagger:
        """Load an export folder (``nerdistil export``'s ``--out``)."""
        return cls(folder, threads)

    def decode(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> tuple[list, list]:
        """Word tags and confidences for every sentence, in order; empty sentences give empty lists."""
        from nerdistil.align import first_subword_positions, windows

        wins = [w for i, words in enumerate(sentences) if len(words)
                for w in windows(self.tokenizer, list(words), i, None, self.max_length)]  # fmt: skip
        if self.quantized and self.batch_independent:  # int8, exact: every window alone
            batch_size = 1
        # a batch holds windows of one padded length (int8: of one length, no padding). Dynamic int8 scales each
        # activation tensor over the whole batch, padded positions included, which cost the 4-layer int8 export
        # 0.04 dev F1 at batch 32 (benchmarks/RESULTS.md); a padded length that depends on the window alone also
        # keeps its result independent of any other window in the input
        wins.sort(key=lambda w: len(w.input_ids))
        same = [list(g) for _, g in itertools.groupby(wins, key=lambda w: self._padded(len(w.input_ids)))]
        tags: list[list] = [[None] * len(s) for s in sentences]
        scores: list[list] = [[0.0] * len(s) for s in sentences]
        for chunk in (g[s : s + batch_size] for g in same for s in range(0, len(g), batch_size)):
            firsts = [first_subword_positions(w.word_ids) for w in chunk]  # word -> first subword, in word order
            feed = self._batch(chunk, firsts)
            out_tags, out_scores = self.session.run(["tags", "scores"], feed)
            for b, (w, first) in enumerate(zip(chunk, firsts)):
                for j, word in enumerate(sorted(first)):
                    tags[w.sid][word] = self.labels[int(out_tags[b, j])]
                    scores[w.sid][word] = float(out_scores[b, j])
        for i, t in enumerate(tags):
            if any(x is None for x in t):  # never silently drop a word
                raise RuntimeError(f"sentence {i}: {t.count(None)} word(s) got no prediction")
        return tags, scores

    def _batch(self, chunk: list, firsts: list[dict[int, int]]) -> dict[str, np.ndarray]:
        B = len(chunk)
        T = self._padded(max(len(w.input_ids) for w in chunk))
        W = max(len(f) for f in firsts)
        ids = np.full((B, T), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((B, T), dtype=np.int64)
        word_index = np.zeros((B, W), dtype=np.int64)
        word_mask = np.zeros((B, W), dtype=np.int64)
        for b, (w, first) in enumerate(zip(chunk, firsts)):
            ids[b, : len(w.input_ids)] = w.input_ids
            mask[b, : len(w.input_ids)] = 1
            pos = [first[k] for k in sorted(first)]
            word_index[b, : len(pos)] = pos
            word_mask[b, : len(pos)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "word_index": word_index, "word_mask": word_mask,
                "token_type_ids": np.zeros((B, T), dtype=np.int64)}  # fmt: skip
        return {k: v for k, v in feed.items() if k in self.inputs}
