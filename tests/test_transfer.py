"""Unlabeled transfer text: the streaming labeller, batch mixing and confidence filtering."""

import json
from pathlib import Path

import numpy as np
import pytest

from nerdistil import config as cfgmod
from nerdistil import softlabels
from nerdistil.align import load_tokenizer
from nerdistil.data.conll import Sentence, read_conll
from nerdistil.errors import UserError
from nerdistil.student.data import make_examples
from nerdistil.teacher.ensemble import label_stream
from nerdistil.teacher.flair import label as fl
from nerdistil.teacher.flair import model as fm
from nerdistil.teacher.teach import read_unlabeled, run_teach
from nerdistil.trainer import MixedBatchSampler

CORPUS = Path(__file__).parent / "data" / "corpus"


def test_reader_streams_the_file_line_by_line(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_bytes(b"first tweet @a\n\n   \nsecond #tag http://x.y/z\nthird\n\xff broken\nnever reached\n")
    it = read_unlabeled(raw)
    first = next(it)
    assert (first.tokens, first.tags, first.line) == (["first", "tweet", "@a"], None, 1)
    assert [(s.tokens, s.line) for s in (next(it), next(it))] == [(["second", "#tag", "http://x.y/z"], 4),
                                                                  (["third"], 5)]  # fmt: skip
    # the bad byte on line 6 is only met when the stream gets there: the file was never read whole
    with pytest.raises(UserError, match=r"raw.txt:6: invalid UTF-8"):
        next(it)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(UserError, match="holds no tweets"):
        list(read_unlabeled(empty))


def test_labeller_holds_at_most_one_chunk(tiny_teacher):
    tagger = fm.load_tagger(tiny_teacher / "teacher.pt")
    labels = softlabels.label_names(softlabels.load(tiny_teacher / "soft_labels"))
    sents = read_conll(CORPUS / "train.txt") * 3
    consumed = 0

    def source():
        nonlocal consumed
        for s in sents:
            consumed += 1
            yield Sentence(s.tokens)

    expected = [lab.probs for lab in fl.label(tagger, sents, labels, 2.0)]
    got = 0
    for i, row in enumerate(label_stream([fm.FlairTeacher(tagger, {})], source(), labels, 2.0, chunk=5)):
        assert consumed - i <= 5  # never more than one chunk read ahead of what was yielded
        assert row.sentence.tokens == sents[i].tokens
        np.testing.assert_allclose(row.probs, expected[i], atol=1e-6)  # chunking changes no number
        got += 1
    assert got == len(sents)


def test_unlabeled_text_is_written_in_shards(tiny_teacher, tmp_path):
    raw = tmp_path / "tweets.txt"
    words = [w for s in read_conll(CORPUS / "train.txt") for w in s.tokens]
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=rng.integers(3, 25))) for _ in range(1500)]
    raw.write_text("\n".join(lines) + "\n")
    cfg = cfgmod.TeachConfig(corpus=str(CORPUS), out=str(tmp_path / "t"), teacher=str(tiny_teacher / "teacher.pt"),
                             unlabeled=str(raw), shard_size="50KB")  # fmt: skip
    report = run_teach(cfg)
    assert report["soft_labels"]["splits"]["unlabeled"] == 1500
    shards = list((tmp_path / "t" / "soft_labels" / "unlabeled").glob("*.arrow"))
    assert len(shards) > 1
    ds = softlabels.load(tmp_path / "t" / "soft_labels")["unlabeled"]
    for row, line in zip(ds.select(range(0, 1500, 97)), lines[::97]):
        assert row["tokens"] == line.split() and not row["has_gold"]
    assert report["soft_labels"]["max_row_sum_error"] < 1e-5


def test_mixed_batches_keep_the_ratio_and_see_every_gold_example_once():
    gold, extra = list(range(0, 30)), list(range(100, 111))
    sampler = MixedBatchSampler(gold, extra, batch_size=8, ratio=0.25, seed=3)
    seen_extra = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 5
        assert all(sum(i >= 100 for i in b) == 2 for b in batches)
        assert sorted(i for b in batches for i in b if i < 100) == gold
        assert batches == list(sampler)  # the same (seed, epoch), the same batches: resumable
        seen_extra += [i for b in batches for i in b if i >= 100]
    # the teacher-only order runs on across epochs: 20 draws over 11 sentences cover each at least once
    assert set(seen_extra) == set(extra) and len(seen_extra) == 20
    sampler.set_epoch(1)
    assert list(sampler) != batches
    assert MixedBatchSampler(gold, [], 8, 0.5).n_teacher == 0  # nothing to mix in: plain gold batches
    with pytest.raises(ValueError):
        MixedBatchSampler(gold, extra, 8, 1.0)


def test_low_confidence_teacher_only_words_lose_their_kd_target(tiny_student):
    tok = load_tokenizer(str(tiny_student))
    label2id = {"O": 0, "B-person": 1, "I-person": 2}
    sure, unsure = [0.9, 0.05, 0.05], [0.4, 0.35, 0.25]
    probs = [np.array([sure, unsure, sure], dtype=np.float32), np.array([sure, unsure, sure], dtype=np.float32)]
    sents = [Sentence(["obama", "visits", "london"], ["B-person", "O", "O"]), Sentence(["obama", "visits", "london"])]
    ex = make_examples(tok, sents, label2id, probs, min_confidence=0.5)
    gold_words = {j for j in ex[0].window.soft_pos if j >= 0}
    teacher_words = {j for j in ex[1].window.soft_pos if j >= 0}
    assert gold_words == {0, 1, 2}  # gold sentences keep every soft row
    assert teacher_words == {0, 2}  # word 1 (max 0.4 < 0.5) has no KD target
    assert [e.gold for e in ex] == [True, False]
    assert {j for j in make_examples(tok, sents, label2id, probs)[1].window.soft_pos if j >= 0} == {0, 1, 2}


def test_distil_with_a_teacher_only_ratio(tiny_teacher, tiny_student, cli, tmp_path):
    out = tmp_path / "s"
    code, _, err = cli("distil", "--soft-labels", tiny_teacher, "--student", tiny_student, "--out", out, "--epochs",
                       "1", "--batch-size", "4", "--teacher-only-ratio", "0.25", "--min-confidence", "0.3")  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_only_sentences"] == 2 and report["teacher_only_ratio"] == 0.25
    assert report["min_confidence"] == 0.3 and report["kd_words_below_min_confidence"] >= 0
    code, _, err = cli("distil", "--soft-labels", tiny_teacher, "--student", tiny_student, "--out", tmp_path / "x",
                       "--teacher-only-ratio", "1.5")  # fmt: skip
    assert code == 2 and "--teacher-only-ratio" in err
