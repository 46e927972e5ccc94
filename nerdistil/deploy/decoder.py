"""The valid-BIO Viterbi decoder of ``nerdistil.tags.bio_viterbi`` as a standalone ONNX graph.

``build_decoder`` returns a model that turns a token classifier's subword logits into the best *valid* BIO tag path
per word, so an exported student (``nerdistil export``) can be merged with it (``onnx.compose.merge_models``) and
served without Python-side decoding. The graph uses only standard ``ai.onnx`` ops (a forward ``Scan`` for the
Viterbi recursion, a reverse ``Scan`` for backtracking) and runs on ONNX Runtime's CPU provider. Rows are
right-aligned before the Scans, so their bodies need no padding mask: five kernels a word forward, one back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PREFIX = "bio_decoder/"  # every internal name: no clash with an encoder's names when merged
FORBIDDEN = -1e9  # forbidden-transition score: finite (no NaN), far below any float32 path score
INT64_MAX = np.iinfo(np.int64).max


class _Graph:
    """Accumulates nodes and constants of one (sub)graph under unique, prefixed names."""

    def __init__(self, scope: str):
        self.scope = scope
        self.nodes: list[onnx.NodeProto] = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{PREFIX}{self.scope}{hint}_{self.count}"

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, outputs: Sequence[str] | None = None,
           n_out: int = 1, **attrs) -> str | list[str]:  # fmt: skip
        """Add one node; returns its output name (or names when ``n_out`` > 1 or ``outputs`` has several)."""
        node_name = self.name(hint or op_type)
        outs = list(outputs) if outputs is not None else [f"{node_name}:{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=node_name, **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, value: np.ndarray, hint: str) -> str:
        """A Constant node (kept in the graph that uses it, so Scan bodies are self-contained)."""
        node_name = self.name(hint)
        out = f"{node_name}:0"
        tensor = numpy_helper.from_array(np.asarray(value), name=f"{node_name}/value")
        self.nodes.append(helper.make_node("Constant", [], [out], name=node_name, value=tensor))
        return out


def _ints(g: _Graph, values: Sequence[int], hint: str) -> str:
    return g.const(np.asarray(values, dtype=np.int64), hint)


def _viterbi_step(trans: np.ndarray, opset: int) -> onnx.GraphProto:
    """Scan body, one word: state score (B, K); input logp_t (B, K); output backpointers (B, K).

    ``trans`` (K, K) [from, to]: the allowed moves' scores (0, or a CRF's learned ones), FORBIDDEN elsewhere.

    K = L + 1: the labels plus a virtual start label. Five kernels a word: the rows are right-aligned before the
    Scan (``build_decoder``), so no step needs a padding mask.
    """
    K = trans.shape[0]
    g = _Graph("step/")
    score, logp_t = f"{PREFIX}step/score_in", f"{PREFIX}step/logp_t"
    trans_c = g.const(trans, "transitions")  # (K, K) [from, to]: a score or FORBIDDEN
    cand = g.op("Add", [g.op("Unsqueeze", [score, _ints(g, [2], "axis2")]), trans_c], "cand")  # (B, K, K)
    back = g.op("ArgMax", [cand], "back", axis=1, keepdims=0)  # (B, K): first best predecessor, as np.argmax
    if opset >= 18:  # ReduceMax took its axes as an attribute before opset 18, as an input since
        best = g.op("ReduceMax", [cand, _ints(g, [1], "axis1")], "best", keepdims=0)  # (B, K)
    else:
        best = g.op("ReduceMax", [cand], "best", axes=[1], keepdims=0)
    score_out = g.op("Add", [best, logp_t], "score_out")  # (B, K)
    return helper.make_graph(
        g.nodes,
        "viterbi_step",
        [
            helper.make_tensor_value_info(score, TensorProto.FLOAT, [None, K]),
            helper.make_tensor_value_info(logp_t, TensorProto.FLOAT, [None, K]),
        ],
        [
            helper.make_tensor_value_info(score_out, TensorProto.FLOAT, [None, K]),
            helper.make_tensor_value_info(back, TensorProto.INT64, [None, K]),
        ],
    )


def _backtrack_step(K: int) -> onnx.GraphProto:
    """Reverse Scan body at word t: state tag_t (B, 1); input backpointers_t (B, K); outputs tag_t-1 (state), tag_t."""
    g = _Graph("back/")
    tag, back_t = f"{PREFIX}back/tag_in", f"{PREFIX}back/back_t"
    prev = g.op("GatherElements", [back_t, tag], "prev", axis=1)  # (B, 1)
    tag_out = g.op("Identity", [tag], "tag_out")  # (B, 1)
    return helper.make_graph(
        g.nodes,
        "backtrack_step",
        [
            helper.make_tensor_value_info(tag, TensorProto.INT64, [None, 1]),
            helper.make_tensor_value_info(back_t, TensorProto.INT64, [None, K]),
        ],
        [
            helper.make_tensor_value_info(prev, TensorProto.INT64, [None, 1]),
            helper.make_tensor_value_info(tag_out, TensorProto.INT64, [None, 1]),
        ],
    )


def build_decoder(
    labels: Sequence[str],
    opset: int = 17,
    ir_version: int | None = None,
    crf: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """The best valid BIO path per row as an ONNX model, equal to ``bio_viterbi`` at each row's real words.

    Lets an exported token classifier do constrained decoding inside ONNX Runtime (merge its ``logits`` output into
    this model's ``logits`` input with ``onnx.compose.merge_models``).

    Inputs: ``logits`` float32 (batch, sequence, L); ``word_index`` int64 (batch, words), each word's first-subword
    position (padding words: any valid position, e.g. 0); ``word_mask`` int64 (batch, words), 1 for real words and 0
    for padding words, which must come after the real ones (every row needs one real word). Outputs: ``tags`` int64
    (batch, words), the label indices of the best path whose every I-X follows a B-X or I-X (padding words repeat the
    row's last real tag); ``scores`` float32 (batch, words), the softmax probability of each chosen tag at its word's
    first subword (0 on padding words).

    Args:
        labels: The label names, in the classifier's output order (BIO: ``O``, ``B-X``, ``I-X``).
        opset: The ``ai.onnx`` opset (13 or newer); match the encoder's to merge.
        ir_version: The model's IR version; default the lowest that supports ``opset``. Match the encoder's to merge.
        crf: A CRF student's learned (transitions (L, L) [from, to], start (L,), end (L,)) scores, added to the
            path as ``bio_viterbi(..., crf=...)`` does; None: every allowed move scores 0 (a softmax student).

    Returns:
        The checked ONNX model.
    """
    from nerdistil.tags import bio_scores, bio_transitions

    if opset < 13:
        raise ValueError(f"opset {opset}: the decoder needs opset 13 or newer")
    L = len(labels)
    if L == 0:
        raise ValueError("no labels")
    # K = L + 1 states: the labels and a virtual start label L that every row begins in, so the forward Scan runs
    # over all W >= 1 words (ONNX Runtime's Scan fails on a zero-length sequence). Rows are right-aligned: a row of
    # n < W words first spends W - n padding steps in the start label (start -> start is allowed there, and only
    # there: its log-prob column is 0 on padding steps and FORBIDDEN on real words, the labels' the other way
    # round), so every row ends at the last step and the Scan body needs no mask
    K = L + 1
    trans = np.full((K, K), FORBIDDEN, dtype=np.float32)  # (K, K) [from, to]
    learned, start, end = (np.where(np.isneginf(x), FORBIDDEN, x) for x in bio_scores(bio_transitions(labels), crf))
    trans[:L, :L] = learned
    trans[L, :L] = start  # row L = sentence start
    trans[L, L] = 0.0
    init = np.full(K, FORBIDDEN, dtype=np.float32)  # (K,): in the start label before the first step
    init[L] = 0.0
    pad_row = np.full(K, FORBIDDEN, dtype=np.float32)  # (K,): the log-probs of a padding step
    pad_row[L] = 0.0

    g = _Graph("")
    logits, word_index, word_mask = "logits", "word_index", "word_mask"
    zero, one, axis2 = _ints(g, [0], "zero"), _ints(g, [1], "one"), _ints(g, [2], "axis2")
    # each word's first-subword logits
    shape_bw = g.op("Shape", [word_index], "shape_bw")  # (2,): B, W
    shape_bwl = g.op("Concat", [shape_bw, _ints(g, [L], "L")], "shape_bwl", axis=0)  # (3,): B, W, L
    index = g.op("Expand", [g.op("Unsqueeze", [word_index, axis2]), shape_bwl], "index")  # (B, W, L)
    word_logits = g.op("GatherElements", [logits, index], "word_logits", axis=1)  # (B, W, L)
    logp = g.op("LogSoftmax", [word_logits], "logp", axis=2)  # (B, W, L)
    probs = g.op("Softmax", [word_logits], "probs", axis=2)  # (B, W, L)

    # right alignment: step j of row b is its word j - shift_b, shift_b = W - n_b (a padding step when negative)
    w = g.op("Squeeze", [g.op("Slice", [shape_bw, one, _ints(g, [2], "two")]), zero], "w")  # () W
    one_s = g.const(np.int64(1), "one_s")  # () 1
    steps = g.op("Unsqueeze", [g.op("Range", [g.const(np.int64(0), "zero_s"), w, one_s]), zero], "steps")  # (1, W)
    n = g.op("ReduceSum", [word_mask, one], "n", keepdims=1)  # (B, 1)
    shift = g.op("Sub", [w, n], "shift")  # (B, 1)
    src = g.op("Sub", [steps, shift], "src")  # (B, W)
    real = g.op("GreaterOrEqual", [src, zero], "real")  # (B, W)
    src_index = g.op("Expand", [g.op("Unsqueeze", [g.op("Max", [src, zero]), axis2]), shape_bwl], "src_index")
    logp_r = g.op("GatherElements", [logp, src_index], "logp_right", axis=1)  # (B, W, L)
    forbidden = g.const(np.float32(FORBIDDEN), "forbidden")
    logp_k = g.op("Pad", [logp_r, _ints(g, [0, 0, 0, 0, 0, 1], "pads"), forbidden], "logp_k", mode="constant")
    logp_k = g.op("Where", [g.op("Unsqueeze", [real, axis2]), logp_k, g.const(pad_row, "pad_row")], "logp_steps")
    logp_t = g.op("Transpose", [logp_k], "logp_time", perm=[1, 0, 2])  # (W, B, K)
    shape_bk = g.op("Concat", [g.op("Slice", [shape_bw, zero, one]), _ints(g, [K], "K")], "shape_bk", axis=0)
    score0 = g.op("Expand", [g.const(init, "init"), shape_bk], "score0")  # (B, K)

    # forward Viterbi: final scores (B, K), backpointers (W, B, K)
    score, back = g.op("Scan", [score0, logp_t], "viterbi", n_out=2, body=_viterbi_step(trans, opset),
                       num_scan_inputs=1)  # fmt: skip
    real_score = g.op("Slice", [score, zero, _ints(g, [L], "L"), one], "real_score")  # (B, L): never end in start
    if crf is not None:  # the CRF's end scores
        real_score = g.op("Add", [real_score, g.const(np.asarray(end, dtype=np.float32), "end")], "end_score")
    last = g.op("ArgMax", [real_score], "last", axis=1, keepdims=1)  # (B, 1)
    # backward: tag_t-1 = back_t[tag_t], emitted in natural order (W, B, 1); the final state is the start label
    _, tags_time = g.op("Scan", [last, back], "backtrack", n_out=2, body=_backtrack_step(K), num_scan_inputs=1,
                        scan_input_directions=[1], scan_output_directions=[1])  # fmt: skip
    tags_right = g.op("Squeeze", [g.op("Transpose", [tags_time], perm=[1, 0, 2]), axis2], "tags_right")  # (B, W)
    # back to the words' own positions; padding words (past W - 1) repeat the row's last real tag
    back_index = g.op("Min", [g.op("Add", [steps, shift]), g.op("Sub", [w, one_s])], "back_index")  # (B, W)
    tags = g.op("GatherElements", [tags_right, back_index], "tags", axis=1, outputs=["tags"])  # (B, W)
    chosen = g.op("GatherElements", [probs, g.op("Unsqueeze", [tags, axis2])], "chosen", axis=2)  # (B, W, 1)
    chosen = g.op("Squeeze", [chosen, axis2], "chosen_bw")  # (B, W)
    mask = g.op("Cast", [word_mask], "mask", to=TensorProto.BOOL)  # (B, W)
    g.op("Where", [mask, chosen, g.const(np.float32(0.0), "zero_f")], "scores", outputs=["scores"])  # (B, W)

    graph = helper.make_graph(
        g.nodes,
        "bio_viterbi_decoder",
        [
            helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", "sequence", L]),
            helper.make_tensor_value_info(word_index, TensorProto.INT64, ["batch", "words"]),
            helper.make_tensor_value_info(word_mask, TensorProto.INT64, ["batch", "words"]),
        ],
        [
            helper.make_tensor_value_info("tags", TensorProto.INT64, ["batch", "words"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "words"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="nerdistil")
    model.ir_version = ir_version if ir_version is not None else _min_ir_version(opset)
    helper.set_model_props(model, {"nerdistil.labels": " ".join(labels)})
    onnx.checker.check_model(model, full_check=True)
    return model


def _min_ir_version(opset: int) -> int:
    """The lowest IR version whose release supports the ``ai.onnx`` opset (what exporters usually write)."""
    for _release, ir, ai_onnx, *_ in helper.VERSION_TABLE:
        if ai_onnx >= opset:
            return ir
    return onnx.IR_VERSION
