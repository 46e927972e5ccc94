"""`nerdistil export`, the torch-free `Tagger` and `nerdistil predict` on the tiny distilled student.

The exported graph (encoder + in-graph valid-BIO decoder) must tag exactly as `nerdistil evaluate`'s
PyTorch path does; the gate must refuse an int8 graph whose entity spans disagree with the fp32 graph's on the
agreement set (`--min-agreement`), one whose dev F1 difference's CI shows a loss beyond `--max-f1-drop`, and any
int8 graph when the fp32 graph finds no entities to agree on.
"""

import json
import shutil
from pathlib import Path

import numpy as np

from nerdistil.data.conll import read_conll

CORPUS = Path(__file__).parent / "data" / "corpus"


def test_export_folder_is_self_contained(exported, tiny_distilled):
    meta = json.loads((exported / "nerdistil.json").read_text())
    assert sorted(p.name for p in exported.iterdir() if not p.name.startswith(".")) == [
        "model.onnx", "nerdistil.json", "report.json", "tokenizer.json"]  # fmt: skip
    student_labels = json.loads((tiny_distilled / "config.json").read_text())["id2label"]
    assert meta["labels"] == [student_labels[str(i)] for i in range(len(student_labels))]
    gate = meta["gate"]
    names = [c["name"] for c in gate["candidates"]]
    assert names[0] == "fp32" and gate["chosen"] in names and gate["decision"]
    for c in gate["candidates"]:
        assert c["p50_ms_batch1"] > 0 and c["ci95"][0] <= c["ci95"][1] and c["f1_diff"] == -c["drop"]
    assert len(meta["source"]["sha256"]) == 64
    # the default agreement set: transfer tweets made from the student's 20 train tweets, 5,000 or more
    agree = gate["agreement"]
    assert agree["kind"] == "augmented train" and agree["source"].endswith("soft_labels[train])")
    assert agree["train_tweets"] == 20 and agree["copies"] >= 250 and agree["tweets"] >= 5000 == agree["min_tweets"]
    assert agree["words"] > agree["tweets"] and agree["fp32_entities"] > 0 and gate["min_agreement"] == 0.99
    fp32, *int8 = gate["candidates"]
    assert fp32["agreement_f1"] is None and fp32["agreement_entities"] == agree["fp32_entities"]
    assert int8 and all(0 <= c["agreement_f1"] <= 1 for c in int8)
    for c in int8:  # kept exactly when both checks pass
        passes = c["agreement_f1"] >= 0.99 and c["ci95"][1] >= -gate["max_f1_drop"]
        assert (c["refused"] is None) == passes and (c["name"] == gate["chosen"]) == passes


def test_exported_tags_equal_the_pytorch_student(exported, tiny_distilled, tmp_path):
    from nerdistil.deploy.loader import load_tagger
    from nerdistil.deploy.runtime import Tagger

    fp32 = tmp_path / "fp32"
    from nerdistil.deploy.export import run_export

    run_export(tiny_distilled, fp32, "none", CORPUS / "dev.txt", draws=50)
    words = [s.tokens for s in read_conll(CORPUS / "test.txt")]
    long = [w for s in words for w in s] * 4  # longer than the tiny model's 64 positions: word windows
    words.append(long)
    ref = load_tagger(tiny_distilled).predict(words)
    tagger = Tagger.load(fp32)
    got = tagger.tag_words(words, batch_size=3)
    assert [r["tags"] for r in got] == ref
    assert all(len(r["scores"]) == len(w) and all(0 < p <= 1 for p in r["scores"]) for r, w in zip(got, words))
    gate = json.loads((fp32 / "nerdistil.json").read_text())["gate"]
    assert gate["candidates"][0]["word_agreement"] == 1.0 and abs(gate["candidates"][0]["drop"]) < 1e-9


