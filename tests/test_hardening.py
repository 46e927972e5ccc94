"""Issue 18, driven through the CLI as a hostile user would: nerdistil never deletes what it did not write,
never finishes on garbage, and answers bad input with one line and exit code 2.

Every case snapshots the folders it could touch and checks they are unchanged after a refusal.
"""

import json
import math
import os
import shutil
from pathlib import Path

import pytest

TRICKY = Path(__file__).parent / "data" / "tricky"


def snapshot(*folders: Path) -> dict:
    """Every file under the folders with its bytes: equal snapshots mean nothing was touched."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            out[str(p)] = p.read_bytes() if p.is_file() else None
    return out


def one_line_error(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("nerdistil: error:")]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def user_folder(tmp_path):
    """A folder of the user's own files (and a sub-folder) that nerdistil must never touch."""
    home = tmp_path / "mine"
    (home / "notes").mkdir(parents=True)
    (home / "thesis.tex").write_text("\\section{precious}\n")
    (home / "notes" / "todo.txt").write_text("back up\n")
    return home


@pytest.fixture
def corpus_copy(tmp_path, corpus_dir):
    c = tmp_path / "corpus"
    shutil.copytree(corpus_dir, c)
    return c


# --- class 1: deleting files nerdistil did not write --------------------------------------------------------------


def test_overwrite_never_deletes_the_working_directory(cli, user_folder, corpus_copy, monkeypatch):
    monkeypatch.chdir(user_folder)
    before = snapshot(user_folder, corpus_copy)
    code, _, err = cli("teach", "--corpus", corpus_copy, "--out", ".", "--overwrite", "--epochs", "1")
    assert "current directory" in one_line_error(code, err)
    assert snapshot(user_folder, corpus_copy) == before
    assert not list(user_folder.parent.glob(".*partial"))


@pytest.mark.parametrize("where", ["corpus", "parent_of_corpus", "home", "user_files"])
def test_overwrite_never_replaces_inputs_home_or_user_files(where, cli, user_folder, corpus_copy, tmp_path,
                                                            monkeypatch):  # fmt: skip
    monkeypatch.setenv("HOME", str(user_folder))
    out = {"corpus": corpus_copy, "parent_of_corpus": tmp_path, "home": user_folder, "user_files": user_folder}[where]
    if where == "user_files":
        monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    before = snapshot(tmp_path)
    code, _, err = cli("teach", "--corpus", corpus_copy, "--out", out, "--overwrite", "--epochs", "1")
    msg = one_line_error(code, err)
    assert snapshot(tmp_path) == before
    if where == "user_files":
        assert "did not write" in msg and "thesis.tex" in msg
    else:
        assert "never replaces" in msg


def test_refusal_without_overwrite_does_not_suggest_it_for_user_files(cli, user_folder, corpus_copy):
    code, _, err = cli("finetune", "--corpus", corpus_copy, "--out", user_folder, "--epochs", "1")
    msg = one_line_error(code, err)
    assert "did not write" in msg and "--overwrite to" not in msg


def test_overwrite_replaces_only_a_finished_run(cli, corpus_copy, tiny_student, tmp_path):
    out = tmp_path / "run"
    args = ("finetune", "--corpus", corpus_copy, "--student", tiny_student, "--out", out, "--epochs", "1",
            "--batch-size", "8")  # fmt: skip
    code, _, err = cli(*args)
    assert code == 0, err
    manifest = json.loads((out / ".nerdistil-run.json").read_text())
    assert "report.json" in manifest["entries"] and "model.safetensors" in manifest["entries"]
    code, _, err = cli(*args)
    assert "--overwrite" in one_line_error(code, err)
    code, _, err = cli(*args, "--overwrite")  # our own finished run: replaced
    assert code == 0, err
    (out / "my_notes.txt").write_text("mine")  # a user file inside a finished run: never deleted
    before = snapshot(out)
    code, _, err = cli(*args, "--overwrite")
    assert "my_notes.txt" in one_line_error(code, err)
    assert snapshot(out) == before
    # the staging folder is a sibling of --out, never inside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "run"]


def test_distil_out_cannot_be_its_soft_labels(cli, tiny_teacher, tiny_student):
    before = snapshot(tiny_teacher)
    code, _, err = cli("distil", "--soft-labels", tiny_teacher, "--student", tiny_student, "--out", tiny_teacher,
                       "--overwrite")  # fmt: skip
    assert "input" in one_line_error(code, err)
    assert snapshot(tiny_teacher) == before


