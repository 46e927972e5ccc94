"""``nerdistil export``: a student folder in, one deployable ONNX graph with the valid-BIO decoder inside out.

The student is exported by Optimum (``input_ids``, ``attention_mask`` -> ``logits``), the decoder of
``nerdistil.deploy.decoder`` (word gather, log-softmax, BIO-constrained Viterbi) is joined to it with
``onnx.compose``, and each candidate graph (fp32, dynamic int8 with per-channel weights, int8 with per-tensor
weights) goes through the quality gate before one is kept. An int8 graph is kept when (1) the entity spans it finds
on a large unlabeled agreement set (5,000+ tweets) agree with the fp32 graph's at span F1 >= ``min_agreement``
(0.99: the relative 1% criterion of Intel Neural Compressor and OpenVINO, applied to agreement, which needs no
labels and resolves what a dev set of a few hundred tweets cannot), and (2) the 95% CI of its gold dev F1 difference
against the PyTorch student shows no loss larger than ``max_f1_drop``. The folder is self-contained for
``nerdistil.deploy.runtime.Tagger``: ``model.onnx``, ``tokenizer.json`` and ``nerdistil.json`` (labels, tokenizer
settings, the source's SHA-256, the gate's measurements).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerdistil.deploy.gate import (  # noqa: F401 (paired_bootstrap, gate_corpus: imported from here too)
    MIN_AGREEMENT_TWEETS,
    _n_entities,
    agreement_set,
    gate_corpus,
    paired_bootstrap,
)
from nerdistil.deploy.quantize import quantize_encoder
from nerdistil.deploy.runtime import (  # noqa: F401 (graph_params: imported from here too)
    CONFIG,
    FORMAT,
    GRAPH_INT8,
    GRAPH_LABELS,
    GRAPH_POSITIONS,
    MODEL,
    Tagger,
    graph_params,
)
from nerdistil.errors import UserError

log = logging.getLogger(__name__)
QUANTIZE = ("none", "int8", "auto")
WINDOW_RULE = ("a sentence whose subwords exceed max_length is cut into consecutive windows of whole words, each "
               "within the limit (a single word longer than the limit keeps its first subwords); each window is "
               "decoded on its own and every word is tagged exactly once")  # fmt: skip


@dataclass
class Candidate:
    """One exported graph under the gate: its file and its measurements (None: not measured or undefined)."""

    name: str
    file: str
    f1: float = float("nan")  # gold dev entity F1
    f1_diff: float = float("nan")  # dev F1 - the PyTorch student's
    drop: float = float("nan")  # -f1_diff
    ci95: tuple[float, float] = (float("nan"), float("nan"))  # of f1_diff, paired bootstrap over dev sentences
    word_agreement: float = float("nan")  # dev words tagged as the PyTorch student tags them
    agreement_f1: float | None = None  # int8: span F1 against the fp32 graph's tags on the agreement set
    agreement_entities: int | None = None  # entities it finds on the agreement set
    refused: str | None = None  # int8: why the gate refused it
    p50_ms_batch1: float = float("nan")
    mb: float = float("nan")


def sha256_folder(folder: Path) -> str:
    """SHA-256 over the student's weight files (name and bytes, in name order)."""
    h = hashlib.sha256()
    for f in sorted(list(folder.glob("*.safetensors")) + list(folder.glob("pytorch_model*.bin"))):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def export_encoder(student: Path, work: Path, fuse: bool = False) -> Path:
    """Optimum's ONNX export of the student (fp32): ``work/model.onnx``.

    With ``fuse``, Optimum's ORTOptimizer also fuses each layer's attention, its GELU and layer norms into ONNX
    Runtime's transformer kernels (``work/fused/model_optimized.onnx``), where it knows the architecture; for one it
    does not know, the plain graph is used.
    """
    try:
        from optimum.onnxruntime import ORTModelForTokenClassification
    except ImportError:
        raise UserError("export needs Optimum and ONNX Runtime: pip install 'nerdistil[onnx]'") from None
    import warnings

    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "`torch_dtype` is deprecated!": Optimum's call, not the user's to fix
    try:
        with warnings.catch_warnings():  # the tracer's notes on constants: the exported graph is checked for parity
            warnings.filterwarnings("ignore", message=".*(trace|traced|tracing).*")
            ORTModelForTokenClassification.from_pretrained(student, export=True).save_pretrained(work)
    finally:
        hf_logging.set_verbosity(level)
    if not fuse:
        return work / "model.onnx"
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    try:
        ORTOptimizer.from_pretrained(work, file_names=["model.onnx"]).optimize(
            save_dir=work / "fused", optimization_config=OptimizationConfig(optimization_level=1)
        )
    except (KeyError, NotImplementedError, ValueError) as e:  # an architecture without ORT's fusions
        log.info("no transformer fusion for this student (%s); exporting the plain graph", e)
        return work / "model.onnx"
    return work / "fused" / "model_optimized.onnx"


