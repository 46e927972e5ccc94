"""The runtime needs only onnxruntime, tokenizers and numpy: `Tagger` in a fresh venv without torch.

A new virtual environment (no system site-packages) gets exactly those three packages, pinned to the
versions of the environment running the tests; the project's source is put on PYTHONPATH, uninstalled.
A child script there tags raw tweets and pre-split words with the exported tiny student and must give
what the full environment's `Tagger` gives, without ever importing torch.

The install needs a package index (or local wheels): when none is reachable the test fails, it does not
skip, so CI always runs it. Set ``NERDISTIL_SKIP_VENV_TEST=1`` to skip it on a machine that cannot install.
"""

import importlib.metadata as md
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DEPS = ("onnxruntime", "tokenizers", "numpy")
FORBIDDEN = ("torch", "transformers", "flair", "datasets")
pytestmark = pytest.mark.skipif(os.environ.get("NERDISTIL_SKIP_VENV_TEST") == "1", reason="NERDISTIL_SKIP_VENV_TEST=1")

LONG = " ".join(f"Obama met @user{i} in London and #Paris about Google {i} ..." for i in range(40))  # ~400 words
TWEETS = [
    "Obama visits London today",
    "",
    "   ",
    "@john loves #Apple & Google 👨\u200d👩\u200d👧\u200d👦 and 🏳\ufe0f\u200d🌈 so much",
    "Read this http://t.co/AbC123?x=1&y=2 from www.example.com/page , New York !!",
    "@barackobama thanks @JohnDoe_99 for the talk in Paris :)",
    LONG,
]
WORDS = [
    ["Obama", "visits", "London"],
    [],
    ["@john", "loves", "#Apple", "\u200d", "😀\u200d😀", "http://t.co/x"],
    LONG.split(),
]

CHILD = f"""
import importlib.util, json, sys

folder, tweets, words = json.loads(sys.stdin.read())
present = [m for m in {FORBIDDEN!r} if importlib.util.find_spec(m) is not None]
assert not present, f"importable in the runtime venv: {{present}}"

import numpy, onnxruntime, tokenizers
from nerdistil import Tagger

tagger = Tagger.load(folder)
out = {{
    "tag": tagger.tag(tweets),
    "tag_words": tagger.tag_words(words, batch_size=2),
    "max_length": tagger.max_length,
    "modules": {{m.__name__: m.__file__ for m in (numpy, onnxruntime, tokenizers, sys.modules["nerdistil"])}},
    "prefix": sys.prefix,
    "forbidden_loaded": [m for m in {FORBIDDEN!r} if m in sys.modules],
}}
print(json.dumps(out))
print("torch" in sys.modules)
"""


def _install_runtime_venv(path: Path) -> Path:
    """A fresh venv at ``path`` holding only the runtime's three packages (and their own dependencies)."""
    r = subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], capture_output=True, text=True,
                       timeout=300, env=_clean_env())  # fmt: skip
    assert r.returncode == 0, f"python -m venv failed:\n{r.stdout}{r.stderr}"
    python = path / "bin" / "python"
    if not python.exists():  # Windows layout
        python = path / "Scripts" / "python.exe"
    # every distribution of this environment pinned as a constraint, so the runtime's dependencies (protobuf,
    # huggingface-hub, ...) resolve to the versions already here: pip takes cached or local wheels
    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in md.distributions()
                   if d.metadata["Name"] and d.metadata["Name"].lower() != "nerdistil"})  # fmt: skip
    constraints = path / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    cmd = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-c", str(constraints),
           *(f"{name}=={md.version(name)}" for name in RUNTIME_DEPS)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_clean_env())
    if r.returncode != 0:
        pytest.fail(f"could not pip-install the runtime's dependencies into a fresh venv (is a package index or "
                    f"/opt/wheels reachable? set NERDISTIL_SKIP_VENV_TEST=1 to skip this test):\n$ {' '.join(cmd)}\n"
                    f"{(r.stdout + r.stderr)[-3000:]}")  # fmt: skip
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would point a child at the test environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONSAFEPATH")}  # fmt: skip
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def child(exported, tmp_path_factory):
    """The runtime venv's output for TWEETS and WORDS, and the seconds spent building the venv."""
    root = tmp_path_factory.mktemp("runtime_venv")
    t0 = time.perf_counter()
    python = _install_runtime_venv(root / "venv")
    build_s = time.perf_counter() - t0
    script = root / "child.py"
    script.write_text(CHILD)
    t0 = time.perf_counter()
    r = subprocess.run([str(python), "-s", str(script)], input=json.dumps([str(exported), TWEETS, WORDS]),
                       capture_output=True, text=True, timeout=300, cwd=root,
                       env=_clean_env(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))  # fmt: skip
    run_s = time.perf_counter() - t0
    assert r.returncode == 0, f"the runtime failed in a venv without torch:\n{r.stderr[-5000:]}"
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == "False", "the runtime imported torch"
    return {**json.loads(lines[-2]), "venv": root / "venv", "build_s": build_s, "run_s": run_s}