def test_fused_export_is_recorded_and_no_fuse_keeps_standard_ops(exported, tiny_distilled, tmp_path):
    """The default export fuses the encoder into ONNX Runtime's transformer kernels (com.microsoft ops) and still
    tags exactly as PyTorch; ``fuse=False`` keeps every node a standard ai.onnx op, for other ONNX runtimes."""
    import onnx

    from nerdistil.deploy.export import run_export

    def domains(folder: Path) -> set[str]:
        return {n.domain or "ai.onnx" for n in onnx.load(str(folder / "model.onnx")).graph.node}

    meta = json.loads((exported / "nerdistil.json").read_text())
    assert meta["fused"] is True and "com.microsoft" in domains(exported)
    plain = run_export(tiny_distilled, tmp_path / "plain", "none", CORPUS / "dev.txt", draws=10, fuse=False)
    assert plain["fused"] is False and domains(tmp_path / "plain") == {"ai.onnx"}
    assert plain["gate"]["candidates"][0]["word_agreement"] == 1.0


def test_architecture_without_fusions_exports_plain(tiny_distilled, tmp_path):
    """A student whose architecture Optimum cannot fuse (RoFormer) still exports: the plain graph, recorded as not
    fused, tagging exactly as PyTorch."""
    import torch
    from transformers import AutoTokenizer, RoFormerConfig, RoFormerForTokenClassification

    from nerdistil.deploy.export import run_export

    tok = AutoTokenizer.from_pretrained(tiny_distilled)
    id2label = json.loads((tiny_distilled / "config.json").read_text())["id2label"]
    torch.manual_seed(0)
    cfg = RoFormerConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=80, pad_token_id=tok.pad_token_id,
                         id2label={int(k): v for k, v in id2label.items()},
                         label2id={v: int(k) for k, v in id2label.items()})  # fmt: skip
    student = tmp_path / "roformer"
    RoFormerForTokenClassification(cfg).save_pretrained(student)
    tok.save_pretrained(student)
    meta = run_export(student, tmp_path / "e", "none", CORPUS / "dev.txt", draws=10)
    assert meta["fused"] is False and meta["gate"]["candidates"][0]["word_agreement"] == 1.0


def test_tag_raw_tweets_offsets_slice_the_text(exported):
    from nerdistil.deploy.runtime import Tagger

    tweets = ["Obama visits London today", "", "@john loves #Apple & Google 😀\u200d😀 http://t.co/x", "New York !!"]
    out = Tagger.load(exported).tag(tweets)
    assert len(out) == len(tweets) and out[1]["words"] == [] and out[1]["entities"] == []
    for tweet, r in zip(tweets, out):
        assert len(r["tags"]) == len(r["words"])
        for e in r["entities"]:
            assert tweet[e["start"] : e["end"]] == e["text"] and e["type"] and 0 < e["score"] <= 1


