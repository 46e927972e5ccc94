"""bench-latency on tiny models: every model in its own process, the JSON schema, the plot, ONNX."""

import importlib.util
import json
import sys

import pytest

from nerdistil import bench
from nerdistil.data.conll import read_conll
from nerdistil.errors import UserError

HAVE_ORT = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("onnxruntime") is not None
KEYS = {"model", "backend", "batch_size", "padding", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "sentences_per_s",
        "words_per_s", "params", "disk_mb", "peak_rss_mb"}  # fmt: skip


def test_bench_latency_cli(tiny_teacher, tiny_distilled, corpus_dir, tmp_path, cli):
    args = ["bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", tiny_distilled,
            "--corpus", corpus_dir / "test.txt", "--batch-sizes", "1,4", "--padding", "dynamic,fixed:64",
            "--repeats", "1", "--warmup", "1", "--json", tmp_path / "b.json", "--plot", tmp_path / "b.png"]  # fmt: skip
    if HAVE_ORT:
        args.append("--onnx")
    code, out, err = cli(*args)
    assert code == 0, err
    report = json.loads((tmp_path / "b.json").read_text())
    rows = report["results"]
    assert all(KEYS <= set(r) for r in rows)
    combos = {(r["backend"], r["padding"], r["batch_size"]) for r in rows if r["model"] == tiny_distilled.name}
    expected = {("pytorch", p, b) for p in ("dynamic", "fixed:64") for b in (1, 4)}
    if HAVE_ORT:
        expected |= {(be, "dynamic", b) for be in ("onnx", "onnx-int8") for b in (1, 4)}
    assert combos == expected
    teacher_rows = [r for r in rows if r["model"].startswith("teacher:")]
    assert len(teacher_rows) == 2 and all(abs(r["speedup_vs_teacher"] - 1) < 1e-9 for r in teacher_rows)
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["peak_rss_mb"] > 50 and r["params"] > 0 and r["disk_mb"] > 0
        assert r["f1"] is not None
    assert report["machine"]["threads"] >= 1 and "end to end" in report["timing"]
    words = [s.tokens for s in read_conll(corpus_dir / "test.txt")]
    assert {r["sentences_sha256"] for r in rows} == {bench.fingerprint(words)}  # every model saw the same input
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert "speed-up" in out


def test_onnx_without_optimum_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optimum.onnxruntime", None)
    with pytest.raises(UserError, match="pip install 'nerdistil\\[onnx\\]'"):
        bench.export_onnx(str(tmp_path), tmp_path / "onnx")


def test_bad_options_are_one_line_errors(tiny_teacher, tmp_path, corpus_dir, cli):
    code, _, err = cli("bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", tmp_path,
                       "--corpus", corpus_dir / "test.txt")  # fmt: skip
    assert code == 2 and "config.json" in err
    code, _, err = cli("bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", tmp_path,
                       "--corpus", corpus_dir / "test.txt", "--padding", "fixed:x")  # fmt: skip
    assert code == 2 and "--padding" in err


def test_latency_stats_by_hand():
    secs = [0.001 * x for x in (1, 2, 3, 4, 100)]  # ms: 1 2 3 4 100
    st = bench.latency_stats(secs, n_sentences=10, n_words=50)
    assert st["p50_ms"] == pytest.approx(3.0)
    assert st["p90_ms"] == pytest.approx(4 + 0.6 * 96)  # linear interpolation between 4 and 100
    assert st["p99_ms"] == pytest.approx(4 + 0.96 * 96)
    assert st["mean_ms"] == pytest.approx(22.0)
    assert st["sentences_per_s"] == pytest.approx(10 / 0.110)
    assert st["words_per_s"] == pytest.approx(50 / 0.110)


def test_fingerprint_depends_on_order_and_split():
    a = bench.fingerprint([["a", "b"], ["c"]])
    assert a == bench.fingerprint([["a", "b"], ["c"]])
    assert a != bench.fingerprint([["c"], ["a", "b"]]) and a != bench.fingerprint([["a"], ["b", "c"]])


def test_run_bench_latency_builds_the_specs_and_checks_first(tiny_teacher, tiny_distilled, corpus_dir, tmp_path,
                                                             monkeypatch):  # fmt: skip
    """The command's orchestration, without the timing: one spec per backend and padding, outputs written."""
    seen = []

    def fake_run_bench(specs, words, gold, sizes, threads, repeats, warmup):
        seen.append((specs, len(words), gold is not None, sizes, threads, repeats, warmup))
        return {"results": [], "machine": {"threads": threads}, "n_sentences": len(words)}

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    with pytest.raises(UserError, match="--warmup must be at least 0"):
        bench.run_bench_latency(tiny_teacher / "teacher.pt", [tiny_distilled], corpus_dir / "test.txt", warmup=-1)
    with pytest.raises(UserError, match="--batch-sizes"):
        bench.run_bench_latency(tiny_teacher / "teacher.pt", [tiny_distilled], corpus_dir / "test.txt", "1,x")
    assert seen == []
    report = bench.run_bench_latency(tiny_teacher / "teacher.pt", [tiny_distilled], corpus_dir / "test.txt", "2,4",
                                     threads=1, padding="dynamic,fixed:32", max_sentences=3,
                                     json_out=tmp_path / "b.json")  # fmt: skip
    ((specs, n, has_gold, sizes, threads, repeats, warmup),) = seen
    assert [(s.kind, s.backend, s.padding) for s in specs] == [("teacher", "pytorch", "dynamic"),
                                                               ("student", "pytorch", "dynamic"),
                                                               ("student", "pytorch", "fixed:32")]  # fmt: skip
    assert (n, has_gold, sizes, threads, repeats, warmup) == (3, True, [2, 4], 1, 3, 5)
    assert json.loads((tmp_path / "b.json").read_text()) == report
