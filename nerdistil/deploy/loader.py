"""The one loader of "something that tags words": an export folder, a student folder or a teacher of any kind.

``load_tagger`` returns a ``runtime.WordTagger`` for each; ``evaluate``, ``predict``, ``bench`` and ``serve``
take what it returns and never ask what kind it is. An export loads through the torch-free runtime; a student
folder (a Hugging Face token classifier) through PyTorch, decoded with the same valid-BIO Viterbi as the
export's graph; anything else through the teacher seam (``teacher.ensemble.load_ensemble``: a teacher file, a
teacher folder or hub name, or a ``nerdistil teach`` folder's ensemble, run as labelling runs it), which
checks that a pickled teacher file is trusted. Only this module's functions import torch, and only when
asked to load a PyTorch model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nerdistil.deploy.runtime import CONFIG, Tagger, WordTagger


class TorchTagger(WordTagger):
    """A PyTorch model (student or teacher) behind the word-tagger contract; tags without confidences."""

    def __init__(self, predict: Callable, kind: str, labels: Sequence[str], params: int | None, source: str) -> None:
        self._predict = predict
        self.kind, self.labels, self.params, self.source = kind, list(labels), params, source

    def decode(self, sentences: Sequence[Sequence[str]], batch_size: int = 32) -> tuple[list, None]:
        """The model's valid-BIO tags; an empty sentence gets no tags (and costs no forward pass)."""
        tags: list[list[str]] = [[] for _ in sentences]
        nonempty = [i for i, s in enumerate(sentences) if len(s)]
        if nonempty:
            for i, t in zip(nonempty, self._predict([list(sentences[i]) for i in nonempty], batch_size)):
                tags[i] = t
        return tags, None


def is_student(path: str | Path) -> bool:
    """A local Hugging Face token-classifier folder (``distil``/``finetune`` output): config.json and weights."""
    p = Path(path)
    return (p / "config.json").is_file() and (any(p.glob("*.safetensors")) or any(p.glob("pytorch_model*.bin")))


def load_tagger(path: str | Path, trust_teacher: bool = False, kind: str = "auto", device: str = "auto",
                threads: int | None = None, exact: bool = True) -> WordTagger:  # fmt: skip
    """The word tagger at ``path``: an export (``runtime.Tagger``), a student, or a teacher.

    ``kind``: "auto" (an export, else a token-classifier folder as a student, else a teacher), "teacher" (a
    token-classifier folder through the teacher seam too), or a teacher kind (``teacher.base.KINDS``).
    ``trust_teacher`` lets a pickled teacher file that nerdistil did not write load (``nerdistil.trust``);
    ``device`` places a PyTorch model ("auto": a GPU where there is one); ``threads`` caps ONNX Runtime's;
    ``exact=False`` lets an int8 export batch windows (``runtime.Tagger``).
    """
    if (Path(path) / CONFIG).is_file():
        return Tagger(path, threads, exact)
    from nerdistil.trainer import resolve_device

    dev = resolve_device(device)
    if kind in ("auto", "student") and is_student(path):
        from nerdistil.tokclf import count_parameters, load_classifier, predict

        model, tokenizer, labels = load_classifier(path)
        model.to(dev)
        return TorchTagger(lambda sents, bs: predict(model, tokenizer, sents, labels, bs), "student", labels,
                           count_parameters(model), str(path))  # fmt: skip
    from nerdistil.teacher.ensemble import load_ensemble

    teacher = load_ensemble(path, trust_teacher, "auto" if kind in ("student", "teacher") else kind, dev)
    return TorchTagger(lambda sents, bs: teacher.predict(sents, batch_size=bs), teacher.kind, teacher.labels,
                       teacher.params, str(path))  # fmt: skip