def _student_with_bias(tiny_distilled: Path, folder: Path, label: str, shift: float) -> Path:
    """The tiny student with ``shift`` added to the classifier bias of the first label starting with ``label``."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(tiny_distilled)
    k = next(i for i, lab in model.config.id2label.items() if lab.startswith(label))
    model.classifier.bias.data[k] += shift
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_distilled).save_pretrained(folder)
    return folder


def test_int8_refused_by_agreement_with_fp32(tiny_distilled, tmp_path, cli, caplog):
    """A real disagreement: one feature of the last layer is an outlier (1000) that the classifier ignores. The fp32
    tags do not change, but dynamic int8 scales the classifier's input over its whole range, so the other features
    lose their resolution (the outlier-feature problem of LLM.int8) and entity spans move. The dev F1 cannot see it
    (0 either way on 4 tweets); agreement with fp32 does, and `--quantize int8` fails naming that check."""
    import numpy as np
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from nerdistil.deploy.export import run_export

    model = AutoModelForTokenClassification.from_pretrained(tiny_distilled)
    tok = AutoTokenizer.from_pretrained(tiny_distilled)
    model.bert.encoder.layer[-1].output.LayerNorm.bias.data[0] = 1000.0
    model.classifier.weight.data[:, 0] = 0.0
    words = [s.tokens for s in read_conll(CORPUS / "train.txt")]
    enc = tok(words, is_split_into_words=True, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**enc).logits[enc["attention_mask"].bool()]  # (subwords, labels)
    b = next(i for i, lab in model.config.id2label.items() if lab.startswith("B-"))
    model.classifier.bias.data[b] += float(np.median((logits[:, 0] - logits[:, b]).numpy()))  # O vs B-X: a tie
    student = tmp_path / "student"
    model.save_pretrained(student)
    tok.save_pretrained(student)

    agree = CORPUS / "train.txt"  # a CoNLL file: its words, tags ignored
    code, _, err = cli("export", student, "--out", tmp_path / "e", "--quantize", "int8", "--corpus",
                       CORPUS / "dev.txt", "--agreement-corpus", agree, "--bootstrap", "20")  # fmt: skip
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "agree with the fp32 graph's at F1" in err and "--min-agreement 0.99" in err and "dev F1" not in err
    assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".e*"))
    with caplog.at_level("WARNING", logger="nerdistil"):
        meta = run_export(student, tmp_path / "a", "auto", CORPUS / "dev.txt", draws=20, agreement_corpus=agree,
                          min_agreement_tweets=100)  # fmt: skip
    assert any("holds 20 tweets, fewer than 100" in r.getMessage() for r in caplog.records)
    gate = meta["gate"]
    assert gate["agreement"]["kind"] == "conll" and gate["agreement"]["tweets"] == 20
    assert gate["agreement"]["fp32_entities"] > 10 and gate["chosen"] == "fp32"
    fp32, *int8 = gate["candidates"]
    # per-tensor int8 rounds coarser than per-channel (it agreed less in every measurement): after per-channel
    # fails on agreement it is not tried, and the decision says so
    assert [c["name"] for c in int8] == ["int8"]
    assert int8[0]["agreement_f1"] < 0.99 and int8[0]["ci95"][1] >= -0.01 and "--min-agreement" in int8[0]["refused"]
    assert "int8 refused" in gate["decision"] and "int8-per-tensor not tried" in gate["decision"]


def test_int8_refused_by_a_dev_loss(tiny_distilled, tmp_path, cli, monkeypatch):
    """A graph that agrees with fp32 on the agreement set (F1 1.0) but loses entities on dev: it tags every word
    whose subword is [UNK] O, and every dev tweet has one. The CI of its dev F1 difference lies below -0.01."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from transformers import AutoTokenizer

    from nerdistil.data.conll import Sentence, write_conll
    from nerdistil.deploy import export
    from nerdistil.deploy.loader import load_tagger

    student = _student_with_bias(tiny_distilled, tmp_path / "student", "B-", 100.0)  # every word B-X
    tagger = load_tagger(student)
    fn, labels = tagger.predict, tagger.labels
    tokenizer = AutoTokenizer.from_pretrained(student)
    assert tokenizer("☃", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]
    sents = [["☃", *s.tokens] for s in read_conll(CORPUS / "dev.txt")]
    gold = tmp_path / "gold.txt"  # gold = the PyTorch student's own tags: its F1 is 1
    write_conll(gold, [Sentence(w, t) for w, t in zip(sents, fn(sents))])
    agree = tmp_path / "agree.txt"  # pretokenized, without [UNK]
    agree.write_text("\n".join(" ".join(s.tokens) for s in read_conll(CORPUS / "train.txt")) + "\n")
    real = export.quantize_encoder

    def loses_unk(work, per_channel):  # a real int8 graph, then logits[..., O] += 1000 where input_ids == [UNK]
        path = real(work, per_channel)
        m = onnx.load(str(path))
        opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        for n in m.graph.node:
            n.output[:] = ["logits_raw" if o == "logits" else o for o in n.output]
        push = np.zeros(len(labels), dtype=np.float32)
        push[labels.index("O")] = 1000.0
        m.graph.initializer.extend([numpy_helper.from_array(np.array(tokenizer.unk_token_id, np.int64), "unk_id"),
                                    numpy_helper.from_array(push, "o_push"),
                                    numpy_helper.from_array(np.array([-1], np.int64), "last_axis")])  # fmt: skip
        unsqueeze = (helper.make_node("Unsqueeze", ["is_unk_f", "last_axis"], ["is_unk_3d"]) if opset >= 13
                     else helper.make_node("Unsqueeze", ["is_unk_f"], ["is_unk_3d"], axes=[-1]))  # fmt: skip
        m.graph.node.extend([helper.make_node("Equal", ["input_ids", "unk_id"], ["is_unk"]),
                             helper.make_node("Cast", ["is_unk"], ["is_unk_f"], to=onnx.TensorProto.FLOAT), unsqueeze,
                             helper.make_node("Mul", ["is_unk_3d", "o_push"], ["unk_push"]),
                             helper.make_node("Add", ["logits_raw", "unk_push"], ["logits"])])  # fmt: skip
        onnx.save(m, str(path))
        return path

    monkeypatch.setattr(export, "quantize_encoder", loses_unk)
    code, _, err = cli("export", student, "--out", tmp_path / "e", "--quantize", "int8", "--corpus", gold,
                       "--agreement-corpus", agree, "--agreement-pretokenized", "--bootstrap", "50")  # fmt: skip
    assert code == 2 and "Traceback" not in err and "dev F1 difference" in err and "(--max-f1-drop)" in err
    assert "agree with" not in err and not (tmp_path / "e").exists()
    code, out, err = cli("export", student, "--out", tmp_path / "a", "--corpus", gold, "--agreement-corpus", agree,
                         "--agreement-pretokenized", "--bootstrap", "50")  # fmt: skip
    assert code == 0, err
    gate = json.loads((tmp_path / "a" / "nerdistil.json").read_text())["gate"]
    assert gate["chosen"] == "fp32" and gate["agreement"]["kind"] == "pretokenized"
    assert gate["pytorch_f1"] == 1.0 and gate["candidates"][0]["f1"] == 1.0
    assert [c["name"] for c in gate["candidates"]] == ["fp32", "int8", "int8-per-tensor"]  # a dev refusal: both
    for c in gate["candidates"][1:]:
        assert c["agreement_f1"] == 1.0 and c["f1_diff"] < c["ci95"][1] < -0.01 and "agree" not in c["refused"]
    # the table is not cut at 80 columns in a log: the agreement column and the CI are whole
    assert "span F1 vs fp32" in out and "1.0000" in out and "refused" in out and "decision: fp32" in out