def test_data_commands_never_overwrite_the_users_files(cli, user_folder, corpus_copy, tmp_path):
    (user_folder / "train.txt").write_text("my\tO\n")
    before = snapshot(user_folder, corpus_copy)
    code, _, err = cli("data", "wnut16", user_folder)
    assert "train.txt" in one_line_error(code, err)
    code, _, err = cli("data", "augment", corpus_copy / "train.txt", corpus_copy / "train.txt")
    assert "input" in one_line_error(code, err)
    assert snapshot(user_folder, corpus_copy) == before
    code, _, err = cli("data", "wnut16", tmp_path / "w")  # a new folder, then again: our own split is rewritten
    assert code == 0, err
    code, _, err = cli("data", "wnut16", tmp_path / "w", "--seed", "14")
    assert code == 0, err


def test_json_output_is_checked_before_the_work(cli, tiny_distilled, corpus_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus_dir / "dev.txt", "--json", blocker / "r.json")
    assert "is a file, not a folder" in one_line_error(code, err)
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus_dir / "dev.txt", "--json", tmp_path)
    assert "folder" in one_line_error(code, err)
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus_dir / "dev.txt", "--json",
                       corpus_dir / "dev.txt")  # fmt: skip
    assert "input" in one_line_error(code, err)
    # a missing folder is created
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus_dir / "dev.txt", "--json", tmp_path / "a" / "r")
    assert code == 0, err
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_output_folder(cli, tiny_distilled, corpus_dir, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus_dir / "dev.txt", "--json", ro / "r.json")
        assert "permission" in one_line_error(code, err)
    finally:
        ro.chmod(0o755)


# --- class 2: finishing on garbage ---------------------------------------------------------------------------------

BAD_SETTINGS = [
    ("teach", ["--temperature", "0"], "--temperature"),
    ("teach", ["--temperature", "-1"], "--temperature"),
    ("teach", ["--temperature", "nan"], "--temperature"),
    ("teach", ["--temperature", "inf"], "--temperature"),
    ("teach", ["--epochs", "0"], "--epochs"),
    ("teach", ["--ensemble", "0"], "--ensemble"),
    ("teach", ["--soft-labels", "soft"], "--soft-labels"),
    ("distil", ["--epochs", "0"], "--epochs"),
    ("distil", ["--temperature", "0"], "--temperature"),
    ("distil", ["--student-layers", "0"], "--student-layers"),
    ("distil", ["--batch-size", "0"], "--batch-size"),
    ("distil", ["--lr", "0"], "--lr"),
    ("distil", ["--alpha-kd", "-1"], "--alpha-kd"),
    ("distil", ["--alpha-ce", "0", "--alpha-kd", "0"], "both 0"),
    ("distil", ["--teacher-only-ratio", "1"], "--teacher-only-ratio"),
    ("distil", ["--min-confidence", "1.5"], "--min-confidence"),
    ("finetune", ["--epochs", "-3"], "--epochs"),
    ("lm-distil", ["--temperature", "0", "--teacher", "minilm"], "--temperature"),
    ("lm-distil", ["--alpha-ce", "0", "--alpha-mlm", "0", "--alpha-cos", "0", "--teacher", "minilm"], "is 0"),
    ("lm-finetune", ["--batch-size", "0", "--model", "minilm"], "--batch-size"),
]


@pytest.mark.parametrize("command,args,needle", BAD_SETTINGS, ids=[" ".join([c, *a]) for c, a, _ in BAD_SETTINGS])
def test_bad_settings_fail_before_any_work(command, args, needle, cli, tiny_teacher, tiny_student, corpus_dir,
                                           tmp_path):  # fmt: skip
    inputs = {"teach": ["--corpus", corpus_dir], "distil": ["--soft-labels", tiny_teacher, "--student", tiny_student],
              "finetune": ["--corpus", corpus_dir, "--student", tiny_student],
              "lm-distil": ["--corpus", corpus_dir / "train.txt"],
              "lm-finetune": ["--corpus", corpus_dir / "train.txt"]}[command]  # fmt: skip
    code, _, err = cli(command, *inputs, "--out", tmp_path / "o", *args)
    assert needle in one_line_error(code, err)
    assert list(tmp_path.iterdir()) == []  # no folder, finished or partial


BAD_CONFIGS = {  # tests/data/tricky/configs/NAME -> what the one line must say
    "epochs_not_a_number.yaml": "epochs must be a whole number",
    "epochs_fraction.yaml": "epochs must be a whole number",
    "temperature_nan.yaml": "temperature must be a finite number",
    "temperature_list.yaml": "temperature must be a number",
    "temperature_zero.yaml": "temperature must be greater than 0",
    "batch_size_zero.yaml": "batch_size must be at least 1",
    "data_not_a_mapping.yaml": "data must be a mapping",
    "token_col_not_a_number.yaml": "data.token_col must be a whole number",
    "overwrite_not_a_bool.yaml": "overwrite must be true or false",
}


