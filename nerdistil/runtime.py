"""Torch-free inference over a `nerdistil export` folder: onnxruntime, tokenizers and numpy only.

The exported graph holds the student and nerdistil's valid-BIO decoder, so every caller gets the
same tags as ``nerdistil evaluate``: words go in, decoded word tags and their confidences come out.
Raw tweets are split into words by the tweet tokenizer ``teach --unlabeled`` uses, and every entity
carries character offsets that slice the original string. A sentence longer than the model's limit
is cut into word windows exactly as in training (``nerdistil.align.windows``); no word is dropped.

    from nerdistil import Tagger
    tagger = Tagger.load("runs/export")
    tagger.tag(["Obama visits London"])[0]["entities"]
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nerdistil.errors import UserError
from nerdistil.tags import bio_spans

CONFIG = "nerdistil.json"
MODEL = "model.onnx"
FORMAT = 1


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
        self.model_max_length, self.unk_token, self.pad_token_id = model_max_length, unk_token, pad_token_id

    def __call__(self, words: list[str], is_split_into_words: bool = True, truncation: bool = False,
                 max_length: int | None = None) -> _Encoding:  # fmt: skip
        """Encode pre-split words with special tokens (truncated to ``max_length`` when asked)."""
        want = max_length if truncation and max_length else None
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


class Tagger:
    """Tags words or raw tweets with an exported student; see the module docstring."""

    def __init__(self, folder: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        folder = Path(folder)
        cfg_file = folder / CONFIG
        if not cfg_file.is_file() or not (folder / MODEL).is_file():
            raise UserError(f"not a nerdistil export folder (no {CONFIG} or {MODEL}); make one with `nerdistil "
                            "export STUDENT_DIR --out DIR`", folder)  # fmt: skip
        try:
            self.config = json.loads(cfg_file.read_text(encoding="utf-8"))
            self.labels: list[str] = list(self.config["labels"])
            tok = self.config["tokenizer"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{CONFIG} is damaged ({e}); export the student again", folder) from None
        if self.config.get("format") != FORMAT:
            raise UserError(f"export format {self.config.get('format')} is not {FORMAT}; export again", folder)
        self.tokenizer = WordTokenizer(folder / "tokenizer.json", tok["max_length"], tok["unk_token"],
                                       tok["pad_token_id"])  # fmt: skip
        self.max_length = int(tok["max_length"])
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(folder / MODEL), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for a damaged file
            raise UserError(f"{MODEL} cannot be loaded ({str(e).splitlines()[0]}); export again", folder) from None
        self.inputs = [i.name for i in self.session.get_inputs()]

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> Tagger:
        """Load an export folder (``nerdistil export``'s ``--out``)."""
        return cls(folder, threads)

    def tag_words(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> list[dict]:
        """Per sentence of words: ``{"words", "tags", "scores", "entities"}`` (entities by word index)."""
        tags, scores = self.decode(sentences, batch_size)
        return [{"words": list(words), "tags": t, "scores": s, "entities": entities(t, s)}
                for words, t, s in zip(sentences, tags, scores)]  # fmt: skip

    def tag(self, tweets: Sequence[str], batch_size: int = 32) -> list[dict]:
        """Per raw tweet: words, tags, scores and entities whose ``start:end`` slice the tweet exactly."""
        from nerdistil.data.tweets import tokenize_spans

        spans = [tokenize_spans(t) for t in tweets]  # (word, start, end) per word
        words = [[w for w, _, _ in sp] for sp in spans]
        tags, scores = self.decode(words, batch_size)
        return [{"text": tweet, "words": w, "tags": t, "scores": s, "entities": entities(t, s, tweet, sp)}
                for tweet, sp, w, t, s in zip(tweets, spans, words, tags, scores)]  # fmt: skip

    def decode(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> tuple[list, list]:
        """Word tags and confidences for every sentence, in order; empty sentences give empty lists."""
        from nerdistil.align import first_subword_positions, windows

        wins = [w for i, words in enumerate(sentences) if len(words)
                for w in windows(self.tokenizer, list(words), i, None, self.max_length)]  # fmt: skip
        # a batch holds windows of one subword length: no padding. Dynamic int8 scales each activation tensor over
        # the whole batch, padded positions included, which cost the 4-layer int8 export 0.04 dev F1 at batch 32
        # (benchmarks/RESULTS.md); it also makes a window's tags independent of any other length in the input
        wins.sort(key=lambda w: len(w.input_ids))
        same = [list(g) for _, g in itertools.groupby(wins, key=lambda w: len(w.input_ids))]
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
        T = max(len(w.input_ids) for w in chunk)
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
