"""``nerdistil bench-latency``: teacher and students on the same sentences, end to end, honestly timed.

Every model runs in its own fresh process (so peak memory figures do not mix), with the same
sentences in the same order, from a list of words to a list of tags: tokenization, the forward
pass and decoding are all inside the timing, for the teacher and the students alike. The models
are timed in interleaved rounds: in each of ``repeats`` rounds every model, in turn, is loaded in a
fresh process, runs a few warm-up batches and one timed pass over the corpus per batch size
(``time.perf_counter``), so a shared machine's slow minutes fall on all of them alike instead of on
whichever model ran then, and only one model is in memory at a time.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing as mp
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nerdistil.bench_plot import plot
from nerdistil.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Spec:
    """One row group of the benchmark: which model, through which backend, with which padding."""

    name: str
    path: str
    kind: str  # "teacher" (any kind, through the Teacher seam) or "student"
    backend: str = "pytorch"  # "pytorch", "onnx", "onnx-int8", or "export" (a `nerdistil export` folder)
    padding: str = "dynamic"  # "dynamic" or "fixed:N"
    onnx_dir: str | None = None
    device: str = "cpu"  # teacher and PyTorch students: cpu or cuda


def _load(spec: Spec, threads: int):
    """Returns (words -> tags function, parameter count, bytes on disk)."""
    if spec.backend == "export" or spec.kind == "teacher":
        # an export runs as deployed (the torch-free runtime); a teacher of any kind, or a teach folder's ensemble,
        # as labelling runs it. The parent process checked trust (every member's) before spawning us
        from nerdistil.deploy.loader import load_tagger

        tagger = load_tagger(spec.path, trust_teacher=True, kind="auto" if spec.backend == "export" else "teacher",
                             device=spec.device, threads=threads)  # fmt: skip
        if spec.backend == "export":
            from nerdistil.deploy.runtime import MODEL

            disk = (Path(spec.path) / MODEL).stat().st_size
        else:
            from nerdistil.teacher.ensemble import member_sources

            disk = sum(_disk(Path(f)) for f, _ in member_sources(spec.path) or [(spec.path, "")])
        return (lambda batch: tagger.predict(batch, len(batch))), tagger.params, disk
    import torch

    from nerdistil.align import load_tokenizer
    from nerdistil.crf import read_head
    from nerdistil.tokclf import load_classifier, predict

    pad_to = int(spec.padding.split(":")[1]) if spec.padding.startswith("fixed:") else None
    if spec.backend == "pytorch":
        from nerdistil.trainer import resolve_device

        model, tokenizer, _ = load_classifier(spec.path)
        model.to(resolve_device(spec.device))
        params = sum(p.numel() for p in model.parameters())
        disk = sum(f.stat().st_size for f in Path(spec.path).glob("*.safetensors"))
    else:
        import onnxruntime as ort
        from transformers import AutoConfig

        tokenizer = load_tokenizer(spec.path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # torch only glues tensors here; its idle threads would fight ORT's for the same cores
        torch.set_num_threads(1)
        file_name = "model_quantized.onnx" if spec.backend == "onnx-int8" else "model.onnx"
        model = OrtTokenClassifier(str(Path(spec.onnx_dir) / file_name), AutoConfig.from_pretrained(spec.path), opts)
        disk = (Path(spec.onnx_dir) / file_name).stat().st_size
        params = None
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    # a CRF student decodes with its transitions on every backend (PyTorch: the head load_classifier attached)
    crf = None if spec.backend == "pytorch" else read_head(Path(spec.path))

    def fn(batch: list[list[str]]) -> list[list[str]]:
        return predict(model, tokenizer, batch, labels, batch_size=len(batch), pad_to=pad_to, sort=False, crf=crf)

    if params is None:
        from transformers import AutoConfig, AutoModelForTokenClassification

        with __import__("torch").device("meta"):
            params = sum(p.numel() for p in AutoModelForTokenClassification.from_config(
                AutoConfig.from_pretrained(spec.path)).parameters())  # fmt: skip
    return fn, params, disk


def _disk(path: Path) -> int:
    """Bytes of a model file, or of a model folder's safetensors (0 for a hub name)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def latency_stats(seconds: list[float], n_sentences: int, n_words: int) -> dict:
    """Per-batch latency percentiles (ms) and throughput over all timed batches.

    Percentiles use linear interpolation (numpy's default); throughput is items / total time.
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    total = ms.sum() / 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
        "sentences_per_s": n_sentences / total, "words_per_s": n_words / total,
    }  # fmt: skip


def fingerprint(sentences: list[list[str]]) -> str:
    """SHA-256 of the sentences in order, recorded by every model's process to prove they saw the same input."""
    import hashlib

    h = hashlib.sha256()
    for words in sentences:
        h.update("\x1f".join(words).encode() + b"\x1e")
    return h.hexdigest()


