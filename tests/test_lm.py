"""Language-model distillation: preprocessing, masking, student construction, losses, CLI end to end."""

import json

import pytest
import torch

from nerdistil.errors import UserError
from nerdistil.layers import head_importance, prune_least_important_heads
from nerdistil.lm.preprocess import Steps, clean, preprocess
from nerdistil.lm.train import build_student, check_compatible, collator, encode, lm_loss, load_mlm

TWEETS = [
    "@user: check https://例え.jp/パス?q=1 now &amp; then",
    "RT @x: <b>bold</b> news www.foo.com/bar!!!",
    "!!! ??? ...",
    "Привет мир 😀 👨‍👩‍👧 café",
    "привет   МИР 😀 👨‍👩‍👧 café",
    "i love this game tonight lol",
    "gonna watch the movie with my ma",
]


def test_preprocess_tricky_tweets():
    out, stats = preprocess(TWEETS, Steps())
    assert out[0] == "check now then"  # unicode URL, '@user:' form and '&amp;' gone
    assert out[1] == "RT bold news"
    assert "Привет мир 😀 👨\u200d👩\u200d👧 café" in out  # other scripts and emoji survive
    assert len(out) == 5  # the all-punctuation tweet is empty, the Cyrillic one a duplicate
    assert stats.tweets_removed == {"empty": 1, "duplicates": 1}
    assert stats.chars_removed["urls"] == len("https://例え.jp/パス?q=1") + len("www.foo.com/bar!!!")
    assert stats.chars_removed["mentions"] == len("@user:") + len("@x:")
    assert stats.chars_removed["html"] == len("&amp;") + len("<b>") + len("</b>")
    assert stats.tweets_in == 7 and stats.tweets_out == 5


def test_preprocess_switches():
    assert clean("@user: hi!", Steps(mentions=False, punctuation=False, non_alnum=False)) == "@user: hi!"
    assert clean("hi 😀 €5", Steps(drop_emoji=True)) == "hi 5"
    assert clean("hi 😀 €5", Steps()) == "hi 😀 5"
    out, _ = preprocess(["a b", "A  b"], Steps(dedupe=False))
    assert len(out) == 2


def test_preprocess_cli_reads_conll_and_prints_counts(tmp_path, corpus_dir, cli):
    code, out, err = cli("preprocess", corpus_dir / "train.txt", tmp_path / "clean.txt", "--input-format", "conll")
    assert code == 0, err
    lines = (tmp_path / "clean.txt").read_text().splitlines()
    assert 0 < len(lines) <= 10  # 20 sentences, half of them repeated
    assert "duplicates" in out and "mentions" in out