def compose(encoder: Path, labels: Sequence[str], out: Path, max_positions: int | None = None,
            int8: bool = False, crf=None) -> None:  # fmt: skip
    """Join the encoder and the BIO decoder into one graph: (ids, mask, word_index, word_mask) -> tags, scores.

    ``crf``: a CRF student's (transitions, start, end) (``nerdistil.crf.read_head``), decoded in the graph.

    The graph's metadata records its labels, the subword positions it can take and whether it is ``int8``, so
    the runtime can check a ``nerdistil.json`` against the graph it describes, and run an int8 graph's windows
    alone, without onnx (``runtime.Tagger``).
    """
    import onnx
    from onnx import compose as onnx_compose

    from nerdistil.deploy.decoder import build_decoder

    enc = onnx.load(str(encoder))
    opset = next(o.version for o in enc.opset_import if o.domain in ("", "ai.onnx"))
    dec = build_decoder(labels, opset=opset, ir_version=enc.ir_version, crf=crf)
    # the encoder's other opsets (e.g. com.microsoft after quantization) are kept; the decoder needs only ai.onnx
    merged = onnx_compose.merge_models(enc, dec, io_map=[("logits", "logits")], outputs=["tags", "scores"])
    props = {GRAPH_LABELS: " ".join(labels), GRAPH_INT8: "1" if int8 else "0",  # labels as the decoder records them
             "nerdistil.head": "softmax" if crf is None else "crf"}  # fmt: skip
    if max_positions:
        props[GRAPH_POSITIONS] = str(max_positions)
    onnx.helper.set_model_props(merged, props)
    onnx.save(merged, str(out))


def encoder_positions(config) -> int:
    """Subword positions a Hugging Face encoder can embed (RoBERTa-style models keep pad_token_id + 1 of them)."""
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet"):
        positions -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return positions


def _refusal(c: Candidate, agreement: dict, min_agreement: float, max_f1_drop: float) -> str | None:
    """Why the gate refuses int8 candidate ``c`` (every check that fails), or None when it passes both."""
    why = []
    if c.agreement_f1 is None:
        why.append(f"no evidence: the fp32 graph finds no entities in the {agreement['tweets']} agreement tweets "
                   f"({agreement['source']}), so agreement with it is undefined")  # fmt: skip
    elif c.agreement_f1 < min_agreement:
        why.append(f"its entity spans agree with the fp32 graph's at F1 {c.agreement_f1:.4f} < --min-agreement "
                   f"{min_agreement} on {agreement['tweets']} tweets")  # fmt: skip
    if c.ci95[1] < -max_f1_drop:
        why.append(f"its dev F1 difference {c.f1_diff:+.4f} has a 95% CI [{c.ci95[0]:+.4f}, {c.ci95[1]:+.4f}] "
                   f"entirely below -{max_f1_drop} (--max-f1-drop)")  # fmt: skip
    return "; ".join(why) or None


