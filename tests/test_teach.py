"""End to end: a tiny Flair BiLSTM-CRF trained inside the test suite, through `nerdistil teach`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nerdistil import softlabels, trust
from nerdistil.data.conll import read_conll
from nerdistil.teacher.crf import crf_marginals, flair_chain
from nerdistil.teacher.flair import label as fl
from nerdistil.teacher.flair import model as fm


@pytest.fixture(scope="module")
def taught(tiny_teacher):
    return tiny_teacher, Path(__file__).parent / "data" / "corpus"


def test_teach_writes_a_complete_run_folder(taught):
    out, corpus = taught
    expected = {"config.yaml", "report.json", "soft_labels", "teacher.pt", ".nerdistil-run.json"}
    assert {p.name for p in out.iterdir()} >= expected
    report = json.loads((out / "report.json").read_text())
    assert report["soft_labels"]["max_row_sum_error"] < 1e-5
    assert set(report["scores"]) == {"dev", "test"}
    assert 0.0 <= report["scores"]["test"]["f1"] <= 1.0
    assert report["teacher"]["sha256"] == trust.sha256(out / "teacher.pt")
    assert not any(p.name.endswith(".partial") for p in out.parent.iterdir())


def test_soft_labels_cover_every_word(taught):
    out, corpus = taught
    ds = softlabels.load(out / "soft_labels")
    labels = softlabels.label_names(ds)
    assert labels[0] == "O" and "B-person" in labels
    train = read_conll(corpus / "train.txt")
    assert ds["train"].num_rows == len(train)
    for row, sent in zip(ds["train"].with_format("numpy"), train):
        probs = np.asarray(row["probs"])
        assert list(row["tokens"]) == sent.tokens
        assert probs.shape == (len(sent.tokens), len(labels)) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        assert [labels[i] for i in row["tags"]] == sent.tags
    unl = ds["unlabeled"]
    assert unl.num_rows == 2 and not any(unl["has_gold"]) and unl[0]["tags"] == []
    assert unl[1]["tokens"] == ["@john", "loves", "#Apple", "&", "Google", "😀", "http://t.co/x"]


def test_posterior_argmax_matches_viterbi(taught):
    out, corpus = taught
    tagger = fm.load_tagger(out / "teacher.pt")
    sents = read_conll(corpus / "train.txt") + read_conll(corpus / "test.txt")
    labels = softlabels.label_names(softlabels.load(out / "soft_labels"))
    same = total = 0
    for lab in fl.label(tagger, sents, labels, temperature=1.0):
        arg = [labels[k] for k in lab.probs.argmax(-1)]
        same += sum(a == b for a, b in zip(arg, lab.tags))
        total += len(arg)
    assert same / total >= 0.95


def test_marginals_on_a_real_tagger_match_brute_force(taught):
    """Flair's own scores, our forward-backward, and enumeration over every path agree."""
    import itertools

    from flair.data import Sentence

    out, _ = taught
    tagger = fm.load_tagger(out / "teacher.pt")
    tagger.eval()
    d = tagger.label_dictionary
    start, stop = d.get_idx_for_item("<START>"), d.get_idx_for_item("<STOP>")
    sentence = [Sentence(["Obama", "visits", "Paris"])]
    with torch.no_grad():
        features, lengths, trans = tagger.forward(*tagger._prepare_tensors(sentence))
        marg = crf_marginals(features, lengths, start, trans[stop])[0]
    K, n = features.shape[-1], 3
    keep = [k for k in range(K) if k not in (start, stop)]
    scores = {}
    for path in itertools.product(keep, repeat=n):
        s = features[0, 0, path[0], start] + sum(features[0, t, path[t], path[t - 1]] for t in range(1, n))
        scores[path] = (s + trans[stop, path[-1]]).item()
    z = np.logaddexp.reduce(list(scores.values()))
    brute = np.zeros((n, K))
    for path, s in scores.items():
        for t, k in enumerate(path):
            brute[t, k] += np.exp(s - z)
    np.testing.assert_allclose(marg.numpy(), brute, atol=1e-5)
    # the adjacent-tag marginals of the same chain (the pairwise KD targets), the same way
    with torch.no_grad():
        pair = flair_chain(features, lengths, start, trans[stop], edges=True).log_edge.exp()[0]
    brute_pair = np.zeros((n - 1, K, K))
    for path, s in scores.items():
        for t in range(1, n):
            brute_pair[t - 1, path[t - 1], path[t]] += np.exp(s - z)
    np.testing.assert_allclose(pair.numpy(), brute_pair, atol=1e-5)


def test_load_existing_teacher_and_refuse_finished_out(taught, cli, tmp_path):
    out, corpus = taught
    code, stdout, err = cli("teach", "--corpus", corpus, "--out", out, "--teacher", out / "teacher.pt")
    assert code == 2 and "holds one of this command's inputs" in err  # --overwrite would delete the teacher it loads
    code, stdout, err = cli("teach", "--corpus", corpus, "--out", out)
    assert code == 2 and "finished nerdistil run" in err and "--overwrite" in err
    code, stdout, err = cli("teach", "--corpus", corpus, "--out", tmp_path / "t2", "--teacher", out / "teacher.pt",
                            "--temperature", "1")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "t2" / "report.json").read_text())
    assert report["teacher"]["trained"] is False and report["temperature"] == 1.0
    assert not (tmp_path / "t2" / "teacher.pt").exists()
    assert "soft-label check OK" in stdout


