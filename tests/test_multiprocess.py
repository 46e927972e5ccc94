"""Data-parallel training on this CPU machine: two torchrun processes (gloo), one set of outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path


def test_two_process_distil_writes_once(tiny_teacher, tiny_student, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "nerdistil", "distil",
           "--soft-labels", str(tiny_teacher), "--student", str(tiny_student), "--out", str(tmp_path / "s"),
           "--epochs", "2", "--batch-size", "4", "--lr", "1e-3"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["processes"] == 2 and len(report["history"]) == 2
    assert all(0 <= s["f1"] <= 1 for s in report["scores"].values())
    logs = r.stdout + r.stderr
    assert logs.count("epoch 1:") == 1 and logs.count("best epoch") == 1  # only the main process logs and prints
    assert len(list((tmp_path / "s" / "tensorboard").iterdir())) == 1  # one event file, from the main process
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no partial folder left
