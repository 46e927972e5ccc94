import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
