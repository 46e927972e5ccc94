"""A CRF student (--head crf): trains on posterior KD, saves its transitions, decodes with them everywhere."""

import json
from pathlib import Path

import numpy as np
import pytest

from nerdistil.data.conll import read_conll

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "corpus"


def _main(*args: str) -> None:
    from nerdistil.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        assert e.code in (0, None)


@pytest.fixture(scope="module")
def crf_student(tiny_teacher, tiny_student, tmp_path_factory):
    out = tmp_path_factory.mktemp("crf") / "s"
    _main("distil", "--soft-labels", str(tiny_teacher), "--student", str(tiny_student), "--out", str(out),
          "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--head", "crf")  # fmt: skip
    return out


def test_crf_student_saves_its_transitions_beside_a_plain_token_classifier(crf_student, caplog):
    from safetensors.numpy import load_file
    from transformers import AutoModelForTokenClassification

    cfg = json.loads((crf_student / "config.json").read_text())
    assert cfg["nerdistil_head"] == "crf"
    head = load_file(str(crf_student / "crf.safetensors"))
    L = len(cfg["id2label"])
    assert head["transitions"].shape == (L, L) and head["start"].shape == (L,) and head["end"].shape == (L,)
    assert np.abs(head["transitions"]).max() > 0.01  # trained at the head's learning rate, not left at zero
    report = json.loads((crf_student / "report.json").read_text())
    assert report["head"] == "crf" and {"loss_ce", "loss_kd"} <= set(report["history"][0])
    with caplog.at_level("WARNING"):
        AutoModelForTokenClassification.from_pretrained(crf_student)  # loads in transformers, no unused weights
    assert "not used" not in caplog.text


def test_crf_student_decodes_with_its_transitions(crf_student):
    from nerdistil.crf import read_head
    from nerdistil.tags import bio_transitions, bio_viterbi
    from nerdistil.tokclf import load_classifier, word_logits

    model, tokenizer, labels = load_classifier(crf_student)
    assert model.crf is not None
    words = [s.tokens for s in read_conll(CORPUS / "test.txt")]
    from nerdistil.deploy.loader import load_tagger

    got = load_tagger(crf_student).predict(words)
    crf = read_head(crf_student)
    allowed = bio_transitions(labels)
    for sent, tags in zip(words, got):
        (logits,) = word_logits(model, tokenizer, [sent], len(labels))
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        assert tags == [labels[k] for k in bio_viterbi(logp, allowed, crf)]


def test_crf_export_tags_equal_the_pytorch_student(crf_student, tmp_path):
    import onnx

    from nerdistil.deploy.export import run_export
    from nerdistil.deploy.loader import load_tagger
    from nerdistil.deploy.runtime import Tagger

    out = tmp_path / "e"
    run_export(crf_student, out, "none", CORPUS / "dev.txt", draws=50)
    words = [s.tokens for s in read_conll(CORPUS / "test.txt")]
    words.append([w for s in words for w in s] * 4)  # longer than the tiny model's 64 positions: word windows
    ref = load_tagger(crf_student).predict(words)
    got = Tagger.load(out).tag_words(words, batch_size=3)
    assert [r["tags"] for r in got] == ref
    meta = json.loads((out / "nerdistil.json").read_text())
    assert meta["head"] == "crf" and meta["gate"]["candidates"][0]["word_agreement"] == 1.0
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx"), load_external_data=False).metadata_props}
    assert props["nerdistil.head"] == "crf"


def test_crf_finetune_and_bad_settings(tiny_teacher, tiny_student, tmp_path, cli):
    out = tmp_path / "ft"
    _main("finetune", "--soft-labels", str(tiny_teacher), "--student", str(tiny_student), "--out", str(out),
          "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--head", "crf")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["head"] == "crf" and report["alpha_kd"] == 0 and "loss_kd" not in report["history"][0]
    base = ["distil", "--soft-labels", str(tiny_teacher), "--student", str(tiny_student), "--epochs", "1"]
    code, _, err = cli(*base, "--out", str(tmp_path / "a"), "--head", "crf", "--alpha-pair", "1")
    assert code == 2 and "edge-marginals" in err and not (tmp_path / "a").exists()
    code, _, err = cli(*base, "--out", str(tmp_path / "b"), "--alpha-pair", "1")
    assert code == 2 and "--head crf" in err
    code, _, err = cli(*base, "--out", str(tmp_path / "c"), "--head", "tree")
    assert code == 2 and "softmax or crf" in err


