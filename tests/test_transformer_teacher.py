"""The transformer teacher behind the Teacher seam: soft labels checked against a direct forward pass.

The teacher is the tiny distilled student (a 2-layer BERT token classifier, WordPiece); a second
tiny student with a byte-level BPE tokenizer (RoBERTa) learns from its word-level soft labels, so
teacher and student tokenizers differ.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nerdistil import softlabels
from nerdistil.data.conll import read_conll
from nerdistil.errors import UserError
from nerdistil.tags import bio_transitions
from nerdistil.teacher.base import detect_kind, load_teacher

DATA = Path(__file__).parent / "data"


def _reference(folder, sentences, labels, temperature):
    """softmax(first-subword logits / T) per word, straight from transformers, in corpus label order."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    order = [names.index(lab) for lab in labels]
    out = []
    for words in sentences:
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0]
        first, seen = [], set()
        for pos, w in enumerate(enc.word_ids()):
            if w is not None and w not in seen:
                seen.add(w)
                first.append(pos)
        p = torch.softmax(logits[first].double() / temperature, -1).numpy()
        out.append(p[:, order])
    return out


def _valid_bio(tags):
    return all(not t.startswith("I-") or (i > 0 and tags[i - 1][2:] == t[2:] and tags[i - 1] != "O")
               for i, t in enumerate(tags))  # fmt: skip


@pytest.fixture(scope="module")
def transformer_taught(tiny_distilled, tmp_path_factory):
    from nerdistil.cli import main

    corpus_dir = DATA / "corpus"

    out = tmp_path_factory.mktemp("tt") / "t"
    try:
        main(["teach", "--corpus", str(corpus_dir), "--teacher", str(tiny_distilled), "--out", str(out),
              "--temperature", "2"])  # fmt: skip
    except SystemExit as e:
        assert e.code in (0, None)
    return out


def test_detect_kind(tiny_teacher, tiny_distilled, tmp_path):
    assert detect_kind(tiny_teacher / "teacher.pt") == "flair"
    assert detect_kind(tiny_distilled) == "transformer"
    assert detect_kind("some-org/some-ner-model") == "transformer"  # a hub name
    with pytest.raises(UserError, match="no config.json"):
        detect_kind(tmp_path)
    with pytest.raises(UserError, match="no such model"):
        detect_kind(tmp_path / "missing.pt")


def test_soft_labels_are_the_softmax_at_t(transformer_taught, tiny_distilled):
    ds = softlabels.load(transformer_taught / "soft_labels")
    meta = softlabels.meta(ds)  # the dataset alone says its temperature, kind and teacher
    assert meta["temperature"] == 2.0 and meta["kind"] == "posterior"
    assert [t["kind"] for t in meta["teachers"]] == ["transformer"]
    assert meta["teachers"][0]["sha256"] and len(meta["teachers"][0]["sha256"]) == 64
    labels = softlabels.label_names(ds)
    rows = list(ds["test"].with_format("numpy"))
    words = [[str(w) for w in r["tokens"]] for r in rows]
    want = _reference(tiny_distilled, words, labels, 2.0)
    allowed = bio_transitions(labels)
    for r, p in zip(rows, want):
        got = np.stack(r["probs"])
        np.testing.assert_allclose(got, p, atol=1e-5)
        tags = [labels[i] for i in r["teacher_tags"]]
        assert _valid_bio(tags)
        assert allowed[len(labels), r["teacher_tags"][0]]
    report = json.loads((transformer_taught / "report.json").read_text())
    assert report["teacher"]["kind"] == "transformer" and report["soft_labels"]["max_row_sum_error"] < 1e-4
    assert report["soft_labels"]["decoding"].startswith("valid-BIO Viterbi")


def test_tags_are_the_valid_bio_viterbi_at_t1(tiny_distilled, corpus_dir):
    from nerdistil.tags import decode_posteriors

    teacher = load_teacher(tiny_distilled)
    sents = read_conll(corpus_dir / "test.txt")
    labels = teacher.labels
    p1 = _reference(tiny_distilled, [s.tokens for s in sents], labels, 1.0)
    for lab, p in zip(teacher.label(sents, labels, temperature=3.0, decode_probs=True), p1):
        assert lab.tags == decode_posteriors(p, labels)
        np.testing.assert_allclose(lab.decode_probs, p, atol=1e-5)
    hard = list(teacher.label(sents, labels, kind="hard"))
    assert all(np.array_equal(h.probs.max(-1), np.ones(len(h.tags))) for h in hard)
    with pytest.raises(UserError, match="transformer teacher makes soft labels"):
        next(teacher.label(sents, labels, kind="flair"))


