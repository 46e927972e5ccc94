"""Same seed, same machine, same inputs: identical soft labels and identical student metrics."""

import json

import numpy as np
from safetensors.torch import load_file

from nerdistil import softlabels


def test_teach_twice_gives_identical_soft_labels(corpus_dir, tmp_path, cli):
    for name in ("a", "b"):
        code, _, err = cli("teach", "--corpus", corpus_dir, "--out", tmp_path / name, "--embeddings", "chars",
                           "--epochs", "3", "--seed", "7")  # fmt: skip
        assert code == 0, err
    a, b = (softlabels.load(tmp_path / n / "soft_labels") for n in ("a", "b"))
    for split in a:
        for ra, rb in zip(a[split].with_format("numpy"), b[split].with_format("numpy")):
            assert np.array_equal(np.stack(ra["probs"]), np.stack(rb["probs"]))
    ja, jb = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("a", "b"))
    assert ja["scores"] == jb["scores"]


def test_distil_twice_gives_identical_students(tiny_teacher, tiny_student, tmp_path, cli):
    for name in ("a", "b"):
        code, _, err = cli("distil", "--soft-labels", tiny_teacher, "--student", tiny_student, "--out", tmp_path / name,
                           "--epochs", "1", "--batch-size", "4", "--seed", "3")  # fmt: skip
        assert code == 0, err
    ja, jb = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("a", "b"))
    assert ja["scores"] == jb["scores"] and ja["history"] == jb["history"]
    wa, wb = (load_file(tmp_path / n / "model.safetensors") for n in ("a", "b"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
