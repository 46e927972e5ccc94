"""Data: CoNLL files, the bundled WNUT-16 tweets, raw-tweet tokenization."""

from nerdistil.data.conll import Sentence, read_conll, write_conll

__all__ = ["Sentence", "read_conll", "write_conll"]
