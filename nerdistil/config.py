"""Loading and checking the commands' configs (the dataclasses live in ``nerdistil.settings``).

YAML files in configs/ fill them, ``--set`` items override the file, CLI flags override both. A config
file is either flat (``epochs: 20``) or holds one section per command (``teach: {epochs: 20}``), so one
file can drive ``nerdistil run``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from nerdistil.errors import UserError
from nerdistil.settings import DataConfig, LMConfig, StudentConfig, TeachConfig

__all__ = ["DataConfig", "LMConfig", "SECTIONS", "StudentConfig", "TeachConfig", "load", "parse_sets"]

T = TypeVar("T")
SECTIONS = {"run", "teach", "finetune", "distil", "export", "bench", "lm_finetune", "lm_distil", "lm_eval", "serve"}


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's number rules: ``1e-3`` is a float, ``010`` is 10, ``12:30`` a string.

    PyYAML follows YAML 1.1, where a float needs a dot (``1e-3`` stays a string), a leading 0 means octal
    and colons make base-60 numbers; users write configs by 1.2's (and JSON's) rules.
    """


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                   list("-+0123456789"))  # fmt: skip
Yaml12Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                       r"|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))  # fmt: skip


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if body[:2] in ("0o", "0x"):
        return sign * int(body[2:], 8 if body[1] == "o" else 16)
    return sign * int(body, 10)  # 010 is ten


Yaml12Loader.add_constructor(_INT, _yaml12_int)


def load_yaml(text: str, what: str) -> Any:
    """YAML ``text`` under 1.2's number rules; a malformed or out-of-range value is a one-line error naming ``what``."""
    try:
        return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{what}: not valid YAML{where} ({getattr(e, 'problem', None) or e})") from None
    except ValueError as e:  # a number Python will not convert (over 4,300 digits)
        raise UserError(f"{what}: {str(e).splitlines()[0]}") from None


def clip(value: Any, limit: int = 60) -> str:
    """``value``'s repr for an error message, cut to ``limit`` characters: a huge value cannot flood the terminal."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _is(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _typed(hint: Any, value: Any) -> tuple[bool, Any]:
    """(ok, value converted) for a value read from YAML or a flag against a field's type hint."""
    if value is None:
        return type(None) in get_args(hint) or hint is type(None), value
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    for opt in options:
        if get_origin(opt) is list:
            (item,) = get_args(opt)
            if isinstance(value, list) and all(_is(item, v) for v in value):
                return True, list(value)
        elif isinstance(opt, type) and _is(opt, value):
            return True, float(value) if opt is float else value
    return False, value


def _type_name(hint: Any) -> str:
    names = []
    for opt in get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,):
        if opt is type(None):
            continue
        names.append("a list of strings" if get_origin(opt) is list else {int: "a whole number", float: "a number",
                     bool: "true or false", str: "a string"}.get(opt, getattr(opt, "__name__", str(opt))))  # fmt: skip
    return " or ".join(names)


# Ranges of numeric settings, by field name, checked where they enter (config file and flags alike).
_AT_LEAST_1 = {"epochs", "batch_size", "ensemble", "hidden_size", "label_chunk", "label_batch_size", "grad_accum",
               "max_length", "student_layers", "max_batch_size", "max_queue", "max_body_bytes", "max_texts",
               "max_chars", "workers", "threads", "lanes", "port"}  # fmt: skip
_AT_LEAST_0 = {"patience", "checkpoint_every", "prune_heads", "augment_copies", "max_wait_ms"}
_POSITIVE = {"temperature", "lr", "learning_rate", "fine_tune_lr", "adam_eps", "drain_s"}
_NON_NEGATIVE = {"weight_decay", "alpha_ce", "alpha_kd", "alpha_mlm", "alpha_mse", "alpha_cos", "class_weight_power",
                 "max_grad_norm"}  # fmt: skip
_UNIT = {"warmup": (0, 1, "[0, 1)"), "word_dropout": (0, 1, "[0, 1)"), "locked_dropout": (0, 1, "[0, 1)"),
         "teacher_only_ratio": (0, 1, "[0, 1)"), "mlm_probability": (0, 1, "(0, 1)")}  # fmt: skip
_CHOICES = {
    "mixed_precision": ("no", "fp16", "bf16"),
    "teacher_kind": ("auto", "flair", "transformer"),
    "device": ("auto", "cpu", "cuda"),
}