def test_crf_folder_without_its_head_file_is_one_line(crf_student, tmp_path, cli):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(crf_student, broken)
    (broken / "crf.safetensors").unlink()
    code, _, err = cli("evaluate", str(broken), "--corpus", str(CORPUS / "test.txt"))
    assert code == 2 and "crf.safetensors" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def edge_labels(tiny_teacher, tmp_path_factory):
    """The tiny teacher's soft labels relabelled with its adjacent-tag marginals (``teach --edge-marginals``)."""
    out = tmp_path_factory.mktemp("edges") / "t"
    _main("teach", "--corpus", str(CORPUS), "--out", str(out), "--teacher", str(tiny_teacher / "teacher.pt"),
          "--edge-marginals", "--temperature", "2")  # fmt: skip
    return out


def test_stored_pair_marginals_agree_with_the_word_marginals(edge_labels):
    """Summing p(w-1, w) over w-1's tag gives word w's stored posterior, over w's tag word w-1's."""
    from nerdistil import softlabels

    ds = softlabels.load(edge_labels / "soft_labels")
    meta = softlabels.meta(ds)
    assert meta["edge_marginals"] is True and meta["temperature"] == 2
    L = len(softlabels.label_names(ds))
    rows = list(softlabels.rows(ds["train"]))
    assert len(rows) == len(read_conll(CORPUS / "train.txt"))
    for row in rows:
        n = len(row["tokens"])
        assert row["edges"].shape == (n, L * L) and not row["edges"][0].any()
        pairs = softlabels.pair_marginals(row["edges"], L)
        assert pairs.shape == (n - 1, L, L)
        np.testing.assert_allclose(pairs.sum((1, 2)), 1.0, atol=1e-5)
        np.testing.assert_allclose(pairs.sum(1), row["probs"][1:], atol=1e-4)
        np.testing.assert_allclose(pairs.sum(2), row["probs"][:-1], atol=1e-4)


