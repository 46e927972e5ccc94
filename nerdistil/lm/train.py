"""``lm-distil`` and ``lm-finetune``: masked-LM distillation (DistilBERT recipe) through the shared loop.

``lm-finetune`` is the same run with no teacher (MLM loss only): it adapts a masked LM to tweets,
which is how a tweet teacher is made, and with ``student_layers`` it trains the MLM-only
baseline that distillation is compared against.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
from pathlib import Path

import torch

from nerdistil import trainer
from nerdistil.config import LMConfig
from nerdistil.errors import UserError
from nerdistil.layers import num_layers, prune_least_important_heads, select_layers
from nerdistil.lm.preprocess import read_tweets
from nerdistil.losses import cosine_hidden, kd_kl, mse_logits, weighted_ce
from nerdistil.runio import check_out, staging, versions, write_model_run

log = logging.getLogger(__name__)


def load_mlm(name: str):
    """A masked LM and its tokenizer, by hub name or folder.

    ``minilm`` is the bundled MiniLM-L6 with an MLM head whose decoder is tied to its word
    embeddings; the head's transform layer starts untrained (adapt it with ``lm-finetune``).
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from nerdistil.assets import resolve_model_name

    path = resolve_model_name(name)
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise UserError("not a Hugging Face model folder (no config.json)", path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # an encoder-only checkpoint gets a new MLM head: expected
    try:
        model = AutoModelForMaskedLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a masked LM from {name!r} ({str(e).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model, tokenizer


def parse_layers(spec: str | list[int] | None) -> list[int] | None:
    """``"0,2,4"`` -> [0, 2, 4]."""
    if spec is None or isinstance(spec, list):
        return spec
    try:
        return [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--student-layers takes comma-separated layer indices like 0,2,4, got {spec!r}") from None


def build_student(teacher, layers: list[int] | None, prune_heads: int = 0) -> tuple[torch.nn.Module, dict]:
    """A copy of the teacher with only ``layers`` kept (embeddings and LM head copied) and heads pruned."""
    student = copy.deepcopy(teacher)
    info: dict = {"layers": list(range(num_layers(teacher)))}
    if layers is not None:
        info["layers"] = select_layers(student, layers)
    if prune_heads:
        info["pruned_heads"] = prune_least_important_heads(student, prune_heads)
    return student, info


def check_compatible(teacher, student, alpha_cos: float) -> None:
    """Same vocabulary (the KL and MSE compare logits token by token); same hidden size for the cosine loss."""
    vt, vs = teacher.config.vocab_size, student.config.vocab_size
    if vt != vs:
        raise UserError(f"the student's vocabulary ({vs} tokens) differs from the teacher's ({vt}); "
                        "use a student with the teacher's tokenizer or build one with --student-layers")  # fmt: skip
    ht, hs = teacher.config.hidden_size, student.config.hidden_size
    if alpha_cos and ht != hs:
        raise UserError(f"the cosine loss needs equal hidden sizes (teacher {ht}, student {hs}); pass --alpha-cos 0")


def encode(tokenizer, tweets: list[str], max_length: int) -> list[dict]:
    """Tokenized tweets; none is dropped for being short (masking may leave a short one unmasked)."""
    enc = tokenizer(tweets, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    return [{k: enc[k][i] for k in ("input_ids", "attention_mask", "special_tokens_mask")} for i in range(len(tweets))]


def collator(tokenizer, mlm_probability: float = 0.15, seed: int | None = None):
    """Transformers' MLM collator: 15% of non-special tokens, 80% [MASK] / 10% random / 10% kept."""
    from transformers import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)
    if seed is not None:  # transformers ignores seed=0 (``if self.seed and ...``): set the generator ourselves
        collate.generator = torch.Generator().manual_seed(seed)
    return collate


def lm_loss(student, batch: dict, teacher=None, alphas: dict | None = None,
            temperature: float = LMConfig.temperature):  # fmt: skip
    """DistilBERT's objective: alpha_ce * T^2 KL + alpha_mlm * MLM + alpha_mse * MSE + alpha_cos * cosine.

    KL and MSE compare logits at the masked positions; the cosine loss compares last hidden states
    at every non-padding position. Without a teacher only the MLM term is computed.
    """
    alphas = alphas or {"mlm": 1.0}
    labels = batch["labels"]
    out_s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    V = out_s.logits.shape[-1]
    parts = {"mlm": weighted_ce(out_s.logits.reshape(-1, V), labels.reshape(-1))}
    if teacher is not None:
        with torch.no_grad():
            out_t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True)  # fmt: skip
        masked = labels != -100  # (B, T)
        s, t = out_s.logits[masked], out_t.logits[masked]  # (N, V)
        parts["ce"] = kd_kl(s, torch.softmax(t / temperature, dim=-1), temperature)
        parts["mse"] = mse_logits(s, t)
        keep = batch["attention_mask"].bool()
        parts["cos"] = cosine_hidden(out_s.hidden_states[-1][keep], out_t.hidden_states[-1][keep])
    total = sum(alphas.get(k, 0.0) * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def perplexity(model, tokenizer, tweets: list[str], seed: int = 0, batch_size: int = 32, max_length: int = 128,
               mlm_probability: float = 0.15) -> tuple[float, int]:  # fmt: skip
    """Masked-LM perplexity exp(mean NLL of the masked tokens) under a fixed masking seed.

    Models that share a tokenizer are scored on exactly the same masks. Returns (perplexity, masked tokens).
    """
    model.eval()
    device = getattr(model, "device", torch.device("cpu"))
    collate = collator(tokenizer, mlm_probability, seed=seed)
    items = encode(tokenizer, tweets, max_length)
    nll, count = 0.0, 0
    for s in range(0, len(items), batch_size):
        batch = collate(items[s : s + batch_size])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        labels = batch["labels"].to(device)
        keep = labels != -100
        if keep.any():
            nll += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            count += int(keep.sum())
    return (math.exp(nll / count) if count else float("nan")), count


def run_lm(cfg: LMConfig, distil: bool) -> dict:
    """Train a masked-LM student (distil) or adapt a masked LM (finetune); write the model folder."""
    from transformers import set_seed

    set_seed(cfg.seed)
    source = cfg.teacher if distil else cfg.model
    if not source:
        raise UserError("lm-distil needs --teacher MLM" if distil else "lm-finetune needs --model MLM")
    check_out(cfg.out, [cfg.corpus, cfg.eval_corpus, cfg.teacher, cfg.model, cfg.student], cfg.overwrite)
    if distil and not any((cfg.alpha_ce, cfg.alpha_mlm, cfg.alpha_mse, cfg.alpha_cos)):
        raise UserError("every loss weight (--alpha-ce, --alpha-mlm, --alpha-mse, --alpha-cos) is 0: the student "
                        "would learn nothing; give one a weight")  # fmt: skip
    base, tokenizer = load_mlm(source)
    layers = parse_layers(cfg.student_layers)
    teacher = None
    if distil:
        teacher = base.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if cfg.student:
            student, _ = load_mlm(cfg.student)
            info = {"layers": list(range(num_layers(student)))}
        else:
            student, info = build_student(teacher, layers, cfg.prune_heads)
        check_compatible(teacher, student, cfg.alpha_cos)
        for p in student.parameters():  # a copy of the frozen teacher starts frozen too
            p.requires_grad_(True)
    else:
        student, info = build_student(base, layers, cfg.prune_heads) if (layers or cfg.prune_heads) else (
            base, {"layers": list(range(num_layers(base)))})  # fmt: skip
    alphas = {"ce": cfg.alpha_ce, "mlm": cfg.alpha_mlm, "mse": cfg.alpha_mse, "cos": cfg.alpha_cos} if distil else {
        "mlm": 1.0}  # fmt: skip

    train = read_tweets(cfg.corpus, "auto")  # tweets, one a line, or a CoNLL file (word<TAB>tag lines)
    held_out = read_tweets(cfg.eval_corpus, "auto") if cfg.eval_corpus else None
    items = encode(tokenizer, train, cfg.max_length)
    sampler = trainer.EpochBatchSampler([len(it["input_ids"]) for it in items], cfg.batch_size, True, cfg.seed)
    loader = torch.utils.data.DataLoader(
        items, batch_sampler=sampler, collate_fn=collator(tokenizer, cfg.mlm_probability)
    )

    def loss_fn(m, batch):
        if teacher is not None and next(teacher.parameters()).device != batch["input_ids"].device:
            teacher.to(batch["input_ids"].device)
        return lm_loss(m, batch, teacher, alphas, cfg.temperature)

    evaluate = (
        (lambda m: perplexity(m, tokenizer, held_out, cfg.eval_seed, max_length=cfg.max_length)[0])
        if held_out
        else None
    )
    tcfg = trainer.TrainConfig.from_config(cfg, metric="perplexity", maximize=False)
    acc = trainer.make_accelerator(tcfg)
    inputs = [cfg.corpus, cfg.eval_corpus, cfg.teacher, cfg.model, cfg.student]
    with staging(cfg.out, cfg.overwrite, cfg.resume, main=acc.is_main_process, inputs=inputs) as tmp:
        before = (
            perplexity(student, tokenizer, held_out, cfg.eval_seed, max_length=cfg.max_length)[0] if held_out else None
        )
        student, result = trainer.train(student, loader, loss_fn, tcfg, evaluate, tmp / "tensorboard", acc,
                                          checkpoint_dir=tmp / "checkpoint", resume=cfg.resume)  # fmt: skip
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return {}
        shutil.rmtree(tmp / "checkpoint", ignore_errors=True)
        student = student.cpu()
        after = perplexity(student, tokenizer, held_out, cfg.eval_seed, max_length=cfg.max_length) if held_out else None
        report = {
            "mode": "lm-distil" if distil else "lm-finetune",
            "source": source,
            "student": cfg.student,
            **info,
            "params": sum(p.numel() for p in student.parameters()),
            "alphas": alphas,
            "temperature": cfg.temperature if distil else None,
            "train_tweets": len(train),
            "steps": result.steps,
            "best_epoch": result.best_epoch,
            "train_seconds": round(result.seconds, 1),
            "history": result.history,
            "held_out": None
            if after is None
            else {
                "perplexity_before": before,
                "perplexity": after[0],
                "masked_tokens": after[1],
                "mask_seed": cfg.eval_seed,
            },  # fmt: skip
            "seed": cfg.seed,
            **trainer.where(acc, cfg.mixed_precision),
            "environment": versions(),
        }
        write_model_run(tmp, student, tokenizer, cfg, report)
    return report
