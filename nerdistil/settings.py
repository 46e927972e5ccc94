"""The settings of teach, distil/finetune and lm-distil/lm-finetune: one dataclass per command.

A setting is written once, here: its field, its default and, if the command line offers it, its
help text (:func:`opt`). ``nerdistil.cli`` makes the options from these fields, ``nerdistil.config``
fills them from YAML files, ``--set`` items and flags, and checks them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = "Random seed."
DEVICE = "Where to run: auto (a GPU when torch sees one, else the CPU), cpu or cuda (under torchrun: cuda:LOCAL_RANK)."
MIXED = "Mixed precision of the training loop (Accelerate): no, fp16 or bf16."
OVERWRITE = "Replace a finished --out."
LM_EVAL_WORDS = ("ma", "me", "lmao", "gonna", "lol", "u", "omg", "tonight", "game", "love")  # lm-eval --words
RESUME = "Continue an interrupted run (same --out) from its last checkpoint."
CHECKPOINT_EVERY = "Also checkpoint every N optimiser steps (always at epoch ends)."


def opt(help: str, default: Any = None, flag: str | None = None, kind: Any = None) -> Any:
    """A field that is also a command-line option: its default, help text and, where not derived, flag and type.

    ``flag`` is the option's declaration when it is not ``--field-name`` (``--x/--no-x`` for a bool that
    can be switched off); ``kind`` the option's type when it is not the field's (a ``Path`` for a str field).
    """
    return field(default=default, metadata={"help": help, "flag": flag, "kind": kind})


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of ``cls`` (for a command that takes the same option outside a config)."""
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)


@dataclass
class DataConfig:
    """Where the corpus comes from and how its files are read."""

    token_col: int = 0
    tag_col: int = -1
    scheme: str = "auto"
    repair_tags: bool = opt("Turn an I-X that starts an entity into B-X.", False)


@dataclass
class TeachConfig:
    """``nerdistil teach``: train or load a Flair teacher and write soft labels."""

    corpus: str = opt("Folder with train.txt, dev.txt, test.txt (CoNLL).", "data/wnut16", kind=Path)
    out: str = opt("Output folder (written atomically).", "runs/teacher", kind=Path)
    teacher: str | list[str] | None = opt(
        "Existing teacher to use instead of training one: a Flair SequenceTagger file, a Hugging Face token-classifier "
        "folder (e.g. a `nerdistil finetune` output) or a hub name; repeat it to average several teachers' posteriors "
        "(an ensemble; kinds may be mixed). Loading a Flair file unpickles it, which can run code: only use files you "
        "trust.", kind=list[Path])  # fmt: skip
    teacher_kind: str = opt("What every --teacher is: auto (a file is a Flair tagger, a folder or hub name a "
                            "transformer), flair or transformer.", "auto")  # fmt: skip
    embeddings: str = opt(
        "Teacher embeddings: minilm (bundled MiniLM-L6, frozen last layer), minilm-all (frozen, mean of all layers), "
        "minilm-ft (fine-tuned with the tagger), chars (corpus word embeddings + character LSTM), onehot, mpnet / "
        "mpnet-all (all-mpnet-base-v2, 110M, frozen; pip install 'nerdistil\\[mpnet]'), a Flair embeddings name, or "
        "any transformer folder or hub name, frozen, with an optional layer choice (roberta-large@all: mean of all "
        "layers; PATH@-1,-2); comma-separate to stack.", "minilm")  # fmt: skip
    ensemble: int = opt("Train N taggers (seeds SEED..SEED+N-1) and store the mean of their CRF posteriors.", 1)
    cross_fit: bool = opt(
        "With --ensemble N: deal the train tweets into N folds; member k trains without fold k and alone labels it, "
        "so the train soft labels are held-out predictions, not a memorised copy of the gold tags. Dev, test and "
        "--unlabeled get the mean of all members.", False)  # fmt: skip
    epochs: int = opt("Maximum training epochs (best dev epoch is kept).", 20)
    hidden_size: int = 256
    learning_rate: float = 0.1  # SGD, Flair's recipe for taggers on frozen embeddings
    fine_tune_lr: float = 5e-5  # AdamW, used instead when the embeddings are fine-tuned (minilm-ft)
    word_dropout: float = 0.05  # Flair's defaults for its NER taggers
    locked_dropout: float = 0.5
    batch_size: int = 32
    patience: int = 3
    # T = 1: chosen on dev (benchmarks/RESULTS.md, evidence table): T = 2 posteriors cost the student 4 dev F1
    temperature: float = opt("Soft-label temperature T: CRF scores / T (default 1, chosen on dev).", 1.0)
    soft_labels: str = opt(
        "Which soft labels: posterior (CRF forward-backward marginals, the default), flair (Flair's "
        "return_probabilities_for_all_classes scores) or hard (the one-hot Viterbi path).", "posterior")  # fmt: skip
    edge_marginals: bool = opt(
        "Also store the CRF's marginals of adjacent tags (labels x labels a word, at the temperature) for a CRF "
        "student's pairwise KD term (distil --head crf --alpha-pair). Flair teachers only.", False)  # fmt: skip
    unlabeled: str | None = opt("Raw tweets, one a line, to label as extra teacher-only data.", kind=Path)
    pretokenized: bool = opt(
        "The --unlabeled lines are words already, separated by spaces (the output of `nerdistil data augment`): "
        "split on whitespace instead of tokenizing them as tweets.", False)  # fmt: skip
    shard_size: str = "200MB"  # largest soft-label shard on disk
    label_chunk: int = 1024  # sentences labelled (and saved) at a time; --resume reuses finished chunks
    vector_cache: str = opt(
        "Folder where a frozen transformer's word vectors of the corpus (train, dev, test) are kept, keyed by the "
        "encoder's weights, layer choice, tokenizer and the corpus's sentences, so reruns, --resume and CV folds "
        "reuse them: auto ($NERDISTIL_CACHE/vectors, else ~/.cache/nerdistil/vectors), a folder, or none (compute "
        "them once a run, in memory).", "auto")  # fmt: skip
    verbose: bool = opt("Show Flair's own log in full: per-iteration lines, the model summary (they go to each "
                        "member's training.log either way).", False)  # fmt: skip
    label_batch_size: int | None = opt("Sentences a teacher's forward pass takes at once while labelling; default 32 "
                                       "on CPU, 256 on a GPU.")  # fmt: skip
    mixed_precision: str = opt(
        "Mixed precision on the device: Flair's automatic mixed precision while training, "
        "autocast while labelling (the CRF posteriors stay fp32): no, fp16 or bf16.",
        "no",
    )
    device: str = opt(DEVICE, "auto")
    seed: int = opt(SEED, 13)
    overwrite: bool = opt(OVERWRITE, False)
    resume: bool = opt(
        "Continue an interrupted run: reuse its trained ensemble members and labelled chunks (a member killed "
        "mid-training is retrained from its seed; Flair's trainer cannot restore its RNG mid-way).", False)  # fmt: skip
    trust_teacher: bool = opt("Load a Flair file nerdistil did not write (a pickle: it runs code).", False)
    # the command line offers the nested fields named in "options" (--repair-tags sets data.repair_tags)
    data: DataConfig = field(default_factory=DataConfig, metadata={"options": ("repair_tags",)})


