"""``benchmarks/gpu.sh`` in its CI-sized form: every step and flag of the GPU benchmark, run on the CPU."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_script_smoke_on_cpu(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "benchmarks/gpu.sh", "--device", "cpu", "--smoke", "--out", str(tmp_path / "g")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    table = run.stdout[run.stdout.index("| step") :]
    for step in ("| teach |", "| label (teach --unlabeled) |", "| finetune |", "| distil |", "| bench teacher:"):
        assert step in table
    for name in ("teacher", "labelled", "finetune", "distil"):
        report = json.loads((tmp_path / "g" / name / "report.json").read_text())
        assert report["device"] == "cpu" and report["device_name"]
    labelled = json.loads((tmp_path / "g" / "labelled" / "report.json").read_text())
    assert labelled["soft_labels"]["splits"]["unlabeled"] == 10 * 20  # --copies 10 of the 20 train tweets
