"""A run killed with SIGKILL mid-epoch resumes from its checkpoint and ends bit-identical to an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys

import torch
from safetensors.torch import load_file


def nerdistil(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nerdistil", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)  # fmt: skip


def test_killed_distil_resumes_bit_identically(tiny_teacher, tiny_student, tmp_path):
    common = ["distil", "--soft-labels", tiny_teacher, "--student", tiny_student, "--epochs", "2", "--batch-size", "4",
              "--lr", "1e-3", "--checkpoint-every", "2", "--seed", "5"]  # fmt: skip
    r = nerdistil(*common, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    # 22 training sentences in batches of 4: 6 steps an epoch; the kill comes after step 4, mid-epoch 1
    r = nerdistil(*common, "--out", tmp_path / "b", env={"NERDISTIL_FAULT_KILL_AT_STEP": "4"})
    assert r.returncode == -signal.SIGKILL
    assert not (tmp_path / "b").exists()  # nothing that looks finished
    state = json.loads((tmp_path / ".b.partial" / "checkpoint" / "state.json").read_text())
    assert state["loop"]["step"] == 4 and state["loop"]["epoch"] == 1 and state["loop"]["done"] == 4
    r = nerdistil(*common, "--out", tmp_path / "b", "--resume")
    assert r.returncode == 0, r.stderr
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = (json.loads((tmp_path / x / "report.json").read_text()) for x in ("a", "b"))
    assert ra["history"] == rb["history"] and ra["scores"] == rb["scores"]
    assert not (tmp_path / "b" / "checkpoint").exists()


def test_resume_without_an_interrupted_run_is_a_clear_error(tiny_teacher, tiny_student, tmp_path, cli):
    code, _, err = cli("distil", "--soft-labels", tiny_teacher, "--student", tiny_student, "--out", tmp_path / "x",
                       "--resume")  # fmt: skip
    assert code == 2 and "nothing to resume" in err


def _soft(folder):
    from nerdistil import softlabels

    ds = softlabels.load(folder / "soft_labels")
    return {name: [(r["tokens"], r["teacher_tags"], r["probs"]) for r in split.with_format("numpy")]
            for name, split in ds.items()}  # fmt: skip


def _same_soft_labels(a, b):
    import numpy as np

    sa, sb = _soft(a), _soft(b)
    assert sa.keys() == sb.keys()
    for name in sa:
        assert len(sa[name]) == len(sb[name]), name
        for (ta, ga, pa), (tb, gb, pb) in zip(sa[name], sb[name]):
            assert list(ta) == list(tb) and list(ga) == list(gb)
            np.testing.assert_array_equal(np.stack(pa), np.stack(pb))


def test_killed_labelling_reuses_its_finished_chunks(tiny_teacher, tmp_path):
    from pathlib import Path

    corpus = Path(__file__).parent / "data" / "corpus"
    raw = tmp_path / "raw.txt"
    raw.write_text("".join(f"tweet number {i} from @user{i % 7} about #Paris and London\n" for i in range(200)))
    cfg = tmp_path / "teach.yaml"
    cfg.write_text("label_chunk: 16\n")
    common = ["teach", "--corpus", corpus, "--teacher", tiny_teacher / "teacher.pt", "--unlabeled", raw,
              "--config", cfg]  # fmt: skip
    assert nerdistil(*common, "--out", tmp_path / "a").returncode == 0
    # train has 20 sentences (2 chunks); the kill comes after the 3rd chunk of the unlabeled tweets
    r = nerdistil(*common, "--out", tmp_path / "b", env={"NERDISTIL_FAULT_KILL_AFTER_CHUNK": "3"})
    assert r.returncode == -signal.SIGKILL
    assert not (tmp_path / "b").exists()
    assert len(list((tmp_path / ".b.partial" / "labels" / "unlabeled").glob("0*"))) == 3
    r = nerdistil(*common, "--out", tmp_path / "b", "--resume")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["soft_labels"]["reused_chunks"] == 5  # 2 train + 3 unlabeled; dev and test are relabelled
    assert report["soft_labels"]["splits"]["unlabeled"] == 200
    assert not (tmp_path / "b" / "labels").exists() and not (tmp_path / "b" / "members").exists()
    _same_soft_labels(tmp_path / "a", tmp_path / "b")
    # a changed input invalidates the chunks instead of mixing old and new labels
    nerdistil(*common, "--out", tmp_path / "c", env={"NERDISTIL_FAULT_KILL_AFTER_CHUNK": "3"})
    raw.write_text("a different tweet\n" * 50)
    r = nerdistil(*common, "--out", tmp_path / "c", "--resume")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["soft_labels"]["reused_chunks"] == 0 and report["soft_labels"]["splits"]["unlabeled"] == 50


def test_killed_ensemble_reuses_its_trained_members(tmp_path):
    from pathlib import Path

    corpus = Path(__file__).parent / "data" / "corpus"
    common = ["teach", "--corpus", corpus, "--embeddings", "chars", "--epochs", "1", "--ensemble", "2", "--seed", "4"]
    assert nerdistil(*common, "--out", tmp_path / "a").returncode == 0
    r = nerdistil(*common, "--out", tmp_path / "b", env={"NERDISTIL_FAULT_KILL_AFTER_MEMBER": "1"})
    assert r.returncode == -signal.SIGKILL and not (tmp_path / "b").exists()
    first = json.loads((tmp_path / ".b.partial" / "members" / "0.json").read_text())
    stale = tmp_path / ".b.partial" / "teacher1"  # member 2 killed mid-training leaves Flair's work folder
    stale.mkdir(exist_ok=True)
    (stale / "best-model.pt").write_bytes(b"half-trained")
    r = nerdistil(*common, "--out", tmp_path / "b", "--resume")
    assert r.returncode == 0, r.stderr
    assert "reusing trained member 1" in r.stderr
    assert "There should be no best model" not in r.stderr  # the stale folder was cleared, not warned about
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["members"][0]["sha256"] == first["sha256"]
    # members are seeded one by one, so the resumed ensemble is the uninterrupted one
    _same_soft_labels(tmp_path / "a", tmp_path / "b")
