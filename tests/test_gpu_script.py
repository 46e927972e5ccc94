"""``benchmarks/gpu.sh`` in its CI-sized form: every step and flag of the GPU benchmark, run on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


FAKE_SMI = """#!/bin/bash
# stands in for nvidia-smi's sampling: one line every 0.1 s, utilisation 37%
while true; do echo "$(date '+%Y/%m/%d %H:%M:%S.%3N'), 37, 1234"; sleep 0.1; done
"""


def test_gpu_script_smoke_on_cpu(tmp_path):
    """Every step and flag: torchrun labelling from a list of process counts (1 gives no torchrun row, 2 one),
    cProfile, and the utilisation column (a fake nvidia-smi on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "benchmarks/gpu.sh", "--device", "cpu", "--smoke", "--out", str(tmp_path / "g"),
                          "--procs", "1,2", "--profile"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout[run.stdout.index("| step") :]
    for step in ("| teach |", "| label (teach --unlabeled) |", "| label, 2 processes (torchrun) |", "| finetune |",
                 "| distil |", "| bench teacher:"):  # fmt: skip
        assert step in table
    assert next(line for line in table.splitlines() if line.startswith("| teach |")).endswith("| 37% |")
    profile = (tmp_path / "g" / "profile.txt").read_text()
    for step in ("teach", "label", "finetune", "distil"):
        assert f"===== {step}: " in profile
    own = profile[profile.index("===== teach: the 25 of nerdistil's own") :]
    assert "run_teach" in own  # a real profile of nerdistil's own code (imports can push it out of the top 25)
    assert "1 processes" not in table and not (tmp_path / "g" / "labelled_procs_1").exists()
    procs = json.loads((tmp_path / "g" / "labelled_procs_2" / "report.json").read_text())
    assert procs["processes"] == 2
    for name in ("teacher", "labelled", "finetune", "distil"):
        report = json.loads((tmp_path / "g" / name / "report.json").read_text())
        assert report["device"] == "cpu" and report["device_name"]
    labelled = json.loads((tmp_path / "g" / "labelled" / "report.json").read_text())
    assert labelled["soft_labels"]["splits"]["unlabeled"] == 10 * 20  # --copies 10 of the 20 train tweets


def test_profiled_steps_keep_their_exit_status(tmp_path):
    """``--profile`` runs nerdistil under cProfile without swallowing a failing step's exit status."""
    script = (ROOT / "benchmarks" / "gpu.sh").read_text()
    snippet = script[script.index("PROFILED='") + len("PROFILED='") :]
    snippet = snippet[: snippet.index("sys.exit(code)'") + len("sys.exit(code)")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", snippet, str(tmp_path / "p.prof"), "teach", "--corpus",
                          str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 2 and "corpus folder not found" in run.stderr
    assert (tmp_path / "p.prof").stat().st_size > 0  # the profile is written all the same


def test_bad_process_counts_stop_before_any_step(tmp_path):
    """``--procs`` takes counts separated by commas: anything else is a one-line error (exit 2) before any work."""
    for bad in ("0", "4,", "four", "2,-1"):
        run = subprocess.run(["bash", "benchmarks/gpu.sh", "--device", "cpu", "--smoke", "--out", str(tmp_path / "g"),
                              "--procs", bad], cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert run.returncode == 2 and "--procs takes process counts" in run.stderr, (bad, run.stderr)
        assert not (tmp_path / "g").exists()
