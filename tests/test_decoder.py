"""The valid-BIO Viterbi decoder as an ONNX graph: equal to bio_viterbi and to brute force, and mergeable."""

import importlib.util
import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from nerdistil.deploy.decoder import build_decoder  # noqa: E402
from nerdistil.tags import bio_transitions, bio_viterbi  # noqa: E402

LABELS5 = ["O", "B-person", "I-person", "B-loc", "I-loc"]
LABELS3 = ["O", "B-x", "I-x"]
SHUFFLED = ["B-loc", "O", "I-loc", "I-person", "B-person"]  # no assumption on label order


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def decode_numpy_reference(logits, word_index, word_mask, labels):
    """Per row: bio_viterbi over the real words' first-subword log-probabilities; (tags, scores) lists."""
    allowed = bio_transitions(labels)
    tags, scores = [], []
    for b in range(logits.shape[0]):
        n = int(word_mask[b].sum())
        logp = log_softmax(logits[b, word_index[b, :n]])  # (n, L)
        path = bio_viterbi(logp, allowed)
        tags.append(path)
        scores.append(np.exp(logp[np.arange(n), path]))
    return tags, scores


def brute_force(logp: np.ndarray, labels) -> list[int]:
    """The best path over all L^n label paths that obey the BIO rule (n <= 6)."""
    n, L = logp.shape
    allowed = bio_transitions(labels)
    paths = np.array(list(itertools.product(range(L), repeat=n)))  # (L^n, n)
    ok = allowed[L, paths[:, 0]]
    for t in range(1, n):
        ok &= allowed[paths[:, t - 1], paths[:, t]]
    total = logp.astype(np.float64)[np.arange(n), paths].sum(1)
    total[~ok] = -np.inf
    return paths[int(total.argmax())].tolist()


def is_valid(tags: list[str]) -> bool:
    prev = "O"
    for t in tags:
        if t.startswith("I-") and not (prev[:2] in ("B-", "I-") and prev[2:] == t[2:]):
            return False
        prev = t
    return True


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def random_batch(rng, B, S, W, L, lengths=None, scale=3.0):
    logits = (rng.normal(size=(B, S, L)) * scale).astype(np.float32)
    lengths = lengths if lengths is not None else rng.integers(1, W + 1, size=B)
    word_index = np.zeros((B, W), dtype=np.int64)
    word_mask = np.zeros((B, W), dtype=np.int64)
    for b, n in enumerate(lengths):
        word_index[b, :n] = np.sort(rng.choice(S, size=n, replace=False))
        word_mask[b, :n] = 1
    return logits, word_index, word_mask


def run(sess, logits, word_index, word_mask):
    return sess.run(None, {"logits": logits, "word_index": word_index, "word_mask": word_mask})


def check(labels, logits, word_index, word_mask, tags, scores, brute=True):
    assert tags.shape == word_mask.shape and tags.dtype == np.int64
    assert scores.shape == word_mask.shape and scores.dtype == np.float32
    assert not np.isnan(scores).any()
    ref_tags, ref_scores = decode_numpy_reference(logits, word_index, word_mask, labels)
    for b in range(len(tags)):
        n = int(word_mask[b].sum())
        got = tags[b, :n].tolist()
        assert got == ref_tags[b]
        assert is_valid([labels[i] for i in got])
        if brute:
            assert got == brute_force(log_softmax(logits[b, word_index[b, :n]]), labels)
        np.testing.assert_allclose(scores[b, :n], ref_scores[b], rtol=1e-5)
        assert (tags[b, n:] == got[-1]).all()  # padding words repeat the last real tag
        assert (scores[b, n:] == 0).all()