def test_mixed_ensemble_averages_flair_and_transformer(tiny_teacher, tiny_distilled, corpus_dir, tmp_path, cli):
    out = tmp_path / "mixed"
    code, _, err = cli("teach", "--corpus", corpus_dir, "--teacher", tiny_teacher / "teacher.pt", "--teacher",
                       tiny_distilled, "--out", out)  # fmt: skip
    assert code == 0, err
    ds = softlabels.load(out / "soft_labels")
    assert [t["kind"] for t in softlabels.meta(ds)["teachers"]] == ["flair", "transformer"]
    labels = softlabels.label_names(ds)
    test = read_conll(corpus_dir / "test.txt")
    members = [load_teacher(tiny_teacher / "teacher.pt"), load_teacher(tiny_distilled)]
    alone = [[lab.probs for lab in m.label(test, labels, 1.0)] for m in members]
    for i, r in enumerate(ds["test"].with_format("numpy")):
        np.testing.assert_allclose(np.stack(r["probs"]), (alone[0][i] + alone[1][i]) / 2, atol=1e-5)


def test_label_mismatch_is_one_line(tiny_student, corpus_dir, tmp_path, cli):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = tmp_path / "person_only"
    labels = ["O", "B-person", "I-person"]
    model = AutoModelForTokenClassification.from_pretrained(
        tiny_student, num_labels=3, id2label=dict(enumerate(labels)), label2id={v: k for k, v in enumerate(labels)}
    )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_student).save_pretrained(folder)
    code, _, err = cli("teach", "--corpus", corpus_dir, "--teacher", folder, "--out", tmp_path / "t")
    assert code == 2 and "cannot predict corpus label" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


def _tiny_roberta(path):
    """A 2-layer RoBERTa with a byte-level BPE tokenizer trained on the test corpus: another tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    words = [w for f in ("train", "dev", "test") for s in read_conll(DATA / "corpus" / f"{f}.txt") for w in s.tokens]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(words)] * 3, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    path.mkdir()
    bpe.save_model(str(path))
    tok = RobertaTokenizerFast(vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"),
                               model_max_length=64)  # fmt: skip
    tok.save_pretrained(path)
    cfg = RobertaConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=70, pad_token_id=tok.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    RobertaModel(cfg).save_pretrained(path)
    return path


def test_cross_tokenizer_distillation(transformer_taught, tmp_path, cli):
    """A byte-BPE student learns from a WordPiece teacher's word-level soft labels."""
    student = _tiny_roberta(tmp_path / "roberta")
    out = tmp_path / "s"
    code, _, err = cli("distil", "--soft-labels", transformer_taught, "--student", student, "--out", out,
                       "--epochs", "1", "--batch-size", "4")  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["temperature"] == 2.0  # read from the soft-label dataset itself


def test_evaluate_predict_and_bench_take_a_transformer_teacher(tiny_distilled, tiny_teacher, corpus_dir, tmp_path,
                                                               cli):  # fmt: skip
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus_dir / "test.txt", "--teacher", tiny_distilled,
                       "--json", tmp_path / "e.json")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "e.json").read_text())
    # one loader (deploy.loader): a token-classifier folder is a student to evaluate, a teacher to bench-latency
    assert report["kind"] == "student" and report["teacher_agreement"]["word_agreement"] == 1.0
    raw = tmp_path / "raw.txt"
    raw.write_text("Obama visits London today\n\n")
    code, _, err = cli("predict", tiny_distilled, "--input", raw, "--output", tmp_path / "p.jsonl")
    assert code == 0, err
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["words"] == ["Obama", "visits", "London", "today"]
    code, _, err = cli("bench-latency", "--teacher", tiny_distilled, "--student", tiny_distilled, "--corpus",
                       corpus_dir / "test.txt", "--batch-sizes", "2", "--repeats", "1", "--warmup", "0",
                       "--json", tmp_path / "b.json")  # fmt: skip
    assert code == 0, err
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert rows[0]["model"].startswith("teacher:") and rows[0]["f1"] == rows[1]["f1"]
