"""The layout's rules, checked on the source: role packages meet only at the soft-label contract.

Parsed with ``ast`` (no imports run): student and teacher never import each other, ``lm`` imports
neither, the shared layers import no role, orchestration never names a teacher kind, files stay small.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "nerdistil"
SHARED = ["align", "assets", "checkpoint", "config", "errors", "layers", "losses", "metrics", "runio", "softlabels",
          "tags", "tokclf", "trainer", "trust", "data"]  # fmt: skip
ROLES = ("nerdistil.teacher", "nerdistil.student", "nerdistil.lm")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("nerdistil")}


def _files(*parts: str) -> list[Path]:
    root = PKG.joinpath(*parts)
    return sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]


def _uses(path: Path, prefix: str) -> list[str]:
    return sorted(m for m in _imports(path) if m == prefix or m.startswith(prefix + "."))


@pytest.mark.parametrize(("package", "forbidden"), [
    ("student", ["nerdistil.teacher", "nerdistil.lm"]),
    ("teacher", ["nerdistil.student", "nerdistil.lm"]),
    ("lm", ["nerdistil.teacher", "nerdistil.student"]),
])  # fmt: skip
def test_role_packages_never_import_each_other(package, forbidden):
    bad = {f"{p.relative_to(PKG)}": _uses(p, f) for p in _files(package) for f in forbidden if _uses(p, f)}
    assert not bad


@pytest.mark.parametrize("module", SHARED)
def test_shared_layers_import_no_role(module):
    for path in _files(module):
        for role in (*ROLES, "nerdistil.cli", "nerdistil.show", "nerdistil.evaluate", "nerdistil.bench",
                     "nerdistil.pipeline", "nerdistil.predict"):  # fmt: skip
            assert not _uses(path, role), f"{path.relative_to(PKG)} imports {role}"


@pytest.mark.parametrize("name", ["teacher/teach.py", "teacher/ensemble.py", "evaluate.py", "bench.py", "pipeline.py",
                                  "predict.py", "student", "tokclf.py", "deploy"])  # fmt: skip
def test_orchestration_never_names_a_teacher_kind(name):
    """Code that holds a teacher holds a ``Teacher``: only ``teacher/base.py`` and the kinds name Flair."""
    paths = _files(name) if (PKG / name).is_dir() else [PKG / name]
    for path in paths:
        assert "flair" not in path.read_text().lower(), path.relative_to(PKG)


def test_files_stay_small():
    sizes = {str(p.relative_to(PKG)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 400} == {}
    assert sizes["cli.py"] < 350


def test_the_runtime_imports_no_training_stack():
    """``deploy/runtime.py`` loads with onnxruntime, tokenizers and numpy only (test_runtime_venv: the real run)."""
    mods = _imports(PKG / "deploy" / "runtime.py")
    assert mods <= {"nerdistil.errors", "nerdistil.errors.UserError", "nerdistil.tags", "nerdistil.tags.bio_spans",
                    "nerdistil.align", "nerdistil.align.first_subword_positions", "nerdistil.align.windows",
                    "nerdistil.data.tweets", "nerdistil.data.tweets.tokenize_spans", "nerdistil.deploy.runtime",
                    "nerdistil", "nerdistil.Tagger"}, mods  # fmt: skip


TRAINING_STACK = ("torch", "transformers", "flair", "optimum", "accelerate", "datasets")


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` is imported: module-level statements only, not inside functions."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_deploy_imports_no_training_stack_at_import():
    """``deploy/`` is torch-free when imported; only building a graph or loading a PyTorch model import it."""
    for path in _files("deploy"):
        heavy = {m for m in _top_level_imports(path) if m.split(".")[0] in TRAINING_STACK}
        assert not heavy, f"{path.relative_to(PKG)} imports {heavy} at import time"
    mods = [f"nerdistil.deploy.{p.stem}" for p in _files("deploy") if p.stem != "__init__"]
    code = f"import sys; import {', '.join(mods)}; print(sorted(m for m in {TRAINING_STACK!r} if m in sys.modules))"
    r = __import__("subprocess").run([__import__("sys").executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _module_graph() -> dict[str, set[str]]:
    """nerdistil module -> the nerdistil modules it imports anywhere (function-level imports too)."""
    mods = {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PKG.rglob("*.py")}  # fmt: skip

    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        deps = {owner(m) for m in _imports(path)} - {name, "nerdistil", ""}
        graph[name] = {d for d in deps if not name.startswith(d + ".")}  # a package's __init__ is not a dependency
    return graph


def test_no_import_cycles():
    """No two modules import each other, even through function-level imports (a cycle hides a misplaced piece)."""
    graph, cycles = _module_graph(), []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, path + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    assert cycles == []