def test_pairwise_kd_trains_a_crf_student(edge_labels, tiny_student, tmp_path):
    out = tmp_path / "pair"
    _main("distil", "--soft-labels", str(edge_labels), "--student", str(tiny_student), "--out", str(out),
          "--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "--head", "crf", "--alpha-pair", "0.5")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["alpha_pair"] == 0.5 and report["temperature"] == 2
    assert report["history"][0]["loss_pair"] > 0 and np.isfinite(report["history"][0]["loss_pair"])
    assert (out / "crf.safetensors").is_file()


def test_windowed_pair_marginals_come_from_each_words_window(tiny_teacher, monkeypatch):
    """A long sentence's pair row (w-1, w) is from word w's window, so it still sums to w's stored posterior."""
    from nerdistil.data.conll import Sentence
    from nerdistil.teacher.flair import label as fl
    from nerdistil.teacher.flair.model import load_tagger

    monkeypatch.setattr(fl, "MAX_WINDOW_WORDS", 8)
    monkeypatch.setattr(fl, "WINDOW_CONTEXT", 2)
    tagger = load_tagger(tiny_teacher / "teacher.pt")
    words = [w for s in read_conll(CORPUS / "test.txt") for w in s.tokens][:30]
    from nerdistil import softlabels

    labels = softlabels.label_names(softlabels.load(tiny_teacher / "soft_labels"))
    (lab,) = fl.label(tagger, [Sentence(words)], labels, edges=True)
    assert lab.edges.shape == (len(words) - 1, len(labels), len(labels))
    np.testing.assert_allclose(lab.edges.sum(1), lab.probs[1:], atol=1e-4)


def test_edge_marginals_need_a_crf_teacher(tiny_distilled, tmp_path, cli):
    code, _, err = cli("teach", "--corpus", str(CORPUS), "--out", str(tmp_path / "t"), "--teacher",
                       str(tiny_distilled), "--edge-marginals")  # fmt: skip
    assert code == 2 and "CRF teacher" in err and not (tmp_path / "t").exists()


def test_a_crf_student_as_teacher_gives_its_crf_marginals(crf_student):
    """Its soft labels are its CRF's marginals (enumerated here), not a softmax of its emissions."""
    import itertools

    from nerdistil.data.conll import Sentence
    from nerdistil.teacher.base import load_teacher
    from nerdistil.tokclf import word_logits

    teacher = load_teacher(crf_student)
    assert teacher.kind == "transformer" and teacher.edge_marginals
    words = read_conll(CORPUS / "test.txt")[0].tokens[:4]
    labels = teacher.labels
    (lab,) = teacher.label([Sentence(words)], labels, temperature=2.0, edges=True)
    (logits,) = word_logits(teacher.model, teacher.tokenizer, [words], len(labels))
    trans, start, end = (x.detach().double().numpy() for x in teacher.model.crf.scores())
    K, n = len(labels), len(words)
    scores = {p: (logits[0, p[0]] + start[p[0]] + sum(trans[p[t - 1], p[t]] + logits[t, p[t]] for t in range(1, n))
                  + end[p[-1]]) / 2.0 for p in itertools.product(range(K), repeat=n)}  # fmt: skip
    z = np.logaddexp.reduce(list(scores.values()))
    unary, pair = np.zeros((n, K)), np.zeros((n - 1, K, K))
    for p, sc in scores.items():
        for t in range(n):
            unary[t, p[t]] += np.exp(sc - z)
        for t in range(1, n):
            pair[t - 1, p[t - 1], p[t]] += np.exp(sc - z)
    np.testing.assert_allclose(lab.probs, unary, atol=1e-4)
    np.testing.assert_allclose(lab.edges, pair, atol=1e-4)


def test_bench_latency_decodes_a_crf_student_with_its_transitions_on_every_backend(crf_student, tiny_teacher,
                                                                                   tmp_path, cli):  # fmt: skip
    """bench-latency's ONNX backends (plain Optimum graphs) decode with the head's transitions, as PyTorch does."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from nerdistil.data.conll import Sentence, write_conll
    from nerdistil.metrics import entity_report
    from nerdistil.tokclf import load_classifier, predict

    strong = tmp_path / "strong"
    shutil.copytree(crf_student, strong)
    head = load_file(str(strong / "crf.safetensors"))
    head["transitions"][0, 0] = -8.0  # O after O costs a lot: the transitions now change the tags
    save_file(head, str(strong / "crf.safetensors"))
    words = [s.tokens for s in read_conll(CORPUS / "test.txt")]
    model, tokenizer, labels = load_classifier(strong)
    tags = predict(model, tokenizer, words, labels)
    del model.crf
    plain = predict(model, tokenizer, words, labels)
    assert entity_report(tags, plain)["f1"] < 0.99  # the transitions change the entities
    corpus = tmp_path / "own.txt"  # the CRF decoding as "gold": a backend that decodes like it scores F1 1
    write_conll(corpus, [Sentence(w, t) for w, t in zip(words, tags)])

    code, _, err = cli("bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", strong,
                       "--corpus", corpus, "--batch-sizes", "4", "--repeats", "1", "--warmup", "1",
                       "--onnx", "--json", tmp_path / "b.json")  # fmt: skip
    assert code == 0, err
    rows = [r for r in json.loads((tmp_path / "b.json").read_text())["results"] if r["model"] == "strong"]
    f1 = {r["backend"]: r["f1"] for r in rows}
    assert set(f1) == {"pytorch", "onnx", "onnx-int8"}
    assert f1["pytorch"] == 1.0 and f1["onnx"] == pytest.approx(1.0, abs=1e-9)
