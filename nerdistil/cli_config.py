"""The generic half of the command line: one option per config field with help, then --config and --set.

``config_command`` makes a command from a settings dataclass (``nerdistil.settings``), help text and
all, and ``config_from`` fills the dataclass from the options given on the command line, so every
command's settings live in one place and ``cli.py`` stays small.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional, get_args, get_type_hints

import typer
from typer import Argument, Option

ConfigOpt = Annotated[Optional[Path], Option("--config", help="YAML config; flags given on the command line override "
                                                              "it.")]  # fmt: skip
SetOpt = Annotated[Optional[list[str]], Option("--set", metavar="KEY=VALUE", help="Set any key of this command's "
    "config, spaCy-style, its section optional: --set distil.alpha_kd=2 or --set alpha_kd=2 in distil; nested keys "
    "dotted (--set data.repair_tags=true). VALUE is read as YAML. Repeatable; applied after --config and before the "
    "other flags, which win.")]  # fmt: skip


def _options(cls: type, prefix: str = "", only: tuple[str, ...] | None = None) -> Iterator[tuple[str, str, Any, Any]]:
    """(option name, dotted config key, Typer annotation, default) of every field of ``cls`` with help text.

    A nested dataclass field offers the sub-fields its ``options`` metadata names (``--repair-tags`` ->
    ``data.repair_tags``). A bool without a declared flag is a switch, ``--x``, off unless given; every
    other option defaults to None ("not given"), so the default written on the field is the only one.
    """
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        if "options" in f.metadata:
            yield from _options(f.default_factory, f"{prefix}{f.name}.", f.metadata["options"])  # type: ignore[arg-type]
        elif "help" in f.metadata:
            meta = f.metadata
            kind = meta["kind"] or next(t for t in get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
            switch = kind is bool and not meta["flag"]
            flag = "--" + f.name.replace("_", "-") if switch else meta["flag"]
            if flag == "ARGUMENT":  # the command's positional argument (serve's EXPORT_DIR), optional
                yield f.name, prefix + f.name, Annotated[Optional[kind], Argument(help=meta["help"])], None
                continue
            option = Option(*([flag] if flag else []), help=meta["help"])
            annotation = Annotated[bool if switch else Optional[kind], option]
            yield f.name, prefix + f.name, annotation, False if switch else None


def config_command(app: typer.Typer, name: str, cls: type, section: str, doc: str, run: str,
                   table: Callable[[str, dict], None], *args: Any) -> None:  # fmt: skip
    """Add command ``name``: an option per field of ``cls`` with help, then --config and --set.

    It fills ``cls`` (:func:`config_from`), calls ``run`` (``module.function``, imported when the command
    runs) with it and ``args``, and hands the report to ``table``.
    """
    keys, kw = {}, inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("ctx", kw, annotation=typer.Context)]
    for option, key, annotation, default in _options(cls):
        keys[option] = key
        params.append(inspect.Parameter(option, kw, annotation=annotation, default=default))
    params += [inspect.Parameter("config", kw, annotation=ConfigOpt, default=None),
               inspect.Parameter("sets", kw, annotation=SetOpt, default=None)]  # fmt: skip

    def command(ctx: typer.Context, **_: Any) -> None:
        cfg = config_from(ctx, cls, section, keys)
        module, _, function = run.rpartition(".")
        report = getattr(importlib.import_module(module), function)(cfg, *args)
        if report:  # empty on the other processes of a multi-process (torchrun) run
            table(cfg.out, report)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    app.command(name)(command)


def config_from(ctx: typer.Context, cls: type, section: str, keys: dict[str, str]):
    """The command's config: the --config file, then its --set items, then every option given on the command line.

    ``keys`` maps each option to its config key (``repair_tags`` -> ``data.repair_tags``); options not
    given set nothing; Paths become strings. A bad value's error names the flag that gave it
    (``--epochs``), a bad --set item its key.
    """
    from nerdistil import config as cfgmod

    over, flags = {}, {}
    for param in ctx.command.params:
        name = param.name or ""
        if name not in keys or getattr(ctx.get_parameter_source(name), "name", "") != "COMMANDLINE":
            continue
        value, key = ctx.params[name], keys[name]
        over[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else (
            str(value) if isinstance(value, Path) else value)  # fmt: skip
        flags[key] = (param.secondary_opts if value is False and param.secondary_opts else param.opts)[0]
    config, sets = ctx.params.get("config"), ctx.params.get("sets") or ()
    return cfgmod.load(cls, config, section, over, sets, flags)