@pytest.mark.parametrize("labels", [LABELS5, LABELS3, SHUFFLED])
def test_equals_bio_viterbi_and_brute_force(labels):
    sess = session(build_decoder(labels))
    rng = np.random.default_rng(len(labels))
    for _ in range(6):
        B, S, W = int(rng.integers(1, 5)), 12, int(rng.integers(1, 7))
        logits, word_index, word_mask = random_batch(rng, B, S, W, len(labels))
        tags, scores = run(sess, logits, word_index, word_mask)
        check(labels, logits, word_index, word_mask, tags, scores)
    # a longer row (7 words) against bio_viterbi only
    logits, word_index, word_mask = random_batch(rng, 4, 12, 7, len(labels), lengths=[7, 3, 1, 6])
    check(labels, logits, word_index, word_mask, *run(sess, logits, word_index, word_mask), brute=False)


def test_single_word_rows():
    sess = session(build_decoder(LABELS5))
    rng = np.random.default_rng(1)
    for B in (1, 3):  # W == 1: every row has one word
        logits, word_index, word_mask = random_batch(rng, B, 4, 1, 5, lengths=[1] * B)
        logits[:, :, 2] += 10  # I-person most likely, yet forbidden at the start
        tags, scores = run(sess, logits, word_index, word_mask)
        check(LABELS5, logits, word_index, word_mask, tags, scores)
        assert (tags != 2).all()
    logits, word_index, word_mask = random_batch(rng, 3, 6, 5, 5, lengths=[1, 1, 1])  # length-1 rows, padded
    check(LABELS5, logits, word_index, word_mask, *run(sess, logits, word_index, word_mask))


def test_forbidden_transitions_never_win():
    sess = session(build_decoder(LABELS5))
    logits = np.zeros((1, 4, 5), dtype=np.float32)
    logits[0, :, 4] = 50.0  # I-loc everywhere, by far
    logits[0, 0, 1] = 49.0  # B-person a close second at the first word
    word_index, word_mask = np.arange(4)[None], np.ones((1, 4), dtype=np.int64)
    tags, scores = run(sess, logits, word_index, word_mask)
    assert [LABELS5[i] for i in tags[0]] == ["B-loc", "I-loc", "I-loc", "I-loc"]
    check(LABELS5, logits, word_index, word_mask, tags, scores)


