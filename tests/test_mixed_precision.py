"""`--mixed-precision` while labelling: autocast runs the teacher's network in bf16, the CRF's posteriors and their
projection onto the corpus labels stay fp32 (a bf16 matmul there used to crash the NumPy conversion)."""

import numpy as np

from nerdistil import softlabels


def test_bf16_labelling_on_cpu_matches_fp32(tiny_teacher, corpus_dir, tmp_path, cli):
    runs = {}
    for precision in ("no", "bf16"):
        out = tmp_path / precision
        code, _, err = cli("teach", "--teacher", tiny_teacher / "teacher.pt", "--trust-teacher", "--corpus",
                           corpus_dir, "--out", out, "--mixed-precision", precision, "--device", "cpu")  # fmt: skip
        assert code == 0, err
        runs[precision] = softlabels.load(out / "soft_labels")
    for split in ("train", "dev", "test"):
        a, b = runs["no"][split], runs["bf16"][split]
        assert a["tokens"] == b["tokens"]
        for ra, rb in zip(softlabels.rows(a), softlabels.rows(b)):
            pa, pb = np.asarray(ra["probs"]), np.asarray(rb["probs"])
            assert pb.dtype == np.float32 and np.allclose(pb.sum(-1), 1, atol=1e-5)
            assert np.abs(pa - pb).max() < 0.1  # bf16 keeps 8 bits of mantissa in the network, not in the CRF