def test_no_fp32_entities_means_no_evidence(tiny_distilled, tmp_path, cli):
    """When the fp32 graph finds no entity on the agreement set, agreement is undefined: recorded as null, never
    counted a pass, and int8 is refused for want of evidence."""
    from nerdistil.deploy.export import run_export

    student = _student_with_bias(tiny_distilled, tmp_path / "student", "O", 100.0)  # every word O
    agree = tmp_path / "raw.txt"  # raw tweets, tokenized by nerdistil's tweet tokenizer
    agree.write_text("Obama visits London today\n\n@john loves #Apple & Google http://t.co/x\nNew York !!\n")
    code, _, err = cli("export", student, "--out", tmp_path / "e", "--quantize", "int8", "--corpus",
                       CORPUS / "dev.txt", "--agreement-corpus", agree, "--bootstrap", "20")  # fmt: skip
    assert code == 2 and "no evidence" in err and "Traceback" not in err
    run_export(student, tmp_path / "a", "auto", CORPUS / "dev.txt", draws=20, agreement_corpus=agree,
               min_agreement_tweets=3)  # fmt: skip
    text = (tmp_path / "a" / "nerdistil.json").read_text()
    raw = json.loads(text)["gate"]
    assert '"agreement_f1": null' in text and raw["agreement"]["kind"] == "tweets"
    assert raw["agreement"]["tweets"] == 3 and raw["agreement"]["fp32_entities"] == 0
    assert raw["chosen"] == "fp32" and "no evidence" in raw["decision"]
    assert [c["agreement_f1"] for c in raw["candidates"]] == [None, None]  # per-tensor: not tried
    assert "int8-per-tensor not tried (agreement with fp32 is undefined" in raw["decision"]
    assert all("no evidence" in c["refused"] for c in raw["candidates"][1:])