def measure(spec: Spec, sentences: list[list[str]], gold: list[list[str]] | None, batch_sizes: list[int],
            threads: int, warmup: int) -> dict:  # fmt: skip
    """One round of one model, inside a fresh process: load, score, warm up and time one pass per batch size.

    Test F1 is scored when ``gold`` is given; each batch size gets ``warmup`` untimed batches first. Returns
    ``{"passes": [(batch size, seconds per batch, start, end)], ...}``, the ends in ``time.monotonic``, one clock
    for all processes. An export runs as deployed: the torch-free runtime, torch never imported in its process.
    """
    deployed = spec.backend == "export"
    if not deployed:
        import torch

        torch.set_num_threads(threads)
    fn, params, disk = _load(spec, threads)
    f1 = None
    if gold is not None:
        from nerdistil.metrics import entity_report

        pred = [t for s in range(0, len(sentences), 32) for t in fn(sentences[s : s + 32])]
        if any(len(p) != len(g) for p, g in zip(pred, gold)):
            raise RuntimeError(f"{spec.name}: a sentence got a different number of tags than words")
        f1 = entity_report(gold, pred)["f1"]
    passes = []
    with contextlib.nullcontext() if deployed else torch.inference_mode():
        for bs in batch_sizes:
            batches = [sentences[i : i + bs] for i in range(0, len(sentences), bs)]
            for b in batches[:warmup]:
                fn(b)
            times, start = [], time.monotonic()
            for b in batches:
                t0 = time.perf_counter()
                fn(b)
                times.append(time.perf_counter() - t0)
            passes.append((bs, times, start, time.monotonic()))
    return {"passes": passes, "params": params, "disk": disk, "f1": f1, "sha256": fingerprint(sentences),
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    VmHWM belongs to the process's own address space, so it starts fresh in a spawned child;
    ``ru_maxrss`` would not (it keeps the forking parent's size across exec).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB


class OrtTokenClassifier:
    """A token classifier over a bare ONNX Runtime session: the least Python between words and logits."""

    def __init__(self, path: str, config, session_options) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, session_options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = config
        self.device = "cpu"

    def __call__(self, input_ids, attention_mask):
        """Run the session; returns an object with ``.logits`` (a torch tensor), like a transformers model."""
        import torch

        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        (logits,) = self.session.run(None, {k: feed[k] for k in self.inputs})
        return type("Output", (), {"logits": torch.from_numpy(logits)})()


def export_onnx(student: str, out_dir: Path) -> Path:
    """Export a student folder to ONNX (fp32) and add an int8 copy made by the export's recipe (``deploy.quantize``)."""
    try:
        from optimum.onnxruntime import ORTModelForTokenClassification
    except ImportError:
        raise UserError("--onnx needs Optimum and ONNX Runtime: pip install 'nerdistil[onnx]'") from None
    from nerdistil.deploy.quantize import quantize_encoder

    if (out_dir / "model_quantized.onnx").is_file():
        return out_dir
    model = ORTModelForTokenClassification.from_pretrained(student, export=True)
    model.save_pretrained(out_dir)
    quantize_encoder(out_dir / "model.onnx", per_channel=True, out=out_dir / "model_quantized.onnx")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(student).save_pretrained(out_dir)
    return out_dir


def machine(threads: int) -> dict:
    """What the numbers were measured on."""
    import torch

    from nerdistil.trainer import device_name

    cpu = device_name("cpu").removeprefix("CPU: ")
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        from nerdistil.deploy.quantize import int8_kernels

        info["int8_kernels"] = int8_kernels()
    except ImportError:
        pass
    return info


def run_bench(specs: list[Spec], sentences: list[list[str]], gold: list[list[str]] | None, batch_sizes: list[int],
              threads: int, repeats: int = 3, warmup: int = 5) -> dict:  # fmt: skip
    """Measure every spec in interleaved rounds, each model's round in its own fresh process; add speed-ups.

    Round r runs every model once, one after another (the first model rotating from round to round), so only one
    model is ever in memory and the machine's slow minutes are shared out. Test F1 is scored in each model's first
    round; peak RSS is the largest of its rounds.
    """
    ctx = mp.get_context("spawn")
    times: dict[tuple[int, int], list[float]] = {}
    info: dict[int, dict] = {}
    schedule: list[dict] = []  # every timed pass, in the order run: which model, when
    for r in range(repeats):
        for i in [(r + k) % len(specs) for k in range(len(specs))]:
            spec = specs[i]
            log.info("round %d of %d: %s (%s, %s) in a fresh process", r + 1, repeats, spec.name, spec.backend,
                     spec.padding)  # fmt: skip
            with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                out = pool.submit(measure, spec, sentences, gold if i not in info else None, batch_sizes, threads,
                                  warmup).result()  # fmt: skip
            first = info.setdefault(i, out)
            first["peak_rss_mb"] = max(first["peak_rss_mb"], out["peak_rss_mb"])
            for bs, seconds, start, end in out["passes"]:
                times.setdefault((i, bs), []).extend(seconds)
                schedule.append({"batch_size": bs, "round": r + 1, "model": spec.name, "backend": spec.backend,
                                 "padding": spec.padding, "start": start, "end": end})  # fmt: skip
    n_words = sum(len(s) for s in sentences)
    results = [{"model": spec.name, "backend": spec.backend, "batch_size": bs, "padding": spec.padding,
                **latency_stats(times[i, bs], len(sentences) * repeats, n_words * repeats),
                "params": info[i]["params"], "disk_mb": info[i]["disk"] / 2**20, "f1": info[i]["f1"],
                "sentences_sha256": info[i]["sha256"], "peak_rss_mb": info[i]["peak_rss_mb"]}
               for i, spec in enumerate(specs) for bs in batch_sizes]  # fmt: skip
    t0 = schedule[0]["start"] if schedule else 0.0
    base = specs[0].name if specs[0].kind == "teacher" else None
    teacher = {r["batch_size"]: r["p50_ms"] for r in results if r["model"] == base}
    for r in results:
        r["speedup_vs_teacher"] = teacher[r["batch_size"]] / r["p50_ms"] if r["batch_size"] in teacher else None
    return {"results": results, "machine": machine(threads), "specs": [asdict(s) for s in specs],
            "n_sentences": len(sentences), "n_words": n_words,
            "timing": "end to end, words in -> tags out: tokenization, forward pass and decoding inside the timing; "
                      "models timed in interleaved rounds, one pass each in turn",
            "repeats": repeats, "rounds": "interleaved", "warmup_batches": warmup,
            "schedule": [{**x, "start": round(x["start"] - t0, 6), "end": round(x["end"] - t0, 6)}
                         for x in schedule]}  # fmt: skip


def run_bench_latency(teacher: Path, students: list[Path], corpus: Path, batch_sizes: str = "1,8,32",
                      threads: int | None = None, padding: str = "dynamic", onnx: bool = False, repeats: int = 3,
                      warmup: int = 5, max_sentences: int | None = None, trust_teacher: bool = False,
                      json_out: Path | None = None, plot_out: Path | None = None,
                      device: str = "cpu", teacher_name: str | None = None) -> dict:  # fmt: skip
    """``bench-latency``: check every input first, then time the teacher and each student (see :func:`run_bench`).

    ``teacher`` is a teacher of any kind or a `nerdistil teach` output folder: an ensemble's members are timed
    together as nerdistil runs them (``teacher.ensemble.Ensemble``: one shared encoder pass a batch, the mean
    posteriors decoded); its params are the members' summed with a shared encoder counted once, its disk the
    member files summed. ``teacher_name`` labels the teacher's rows
    (default ``teacher:NAME``). ``batch_sizes`` and ``padding`` are the comma-separated flag values; a `nerdistil
    export` folder is timed as deployed, a student folder through PyTorch at each padding and, with ``onnx``,
    through a temporary ONNX fp32 and int8 export. Writes ``json_out`` and ``plot_out`` if given; returns the report
    (``results``: one row a model, backend, padding and batch size; see :func:`run_bench`).
    """
    import tempfile

    import torch

    from nerdistil.data.conll import read_conll
    from nerdistil.deploy.runtime import CONFIG
    from nerdistil.runio import check_file_out, write_json
    from nerdistil.teacher.ensemble import check_ensemble
    from nerdistil.tokclf import check_folder

    check_ensemble(teacher, trust_teacher)  # every member of a teach folder
    check_file_out(json_out, [teacher, corpus, *students])
    check_file_out(plot_out, [teacher, corpus, *students])
    for name, value, least in (("--threads", threads, 1), ("--repeats", repeats, 1), ("--warmup", warmup, 0)):
        if value is not None and value < least:
            raise UserError(f"{name} must be at least {least}, got {value}")
    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        paddings = [p.strip() for p in padding.split(",") if p.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError(batch_sizes)
        for p in paddings:
            if p != "dynamic" and not (p.startswith("fixed:") and int(p.split(":")[1]) > 0):
                raise ValueError(p)
    except ValueError:
        raise UserError("--batch-sizes takes integers of at least 1 like 1,8,32, and --padding dynamic or fixed:N"
                        ) from None  # fmt: skip
    exports = {s for s in students if (s / CONFIG).is_file()}  # `nerdistil export` folders: timed as deployed
    for s in [s for s in students if s not in exports]:  # a broken folder fails here, in one line, not when timed
        check_folder(s)
    first = ""
    if corpus.is_file():  # one or two columns? sniffed leniently; read_conll reports undecodable bytes by line
        with open(corpus, encoding="utf-8-sig", errors="replace") as f:
            first = next((ln for ln in f if ln.strip()), "")
    sents = read_conll(corpus, tag_col=None if len(first.split()) < 2 else -1)
    if max_sentences is not None and max_sentences < 1:
        raise UserError("--max-sentences must be at least 1")
    sents = sents[:max_sentences]
    words, gold = [s.tokens for s in sents], [s.tags for s in sents] if sents[0].tags is not None else None
    from nerdistil.trainer import resolve_device

    if device not in ("cpu", "cuda"):
        raise UserError(f"--device takes cpu or cuda, not {device!r}")
    resolve_device(device)  # no GPU: one line now, not in a measuring process
    specs = [Spec(teacher_name or f"teacher:{teacher.name}", str(teacher), "teacher", device=device)]
    names = [s.name if [x.name for x in students].count(s.name) == 1 else str(s) for s in students]
    with tempfile.TemporaryDirectory() as tmp:
        for name, s in zip(names, students):
            if s in exports:
                specs.append(Spec(name, str(s), "student", "export"))
                continue
            specs += [Spec(name, str(s), "student", "pytorch", p, device=device) for p in paddings]
            if onnx:
                d = export_onnx(str(s), Path(tmp) / name)
                specs += [Spec(name, str(s), "student", b, "dynamic", str(d)) for b in ("onnx", "onnx-int8")]
        report = run_bench(specs, words, gold, sizes, threads or torch.get_num_threads(), repeats, warmup)
    if json_out:
        write_json(json_out, report)
    if plot_out:
        plot(report, plot_out)
    return report