def test_not_a_tagger_is_a_clear_error(cli, tmp_path, corpus_dir):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    code, _, err = cli("teach", "--corpus", corpus_dir, "--out", tmp_path / "o", "--teacher", junk, "--trust-teacher")
    assert code == 2 and "not a model file" in err and len(err.strip().splitlines()) == 1


def test_foreign_teacher_files_need_trust(taught, cli, tmp_path, monkeypatch):
    """A Flair file nerdistil did not write is a pickle from elsewhere: refused unless --trust-teacher."""
    out, corpus = taught
    monkeypatch.setenv("NERDISTIL_HOME", str(tmp_path / "empty_registry"))  # nerdistil wrote nothing here
    code, _, err = cli("teach", "--corpus", corpus, "--out", tmp_path / "a", "--teacher", out / "teacher.pt")
    assert code == 2 and "--trust-teacher" in err and "runs code" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("evaluate", out / "teacher.pt", "--corpus", corpus / "test.txt")
    assert code == 2 and "--trust-teacher" in err
    code, _, err = cli("teach", "--corpus", corpus, "--out", tmp_path / "b", "--teacher", out / "teacher.pt",
                       "--trust-teacher")  # fmt: skip
    assert code == 0, err
    code, _, err = cli("evaluate", out / "teacher.pt", "--corpus", corpus / "test.txt", "--trust-teacher")
    assert code == 0, err


def test_teach_records_the_teachers_it_writes(taught):
    out, _ = taught
    digest = trust.sha256(out / "teacher.pt")
    assert trust.check(out / "teacher.pt") == digest  # no --trust-teacher needed for our own file


def test_label_mismatch_lists_both_sets(taught, cli, tmp_path):
    out, corpus = taught
    other = tmp_path / "c"
    other.mkdir()
    (other / "train.txt").write_text("Star B-movie\nWars I-movie\n")
    code, _, err = cli("teach", "--corpus", other, "--out", tmp_path / "o", "--teacher", out / "teacher.pt")
    assert code == 2 and "B-movie" in err and "S-person" in err


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """A typo in a shipped config (an unknown key, a bad value) is caught here, not in a user's run."""
    from nerdistil import config as cfgmod
    from nerdistil.pipeline import RunConfig

    classes = {"run": RunConfig, "teach": cfgmod.TeachConfig, "finetune": cfgmod.StudentConfig,
               "distil": cfgmod.StudentConfig}  # fmt: skip
    import yaml

    sections = yaml.safe_load(path.read_text())
    for section, cls in classes.items():
        if section in sections:
            cfgmod.load(cls, path, section)
    if "teach" not in sections and "run" not in sections:  # a flat teach file
        cfgmod.load(cfgmod.TeachConfig, path, "teach")


def test_first_run_log_keeps_a_progress_line_a_minute(tmp_path):
    """Flair's per-iteration lines, model dump and bogus test score stay off the console; --verbose shows them."""
    import subprocess
    import sys

    corpus = Path(__file__).parent / "data" / "corpus"
    base = [sys.executable, "-m", "nerdistil", "teach", "--corpus", str(corpus), "--embeddings", "chars", "--epochs",
            "2", "--set", "batch_size=4"]  # fmt: skip
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    quiet = subprocess.run([*base, "--out", str(tmp_path / "q")], capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    log = quiet.stdout + quiet.stderr
    assert "teacher epoch 1: loss " in log and "dev F1 " in log  # then at most one line a minute
    for chatter in (
        " - iter ",
        "Test data not provided",
        "SequenceTagger predicts",
        'Model: "SequenceTagger',
        "?it/s]",
        "0it [",
        " sentences/s]",
        "sentences [",
        "Saving the dataset",
    ):  # Flair's and the labelling's progress bars, which a log file is not the place for
        assert chatter not in log, chatter
    loud = subprocess.run([*base, "--out", str(tmp_path / "v"), "--verbose"], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    assert loud.returncode == 0 and " - iter " in loud.stdout + loud.stderr


def test_teacher_epochs_log_at_most_one_line_a_minute():
    """Flair's EPOCH and DEV lines are merged into one line, throttled to a minute; other INFO lines are dropped."""
    import logging

    from nerdistil.teacher.flair import _Quiet

    quiet = _Quiet()
    kept = []
    lines = [
        (0, "EPOCH 1 done: loss 0.6454 - lr: 0.100000"),
        (0.4, "DEV : loss 0.2235 - f1-score (micro avg)  0.0138"),
        (0.5, " - 0 epochs without improvement"),
        (7, "EPOCH 2 done: loss 0.2449 - lr: 0.1"),
        (7.5, "DEV : loss 0.1929 - f1-score (micro avg)  0.186"),
        (61, "EPOCH 9 done: loss 0.1193 - lr: 0.1"),
        (61.5, "DEV : loss 0.1190 - f1-score (micro avg)  0.5054"),
        (62, "Test data not provided"),
    ]
    for t, msg in lines:
        record = logging.LogRecord("flair", logging.INFO, __file__, 1, msg, (), None)
        record.created = 1000.0 + t
        if quiet.filter(record):
            kept.append(record.getMessage())
    assert kept == ["teacher epoch 1: loss 0.6454, dev loss 0.2235, dev F1 0.0138",
                    "teacher epoch 9: loss 0.1193, dev loss 0.1190, dev F1 0.5054"]  # fmt: skip
