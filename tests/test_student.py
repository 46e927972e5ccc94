"""A tiny student trained for a few steps through the CLI, loaded back through transformers.pipeline."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification, pipeline

from nerdistil.align import load_tokenizer
from nerdistil.data.conll import read_conll
from nerdistil.student.model import build_student, keep_layers
from nerdistil.tokclf import predict


@pytest.fixture(scope="module")
def distilled(tiny_distilled):
    return tiny_distilled, ""


def test_distil_writes_a_hf_model_folder(distilled, corpus_dir):
    out, _ = distilled
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "report.json", "nerdistil_config.yaml"} <= names
    assert not any(n.endswith((".bin", ".pkl", ".pt")) for n in names)  # pickle-free
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "distil" and report["alpha_kd"] > 0 and report["temperature"] == 1.0
    n_train = len(read_conll(corpus_dir / "train.txt"))
    assert report["train_sentences"] == n_train + 2  # gold train + the two teacher-only tweets
    assert set(report["scores"]) == {"dev", "test"} and "strict" in report["scores"]["test"]
    assert {"loss", "loss_ce", "loss_kd"} <= set(report["history"][0])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["id2label"]["0"] == "O" and "B-person" in cfg["label2id"]
    assert list((out / "tensorboard").iterdir())


def test_student_loads_in_transformers_pipeline(distilled):
    out, _ = distilled
    ner = pipeline("token-classification", model=str(out), aggregation_strategy="simple")
    result = ner("Obama visits Paris with Michelle")
    assert isinstance(result, list)
    for ent in result:
        assert {"entity_group", "score", "word", "start", "end"} <= set(ent)


def test_tensorboard_tags(distilled):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = distilled
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"losses/loss", "losses/loss_ce", "losses/loss_kd", "learning_rate/lr", "eval/f1"} <= tags


def test_finetune_is_the_same_loop_without_teacher(tiny_student, corpus_dir, tmp_path, cli):
    code, stdout, err = cli("finetune", "--corpus", corpus_dir, "--student", tiny_student, "--out", tmp_path / "ft",
                            "--epochs", "1", "--batch-size", "4")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "ft" / "report.json").read_text())
    assert report["mode"] == "finetune" and report["alpha_kd"] == 0.0 and "loss_kd" not in report["history"][0]
    assert "finetune" in stdout and "test" in stdout


def test_evaluate_student_and_teacher(distilled, tiny_teacher, corpus_dir, tmp_path, cli):
    out, _ = distilled
    code, stdout, err = cli("evaluate", out, "--corpus", corpus_dir / "test.txt", "--json", tmp_path / "r.json",
                            "--teacher", tiny_teacher / "teacher.pt")  # fmt: skip
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())
    sents = read_conll(corpus_dir / "test.txt")
    assert r["n_sentences"] == len(sents) and r["n_words"] == sum(len(s) for s in sents)
    assert {"f1", "precision", "recall", "per_type", "strict"} <= set(r)
    assert 0 <= r["teacher_agreement"]["word_agreement"] <= 1
    assert "micro (strict IOB2)" in stdout
    code, stdout, err = cli("evaluate", tiny_teacher / "teacher.pt", "--corpus", corpus_dir / "test.txt")
    assert code == 0, err
    assert "person" in stdout


def test_evaluate_clear_errors(tmp_path, corpus_dir, cli, distilled):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("evaluate", empty, "--corpus", corpus_dir / "test.txt")
    assert code == 2 and "config.json" in err
    out, _ = distilled
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (notok / f).write_bytes((out / f).read_bytes())
    code, _, err = cli("evaluate", notok, "--corpus", corpus_dir / "test.txt")
    assert code == 2 and "tokenizer" in err
    code, _, err = cli("evaluate", tmp_path / "missing", "--corpus", corpus_dir / "test.txt")
    assert code == 2 and "no such model" in err


def test_long_sentence_is_windowed_and_every_word_predicted(distilled):
    out, _ = distilled
    model = AutoModelForTokenClassification.from_pretrained(out)
    tok = load_tokenizer(str(out))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    words = ("Obama visits Paris with Michelle \u200d 😀 " * 40).split(" ")[:-1]
    assert len(words) > tok.model_max_length
    tags = predict(model, tok, [words, ["Hi"]], labels)
    assert len(tags[0]) == len(words) and len(tags[1]) == 1 and all(t in labels for t in tags[0])


def test_student_layers_copies_evenly_spaced_layers():
    from nerdistil.assets import resolve_model_name

    full = AutoModelForTokenClassification.from_pretrained(resolve_model_name("minilm"), num_labels=3)
    small, _ = build_student("minilm", ["O", "B-x", "I-x"], layers=3)
    assert small.config.num_hidden_layers == 3 and len(small.bert.encoder.layer) == 3
    for mine, theirs in zip(small.bert.encoder.layer, [full.bert.encoder.layer[i] for i in (0, 2, 5)]):
        for (n1, p1), (_, p2) in zip(mine.named_parameters(), theirs.named_parameters()):
            torch.testing.assert_close(p1, p2, msg=n1)
    torch.testing.assert_close(
        small.bert.embeddings.word_embeddings.weight, full.bert.embeddings.word_embeddings.weight
    )
    x = torch.tensor([[101, 2000, 102]])
    assert small(input_ids=x).logits.shape == (1, 3, 3)
    with pytest.raises(Exception, match="between 1 and"):
        keep_layers(small, 9)


def test_run_pipeline_end_to_end(tmp_path, corpus_dir, tiny_student, cli):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"run:\n  out: {tmp_path / 'runs'}\n  corpus: {corpus_dir}\n  wnut16: false\n  augment_copies: 1\n"
        "teach:\n  embeddings: chars\n  epochs: 3\n"
        f"finetune:\n  student: {tiny_student}\n  epochs: 1\n  batch_size: 4\n"
        f"distil:\n  student: {tiny_student}\n  epochs: 1\n  batch_size: 4\n"
        "export:\n  quantize: auto\n"
        "bench:\n  batch_sizes: '1,2'\n  repeats: 1\n  warmup: 0\n  threads: 1\n"
    )
    code, stdout, err = cli("run", cfg)
    assert code == 0, err
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert summary == json.loads((tmp_path / "runs" / "report.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["teacher (flair)", "finetune student", "distil student"]
    assert all(r["test_f1"] is not None and r["params"] > 0 for r in summary["rows"])
    # the run ends in the artifact: the distilled student exported, and every model timed in the bench stage
    export = json.loads((tmp_path / "runs" / "export" / "nerdistil.json").read_text())
    assert export["source"]["student"] == str((tmp_path / "runs" / "distil").resolve())
    assert summary["export"]["chosen"] == export["gate"]["chosen"]
    final = {r["model"]: r for r in summary["final"]}
    assert list(final) == ["teacher", "fine-tuned student", "distilled student", "shipped export"]
    bench = json.loads((tmp_path / "runs" / "bench" / "report.json").read_text())
    by_path = {(r["model"], r["batch_size"]): r for r in bench["results"]}
    teacher_b1 = next(r for (m, b), r in by_path.items() if m.startswith("teacher") and b == 1)
    for name, row in final.items():
        assert row["p50_ms_batch1"] > 0 and row["tweets_per_s_batch2"] > 0 and row["params"] > 0, name
        assert row["speedup_batch1"] == pytest.approx(teacher_b1["p50_ms"] / row["p50_ms_batch1"])
        assert row["dev_f1"] is not None and row["test_f1"] is not None
    assert final["teacher"]["speedup_batch1"] == pytest.approx(1.0)
    assert final["teacher"]["pct_of_teacher_test_f1"] in (None, pytest.approx(100.0))
    assert final["distilled student"]["test_f1"] == summary["rows"][2]["test_f1"]
    assert "shipped export" in stdout and "speed-up" in stdout
    # augment_copies: the teacher labelled one made version of each training tweet, the student learnt from them
    made = (tmp_path / "runs" / "transfer.txt").read_text().splitlines()
    n_train = len(read_conll(corpus_dir / "train.txt"))
    assert 0 < len(made) <= n_train
    teacher = json.loads((tmp_path / "runs" / "teacher" / "report.json").read_text())
    assert teacher["soft_labels"]["splits"]["unlabeled"] == len(made)
    distil = json.loads((tmp_path / "runs" / "distil" / "report.json").read_text())
    assert distil["teacher_only_sentences"] == len(made)
    stamp = (tmp_path / "runs" / "distil" / "report.json").stat().st_mtime
    code, stdout, err = cli("run", cfg)  # finished stages are reused
    assert code == 0 and (tmp_path / "runs" / "distil" / "report.json").stat().st_mtime == stamp
    assert np.isfinite(summary["seconds"])


def test_constrained_decoding_never_breaks_an_entity():
    import itertools

    from nerdistil.tags import bio_transitions, bio_viterbi

    labels = ["O", "B-a", "I-a", "B-b", "I-b"]
    allowed = bio_transitions(labels)
    rng = np.random.default_rng(0)
    for _ in range(20):
        logp = np.log(rng.dirichlet(np.ones(5), size=4))
        path = bio_viterbi(logp, allowed)
        # brute force over all valid paths
        best, best_s = None, -np.inf
        for cand in itertools.product(range(5), repeat=4):
            prev = 5
            valid = True
            for k in cand:
                valid &= bool(allowed[prev, k])
                prev = k
            s = sum(logp[t, k] for t, k in enumerate(cand))
            if valid and s > best_s:
                best, best_s = list(cand), s
        assert path == best
    # an I- after O is never produced, even when it is the per-word argmax
    logp = np.log(np.array([[0.9, 0.05, 0.01, 0.02, 0.02], [0.1, 0.1, 0.7, 0.05, 0.05]]))
    assert [labels[k] for k in bio_viterbi(logp, allowed)] in (["O", "O"], ["B-a", "I-a"], ["O", "B-a"])