def _p50_batch1(tagger: Tagger, words: list[list[str]], n: int = 60) -> float:
    sample = words[:n]
    for w in sample[:5]:  # warm-up
        tagger.decode([w])
    times = []
    for w in sample:
        t0 = time.perf_counter()
        tagger.decode([w])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def run_export(student: str | Path, out: str | Path, quantize: str = "auto", corpus: str | Path | None = None,
               max_f1_drop: float = 0.01, overwrite: bool = False, draws: int = 1000, seed: int = 13,
               fuse: bool = True, *, agreement_corpus: str | Path | None = None, agreement_pretokenized: bool = False,
               min_agreement: float = 0.99, min_agreement_tweets: int = MIN_AGREEMENT_TWEETS) -> dict:  # fmt: skip
    """Export, gate and write the deployable folder; returns what ``nerdistil.json`` records.

    The gate (module docstring) keeps an int8 graph when its entity spans agree with the fp32 graph's at span F1
    >= ``min_agreement`` on the agreement set (``agreement_set``) and the 95% CI of its dev F1 difference against
    the PyTorch student (``corpus``, default the student's dev set) is not entirely below ``-max_f1_drop``.
    ``fuse``: ONNX Runtime's transformer fusions in the graph (``export_encoder``), where Optimum knows the
    architecture. They are com.microsoft ops, which every ONNX Runtime build has; ``fuse=False`` keeps the fp32
    graph to standard ``ai.onnx`` ops for other runtimes.
    """
    from nerdistil.crf import read_head
    from nerdistil.metrics import entity_report
    from nerdistil.runio import check_out, staging, versions, write_json
    from nerdistil.tokclf import check_folder, load_classifier, predict

    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if not 0 <= max_f1_drop <= 1:
        raise UserError(f"--max-f1-drop must be in [0, 1], got {max_f1_drop}")
    if not 0 <= min_agreement <= 1:
        raise UserError(f"--min-agreement must be in [0, 1], got {min_agreement}")
    if draws < 1:
        raise UserError(f"--bootstrap must be at least 1, got {draws}")
    student = check_folder(student)
    inputs = [student, corpus, agreement_corpus]
    check_out(out, inputs, overwrite)
    name, words, gold = gate_corpus(student, corpus)
    model, tokenizer, labels = load_classifier(student)
    crf = read_head(student)  # a CRF student's transitions go into the graph's decoder
    evidence = _n_entities(gold, {lab[2:] for lab in labels if lab != "O"})
    if not evidence and quantize != "none":  # checked before the agreement set is made (5,000+ tweets)
        raise UserError(f"the gate's dev corpus ({name}) holds no gold entity of the model's types, so F1 on it "
                        "says nothing about int8; pass --corpus FILE with gold entities of those types, or "
                        "--quantize none")  # fmt: skip
    # fp32 needs no agreement check: the set is made (and tagged) only when int8 is on the table
    agreement, agree_words = (None, []) if quantize == "none" else agreement_set(
        student, agreement_corpus, agreement_pretokenized, seed, min_agreement_tweets)  # fmt: skip
    log.info("gate: the PyTorch student tags %d sentences of %s", len(words), name)
    ref = predict(model, tokenizer, words, labels)
    ref_f1 = entity_report(gold, ref)["f1"] if evidence else None  # undefined without gold entities: null
    positions = encoder_positions(model.config)
    limit = min(getattr(tokenizer, "model_max_length", 512) or 512, 512, positions)
    settings = {"max_length": limit, "unk_token": tokenizer.unk_token, "pad_token_id": tokenizer.pad_token_id,
                "add_prefix_space": bool(getattr(tokenizer, "add_prefix_space", False))}  # fmt: skip
    with staging(out, overwrite, inputs=inputs, resumable=False) as tmp:
        work = tmp / "work"
        # fused int8 measured 0-27% faster at batch 1 than plain, same agreement (benchmarks/int8_recipes.py)
        encoder = export_encoder(student, work, fuse)
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))  # as loaded: prefix-space setting included
        meta = {"format": FORMAT, "labels": labels, "tokenizer": settings, "window_rule": WINDOW_RULE,
                "fused": encoder.parent.name == "fused", "head": "softmax" if crf is None else "crf",
                "outputs": {"tags": "int64 (batch, words): label ids of the best valid BIO path",
                            "scores": "float32 (batch, words): softmax probability of each chosen tag"}}  # fmt: skip
        write_json(tmp / CONFIG, meta)
        # fp32 is always measured (the parity check and the agreement reference); auto stops at the first int8
        # candidate that passes. "int8" has per-channel weights (the closest to fp32 measured here);
        # "int8-per-tensor" rounds differently
        plan = {"none": ["fp32"], "int8": ["fp32", "int8"], "auto": ["fp32", "int8", "int8-per-tensor"]}[quantize]
        tried: list[Candidate] = []
        skipped = ""
        fp32_tags: list[list[str]] = []
        for cand_name in plan:
            src = encoder if cand_name == "fp32" else quantize_encoder(encoder, cand_name == "int8")
            cand = Candidate(cand_name, f"model.{cand_name}.onnx")
            compose(src, labels, tmp / cand.file, positions, int8=cand_name != "fp32", crf=crf)
            shutil.copy(tmp / cand.file, tmp / MODEL)  # the Tagger loads MODEL
            tagger = Tagger(tmp)
            pred, _ = tagger.decode(words)
            if evidence:
                cand.f1 = entity_report(gold, pred)["f1"]
                diff, lo, hi = paired_bootstrap(gold, ref, pred, draws, seed)
                cand.f1_diff, cand.drop, cand.ci95 = diff, -diff, (lo, hi)
            else:  # --quantize none, no gold entity of the model's types: no evidence, the F1s stored as null
                cand.f1 = cand.f1_diff = cand.drop = None  # type: ignore[assignment]
                cand.ci95 = (None, None)  # type: ignore[assignment]
            same = sum(a == b for p, q in zip(pred, ref) for a, b in zip(p, q))
            cand.word_agreement = same / max(1, sum(len(p) for p in ref))
            if agreement is not None and (cand_name == "fp32" or agreement["fp32_entities"]):
                log.info("gate: %s tags %d agreement tweets", cand_name, len(agree_words))
                tags, _ = tagger.decode(agree_words)
                cand.agreement_entities = _n_entities(tags)
                if cand_name == "fp32":
                    fp32_tags, agreement["fp32_entities"] = tags, cand.agreement_entities
                else:  # seqeval span F1, the fp32 graph's tags as the reference
                    cand.agreement_f1 = float(entity_report(fp32_tags, tags)["f1"])
            cand.p50_ms_batch1 = _p50_batch1(tagger, words)
            cand.mb = (tmp / cand.file).stat().st_size / 2**20
            tried.append(cand)
            if evidence:
                log.info("gate: %s dev F1 %.4f (PyTorch %.4f, difference %+.4f, 95%% CI [%+.4f, %+.4f]), agreement "
                         "F1 with fp32 %s", cand.name, cand.f1, ref_f1, diff, lo, hi,
                         "-" if cand.agreement_f1 is None else f"{cand.agreement_f1:.4f}")  # fmt: skip
            if cand.name != "fp32":
                cand.refused = _refusal(cand, agreement, min_agreement, max_f1_drop)  # type: ignore[arg-type]
                if cand.refused is None:
                    break
                if cand.name == "int8" and (cand.agreement_f1 is None or cand.agreement_f1 < min_agreement):
                    # per-tensor rounds coarser: its agreement with fp32 was below per-channel's in every
                    # measurement (benchmarks/RESULTS.md, int8-recipes), so it is tried only after a dev refusal
                    why = ("agreement with fp32 is undefined: no fp32 entities" if cand.agreement_f1 is None
                           else "it agrees less than per-channel int8, which failed")  # fmt: skip
                    skipped = f"int8-per-tensor not tried ({why})"
                    break
        passing = [c for c in tried if c.name != "fp32" and c.refused is None]
        chosen = passing[0] if passing else tried[0] if quantize != "int8" else None
        if chosen is None:
            raise UserError(f"int8 refused by the quality gate: {tried[-1].refused}; use --quantize auto or none, or "
                            "see --min-agreement and --max-f1-drop")  # fmt: skip
        shutil.copy(tmp / chosen.file, tmp / MODEL)
        for c in tried:
            (tmp / c.file).unlink()
        shutil.rmtree(work)
        if quantize == "none":
            decision = "fp32: no quantization asked for"
        elif chosen.name == "fp32":
            decision = "fp32: " + "; ".join([f"{c.name} refused ({c.refused})" for c in tried if c.refused]
                                            + ([skipped] if skipped else []))  # fmt: skip
        else:
            lo, hi = chosen.ci95
            decision = (f"{chosen.name}: its entity spans agree with the fp32 graph's at F1 {chosen.agreement_f1:.4f} "
                        f">= {min_agreement} on {agreement['tweets']} tweets, and the 95% CI of its dev F1 "
                        f"difference [{lo:+.4f}, {hi:+.4f}] shows no loss beyond {max_f1_drop}")  # fmt: skip
        meta.update(
            source={"student": str(student.resolve()), "sha256": sha256_folder(student)},
            gate={"corpus": name, "sentences": len(words), "words": sum(map(len, words)), "pytorch_f1": ref_f1,
                  "max_f1_drop": max_f1_drop, "agreement": agreement, "min_agreement": min_agreement,
                  "quantize": quantize, "bootstrap_draws": draws, "seed": seed,
                  "candidates": [c.__dict__ for c in tried], "chosen": chosen.name, "decision": decision},
            environment=versions(),
        )  # fmt: skip
        write_json(tmp / CONFIG, meta)
        write_json(tmp / "report.json", meta)
    return meta
