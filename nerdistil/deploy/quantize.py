"""The one int8 recipe: dynamic quantization of an ONNX encoder, with the weight type this CPU runs fastest.

Used by ``export`` (the shipped graph, behind the gate) and by ``bench`` (the bare ONNX backends), so an
"int8" row means the same graph everywhere. Needs onnx and onnxruntime's quantizer, never torch.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path


def int8_kernels() -> str:
    """The dynamic-quantization preset for this CPU: AVX-512 VNNI where present (about 1.5x faster), else AVX2."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512_vnni" if "avx512_vnni" in flags else "avx2"


def quantize_encoder(encoder: Path, per_channel: bool, embeddings: bool = True, out: Path | None = None) -> Path:
    """Dynamic int8 quantization of the encoder graph: weights int8, activations quantized on the fly.

    Only what holds a weight is quantized: the MatMuls with a stored weight matrix (per output channel with
    ``per_channel``), fused attention's projections and, with ``embeddings``, the embedding tables (Gather, one
    scale a table: keeping them fp32 measured the same agreement with fp32 at 2.5x the file, benchmarks/RESULTS.md
    "int8 recipes"). The attention products of two activations stay fp32: quantizing both their inputs on the fly
    cost the most agreement with the PyTorch student. ONNX Runtime's quantizer, with the weight type of Optimum's
    preset for this CPU (``int8_kernels``: signed int8 weights for VNNI/AVX-512/ARM, unsigned for AVX2).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scales = "per_channel" if per_channel else "per_tensor"
    out = out or encoder.parent / f"int8_{scales}{'' if embeddings else '_fp32_tables'}.onnx"
    weights = QuantType.QUInt8 if int8_kernels() == "avx2" else QuantType.QInt8
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        quantize_dynamic(encoder, out, weight_type=weights, per_channel=per_channel,
                         op_types_to_quantize=["MatMul", "Attention"] + (["Gather"] if embeddings else []),
                         extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True,
                                        "ActivationSymmetric": False,
                                        "DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
    finally:
        root.removeFilter(_no_preprocessing_advice)
    return out


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """Drop ONNX Runtime's "Please consider to run pre-processing before quantization" (root logger).

    Its shape inference and fusions serve static quantization; the graph here is already fused.
    """
    return "pre-processing before quantization" not in record.getMessage()