def test_gate_refuses_a_dev_corpus_without_entities_of_the_models_types(tiny_distilled, tmp_path, cli):
    """A gold corpus whose entities are all of types the model lacks (or that has none) scores every graph 0: no
    evidence. int8 is then not decided on it (one line, exit 2, nothing written); --quantize none exports, with the
    undefined F1s stored as null, not 0.0."""
    from nerdistil.data.conll import Sentence, write_conll

    sents = read_conll(CORPUS / "dev.txt")
    other = tmp_path / "other_types.txt"  # the same tweets, every entity of an unknown type
    write_conll(other, [Sentence(s.tokens, [t[:2] + "zzz" if t != "O" else t for t in s.tags]) for s in sents])
    none = tmp_path / "no_entities.txt"
    write_conll(none, [Sentence(s.tokens, ["O"] * len(s.tokens)) for s in sents])
    for gold in (other, none):
        for quantize in ("auto", "int8"):
            code, _, err = cli("export", tiny_distilled, "--out", tmp_path / "e", "--quantize", quantize,
                               "--corpus", gold, "--bootstrap", "20")  # fmt: skip
            assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
            assert "no gold entity of the model's types" in err and "--quantize none" in err
            assert "agreement" not in err  # refused before the agreement set is made
            assert not (tmp_path / "e").exists() and not list(tmp_path.glob(".e*"))
    code, out, err = cli("export", tiny_distilled, "--out", tmp_path / "n", "--quantize", "none", "--corpus", none)
    assert code == 0, err
    text = (tmp_path / "n" / "nerdistil.json").read_text()
    gate = json.loads(text)["gate"]
    assert gate["pytorch_f1"] is None and gate["candidates"][0]["f1"] is None and '"f1": null' in text
    assert "undefined" in out and gate["chosen"] == "fp32"


def test_predict_streams_in_order(exported, tiny_distilled, tmp_path, cli):
    src = tmp_path / "in.txt"
    src.write_text("Obama visits London\n\n@john loves Google\r" + "a " * 300 + "\nlast one")
    out = tmp_path / "out.jsonl"
    code, _, err = cli("predict", exported, "--input", src, "--output", out, "--buffer", "2", "--batch-size", "2")
    assert code == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["words"] == [] and len(rows[3]["words"]) == 300
    assert not list(tmp_path.glob("*.partial"))
    # the PyTorch student gives the same tags (scores only from an export)
    code, _, err = cli("predict", tiny_distilled, "--input", src, "--output", tmp_path / "s.jsonl")
    assert code == 0, err
    assert [json.loads(x)["tags"] for x in (tmp_path / "s.jsonl").read_text().splitlines()] == [r["tags"] for r in rows]
    code, _, err = cli("predict", exported, "--input", src, "--output", tmp_path / "c.conll", "--format", "conll")
    assert code == 0, err
    assert (tmp_path / "c.conll").read_text().count("\n\n") >= 4


def test_predict_bad_utf8_leaves_nothing(exported, tmp_path, cli):
    src = tmp_path / "in.txt"
    src.write_bytes(b"fine\nbad \xff here\n")
    code, _, err = cli("predict", exported, "--input", src, "--output", tmp_path / "o.jsonl")
    assert code == 2 and "in.txt:2:" in err and "invalid UTF-8" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_broken_export_folder_is_one_line(exported, tmp_path, cli):
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    (bad / "model.onnx").write_bytes(b"not onnx")
    src = tmp_path / "in.txt"
    src.write_text("hello\n")
    code, _, err = cli("predict", bad, "--input", src)
    assert code == 2 and "model.onnx" in err and "Traceback" not in err


