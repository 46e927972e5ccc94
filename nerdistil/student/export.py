"""``nerdistil export``: a student folder in, one deployable ONNX graph with the valid-BIO decoder inside out.

The student is exported by Optimum (``input_ids``, ``attention_mask`` -> ``logits``), the decoder of
``nerdistil.student.onnx_decoder`` (word gather, log-softmax, BIO-constrained Viterbi) is joined to it with
``onnx.compose``, and each candidate graph (fp32, dynamic int8 with per-channel weights, int8 with per-tensor
weights) is scored against the PyTorch student on the same sentences before one is kept: the quality gate.
The folder is self-contained for ``nerdistil.runtime.Tagger``: ``model.onnx``, ``tokenizer.json``
and ``nerdistil.json`` (labels, tokenizer settings, the source's SHA-256, the gate's measurements).
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

from nerdistil.errors import UserError
from nerdistil.runtime import CONFIG, FORMAT, MODEL, Tagger

log = logging.getLogger(__name__)
QUANTIZE = ("none", "int8", "auto")
WINDOW_RULE = ("a sentence whose subwords exceed max_length is cut into consecutive windows of whole words, each "
               "within the limit (a single word longer than the limit keeps its first subwords); each window is "
               "decoded on its own and every word is tagged exactly once")  # fmt: skip


@dataclass
class Candidate:
    """One exported graph under the gate: its file and its measurements."""

    name: str
    file: str
    f1: float = float("nan")
    drop: float = float("nan")
    ci95: tuple[float, float] = (float("nan"), float("nan"))
    word_agreement: float = float("nan")
    p50_ms_batch1: float = float("nan")
    mb: float = float("nan")


def graph_params(folder: str | Path) -> int:
    """Parameters of an export folder's graph (its initializers), read without loading the weights' data."""
    import onnx

    graph = onnx.load(str(Path(folder) / MODEL), load_external_data=False).graph
    return sum(int(np.prod(i.dims)) for i in graph.initializer)


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
    ORTModelForTokenClassification.from_pretrained(student, export=True).save_pretrained(work)
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


def quantize_encoder(encoder: Path, per_channel: bool, embeddings: bool = True) -> Path:
    """Dynamic int8 quantization of the encoder graph: weights int8, activations quantized on the fly.

    Only what holds a weight is quantized: the MatMuls with a stored weight matrix (per output channel with
    ``per_channel``), fused attention's projections and, with ``embeddings``, the embedding tables (Gather, one
    scale a table: keeping them fp32 measured the same agreement with fp32 at 2.5x the file, benchmarks/RESULTS.md
    "int8 recipes"). The attention products of two activations stay fp32: quantizing both their inputs on the fly
    cost the most agreement with the PyTorch student. ONNX Runtime's quantizer, with the weight type of Optimum's
    preset for this CPU (``bench.int8_kernels``: signed int8 weights for VNNI/AVX-512/ARM, unsigned for AVX2).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from nerdistil.bench import int8_kernels

    scales = "per_channel" if per_channel else "per_tensor"
    out = encoder.parent / f"int8_{scales}{'' if embeddings else '_fp32_tables'}.onnx"
    weights = QuantType.QUInt8 if int8_kernels() == "avx2" else QuantType.QInt8
    quantize_dynamic(encoder, out, weight_type=weights, per_channel=per_channel,
                     op_types_to_quantize=["MatMul", "Attention"] + (["Gather"] if embeddings else []),
                     extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False,
                                    "DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
    return out


def compose(encoder: Path, labels: Sequence[str], out: Path) -> None:
    """Join the encoder and the BIO decoder into one graph: (ids, mask, word_index, word_mask) -> tags, scores."""
    import onnx
    from onnx import compose as onnx_compose

    from nerdistil.student.onnx_decoder import build_decoder

    enc = onnx.load(str(encoder))
    opset = next(o.version for o in enc.opset_import if o.domain in ("", "ai.onnx"))
    dec = build_decoder(labels, opset=opset, ir_version=enc.ir_version)
    # the encoder's other opsets (e.g. com.microsoft after quantization) are kept; the decoder needs only ai.onnx
    merged = onnx_compose.merge_models(enc, dec, io_map=[("logits", "logits")], outputs=["tags", "scores"])
    onnx.save(merged, str(out))


def paired_bootstrap(gold: list[list[str]], ref: list[list[str]], cand: list[list[str]], draws: int = 1000,
                     seed: int = 13) -> tuple[float, float, float]:  # fmt: skip
    """F1(candidate) - F1(reference) with a 95% CI, resampling sentences (entity micro F1, conlleval chunks)."""
    from seqeval.metrics.sequence_labeling import get_entities

    def counts(pred: list[list[str]]) -> np.ndarray:  # (n, 3): true positives, predicted, gold per sentence
        rows = []
        for g, p in zip(gold, pred):
            ge, pe = set(get_entities(g)), set(get_entities(p))
            rows.append((len(ge & pe), len(pe), len(ge)))
        return np.asarray(rows, dtype=np.float64).reshape(-1, 3)

    def f1(c: np.ndarray) -> np.ndarray:  # (..., 3) -> (...)
        denom = c[..., 1] + c[..., 2]
        return np.where(denom > 0, 2 * c[..., 0] / np.maximum(denom, 1), 0.0)

    a, b = counts(cand), counts(ref)
    diff = float(f1(a.sum(0)) - f1(b.sum(0)))
    idx = np.random.default_rng(seed).integers(0, len(gold), size=(draws, len(gold)))
    boot = f1(a[idx].sum(1)) - f1(b[idx].sum(1))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def gate_corpus(student: Path, corpus: str | Path | None) -> tuple[str, list[list[str]], list[list[str]]]:
    """(name, words, gold tags) to gate on: ``corpus``, else the dev set the student was trained with."""
    import yaml

    from nerdistil.data.conll import read_conll

    if corpus is not None:
        sents = read_conll(corpus)
        if any(s.tags is None for s in sents):
            raise UserError("the gate needs gold tags (token and tag columns)", corpus)
        return str(corpus), [s.tokens for s in sents], [s.tags for s in sents]
    cfg_file = student / "nerdistil_config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    if cfg.get("corpus") and Path(cfg["corpus"], "dev.txt").is_file():
        return gate_corpus(student, Path(cfg["corpus"], "dev.txt"))
    sl = Path(str(cfg.get("soft_labels") or ""))
    sl = sl / "soft_labels" if (sl / "soft_labels").is_dir() else sl
    if cfg.get("soft_labels") and (sl / "dataset_dict.json").is_file():
        from nerdistil import softlabels

        ds = softlabels.load(sl)
        if "dev" in ds:
            labels = softlabels.label_names(ds)
            rows = [r for r in ds["dev"] if r["has_gold"]]
            return f"{sl}[dev]", [list(r["tokens"]) for r in rows], [[labels[i] for i in r["tags"]] for r in rows]
    raise UserError("cannot find the student's dev set (its config names none that exists here); pass --corpus "
                    "FILE with gold tags for the quality gate", student)  # fmt: skip


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
               max_f1_drop: float = 0.01, overwrite: bool = False, draws: int = 1000,
               seed: int = 13, fuse: bool = True) -> dict:  # fmt: skip
    """Export, gate and write the deployable folder; returns what ``nerdistil.json`` records.

    ``fuse``: ONNX Runtime's transformer fusions in the graph (``export_encoder``), where Optimum knows the
    architecture. They are com.microsoft ops, which every ONNX Runtime build has; ``fuse=False`` keeps the fp32
    graph to standard ``ai.onnx`` ops for other runtimes.
    """
    from nerdistil.metrics import entity_report
    from nerdistil.runio import check_out, staging, versions, write_json
    from nerdistil.tokclf import check_folder, load_classifier, predict

    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if not 0 <= max_f1_drop <= 1:
        raise UserError(f"--max-f1-drop must be in [0, 1], got {max_f1_drop}")
    if draws < 1:
        raise UserError(f"--bootstrap must be at least 1, got {draws}")
    student = check_folder(student)
    check_out(out, [student, corpus], overwrite)
    name, words, gold = gate_corpus(student, corpus)
    model, tokenizer, labels = load_classifier(student)
    log.info("gate: the PyTorch student tags %d sentences of %s", len(words), name)
    ref = predict(model, tokenizer, words, labels)
    ref_f1 = entity_report(gold, ref)["f1"]
    limit = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    settings = {"max_length": limit, "unk_token": tokenizer.unk_token, "pad_token_id": tokenizer.pad_token_id,
                "add_prefix_space": bool(getattr(tokenizer, "add_prefix_space", False))}  # fmt: skip
    with staging(out, overwrite, inputs=[student, corpus]) as tmp:
        work = tmp / "work"
        # fused int8 measured 0-27% faster at batch 1 than plain, same agreement (benchmarks/int8_recipes.py)
        encoder = export_encoder(student, work, fuse)
        tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))  # as loaded: prefix-space setting included
        meta = {"format": FORMAT, "labels": labels, "tokenizer": settings, "window_rule": WINDOW_RULE,
                "fused": encoder.parent.name == "fused",
                "outputs": {"tags": "int64 (batch, words): label ids of the best valid BIO path",
                            "scores": "float32 (batch, words): softmax probability of each chosen tag"}}  # fmt: skip
        write_json(tmp / CONFIG, meta)
        # fp32 is always measured (the parity check); auto stops at the first int8 candidate within the limit
        # "int8" has per-channel weights (the closest to fp32 measured here); "int8-per-tensor" rounds differently
        plan = {"none": ["fp32"], "int8": ["fp32", "int8"], "auto": ["fp32", "int8", "int8-per-tensor"]}[quantize]
        tried: list[Candidate] = []
        for cand_name in plan:
            src = encoder if cand_name == "fp32" else quantize_encoder(encoder, cand_name == "int8")
            cand = Candidate(cand_name, f"model.{cand_name}.onnx")
            compose(src, labels, tmp / cand.file)
            shutil.copy(tmp / cand.file, tmp / MODEL)  # the Tagger loads MODEL
            tagger = Tagger(tmp)
            pred, _ = tagger.decode(words)
            cand.f1 = entity_report(gold, pred)["f1"]
            diff, lo, hi = paired_bootstrap(gold, ref, pred, draws, seed)
            cand.drop, cand.ci95 = -diff, (lo, hi)
            same = sum(a == b for p, q in zip(pred, ref) for a, b in zip(p, q))
            cand.word_agreement = same / max(1, sum(len(p) for p in ref))
            cand.p50_ms_batch1 = _p50_batch1(tagger, words)
            cand.mb = (tmp / cand.file).stat().st_size / 2**20
            tried.append(cand)
            log.info("gate: %s F1 %.4f (PyTorch %.4f, drop %.4f, 95%% CI of the difference [%.4f, %.4f])",
                     cand.name, cand.f1, ref_f1, cand.drop, lo, hi)  # fmt: skip
            if cand.name != "fp32" and cand.drop <= max_f1_drop:
                break
        passing = [c for c in tried if c.name != "fp32" and c.drop <= max_f1_drop]
        chosen = passing[0] if passing else tried[0] if quantize != "int8" else None
        if chosen is None:
            c = tried[-1]
            raise UserError(f"int8 loses {c.drop:.4f} F1 against the PyTorch student on {name} (limit "
                            f"--max-f1-drop {max_f1_drop}); use --quantize auto or none, or raise the "
                            "limit")  # fmt: skip
        shutil.copy(tmp / chosen.file, tmp / MODEL)
        for c in tried:
            (tmp / c.file).unlink()
        shutil.rmtree(work)
        if quantize == "none":
            decision = "fp32: no quantization asked for"
        elif chosen.name == "fp32":
            decision = f"fp32: every int8 candidate lost more than {max_f1_drop} F1"
        else:
            decision = f"{chosen.name}: its F1 drop {chosen.drop:.4f} is within --max-f1-drop {max_f1_drop}"
        meta.update(
            source={"student": str(student.resolve()), "sha256": sha256_folder(student)},
            gate={"corpus": name, "sentences": len(words), "words": sum(map(len, words)), "pytorch_f1": ref_f1,
                  "max_f1_drop": max_f1_drop, "quantize": quantize, "bootstrap_draws": draws, "seed": seed,
                  "candidates": [c.__dict__ for c in tried], "chosen": chosen.name, "decision": decision},
            environment=versions(),
        )  # fmt: skip
        write_json(tmp / CONFIG, meta)
        write_json(tmp / "report.json", meta)
    return meta
