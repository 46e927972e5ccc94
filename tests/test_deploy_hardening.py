"""The deploy side under misuse: predict's output never destroys a file, Tagger refuses what it would misread.

Each test is one case a user (or an adversary) tried: the expected outcome is a one-line error (exit 2)
or a ``TypeError``/``ValueError`` with one sentence, and nothing on disk changed that should not have.
"""

import errno
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from nerdistil.errors import UserError

TWEETS = "Obama visits London\n\n@john loves Google\n"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def src(tmp_path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text(TWEETS)
    return path


@pytest.fixture
def export_copy(exported, tmp_path) -> Path:
    """A copy of the session's export that a test may damage."""
    return Path(shutil.copytree(exported, tmp_path / "export"))


@pytest.mark.parametrize("target", ["model.onnx", "nerdistil.json", "tokenizer.json", "new.jsonl"])
def test_predict_never_writes_into_the_model_folder_in_use(export_copy, src, cli, target):
    before = _digest(export_copy)
    code, _, err = cli("predict", export_copy, "--input", src, "--output", export_copy / target)
    assert code == 2 and "a folder this command reads" in err and "Traceback" not in err
    assert _digest(export_copy) == before and not (export_copy / "new.jsonl").exists()


def test_predict_never_overwrites_its_input(exported, src, cli):
    code, _, err = cli("predict", exported, "--input", src, "--output", src)
    assert code == 2 and "inputs" in err
    assert src.read_text() == TWEETS


def test_predict_refuses_a_symlink_and_a_fifo(exported, src, tmp_path, cli):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    code, _, err = cli("predict", exported, "--input", src, "--output", link)
    assert code == 2 and "symbolic link" in err
    assert link.is_symlink() and target.read_text() == "keep me"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = cli("predict", exported, "--input", src, "--output", fifo)
    assert code == 2 and "not a plain file" in err and "--output -" in err
    assert fifo.exists() and not fifo.is_file()


def test_predict_needs_overwrite_to_replace_a_file(exported, src, tmp_path, cli):
    out = tmp_path / "o.jsonl"
    out.write_text("an earlier result\n")
    code, _, err = cli("predict", exported, "--input", src, "--output", out)
    assert code == 2 and "--overwrite" in err
    assert out.read_text() == "an earlier result\n"
    code, _, err = cli("predict", exported, "--input", src, "--output", out, "--overwrite")
    assert code == 0, err
    assert [json.loads(x)["line"] for x in out.read_text().splitlines()] == [1, 2, 3]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_predict_keeps_the_users_own_partial_file(exported, tmp_path, cli):
    bad = tmp_path / "in.txt"
    bad.write_bytes(b"fine\nbad \xff here\n")
    mine = tmp_path / "o.jsonl.partial"
    mine.write_text("my own notes")
    code, _, err = cli("predict", exported, "--input", bad, "--output", tmp_path / "o.jsonl")
    assert code == 2 and "invalid UTF-8" in err
    assert mine.read_text() == "my own notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "o.jsonl.partial"]


def test_predict_output_into_a_missing_folder_is_one_line(exported, src, tmp_path, cli):
    code, _, err = cli("predict", exported, "--input", src, "--output", tmp_path / "nope" / "o.jsonl")
    assert code == 2 and "no such folder" in err and "Traceback" not in err


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    from nerdistil.runio import file_out

    out = tmp_path / "o.jsonl"
    with pytest.raises(UserError, match="No space left on device"):
        with file_out(out):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_predict_streams_stdin_to_stdout(exported, cli, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(TWEETS.encode())))
    code, out, err = cli("predict", exported, "--input", "-", "--output", "-")
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3] and rows[0]["words"] == ["Obama", "visits", "London"]