def _range_error(cls: type, name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` of ``cls``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        choices = _CHOICES.get(name)
        if cls.__name__ == "TeachConfig" and name == "soft_labels":
            choices = ("posterior", "flair", "hard")
        if choices and value not in choices:
            return f"must be one of {', '.join(choices)}, got {clip(value)}"
        return None
    if name in _AT_LEAST_1 and value < 1:
        return f"must be at least 1, got {value}"
    if name in _AT_LEAST_0 and value < 0:
        return f"must be 0 or more, got {value}"
    if name in _POSITIVE and value <= 0:
        return f"must be greater than 0, got {value}"
    if name in _NON_NEGATIVE and value < 0:
        return f"must be 0 or more, got {value}"
    if name == "min_confidence" and not 0 <= value <= 1:
        return f"must be in [0, 1], got {value}"
    if name in _UNIT:
        lo, hi, shown = _UNIT[name]
        if not (lo < value < hi if shown.startswith("(") else lo <= value < hi):
            return f"must be in {shown}, got {value}"
    return None


def _build(cls: type[T], values: dict[str, Any], source: str, flags: Mapping[str, str] | None = None,
           prefix: str = "") -> T:  # fmt: skip
    """``cls`` from ``values``, type and range checked.

    ``flags`` maps dotted keys set on the command line to the flag that set them: errors name it, not the file.
    """
    flags = flags or {}
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(names)}", source)
    kwargs = {}
    for key, value in values.items():
        dotted = prefix + key
        shown = flags.get(dotted, dotted)
        where = None if dotted in flags else source  # a flag's error names the flag, not the file
        sub = names[key].default_factory  # type: ignore[misc]
        if dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise UserError(f"{shown} must be a mapping of keys to values, got {clip(value)}", where)
            kwargs[key] = _build(sub, value, source, flags, dotted + ".")  # type: ignore[arg-type]
            continue
        ok, value = _typed(hints[key], value)
        if not ok:
            raise UserError(f"{shown} must be {_type_name(hints[key])}, got {clip(value)}", where)
        why = None if value is None else _range_error(cls, key, value)
        if why:
            raise UserError(f"{shown} {why}", where)
        kwargs[key] = value
    return cls(**kwargs)


def load(cls: type[T], path: str | Path | None, section: str, overrides: dict[str, Any] | None = None,
         sets: Sequence[str] = (), flags: Mapping[str, str] | None = None) -> T:  # fmt: skip
    """Build ``cls`` from the YAML file (its ``section`` if present), then ``sets``, then non-None overrides.

    ``sets`` are ``--set KEY=VALUE`` items (see :func:`parse_sets`). Override keys may be dotted
    (``data.repair_tags``); ``flags`` names the flag each came from, for errors (default ``--key``).
    """
    values: dict[str, Any] = {}
    source = str(path) if path else "command line"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError("no such config file", p)
        loaded = load_yaml(p.read_text(), str(p)) or {}
        if not isinstance(loaded, dict):
            raise UserError("a config file must be a mapping of keys to values", p)
        if section in loaded:
            values = dict(loaded[section] or {})
        elif set(loaded) & SECTIONS:  # a pipeline file without this command's section: defaults
            values = {}
        else:  # a flat file for this one command
            values = dict(loaded)
    shown: dict[str, str] = {}
    given = {**parse_sets(cls, section, sets, shown),
             **{k: v for k, v in (overrides or {}).items() if v is not None}}  # fmt: skip
    for key, value in given.items():
        target = values
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(target.setdefault(part, {}), dict):
                raise UserError(f"{part} must be a mapping of keys to values, got {target[part]!r}", source)
            target = target[part]
        target[leaf] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            shown[key] = (flags or {}).get(key, f"--{key.replace('_', '-')}")
    return _build(cls, values, source, shown)


def parse_sets(cls: type, section: str, items: Sequence[str], shown: dict[str, str] | None = None) -> dict[str, Any]:
    """spaCy-style ``KEY=VALUE`` overrides -> ``{dotted key: value}``; the value is read as YAML.

    KEY is a field of ``cls``, dotted into nested sections (``data.repair_tags``), optionally led by
    the command's own section (``distil.alpha_kd``). An unknown key or another command's section is a
    one-line error naming the key. ``shown`` collects, per key, how errors name it (``--set distil.alpha_kd``).
    """
    out: dict[str, Any] = {}
    for item in items:
        name, eq, text = item.partition("=")
        name = name.strip()
        if not eq or not name:
            raise UserError(f"--set takes KEY=VALUE, like --set {section}.epochs=3; got {item!r}")
        parts = name.replace("-", "_").split(".")
        if parts[0] in SECTIONS:
            if parts[0] != section:
                raise UserError(f"--set {name}: {parts[0]} is another command's section; here use {section}.KEY "
                                "or KEY")  # fmt: skip
            parts = parts[1:]
        if not parts or not all(parts):
            raise UserError(f"--set {name}: no key there; use {section}.KEY=VALUE or KEY=VALUE")
        kind: Any = cls
        for i, part in enumerate(parts):
            fields = {f.name: f for f in dataclasses.fields(kind)} if dataclasses.is_dataclass(kind) else {}
            if not fields:
                raise UserError(f"--set {name}: {'.'.join(parts[:i])} is a value, it has no keys")
            if part not in fields:
                where = f"{section}.{'.'.join(parts[:i])}" if i else section
                raise UserError(f"--set {name}: unknown key {part!r} in {where}; valid keys: {sorted(fields)}")
            kind = fields[part].default_factory
        value = load_yaml(text, f"--set {name}={clip(text)}")
        key = ".".join(parts)
        out[key] = value
        if shown is not None:
            shown[key] = f"--set {name}"
    return out
