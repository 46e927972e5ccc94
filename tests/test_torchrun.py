"""Labelling under torchrun: two processes on the gloo backend give the one-process soft labels, bit for bit."""

import os
import subprocess
import sys

import numpy as np

from nerdistil import softlabels


def _teach(args, env):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_label_like_one(tiny_teacher, corpus_dir, tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("".join(f"Obama visits London with @user{i} today #{i}\n" for i in range(9)) + "\nlast one\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("teach:\n  label_chunk: 2\n  label_batch_size: 2\n")  # many chunks: both processes get several
    common = ["teach", "--config", str(cfg), "--corpus", str(corpus_dir), "--teacher", str(tiny_teacher / "teacher.pt"),
              "--unlabeled", str(raw)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = _teach([sys.executable, "-m", "nerdistil", *common, "--out", str(tmp_path / "one")], env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _teach([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  "-m", "nerdistil", *common, "--out", str(tmp_path / "two")], env)  # fmt: skip
    assert two.returncode == 0, [ln for ln in two.stderr.splitlines() if "rror" in ln][:6]
    a, b = softlabels.load(tmp_path / "one" / "soft_labels"), softlabels.load(tmp_path / "two" / "soft_labels")
    assert sorted(a) == sorted(b) == ["dev", "test", "train", "unlabeled"]
    for split in a:
        ra, rb = list(softlabels.rows(a[split])), list(softlabels.rows(b[split]))
        assert len(ra) == len(rb) > 0
        for x, y in zip(ra, rb):  # input order kept, every value identical
            assert x["tokens"] == y["tokens"] and np.array_equal(x["tags"], y["tags"])
            assert np.array_equal(x["teacher_tags"], y["teacher_tags"])
            assert x["probs"].tobytes() == y["probs"].tobytes()
    assert not any(p.name.startswith(".two") for p in tmp_path.iterdir())  # no staging folder left behind