@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_large_logits_stay_valid(scale):
    sess = session(build_decoder(LABELS5))
    rng = np.random.default_rng(7)
    logits, word_index, word_mask = random_batch(rng, 4, 12, 6, 5, lengths=[6, 4, 1, 5], scale=scale)
    tags, scores = run(sess, logits, word_index, word_mask)
    assert not np.isnan(scores).any()
    for b in range(4):
        n = int(word_mask[b].sum())
        assert is_valid([LABELS5[i] for i in tags[b, :n]])
    if scale == 100.0:
        check(LABELS5, logits, word_index, word_mask, tags, scores)


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_merges_with_an_encoder(opset):
    from onnx import TensorProto, helper

    labels = LABELS3
    enc = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["logits_in"], ["logits"], name="encoder/identity")],
            "encoder",
            [helper.make_tensor_value_info("logits_in", TensorProto.FLOAT, ["b", "s", 3])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", 3])],
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    enc.ir_version = 8
    dec = build_decoder(labels, opset=opset, ir_version=enc.ir_version)
    merged = onnx.compose.merge_models(enc, dec, io_map=[("logits", "logits")])
    onnx.checker.check_model(merged, full_check=True)
    assert [i.name for i in merged.graph.input] == ["logits_in", "word_index", "word_mask"]
    assert [o.name for o in merged.graph.output] == ["tags", "scores"]
    rng = np.random.default_rng(opset)
    logits, word_index, word_mask = random_batch(rng, 3, 8, 5, 3, lengths=[5, 2, 1])
    feed = {"logits_in": logits, "word_index": word_index, "word_mask": word_mask}
    check(labels, logits, word_index, word_mask, *session(merged).run(None, feed))


@pytest.mark.skipif(importlib.util.find_spec("optimum") is None, reason="needs optimum")
@pytest.mark.filterwarnings("ignore:torch.tensor results are registered as constants")
def test_merges_with_an_optimum_export(tmp_path):
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import BertConfig, BertForTokenClassification

    labels = LABELS5
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=32, num_labels=len(labels))  # fmt: skip
    torch.manual_seed(0)
    model = BertForTokenClassification(cfg).eval()
    model.save_pretrained(tmp_path / "student")
    main_export(str(tmp_path / "student"), str(tmp_path / "onnx"), task="token-classification")
    enc = onnx.load(str(tmp_path / "onnx" / "model.onnx"))
    (opset,) = [o.version for o in enc.opset_import if o.domain in ("", "ai.onnx")]
    dec = build_decoder(labels, opset=opset, ir_version=enc.ir_version)
    merged = onnx.compose.merge_models(enc, dec, io_map=[("logits", "logits")])
    onnx.checker.check_model(merged)
    input_ids = np.array([[2, 7, 9, 11, 3, 0, 0], [2, 5, 6, 8, 12, 14, 3]], dtype=np.int64)
    attention_mask = (input_ids != 0).astype(np.int64)
    word_index = np.array([[1, 2, 0, 0], [1, 2, 4, 5]], dtype=np.int64)  # row 0: two words, row 1: four
    word_mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=np.int64)
    feed = {"input_ids": input_ids, "attention_mask": attention_mask, "word_index": word_index, "word_mask": word_mask}
    sess = session(merged)
    feed = {k: v for k, v in {**feed, "token_type_ids": np.zeros_like(input_ids)}.items()
            if k in {i.name for i in sess.get_inputs()}}  # fmt: skip
    tags, scores = sess.run(None, feed)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask)).logits
    ref_tags, ref_scores = decode_numpy_reference(logits.numpy(), word_index, word_mask, labels)
    assert [tags[b, : len(r)].tolist() for b, r in enumerate(ref_tags)] == ref_tags
    for b, r in enumerate(ref_scores):
        np.testing.assert_allclose(scores[b, : len(r)], r, rtol=1e-4)


def test_rejects_old_opsets_and_empty_labels():
    with pytest.raises(ValueError, match="opset"):
        build_decoder(LABELS3, opset=12)
    with pytest.raises(ValueError, match="labels"):
        build_decoder([])


@pytest.mark.parametrize("labels", [LABELS5, SHUFFLED])
def test_crf_transitions_in_the_graph_equal_bio_viterbi_and_brute_force(labels):
    """A CRF student's learned transitions, start and end scores decode in the graph as in bio_viterbi(crf=...)."""
    rng = np.random.default_rng(7)
    L = len(labels)
    crf = tuple(x.astype(np.float32) for x in (rng.normal(size=(L, L)) * 2, rng.normal(size=L), rng.normal(size=L)))
    sess = session(build_decoder(labels, crf=crf))
    allowed = bio_transitions(labels)
    trans, start, end = (np.where(allowed[:L], crf[0], -np.inf), np.where(allowed[L], crf[1], -np.inf), crf[2])
    changed = 0
    for _ in range(8):
        logits, word_index, word_mask = random_batch(rng, 3, 12, int(rng.integers(1, 6)), L)
        tags, _ = run(sess, logits, word_index, word_mask)
        for b in range(3):
            n = int(word_mask[b].sum())
            logp = log_softmax(logits[b, word_index[b, :n]])
            got = tags[b, :n].tolist()
            assert got == bio_viterbi(logp, allowed, crf)
            paths = np.array(list(itertools.product(range(L), repeat=n)))
            total = logp.astype(np.float64)[np.arange(n), paths].sum(1) + start[paths[:, 0]] + end[paths[:, -1]]
            for t in range(1, n):
                total += trans[paths[:, t - 1], paths[:, t]]
            assert got == paths[int(np.argmax(total))].tolist()
            changed += got != bio_viterbi(logp, allowed)
    assert changed > 0  # the transitions did change some paths: the test would see them ignored