def test_byte_level_student_exports_with_identical_tags(tmp_path):
    """A RoBERTa-style student (byte-level BPE, prefix space, windows at 30 subwords) tags the same exported."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForTokenClassification, RobertaTokenizerFast

    from nerdistil.data.conll import bio_labels, entity_types
    from nerdistil.deploy.export import run_export
    from nerdistil.deploy.loader import load_tagger
    from nerdistil.deploy.runtime import Tagger

    sents = [s for f in ("train", "dev", "test") for s in read_conll(CORPUS / f"{f}.txt")]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([" ".join(s.tokens) for s in sents] * 2, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])  # fmt: skip
    folder = tmp_path / "roberta"
    folder.mkdir()
    tok.save_model(str(folder))
    fast = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                                model_max_length=30, add_prefix_space=True)  # fmt: skip
    fast.save_pretrained(folder)
    labels = bio_labels(entity_types(sents))
    cfg = RobertaConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)},
                        pad_token_id=fast.pad_token_id)  # fmt: skip
    torch.manual_seed(3)
    RobertaForTokenClassification(cfg).save_pretrained(folder)
    run_export(folder, tmp_path / "e", "none", CORPUS / "dev.txt", draws=20)
    words = [s.tokens for s in sents] + [[w for s in sents[:6] for w in s.tokens]]  # the last one needs windows
    fn = load_tagger(folder).predict
    assert [r["tags"] for r in Tagger.load(tmp_path / "e").tag_words(words)] == fn(words)


def test_int8_quantizes_weights_only(tiny_distilled, tmp_path):
    """int8 covers the MatMuls with a weight matrix (per-channel scales) and the embedding tables unless told not to;
    the attention products of two activations stay fp32 MatMuls. The same with attention fused into ONNX Runtime's
    kernels."""
    import onnx
    from onnx import numpy_helper

    from nerdistil.deploy.export import export_encoder
    from nerdistil.deploy.quantize import quantize_encoder

    for fuse in (False, True):
        encoder = export_encoder(tiny_distilled, tmp_path / f"work{fuse}", fuse)
        graph = onnx.load(str(encoder)).graph
        names = {i.name for i in graph.initializer}
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        activations = sorted(n.name for n in matmuls if n.input[1] not in names)
        n_weights = len(matmuls) - len(activations)
        n_attention = sum(n.op_type == "Attention" for n in graph.node)  # fused: one q/k/v weight matrix each
        if fuse:  # the tiny BERT is fused: attention is one kernel a layer, its products inside it
            assert [n for n in graph.node if n.op_type == "Attention"] and not activations
        else:
            assert n_weights and activations
        for per_channel, embeddings in ((True, True), (False, True), (True, False)):
            graph = onnx.load(str(quantize_encoder(encoder, per_channel, embeddings))).graph
            inits = {i.name: i for i in graph.initializer}
            assert sorted(n.name for n in graph.node if n.op_type == "MatMul") == activations  # weighted: all int8
            assert not any(n.op_type == "Attention" for n in graph.node)  # fused attention: QAttention
            int_weights = [i for i in graph.initializer if len(i.dims) == 2
                           and i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]  # fmt: skip
            tables = [inits[n.input[0]] for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]
            float_tables = [t for t in tables if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2]
            # the embedding tables (word, position, type): int8 unless told not to
            assert len(int_weights) == n_weights + n_attention + (len(tables) if embeddings else 0)
            assert len(float_tables) == (0 if embeddings else len(tables)) and tables
            # each weight's zero point: one per output column with per-channel weights, one per matrix without
            zero_points = [numpy_helper.to_array(inits[n.input[3]]) for n in graph.node if n.op_type == "MatMulInteger"]
            assert len(zero_points) == n_weights
            assert {z.size > 1 for z in zero_points} == {per_channel}


def test_predict_with_an_export_never_imports_torch(exported, tmp_path):
    """`nerdistil predict EXPORT_DIR` is the deployed path: the CLI starts without torch (about 3 s of imports)."""
    import subprocess
    import sys

    src = tmp_path / "in.txt"
    src.write_text("Obama visits London\n@john loves Google\n")
    code = ("import sys\nfrom nerdistil.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    assert e.code in (0, None), e.code\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")  # fmt: skip
    args = [sys.executable, "-c", code, "predict", str(exported), "--input", str(src), "--output", str(tmp_path / "o")]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr
    assert len((tmp_path / "o").read_text().splitlines()) == 2


def test_int8_tags_do_not_depend_on_other_lengths(tiny_distilled, tmp_path):
    """int8 batches hold one subword length each, so no tweet is padded: an int8 graph's dynamic activation scales
    never see padding, and a tweet tags the same alone or beside tweets of other lengths."""
    from nerdistil.deploy.export import run_export
    from nerdistil.deploy.runtime import Tagger

    meta = run_export(tiny_distilled, tmp_path / "int8", "int8", CORPUS / "dev.txt", max_f1_drop=1.0, draws=10,
                      min_agreement=0.0)  # fmt: skip
    assert meta["gate"]["chosen"] == "int8"
    tagger = Tagger.load(tmp_path / "int8")
    by_length = {len(tagger.tokenizer(s.tokens)["input_ids"]): s.tokens for s in read_conll(CORPUS / "test.txt")}
    words = list(by_length.values())  # one tweet of each subword length
    assert len(words) > 3
    together = tagger.decode(words, batch_size=32)
    alone = [tagger.decode([w]) for w in words]
    assert together[0] == [t[0] for t, _ in alone]
    assert together[1] == [s[0] for _, s in alone]  # the confidences too, bit for bit


def test_fp32_windows_padded_to_a_multiple_of_8_tag_as_alone_and_as_unpadded(tiny_distilled, tmp_path):
    """fp32 windows run padded to a multiple of 8 subwords, batched with windows of that padded length: a tweet's
    tags and confidences are bit for bit the ones it gets alone (and on one ONNX Runtime thread), and its tags those
    of the unpadded graph run."""
    from nerdistil.deploy.export import run_export
    from nerdistil.deploy.runtime import PAD_MULTIPLE, Tagger

    run_export(tiny_distilled, tmp_path / "fp32", "none", CORPUS / "dev.txt", draws=10)
    tagger = Tagger.load(tmp_path / "fp32")
    assert not tagger.quantized and tagger.pad_multiple == PAD_MULTIPLE == 8
    words = [s.tokens for s in read_conll(CORPUS / "test.txt")]
    lengths = {len(tagger.tokenizer(w)["input_ids"]) for w in words}
    assert len({-(-n // 8) for n in lengths}) < len(lengths)  # some batches do mix subword lengths
    together = tagger.decode(words, batch_size=32)
    alone = [tagger.decode([w]) for w in words]
    assert together[0] == [t[0] for t, _ in alone]
    assert together[1] == [s[0] for _, s in alone]
    assert tagger._padded(1) == 8 and tagger._padded(8) == 8 and tagger._padded(9) == 16
    assert tagger._padded(tagger.max_length) == tagger.max_length
    assert Tagger(tmp_path / "fp32", threads=1).decode(words, batch_size=32) == together  # serve's one-thread lanes
    tagger.pad_multiple = 1  # the unpadded run of the same graph
    unpadded = tagger.decode(words, batch_size=32)
    assert unpadded[0] == together[0]
    np.testing.assert_allclose(np.concatenate(unpadded[1]), np.concatenate(together[1]), atol=1e-5)