def test_predict_under_torchrun_is_refused(exported, src, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli("predict", exported, "--input", src, "--output", tmp_path / "o.jsonl")
    assert code == 2 and "torchrun" in err
    assert not (tmp_path / "o.jsonl").exists()


def test_conll_output_keeps_one_block_per_input_line(exported, src, tmp_path, cli):
    out = tmp_path / "o.conll"
    code, _, err = cli("predict", exported, "--input", src, "--output", out, "--format", "conll")
    assert code == 0, err
    blocks, current = [], []  # every input line's block ends at exactly one blank line, an empty one too
    for line in out.read_text().split("\n")[:-1]:
        if line:
            current.append(line.split("\t")[0])
        else:
            blocks.append(current)
            current = []
    assert current == [] and blocks == [["Obama", "visits", "London"], [], ["@john", "loves", "Google"]]


def test_tagger_refuses_what_it_would_misread(exported):
    from nerdistil import Tagger

    tagger = Tagger.load(exported)
    with pytest.raises(TypeError, match="single str"):
        tagger.tag("Obama visits London")
    with pytest.raises(TypeError, match="generator"):
        tagger.tag(t for t in ["Obama"])
    with pytest.raises(TypeError, match="tweet 1 is a int"):
        tagger.tag(["fine", 3])
    with pytest.raises(TypeError, match="sentence 0 is a str"):
        tagger.tag_words(["a sentence"])
    with pytest.raises(TypeError, match="word 1 is a NoneType"):
        tagger.tag_words([["a", None]])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size must be at least 1"):
            tagger.tag(["Obama"], batch_size=bad)
    with pytest.raises(TypeError, match="batch_size"):
        tagger.tag_words([["Obama"]], batch_size=2.5)
    with pytest.raises(ValueError, match="threads"):
        Tagger(exported, threads=0)
    assert tagger.tag(("Obama visits London",))[0]["words"] == ["Obama", "visits", "London"]  # a tuple is a list


def _edit_config(folder: Path, edit) -> None:
    cfg = json.loads((folder / "nerdistil.json").read_text())
    edit(cfg)
    (folder / "nerdistil.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(("case", "edit", "message"), [
    ("reversed", lambda c: c.__setitem__("labels", c["labels"][::-1]), "not those model.onnx was exported with"),
    ("one short", lambda c: c.__setitem__("labels", c["labels"][:-1]), "not those model.onnx was exported with"),
    ("duplicated", lambda c: c.__setitem__("labels", [c["labels"][0]] * len(c["labels"])), "repeated"),
    ("not BIO", lambda c: c.__setitem__("labels", ["O", "PER", "B-LOC"]), "not BIO tags"),
    ("no max_length", lambda c: c["tokenizer"].pop("max_length"), "max_length"),
    ("no unk_token", lambda c: c["tokenizer"].pop("unk_token"), "unk_token"),
    ("max_length above positions", lambda c: c["tokenizer"].__setitem__("max_length", 100000), "positions"),
])  # fmt: skip
def test_a_damaged_config_is_refused_at_load(export_copy, case, edit, message):
    from nerdistil import Tagger

    _edit_config(export_copy, edit)
    with pytest.raises(UserError, match=message):
        Tagger.load(export_copy)


def test_a_missing_tokenizer_is_one_line(export_copy, src, cli):
    (export_copy / "tokenizer.json").unlink()
    code, _, err = cli("predict", export_copy, "--input", src)
    assert code == 2 and "no tokenizer.json" in err and "Traceback" not in err


def test_one_loader_for_every_kind(exported, tiny_distilled, tiny_teacher):
    """load_tagger: an export, a student and a teacher file all meet the WordTagger contract, with the same words."""
    from nerdistil.deploy.loader import load_tagger

    words = [["Obama", "visits", "London"], [], ["@john", "loves", "Google"]]
    for path, kind in ((exported, "export"), (tiny_distilled, "student"), (tiny_teacher / "teacher.pt", "flair")):
        tagger = load_tagger(path)
        assert tagger.kind == kind and tagger.params and tagger.params > 0
        rows = tagger.tag_words(words)
        assert [r["words"] for r in rows] == words and [len(r["tags"]) for r in rows] == [3, 0, 3]
        assert all(t in tagger.labels for r in rows for t in r["tags"])
        assert tagger.describe()["kind"] == kind and tagger.describe()["labels"] == tagger.labels
        assert tagger.predict(words) == [r["tags"] for r in rows]
    assert load_tagger(exported).describe()["quantization"] in ("fp32", "int8", "int8-per-tensor")


