"""bench-latency on tiny models: every model in its own process, the JSON schema, the plot, ONNX."""

import importlib.util
import json
import multiprocessing
import shutil
import sys
from pathlib import Path

import pytest

from nerdistil import bench
from nerdistil.data.conll import read_conll
from nerdistil.errors import UserError

DATA = Path(__file__).parent / "data"
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


def test_a_model_failing_in_its_own_process_is_a_one_line_error(tiny_teacher, exported, corpus_dir, tmp_path, cli):
    # the parent only sees nerdistil.json; the graph fails to load inside the measuring process, whose UserError
    # must reach the user as one line (exit 2), leaving no process behind
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    (bad / "model.onnx").write_bytes(b"not onnx")
    code, _, err = cli("bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", bad, "--corpus",
                       corpus_dir / "test.txt", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0")  # fmt: skip
    assert code == 2 and "model.onnx cannot be loaded" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not multiprocessing.active_children()


def test_rounds_interleave_the_models(tiny_teacher, exported, corpus_dir):
    # two models, two rounds, two batch sizes: each round loads every model in turn (the first one rotating) for one
    # pass per batch size, never two passes at once; each row pools its model's two passes
    specs = [bench.Spec("teacher", str(tiny_teacher / "teacher.pt"), "teacher"),
             bench.Spec("export", str(exported), "student", "export")]  # fmt: skip
    sents = read_conll(corpus_dir / "test.txt")
    words, gold = [s.tokens for s in sents], [s.tags for s in sents]
    report = bench.run_bench(specs, words, gold, [1, 4], threads=1, repeats=2, warmup=1)
    passes = report["schedule"]
    assert [(p["batch_size"], p["round"], p["model"]) for p in passes] == [
        (1, 1, "teacher"), (4, 1, "teacher"), (1, 1, "export"), (4, 1, "export"),
        (1, 2, "export"), (4, 2, "export"), (1, 2, "teacher"), (4, 2, "teacher")]  # fmt: skip
    for a, b in zip(passes, passes[1:]):  # measured in the models' own processes: no overlap, in this order
        assert a["start"] <= a["end"] <= b["start"]
    rows = {(r["model"], r["batch_size"]): r for r in report["results"]}
    assert set(rows) == {(m, b) for m in ("teacher", "export") for b in (1, 4)}
    for (model, bs), r in rows.items():
        spent = sum(p["end"] - p["start"] for p in passes if p["model"] == model and p["batch_size"] == bs)
        # 2 passes over the corpus in the row's throughput; the per-batch times fit inside the passes' spans
        assert 2 * len(words) / r["sentences_per_s"] <= spent + 1e-4
        assert r["f1"] is not None and r["sentences_sha256"] == bench.fingerprint(words)
    assert "interleaved" in report["timing"]
    assert rows["export", 1]["speedup_vs_teacher"] == rows["teacher", 1]["p50_ms"] / rows["export", 1]["p50_ms"]
    assert not multiprocessing.active_children()


@pytest.fixture(scope="module")
def ensemble_teach(tiny_student, tmp_path_factory):
    """A cross-fitted ensemble of 3 BiLSTM-CRFs on one frozen tiny BERT (every layer averaged), via `teach`."""
    from nerdistil.cli import main

    out = tmp_path_factory.mktemp("ens") / "teach"
    try:
        main(["teach", "--corpus", str(DATA / "corpus"), "--out", str(out), "--embeddings", f"{tiny_student}@all",
              "--epochs", "2", "--ensemble", "3", "--cross-fit", "--seed", "4"])  # fmt: skip
    except SystemExit as e:
        assert e.code in (0, None)
    return out


def _stored(folder, split: str) -> tuple[list[list[str]], list[list[str]]]:
    """A teach folder's words and stored (decoded) teacher tags of one split."""
    from nerdistil import softlabels

    ds = softlabels.load(folder / "soft_labels")
    names = softlabels.label_names(ds)
    rows = list(softlabels.rows(ds[split]))
    return [list(r["tokens"]) for r in rows], [[names[i] for i in r["teacher_tags"]] for r in rows]


def test_an_ensemble_teach_folder_predicts_its_stored_dev_and_test_tags(ensemble_teach, corpus_dir):
    """evaluate's predictor over a teach folder: every member, one encoder, the mean posteriors decoded, as teach."""
    from nerdistil.deploy.loader import load_tagger
    from nerdistil.evaluate import run_evaluate
    from nerdistil.teacher.flair.model import FlairTeacher

    report = json.loads((ensemble_teach / "report.json").read_text())
    assert [m["file"] for m in report["members"]] == ["teacher.pt", "teacher_2.pt", "teacher_3.pt"]
    tagger = load_tagger(ensemble_teach)  # recorded by teach: no --trust-teacher
    fn, kind, params, labels = tagger.predict, tagger.kind, tagger.params, tagger.labels
    assert kind == "ensemble of 3 flair" and labels == report["labels"]
    members = [FlairTeacher.load(str(ensemble_teach / m["file"])) for m in report["members"]]
    for split in ("dev", "test"):
        words, stored = _stored(ensemble_teach, split)
        assert fn(words) == stored
        assert any(m.predict(words) != stored for m in members)  # not any one member's tags: the mean's
    encoder = sum(p.numel() for p in members[0].tagger.embeddings.parameters())
    assert params == report["params"] - 2 * encoder  # the members' heads, the shared encoder once
    scored = run_evaluate(ensemble_teach, corpus_dir / "dev.txt")
    assert scored["f1"] == pytest.approx(report["scores"]["dev"]["f1"])


def test_the_shared_encoder_runs_once_a_batch_not_once_a_member(ensemble_teach, monkeypatch):
    from flair.embeddings import TransformerWordEmbeddings

    from nerdistil.teacher.ensemble import Ensemble, load_ensemble

    ens = load_ensemble(ensemble_teach)
    assert isinstance(ens, Ensemble) and ens.merged == 2
    shared = ens.members[0].tagger.embeddings
    assert all(m.tagger.embeddings is shared for m in ens.members)
    calls = []
    original = TransformerWordEmbeddings._add_embeddings_internal

    def counting(self, sentences):
        calls.append((id(self), len(sentences)))
        return original(self, sentences)

    monkeypatch.setattr(TransformerWordEmbeddings, "_add_embeddings_internal", counting)
    words, _ = _stored(ensemble_teach, "dev")
    for bs in (1, 2):  # as bench-latency calls it: one batch a call
        for start in range(0, len(words), bs):
            calls.clear()
            batch = words[start : start + bs]
            ens.predict(batch, batch_size=len(batch))
            assert calls == [(id(shared), len(batch))]
    calls.clear()
    ens.predict(words, batch_size=2)
    assert len(calls) == -(-len(words) // 2) and sum(n for _, n in calls) == len(words)


def test_an_untrusted_member_file_is_refused(ensemble_teach, tmp_path):
    from nerdistil.teacher.ensemble import check_ensemble

    folder = tmp_path / "copy"
    shutil.copytree(ensemble_teach, folder)
    assert check_ensemble(folder) == [str(folder / f) for f in ("teacher.pt", "teacher_2.pt", "teacher_3.pt")]
    with open(folder / "teacher_3.pt", "ab") as f:
        f.write(b"\0")  # no longer the file nerdistil wrote
    with pytest.raises(UserError, match="refusing to load"):
        check_ensemble(folder)
    check_ensemble(folder, trust_teacher=True)


def test_bench_latency_times_an_ensemble_teach_folder_end_to_end(ensemble_teach, tiny_distilled, corpus_dir):
    from nerdistil.teacher.ensemble import load_ensemble

    report = bench.run_bench_latency(ensemble_teach, [tiny_distilled], corpus_dir / "test.txt", "1,2", threads=1,
                                     repeats=1, warmup=0, teacher_name="ensemble teacher")  # fmt: skip
    rows = report["results"]
    assert all(KEYS | {"f1", "speedup_vs_teacher"} <= set(r) for r in rows)
    teacher = [r for r in rows if r["model"] == "ensemble teacher"]
    assert [r["batch_size"] for r in teacher] == [1, 2]
    files = ("teacher.pt", "teacher_2.pt", "teacher_3.pt")
    disk = sum((ensemble_teach / f).stat().st_size for f in files) / 2**20
    params = load_ensemble(ensemble_teach).params
    taught = json.loads((ensemble_teach / "report.json").read_text())
    for r in teacher:
        assert r["params"] == params and r["disk_mb"] == pytest.approx(disk)
        assert r["speedup_vs_teacher"] == 1 and r["f1"] == pytest.approx(taught["scores"]["test"]["f1"])
    for r in rows:
        assert r["p50_ms"] > 0 and r["sentences_per_s"] > 0
        if r["model"] != "ensemble teacher":
            base = next(t for t in teacher if t["batch_size"] == r["batch_size"])
            assert r["speedup_vs_teacher"] == pytest.approx(base["p50_ms"] / r["p50_ms"])
    assert not multiprocessing.active_children()