@dataclass
class StudentConfig:
    """``nerdistil distil`` / ``finetune``: train a transformer token classifier (finetune: alpha_kd = 0)."""

    soft_labels: str | None = opt("A `teach` output folder: soft labels, gold tags, dev/test.", kind=Path)
    corpus: str | None = opt("CoNLL folder (train/dev/test.txt) for fine-tuning without a teacher.", kind=Path)
    out: str = opt("Output model folder (written atomically).", "runs/student", kind=Path)
    student: str = opt("Student: minilm (bundled MiniLM-L6), a hub name (distilroberta-base) or a folder.", "minilm")
    student_layers: int | None = opt("Keep K evenly spaced layers of the pretrained student.")
    epochs: int = opt("Maximum epochs (best dev epoch kept).", 8)
    batch_size: int = opt("Sentences (windows) per batch.", 16)
    lr: float = opt("AdamW peak learning rate.", 5e-5)
    weight_decay: float = 0.01
    warmup: float = 0.05
    max_grad_norm: float = 1.0
    patience: int = 3
    mixed_precision: str = opt(MIXED, "no")
    device: str = opt(DEVICE, "auto")
    alpha_ce: float = opt("Weight of the class-weighted gold CE.", 0.5)
    alpha_kd: float = opt("Weight of T^2 * KL(teacher || student) (with --head crf: against the CRF's marginals).",
                          2.0)  # fmt: skip
    head: str = opt("softmax: a per-token classifier, decoded under the valid-BIO mask; crf: a linear-chain CRF over "
                    "the words (learned transitions, trained on its NLL and, distilling, on the teacher's posteriors "
                    "through forward-backward), whose transitions ship in the export.", "softmax")  # fmt: skip
    alpha_pair: float = opt("distil --head crf: weight of the pairwise term, T^2 * KL between the teacher's and the "
                            "student's marginals of adjacent tags (needs soft labels from teach --edge-marginals).",
                            0.0)  # fmt: skip
    temperature: float | None = opt("KD temperature (default: the soft labels' own).")
    class_weight_power: float = opt("Balanced class weights ** power (0 = unweighted).", 0.5)
    kd_class_weights: bool = opt(
        "distil: reweight the teacher's targets by the class weights too (p_k * w_k^(1/T)), so the KD term shifts "
        "decisions towards rare classes as the weighted CE does.", False,
        "--kd-class-weights/--no-kd-class-weights")  # fmt: skip
    label_all_subwords: bool = opt("Train on every subword, not just the first.", False)
    max_length: int | None = None  # None: the tokenizer's limit (max 512); longer sentences are windowed
    group_by_length: bool = opt("Batch windows of similar length together.", True,
                                "--group-by-length/--no-group-by-length")  # fmt: skip
    unlabeled: bool = True  # distil also on the soft labels' teacher-only "unlabeled" split, if any
    teacher_only_ratio: float | None = opt(
        "distil: share of every batch drawn from teacher-only (unlabeled) sentences, in [0, 1); an epoch is one pass "
        "over the gold sentences. Default: all sentences shuffled together.")  # fmt: skip
    min_confidence: float = opt("distil: teacher-only words whose teacher max probability (at the soft labels' "
                                "temperature) is below this get no KD target.", 0.0)  # fmt: skip
    seed: int = opt(SEED, 13)
    overwrite: bool = opt(OVERWRITE, False)
    resume: bool = opt(RESUME, False)
    checkpoint_every: int = opt(CHECKPOINT_EVERY, 0)
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class LMConfig:
    """``nerdistil lm-distil`` / ``lm-finetune``: masked-LM distillation or adaptation (DistilBERT's recipe)."""

    corpus: str = opt("Training tweets, one a line (or CoNLL).", "data/tweets.txt", kind=Path)
    out: str = opt("Output masked-LM folder (written atomically).", "runs/lm", kind=Path)
    teacher: str | None = opt("lm-distil: teacher masked LM (name, folder, minilm).")
    model: str | None = opt("lm-finetune: the masked LM to adapt.")
    student: str | None = opt("lm-distil: a student MLM with the teacher's vocabulary.")
    # ...or the student is built from these teacher layers (embeddings and LM head copied)
    student_layers: str | None = opt("Build the student from these teacher layers, e.g. 0,2,5.")
    # see nerdistil.layers.head_importance
    prune_heads: int = opt("Prune N least important heads per layer.", 0)
    alpha_ce: float = opt("Weight of T^2 KL on masked positions.", 5.0)
    alpha_mlm: float = opt("Weight of the MLM cross-entropy.", 2.0)
    alpha_mse: float = opt("Weight of the MSE between logits.", 0.0)
    alpha_cos: float = opt("Weight of the cosine loss on hidden states.", 1.0)
    temperature: float = opt("Distillation temperature T.", 2.0)
    mlm_probability: float = 0.15
    max_length: int = 128
    epochs: int = opt("Epochs.", 3)
    batch_size: int = opt("Tweets per batch.", 16)
    grad_accum: int = opt("Gradient accumulation steps.", 1)
    lr: float = opt("AdamW peak learning rate.", 5e-4)
    weight_decay: float = 0.01
    adam_eps: float = 1e-6
    warmup: float = 0.05
    max_grad_norm: float = 5.0
    patience: int = 0  # 0: train every epoch (steps must match between compared runs)
    eval_corpus: str | None = opt("Held-out tweets: perplexity on fixed masks after each epoch.", kind=Path)
    eval_seed: int = 0  # masking seed of held-out perplexity: same masks for every model
    mixed_precision: str = opt(MIXED, "no")
    device: str = opt(DEVICE, "auto")
    seed: int = opt(SEED, 13)
    overwrite: bool = opt(OVERWRITE, False)
    resume: bool = opt(RESUME, False)
    checkpoint_every: int = opt(CHECKPOINT_EVERY, 0)