def test_every_tricky_config_is_covered():
    assert sorted(p.name for p in (TRICKY / "configs").iterdir()) == sorted(BAD_CONFIGS)


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_values_are_one_line(name, cli, corpus_dir, tmp_path):
    cfg = TRICKY / "configs" / name
    code, _, err = cli("teach", "--config", cfg, "--corpus", corpus_dir, "--out", tmp_path / "o")
    msg = one_line_error(code, err)
    assert BAD_CONFIGS[name] in msg and name in msg
    assert list(tmp_path.iterdir()) == []


def test_a_temperature_that_overflows_never_finishes(cli, tiny_teacher, corpus_dir, tmp_path):
    # finite and positive, so it passes validation, but the scores / T overflow: the labels are NaN
    code, _, err = cli("teach", "--corpus", corpus_dir, "--out", tmp_path / "o", "--teacher",
                       tiny_teacher / "teacher.pt", "--temperature", "1e-320")  # fmt: skip
    assert "not finite" in one_line_error(code, err)
    assert not (tmp_path / "o").exists()


def test_distil_refuses_nan_soft_labels(cli, tiny_teacher, tiny_student, tmp_path):
    import numpy as np
    from datasets import load_from_disk

    bad = tmp_path / "bad"
    shutil.copytree(tiny_teacher, bad)
    ds = load_from_disk(str(tiny_teacher / "soft_labels"))
    ds["train"] = ds["train"].map(lambda r: {"probs": (np.asarray(r["probs"]) * np.nan).tolist()})
    shutil.rmtree(bad / "soft_labels")
    ds.save_to_disk(str(bad / "soft_labels"))
    code, _, err = cli("distil", "--soft-labels", bad, "--student", tiny_student, "--out", tmp_path / "s")
    assert "not distributions" in one_line_error(code, err)
    assert not (tmp_path / "s").exists()


def test_a_non_finite_loss_stops_training(tmp_path):
    import torch

    from nerdistil import trainer
    from nerdistil.errors import UserError

    model = torch.nn.Linear(2, 2)
    sampler = trainer.EpochBatchSampler([1] * 4, 2, True, 0)
    loader = torch.utils.data.DataLoader([torch.ones(2)] * 4, batch_sampler=sampler)
    cfg = trainer.TrainConfig(epochs=2, lr=1e-3, weight_decay=0.0, adam_eps=1e-8, warmup=0.0, max_grad_norm=1.0,
                              grad_accum=1, patience=0, seed=0, mixed_precision="no", checkpoint_every=0)  # fmt: skip

    def loss_fn(m, batch):
        return m(batch).sum() * float("nan"), {}

    with pytest.raises(UserError, match="loss became nan"):
        trainer.train(model, loader, loss_fn, cfg)


# --- class 5: tracebacks where a one-line error belongs -----------------------------------------------------------


def _break(folder: Path, how: str, tiny_student: Path) -> None:
    if how == "no_weights":
        (folder / "model.safetensors").unlink()
    elif how == "broken_config":
        (folder / "config.json").write_text('{"architectures": ["BertForTokenClassification"], ')
    elif how == "truncated_weights":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    elif how == "no_head":
        shutil.copy(tiny_student / "config.json", folder / "config.json")
    elif how == "garbage_weights":
        (folder / "model.safetensors").write_bytes(b"\x00" * 100)


@pytest.mark.parametrize("how", ["no_weights", "broken_config", "truncated_weights", "no_head", "garbage_weights"])
def test_broken_student_folders_are_one_line(how, cli, tiny_distilled, tiny_student, tiny_teacher, corpus_dir,
                                             tmp_path):  # fmt: skip
    folder = tmp_path / "student"
    shutil.copytree(tiny_distilled, folder)
    _break(folder, how, tiny_student)
    code, _, err = cli("evaluate", folder, "--corpus", corpus_dir / "dev.txt", "--json", tmp_path / "r.json")
    msg = one_line_error(code, err)
    assert str(folder) in msg
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.glob("*.tmp"))
    code, _, err = cli("bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", folder, "--corpus",
                       corpus_dir / "dev.txt", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0")  # fmt: skip
    assert str(folder) in one_line_error(code, err)


def test_bench_latency_bad_inputs_are_one_line(cli, tiny_distilled, tiny_teacher, corpus_dir, tmp_path):
    base = ("bench-latency", "--teacher", tiny_teacher / "teacher.pt", "--student", tiny_distilled)
    code, _, err = cli(*base, "--corpus", TRICKY / "invalid_utf8.txt")
    assert "invalid UTF-8" in one_line_error(code, err)
    code, _, err = cli(*base, "--corpus", corpus_dir / "dev.txt", "--batch-sizes", "0")
    assert "--batch-sizes" in one_line_error(code, err)
    code, _, err = cli(*base, "--corpus", corpus_dir / "dev.txt", "--repeats", "0")
    assert "--repeats" in one_line_error(code, err)


# --- class 6: output other tools cannot read ----------------------------------------------------------------------


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict(tmp_path):
    import numpy as np

    from nerdistil.runio import write_json

    write_json(tmp_path / "r.json", {"f1": float("nan"), "x": [float("inf"), 1.5], "n": np.float32("nan"),
                                     "ok": np.float64(0.25)})  # fmt: skip
    assert _strict_loads((tmp_path / "r.json").read_text()) == {"f1": None, "x": [None, 1.5], "n": None, "ok": 0.25}


def test_evaluate_json_with_undefined_scores_is_strict(cli, tiny_distilled, tmp_path):
    corpus = tmp_path / "no_entities.txt"
    corpus.write_text("just\tO\nwords\tO\n\n")
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus, "--json", tmp_path / "r.json")
    assert code == 0, err
    report = _strict_loads((tmp_path / "r.json").read_text())
    assert report["n_words"] == 2
    for v in report.values():
        assert not (isinstance(v, float) and not math.isfinite(v))