def test_runtime_venv_is_torch_free(child):
    assert child["forbidden_loaded"] == []
    venv_dir = Path(child["prefix"]).resolve()
    assert venv_dir == child["venv"].resolve()
    for name in ("numpy", "onnxruntime", "tokenizers"):
        assert Path(child["modules"][name]).resolve().is_relative_to(venv_dir), child["modules"]
    assert Path(child["modules"]["nerdistil"]).resolve() == ROOT / "nerdistil" / "__init__.py"
    assert child["build_s"] < 300, f"building the runtime venv took {child['build_s']:.0f} s"
    print(f"runtime venv built in {child['build_s']:.1f} s, child ran in {child['run_s']:.1f} s")


def _same(got: list[dict], ref: list[dict], keys: tuple[str, ...]) -> None:
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        for k in keys:
            assert g[k] == r[k], k
        assert g["scores"] == pytest.approx(r["scores"], abs=1e-5)
        assert [{**e, "score": None} for e in g["entities"]] == [{**e, "score": None} for e in r["entities"]]
        assert [e["score"] for e in g["entities"]] == pytest.approx([e["score"] for e in r["entities"]], abs=1e-5)


def test_runtime_venv_tags_like_the_full_environment(child, exported):
    from nerdistil.deploy.runtime import Tagger

    tagger = Tagger.load(exported)
    assert child["max_length"] == tagger.max_length
    _same(child["tag"], tagger.tag(TWEETS), ("text", "words", "tags"))
    _same(child["tag_words"], tagger.tag_words(WORDS, batch_size=2), ("words", "tags"))

    long_words = child["tag"][-1]["words"]
    assert len(long_words) > 300 and len(long_words) > child["max_length"]  # windows were needed
    assert child["tag"][1]["words"] == [] and child["tag"][2]["words"] == [] and child["tag_words"][1]["tags"] == []
    for tweet, r in zip(TWEETS, child["tag"]):
        assert r["text"] == tweet and len(r["tags"]) == len(r["words"]) == len(r["scores"])
        assert all(0 < p <= 1 for p in r["scores"])
        for e in r["entities"]:
            assert tweet[e["start"] : e["end"]] == e["text"] and e["type"] and 0 < e["score"] <= 1
    assert "👨\u200d👩\u200d👧\u200d👦" in child["tag"][3]["words"]  # one word: the joined family emoji
    assert "http://t.co/AbC123?x=1&y=2" in child["tag"][4]["words"]
    assert "@barackobama" in child["tag"][5]["words"]
    assert sum(len(r["entities"]) for r in child["tag"]) > 0, "the tiny student found no entity at all"


SERVE_DEPS = ("starlette", "uvicorn", "prometheus_client", "httptools", "uvloop", "typer", "rich", "pyyaml")


def test_runtime_venv_serves_over_http(child, exported, tmp_path):
    """The serving install: the runtime's packages plus the server's, no torch; `nerdistil serve` tags over HTTP."""
    import socket
    import urllib.request

    python = child["venv"] / "bin" / "python"
    constraints = child["venv"] / "constraints.txt"
    cmd = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "-c", str(constraints),
           *(f"{name}=={md.version(name)}" for name in SERVE_DEPS)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_clean_env())
    assert r.returncode == 0, f"could not install the server's packages:\n{(r.stdout + r.stderr)[-3000:]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    server = subprocess.Popen([str(python), "-s", "-m", "nerdistil", "serve", str(exported), "--port", str(port),
                               "--threads", "1"], stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=tmp_path,
                              env=_clean_env(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert server.poll() is None, f"the server died in the torch-free venv:\n{log.read_text()[-5000:]}"
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        req = urllib.request.Request(url + "/v1/tag", data=json.dumps({"texts": TWEETS[:1]}).encode(),
                                     headers={"content-type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as resp:
            got = json.loads(resp.read())["results"]
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
    from nerdistil.deploy.runtime import Tagger

    _same(got, Tagger.load(exported).tag(TWEETS[:1]), ("text", "words", "tags"))