@dataclass
class ServeConfig:
    """``nerdistil serve``: an export folder behind HTTP, with dynamic batching across requests."""

    model: str = opt("An export folder (`nerdistil export --out`).", "runs/wnut16/export", flag="ARGUMENT", kind=Path)
    host: str = opt("Address to listen on (0.0.0.0: every interface).", "127.0.0.1")
    port: int = opt("Port to listen on.", 8080)
    max_batch_size: int = opt("Texts the batcher runs at once across requests (32, the default, measured best on "
                              "2 cores, benchmarks/RESULTS.md); 1 turns batching off.", 32)  # fmt: skip
    max_wait_ms: float = opt("Longest a text waits for others to join its batch (0: none; texts that arrive while a "
                             "batch runs still share the next one).", 0.0)  # fmt: skip
    max_queue: int = opt("Texts waiting at most; a request that would overflow it gets 429 with Retry-After.", 1024)
    max_body_bytes: int = opt("Largest request body (413 above it).", 1_000_000)
    max_texts: int = opt("Most texts (or sentences) in one request (413 above it).", 256)
    max_chars: int = opt("Longest text, or sentence's words joined, in characters (413 above it).", 10_000)
    workers: int = opt("Server processes (each loads the model; ONNX Runtime's threads are split between them).", 1)
    threads: int | None = opt("ONNX Runtime threads per process (default: the cores divided among the workers).")
    lanes: int | None = opt(
        "Batches run at once when full batches queue up, each on one ONNX Runtime thread (a second "
        "session); otherwise one batch at a time on every thread. Default: --threads; 1: off."
    )
    drain_s: float = opt("On SIGTERM: longest wait for requests in flight before exiting.", 30.0)
    out: str = ""  # unused: the server writes nothing