@pytest.fixture(scope="module")
def tiny_mlm(tiny_student, tmp_path_factory):
    """A 3-layer, 4-head tiny BERT masked LM saved as a folder."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tok = AutoTokenizer.from_pretrained(tiny_student)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_mlm")
    BertForMaskedLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_masking_statistics(tiny_mlm):
    _, tok = load_mlm(str(tiny_mlm))
    items = encode(tok, ["obama visits paris with michelle today"] * 4000 + ["hi"], 64)
    assert len(items) == 4001  # short tweets are kept
    batch = collator(tok, 0.15, seed=3)(items)
    special = torch.tensor([it["special_tokens_mask"] for it in items[:4000]]).bool()
    labels = batch["labels"][:4000]
    masked = labels != -100
    assert not (masked & special).any()  # special tokens are never masked
    rate = masked.sum() / (~special).sum()
    assert abs(rate.item() - 0.15) < 0.01
    inputs = batch["input_ids"][:4000][masked]
    original = labels[masked]
    as_mask = (inputs == tok.mask_token_id).float().mean().item()
    kept = (inputs == original).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # random tokens: the remaining ~10%


def test_student_layers_are_copied_exactly(tiny_mlm):
    teacher, _ = load_mlm(str(tiny_mlm))
    student, info = build_student(teacher, [0, 2])
    assert info["layers"] == [0, 2] and student.config.num_hidden_layers == 2
    for mine, theirs in zip(student.bert.encoder.layer, [teacher.bert.encoder.layer[0], teacher.bert.encoder.layer[2]]):
        for p1, p2 in zip(mine.parameters(), theirs.parameters()):
            assert torch.equal(p1, p2)
    assert torch.equal(student.cls.predictions.transform.dense.weight, teacher.cls.predictions.transform.dense.weight)
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight  # decoder still tied
    assert teacher.config.num_hidden_layers == 3  # the teacher is untouched


def test_head_pruning_removes_the_weakest_heads_and_stays_runnable(tiny_mlm, tmp_path):
    model, tok = load_mlm(str(tiny_mlm))
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.value.weight[8:16] = 0  # head 1 of layer 1 can do nothing
    assert head_importance(model)[1].argmin().item() == 1
    n_before = sum(p.numel() for p in model.parameters())
    plan = prune_least_important_heads(model, 2)
    assert all(len(h) == 2 for h in plan.values()) and 1 in plan[1]
    assert sum(p.numel() for p in model.parameters()) < n_before
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == 2
    x = tok(["obama visits paris"], return_tensors="pt")
    assert model(**x).logits.shape[-1] == tok.vocab_size
    model.save_pretrained(tmp_path / "p")
    back = type(model).from_pretrained(tmp_path / "p")  # the pruning is re-applied from config.pruned_heads
    assert back.bert.encoder.layer[2].attention.self.num_attention_heads == 2
    with pytest.raises(UserError, match="between 0 and 3"):
        prune_least_important_heads(load_mlm(str(tiny_mlm))[0], 4)


def test_lm_loss_parts_and_identity(tiny_mlm):
    teacher, tok = load_mlm(str(tiny_mlm))
    teacher.eval()
    batch = collator(tok, 0.5, seed=1)(encode(tok, ["obama visits paris with michelle"] * 4, 64))
    alphas = {"ce": 5.0, "mlm": 2.0, "mse": 0.5, "cos": 1.0}
    student, _ = build_student(teacher, None)
    total, parts = lm_loss(student, batch, teacher, alphas, 2.0)
    assert set(parts) == {"ce", "mlm", "mse", "cos"}
    assert parts["ce"] == pytest.approx(0.0, abs=1e-5) and parts["mse"] == pytest.approx(0.0, abs=1e-8)
    assert parts["cos"] == pytest.approx(0.0, abs=1e-5)
    assert total.item() == pytest.approx(sum(alphas[k] * v for k, v in parts.items()), rel=1e-5)
    small, _ = build_student(teacher, [1])
    total, parts = lm_loss(small, batch, teacher, alphas, 2.0)
    assert parts["ce"] > 0 and parts["cos"] > 0
    total.backward()
    assert small.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    _, only = lm_loss(small, batch)
    assert set(only) == {"mlm"}


def test_train_config_from_the_command_configs():
    from nerdistil import trainer
    from nerdistil.config import LMConfig, StudentConfig

    lm = LMConfig(epochs=2, lr=1e-4, grad_accum=4, checkpoint_every=7)
    got = trainer.TrainConfig.from_config(lm, metric="perplexity", maximize=False)
    assert got == trainer.TrainConfig(epochs=2, lr=1e-4, weight_decay=0.01, adam_eps=1e-6, warmup=0.05,
                                      max_grad_norm=5.0, grad_accum=4, patience=0, seed=13, mixed_precision="no",
                                      checkpoint_every=7, metric="perplexity", maximize=False)  # fmt: skip
    st = StudentConfig(epochs=3, patience=1, seed=5, mixed_precision="bf16")
    got = trainer.TrainConfig.from_config(st, adam_eps=1e-8, grad_accum=1)
    assert got == trainer.TrainConfig(epochs=3, lr=5e-5, weight_decay=0.01, adam_eps=1e-8, warmup=0.05,
                                      max_grad_norm=1.0, grad_accum=1, patience=1, seed=5, mixed_precision="bf16",
                                      checkpoint_every=0, metric="f1", maximize=True)  # fmt: skip
    with pytest.raises(TypeError, match="no field"):
        trainer.TrainConfig.from_config(st, adam_epsilon=1e-8)
    with pytest.raises(TypeError):
        trainer.TrainConfig(3, 1e-3)  # keyword-only


def test_mismatched_students_are_clear_errors(tiny_mlm):
    from transformers import BertConfig, BertForMaskedLM

    teacher, _ = load_mlm(str(tiny_mlm))
    other = BertForMaskedLM(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                       intermediate_size=64))  # fmt: skip
    with pytest.raises(UserError, match="vocabulary"):
        check_compatible(teacher, other, 1.0)
    wide = BertForMaskedLM(BertConfig(vocab_size=teacher.config.vocab_size, hidden_size=48, num_hidden_layers=1,
                                      num_attention_heads=4, intermediate_size=64))  # fmt: skip
    with pytest.raises(UserError, match="hidden sizes"):
        check_compatible(teacher, wide, 1.0)
    check_compatible(teacher, wide, 0.0)


def test_lm_cli_end_to_end(tiny_mlm, corpus_dir, tmp_path, cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, held = corpus_dir / "train.txt", corpus_dir / "test.txt"
    code, out, err = cli("lm-finetune", "--model", tiny_mlm, "--corpus", train, "--eval-corpus", held,
                         "--out", tmp_path / "t", "--epochs", "1", "--batch-size", "4")  # fmt: skip
    assert code == 0, err
    code, out, err = cli("lm-distil", "--teacher", tmp_path / "t", "--corpus", train, "--eval-corpus", held,
                         "--out", tmp_path / "s", "--student-layers", "0,2", "--prune-heads", "1", "--epochs", "2",
                         "--batch-size", "4")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["layers"] == [0, 2] and report["pruned_heads"] and report["steps"] > 0
    assert len(report["history"]) == 2 and all(h["loss"] > 0 for h in report["history"])
    assert report["held_out"]["perplexity"] > 0 and report["alphas"] == {"ce": 5.0, "mlm": 2.0, "mse": 0.0, "cos": 1.0}
    assert (tmp_path / "s" / "model.safetensors").is_file()
    acc = EventAccumulator(str(tmp_path / "s" / "tensorboard"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {
        "losses/loss", "losses/loss_ce", "losses/loss_mlm", "losses/loss_mse", "losses/loss_cos",
        "losses/cum_avg_loss_epoch", "learning_rate/lr", "eval/perplexity",
    }  # fmt: skip
    code, out, err = cli("lm-eval", "--model", tmp_path / "t", "--model", tmp_path / "s", "--corpus", held,
                         "--words", "obama,paris", "--k", "3", "--json", tmp_path / "e.json",
                         "--markdown", tmp_path / "e.md")  # fmt: skip
    assert code == 0, err
    ev = json.loads((tmp_path / "e.json").read_text())
    assert set(ev["perplexity"]) == {str(tmp_path / "t"), str(tmp_path / "s")}
    assert len(set(ev["masked_tokens"].values())) == 1  # both models scored on the same masks
    assert all(len(ev["neighbours"][m]["obama"]) == 3 for m in ev["models"])
    assert "nearest neighbours of 'obama'" in out and "overlap" in out
    assert "| rank |" in (tmp_path / "e.md").read_text()
    # the LM folder is a valid starting point for the NER student
    from nerdistil.student.model import build_student as ner_student

    model, _ = ner_student(str(tmp_path / "s"), ["O", "B-x", "I-x"])
    assert model.config.num_labels == 3


def test_lm_distil_refuses_a_foreign_vocabulary(tiny_mlm, tiny_student, corpus_dir, tmp_path, cli):
    code, _, err = cli("lm-distil", "--teacher", "minilm", "--student", tiny_mlm, "--corpus", corpus_dir / "train.txt",
                       "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and "vocabulary" in err and not (tmp_path / "x").exists()


def test_run_lm_demo_pipeline(tiny_mlm, corpus_dir, tmp_path, cli):
    cfg = tmp_path / "lm.yaml"
    cfg.write_text(
        f"run:\n  out: {tmp_path / 'runs'}\n  corpus: {corpus_dir}\n  wnut16: false\n"
        f"lm_finetune:\n  model: {tiny_mlm}\n  epochs: 1\n  batch_size: 8\n"
        "lm_distil:\n  student_layers: '0,2'\n  epochs: 1\n  batch_size: 8\n"
        f"lm_eval:\n  models: [{tiny_mlm}]\n  words: obama,paris\n"
    )
    code, out, err = cli("run", cfg)
    assert code == 0, err
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert [r["model"] for r in summary["rows"]] == ["teacher MLM (lm-finetune)", "student MLM (lm-distil)"]
    assert all(r["perplexity"] > 0 for r in summary["rows"])
    ev = json.loads((tmp_path / "runs" / "lm_eval.json").read_text())
    assert len(ev["models"]) == 3 and len(ev["overlap"]) == 3
    assert "held-out perplexity" in out and "nearest neighbours of 'paris'" in out