@pytest.mark.parametrize(("text", "words"), [
    ("Zu\u0308rich is nice", ["Zu\u0308rich", "is", "nice"]),  # a decomposed accent stays in its word
    ("#Zu\u0308rich @Jose\u0301", ["#Zu\u0308rich", "@Jose\u0301"]),
    ("\u0939\u093f\u0928\u094d\u0926\u0940 ok", ["\u0939\u093f\u0928\u094d\u0926\u0940", "ok"]),  # Indic vowel signs
    ("\U0001f600\u200d Barack", ["\U0001f600\u200d", "Barack"]),  # a joiner never reaches across a space
    ("a \u200d b", ["a", "\u200d", "b"]),
    ("x \ufe0f", ["x", "\ufe0f"]),
    ("\U0001f468\u200d\U0001f469\u200d\U0001f467 fam", ["\U0001f468\u200d\U0001f469\u200d\U0001f467", "fam"]),
    ("\U0001f3f3\ufe0f\u200d\U0001f308!", ["\U0001f3f3\ufe0f\u200d\U0001f308", "!"]),
])  # fmt: skip
def test_tweet_tokenizer_keeps_marks_and_joiners_in_their_word(text, words):
    from nerdistil.data.tweets import tokenize, tokenize_spans

    assert tokenize(text) == words
    assert [text[a:b] for _, a, b in tokenize_spans(text)] == words  # offsets slice the original string


def test_a_decomposed_entity_is_tagged_whole(exported):
    """The entity's word reaches the model whole, and its offsets slice the tweet as given (not normalised)."""
    from nerdistil import Tagger

    text = "Zu\u0308rich and Mu\u0308nchen"
    (row,) = Tagger.load(exported).tag([text])
    assert row["words"] == ["Zu\u0308rich", "and", "Mu\u0308nchen"]
    assert all(text[e["start"] : e["end"]] == e["text"] for e in row["entities"])


def test_a_failed_export_leaves_no_partial_folder(tiny_distilled, tmp_path, cli, monkeypatch):
    from nerdistil.deploy import export

    def full_disk(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export, "compose", full_disk)
    code, _, err = cli("export", tiny_distilled, "--out", tmp_path / "e", "--quantize", "none")
    assert code == 2 and "the disk is full" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither e nor .e.partial


def test_an_unknown_device_is_one_line(tiny_distilled, tmp_path, cli):
    src = tmp_path / "in.txt"
    src.write_text(TWEETS)
    code, _, err = cli("predict", tiny_distilled, "--input", src, "--device", "tpu")
    assert code == 2 and "--device tpu: not a device" in err and "Traceback" not in err


def test_a_broken_bio_file_hint_names_commands_that_repair(tmp_path):
    from nerdistil.data.conll import read_conll

    bad = tmp_path / "dev.txt"
    bad.write_text("Obama\tO\nvisits\tI-person\n\n")
    with pytest.raises(UserError, match="fix the file, or let teach, distil, finetune or evaluate repair it"):
        read_conll(bad)


def test_a_text_file_as_model_is_not_called_a_flair_file(tmp_path, cli):
    model = tmp_path / "notes.txt"
    model.write_text("these are my notes, not a model\n")
    src = tmp_path / "in.txt"
    src.write_text(TWEETS)
    code, _, err = cli("predict", model, "--input", src)
    assert code == 2 and "not a model file" in err and "Flair file" not in err.replace("Flair .pt file", "")


def test_the_graph_says_whether_it_is_int8(tiny_distilled, tmp_path, monkeypatch):
    """The gate measures each int8 candidate as it ships (windows alone), before nerdistil.json records a choice."""
    from nerdistil.deploy import export
    from nerdistil.deploy.runtime import Tagger

    seen = {}
    real = export.Tagger

    def recording(folder, *args, **kwargs):
        tagger = real(folder, *args, **kwargs)
        seen[json.loads((Path(folder) / "nerdistil.json").read_text()).get("gate") is None, tagger.quantized] = True
        return tagger

    monkeypatch.setattr(export, "Tagger", recording)
    corpus = Path(__file__).parent / "data" / "corpus" / "dev.txt"
    export.run_export(tiny_distilled, tmp_path / "int8", "int8", corpus, max_f1_drop=1.0, draws=10, min_agreement=0.0)
    assert seen == {(True, False): True, (True, True): True}  # fp32 then int8 candidates, no gate record yet
    folder = tmp_path / "int8"
    cfg = json.loads((folder / "nerdistil.json").read_text())
    del cfg["gate"]  # the graph alone still says it is int8
    (folder / "nerdistil.json").write_text(json.dumps(cfg))
    tagger = Tagger.load(folder)
    assert tagger.quantized and tagger.batch_independent
