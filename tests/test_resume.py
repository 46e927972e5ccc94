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