# --- class 7: messages that mislead --------------------------------------------------------------------------------


def test_evaluate_names_gold_types_the_model_lacks(cli, tiny_distilled, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="nerdistil"):
        code, _, err = cli("evaluate", tiny_distilled, "--corpus", TRICKY / "label_set_mismatch.txt", "--json",
                           tmp_path / "r.json")  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["unknown_gold_types"] and all(t in caplog.text for t in report["unknown_gold_types"])


def test_missing_soft_labels_say_nothing_is_there(cli, tiny_student, tmp_path):
    code, _, err = cli("distil", "--soft-labels", tmp_path / "nope", "--student", tiny_student, "--out",
                       tmp_path / "s")  # fmt: skip
    assert "no such folder" in one_line_error(code, err)


def test_a_folder_as_corpus_file_says_so(cli, tiny_distilled, corpus_dir):
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", corpus_dir)
    assert "is a folder" in one_line_error(code, err)


def test_column_errors_name_settings_that_exist(cli, tiny_distilled):
    code, _, err = cli("evaluate", tiny_distilled, "--corpus", TRICKY / "three_columns.txt")
    if code == 0:  # three columns are valid (token first, tag last): use the one-column file
        code, _, err = cli("evaluate", tiny_distilled, "--corpus", TRICKY / "one_column.txt")
    msg = one_line_error(code, err)
    assert "--token-col" not in msg and "data.token_col" in msg


def test_preprocess_never_overwrites_its_input(cli, tmp_path):
    tweets = tmp_path / "t.txt"
    tweets.write_text("hello @bob http://x.co\n")
    before = snapshot(tmp_path)
    code, _, err = cli("preprocess", tweets, tweets)
    assert "input" in one_line_error(code, err)
    assert snapshot(tmp_path) == before


def test_training_without_a_terminal_logs_progress_inside_an_epoch(caplog):
    """tqdm draws nothing in a log file: a heartbeat line (batches, loss, time left) keeps a long epoch visible."""
    from nerdistil.progress import Heartbeat

    beat = Heartbeat("epoch 2/8", total=100, unit="batches", on=True, every_s=0.0)
    with caplog.at_level("INFO", logger="nerdistil"):
        beat.tick(40, "loss 0.5000")
        Heartbeat("epoch 2/8", 100, "batches", on=False, every_s=0.0).tick(50)  # a terminal has tqdm's bar instead
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("epoch 2/8: 40/100 batches, loss 0.5000, about ")


def test_heartbeat_estimates_from_the_average_rate_and_ignores_reused_items(caplog, monkeypatch):
    """A slow first item must not read as hours left (issue 28: `1/1915 [00:02<1:17:03]` in a log); reused chunks
    (a resumed run) do not count as work done; nothing is logged before a minute has passed."""
    from nerdistil import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    beat = progress.Heartbeat("labelling train", total=1915, unit="sentences")
    beat.skip(500)  # labelled before an interruption
    with caplog.at_level("INFO", logger="nerdistil"):
        clock[0] = 2.0
        assert not beat.tick(501)  # the first (slow) item: under a minute, no line
        clock[0] = 60.0
        assert beat.tick(1100)  # 600 sentences in 60 s: 10/s, 815 left -> 82 s
        clock[0] = 61.0
        assert not beat.tick(1110)  # throttled
        clock[0] = 120.0
        assert beat.tick(1915)
        two = progress.Heartbeat("labelling train, process 1 of 2", total=1915, unit="sentences", share=2)
        clock[0] = 180.0
        assert two.tick(600)  # 10/s of its own; the other process labels half of the 1,315 left
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["labelling train: 1100/1915 sentences, about 1 min 22 s left",
                     "labelling train: 1915/1915 sentences, about 0 s left",
                     "labelling train, process 1 of 2: 600/1915 sentences, about 1 min 06 s left"]  # fmt: skip
