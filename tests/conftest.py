import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the registry of teacher files nerdistil wrote: one per test session, never the user's own
os.environ["NERDISTIL_HOME"] = tempfile.mkdtemp(prefix="nerdistil-home-")
# the on-disk cache of frozen word vectors: one per test session, never the user's own
os.environ["NERDISTIL_CACHE"] = tempfile.mkdtemp(prefix="nerdistil-cache-")

DATA = Path(__file__).parent / "data"


@pytest.fixture
def corpus_dir() -> Path:
    return DATA / "corpus"


@pytest.fixture
def cli(capsys):
    """Run the real CLI entry point in-process; returns (exit_code, stdout, stderr)."""
    from nerdistil.cli import main

    def run(*args: str):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """A tiny `chars` BiLSTM-CRF teacher trained through `nerdistil teach`, plus one unlabeled split."""
    from nerdistil.cli import main

    root = tmp_path_factory.mktemp("teach")
    unl = root / "raw.txt"
    unl.write_text("Obama visits London today\n\n@john loves #Apple & Google 😀 http://t.co/x\n")
    try:
        main(["teach", "--corpus", str(DATA / "corpus"), "--out", str(root / "t"), "--embeddings", "chars",
              "--epochs", "8", "--unlabeled", str(unl), "--seed", "1"])  # fmt: skip
    except SystemExit as e:
        assert e.code in (0, None)
    return root / "t"


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory):
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer trained on the test corpus, as a model folder."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from nerdistil.data.conll import read_conll

    words = [w for f in ("train", "dev", "test") for s in read_conll(DATA / "corpus" / f"{f}.txt") for w in s.tokens]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=150, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator([" ".join(words)] * 3, trainer)
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=64)
    folder = tmp_path_factory.mktemp("tiny_bert")
    fast.save_pretrained(folder)
    cfg = BertConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_distilled(tiny_teacher, tiny_student, tmp_path_factory):
    """The tiny student distilled from the tiny teacher for two epochs, through `nerdistil distil`."""
    from nerdistil.cli import main

    out = tmp_path_factory.mktemp("distil") / "s"
    try:
        main(["distil", "--soft-labels", str(tiny_teacher), "--student", str(tiny_student), "--out", str(out),
              "--epochs", "2", "--batch-size", "4", "--lr", "1e-3"])  # fmt: skip
    except SystemExit as e:
        assert e.code in (0, None)
    return out


@pytest.fixture(scope="session")
def exported(tiny_distilled, tmp_path_factory):
    """The tiny distilled student through `nerdistil export --quantize auto`, gated on the dev file."""
    from nerdistil.cli import main

    out = tmp_path_factory.mktemp("export") / "e"
    try:
        main(["export", str(tiny_distilled), "--out", str(out), "--quantize", "auto", "--corpus",
              str(DATA / "corpus" / "dev.txt"), "--bootstrap", "200"])  # fmt: skip
    except SystemExit as e:
        assert e.code in (0, None)
    return out
