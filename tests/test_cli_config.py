"""Options -> config: the one generic flag path, spaCy-style --set overrides, and the order file < --set < flag."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from nerdistil import config as cfgmod
from nerdistil.errors import UserError


def one_line_error(code: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("nerdistil: error:")]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


class Captured(UserError):
    pass


@pytest.fixture
def captured(monkeypatch):
    """Replace the commands' run_* with one that keeps the config it was given and stops (exit 2)."""
    import nerdistil.lm.train
    import nerdistil.student.distil
    import nerdistil.teacher.teach

    seen = []

    def keep(cfg, *_):
        seen.append(cfg)
        raise Captured("captured")

    for module, name in ((nerdistil.teacher.teach, "run_teach"), (nerdistil.student.distil, "run_student"),
                         (nerdistil.lm.train, "run_lm")):  # fmt: skip
        monkeypatch.setattr(module, name, keep)
    return seen


def test_set_parses_yaml_values_into_the_dataclass():
    cfg = cfgmod.load(cfgmod.StudentConfig, None, "distil", {},
                      ["distil.alpha_kd=2.5", "data.repair_tags=true", "temperature=null", "epochs=3",
                       "student-layers=2"])  # fmt: skip
    assert cfg.alpha_kd == 2.5 and isinstance(cfg.alpha_kd, float)
    assert cfg.data.repair_tags is True and cfg.temperature is None and cfg.epochs == 3 and cfg.student_layers == 2
    teach = cfgmod.load(cfgmod.TeachConfig, None, "teach", {}, ["teach.data.repair_tags=true", "teacher=[a.pt, b]"])
    assert teach.data.repair_tags is True and teach.teacher == ["a.pt", "b"]
    lm = cfgmod.load(cfgmod.LMConfig, None, "lm_distil", {}, ["lm-distil.alpha_cos=0", "student_layers=0,2"])
    assert lm.alpha_cos == 0.0 and lm.student_layers == "0,2"


def test_order_is_file_then_set_then_flag(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"distil": {"epochs": 5, "lr": 1e-4, "data": {"token_col": 1}}}))
    cfg = cfgmod.load(cfgmod.StudentConfig, cfg_file, "distil", {}, ["epochs=6", "data.repair_tags=true"])
    assert (cfg.epochs, cfg.lr, cfg.data.token_col, cfg.data.repair_tags) == (6, 1e-4, 1, True)
    cfg = cfgmod.load(cfgmod.StudentConfig, cfg_file, "distil", {"epochs": 7, "seed": None}, ["epochs=6"])
    assert cfg.epochs == 7 and cfg.seed == 13  # a None override sets nothing


@pytest.mark.parametrize("item,needle", [
    ("bogus=1", "--set bogus: unknown key 'bogus'"),
    ("distil.bogus=1", "--set distil.bogus: unknown key 'bogus'"),
    ("data.bogus=1", "--set data.bogus: unknown key 'bogus' in distil.data"),
    ("teach.epochs=3", "--set teach.epochs: teach is another command's section"),
    ("epochs.x=3", "--set epochs.x: epochs is a value"),
    ("epochs", "--set takes KEY=VALUE"),
    ("distil=3", "--set distil: no key there"),
    ("data..x=3", "--set data..x: no key there"),
    ("epochs=abc", "--set epochs must be a whole number, got 'abc'"),
    ("distil.alpha_kd=-1", "--set distil.alpha_kd must be 0 or more"),
    ("lr=[1", "--set lr='[1': not valid YAML"),
    ("seed=" + "9" * 5000, "Exceeds the limit"),  # a 5,000-digit number: one line, not a traceback
    ("epochs=" + "x" * 100_000, "--set epochs must be a whole number, got 'xxxx"),  # 100,000 characters: cut short
])  # fmt: skip
def test_bad_set_items_name_the_key(item, needle):
    with pytest.raises(UserError) as e:
        cfgmod.load(cfgmod.StudentConfig, None, "distil", {}, [item])
    assert needle in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 1500


@pytest.mark.parametrize(("text", "value"), [
    ("lr=1e-3", 1e-3), ("lr=1E-3", 1e-3), ("lr=.5", 0.5), ("lr=5.", 5.0), ("lr=2e+1", 20.0),
    ("seed=010", 10), ("seed=0o10", 8), ("seed=0x10", 16), ("seed=+7", 7),
    ("student=12:30", "12:30"), ("student=1_000", "1_000"), ("student=0b11", "0b11"),
])  # fmt: skip
def test_set_values_follow_yaml_1_2_number_rules(text, value):
    """YAML 1.1 (PyYAML's default) read 1e-3 as a string, 010 as 8 and 12:30 as 750; 1.2 (and JSON) do not."""
    cfg = cfgmod.load(cfgmod.StudentConfig, None, "distil", {}, [text])
    got = getattr(cfg, text.split("=")[0])
    assert got == value and type(got) is type(value)


def test_config_files_follow_yaml_1_2_number_rules(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("distil:\n  lr: 1e-3\n  seed: 010\n")
    cfg = cfgmod.load(cfgmod.StudentConfig, cfg_file, "distil")
    assert (cfg.lr, cfg.seed) == (1e-3, 10)


def test_flags_fill_the_config_through_one_path(cli, captured, corpus_dir, tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"teach": {"epochs": 4, "hidden_size": 64, "cross_fit": True}}))
    code, _, err = cli("teach", "--config", cfg_file, "--corpus", corpus_dir, "--out", tmp_path / "o", "--teacher",
                       "a.pt", "--teacher", "org/model", "--teacher-kind", "transformer", "--repair-tags",
                       "--set", "hidden_size=32", "--set", "teach.epochs=9", "--epochs", "2")  # fmt: skip
    assert "captured" in one_line_error(code, err)
    (cfg,) = captured
    assert cfg.corpus == str(corpus_dir) and cfg.out == str(tmp_path / "o") and isinstance(cfg.out, str)
    assert cfg.teacher == ["a.pt", "org/model"] and cfg.teacher_kind == "transformer"
    assert cfg.data.repair_tags is True  # --repair-tags: the one teach option with another field name
    assert cfg.hidden_size == 32 and cfg.epochs == 2  # --set beats the file, a flag beats --set
    assert cfg.cross_fit is True and cfg.resume is False  # options not given leave the file's values alone


def test_student_and_lm_flags(cli, captured, corpus_dir, tmp_path):
    code, _, err = cli("distil", "--soft-labels", tmp_path, "--out", tmp_path / "s", "--no-kd-class-weights",
                       "--no-group-by-length", "--label-all-subwords", "--set", "kd_class_weights=true",
                       "--set", "distil.alpha_kd=1.5", "--set", "max_length=64")  # fmt: skip
    assert "captured" in one_line_error(code, err)
    code, _, err = cli("lm-finetune", "--model", "minilm", "--corpus", corpus_dir / "train.txt", "--out",
                       tmp_path / "m", "--set", "lm_finetune.mlm_probability=0.3", "--lr", "1e-4")  # fmt: skip
    assert "captured" in one_line_error(code, err)
    student, lm = captured
    assert student.kd_class_weights is False and student.group_by_length is False and student.label_all_subwords
    assert student.alpha_kd == 1.5 and student.max_length == 64 and student.soft_labels == str(tmp_path)
    assert lm.model == "minilm" and lm.mlm_probability == 0.3 and lm.lr == 1e-4 and lm.corpus.endswith("train.txt")


BAD = [
    ("teach", ["--set", "bogus=1"], "--set bogus: unknown key 'bogus'"),
    ("teach", ["--set", "distil.epochs=1"], "--set distil.epochs: distil is another command's section"),
    ("teach", ["--set", "teach.data.repair_tags=maybe"], "--set teach.data.repair_tags must be true or false"),
    ("distil", ["--set", "alpha_kd=abc"], "--set alpha_kd must be a number, got 'abc'"),
    ("finetune", ["--set", "finetune.epochs=0"], "--set finetune.epochs must be at least 1"),
    ("lm-distil", ["--set", "lm_distil.nope=1"], "--set lm_distil.nope: unknown key 'nope'"),
    ("lm-finetune", ["--set", "temperature=-2"], "--set temperature must be greater than 0"),
    ("teach", ["--set", "epochs=3", "--epochs", "0"], "--epochs must be at least 1"),  # the flag wins, and is named
    ("distil", ["--no-kd-class-weights", "--alpha-kd", "-1"], "--alpha-kd must be 0 or more"),
    ("teach", ["--teacher-kind", "crf"], "--teacher-kind must be one of auto, flair, transformer"),
]


@pytest.mark.parametrize("command,args,needle", BAD, ids=[" ".join([c, *a]) for c, a, _ in BAD])
def test_bad_overrides_are_one_line_before_any_work(command, args, needle, cli, captured, corpus_dir, tmp_path):
    code, _, err = cli(command, "--corpus", corpus_dir, "--out", tmp_path / "o", *args)
    assert needle in one_line_error(code, err)
    assert captured == [] and list(tmp_path.iterdir()) == []


def test_a_flag_that_is_not_a_number_names_the_flag(cli, tmp_path):
    code, _, err = cli("distil", "--out", tmp_path / "o", "--epochs", "abc")
    assert code == 2 and "--epochs" in err  # typer parses it: its error names the flag
    assert list(tmp_path.iterdir()) == []


def test_set_reaches_the_resolved_config_of_a_run(cli, tiny_teacher, corpus_dir, tmp_path):
    out = tmp_path / "t"
    code, stdout, err = cli("teach", "--corpus", corpus_dir, "--out", out, "--teacher", tiny_teacher / "teacher.pt",
                            "--set", "teach.temperature=2", "--set", "label_chunk=7")  # fmt: skip
    assert code == 0, err
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["temperature"] == 2.0 and resolved["label_chunk"] == 7
    assert "soft-label check OK" in stdout


def test_help_documents_set_and_teacher_kinds(cli):
    def help_text(command: str) -> str:
        code, stdout, _ = cli(command, "--help")
        assert code == 0
        return " ".join(stdout.replace("│", " ").split())  # the words, whatever the terminal's width

    for command in ("teach", "distil", "finetune", "lm-distil", "lm-finetune"):
        assert "--set KEY=VALUE" in help_text(command) and "distil.alpha_kd=2" in help_text(command)
    assert "--teacher-kind" in help_text("teach") and "token-classifier folder" in help_text("teach")
    for command in ("evaluate", "predict", "bench-latency"):
        assert "token-classifier folder or a hub name" in help_text(command), command


def test_every_command_option_is_a_config_field():
    """The generic path maps option names to fields: an option without a field would be an unknown key."""
    import typer.main

    from nerdistil.cli import app

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}  # type: ignore[attr-defined]
    for name, cls in (("teach", cfgmod.TeachConfig), ("distil", cfgmod.StudentConfig),
                      ("finetune", cfgmod.StudentConfig), ("lm-distil", cfgmod.LMConfig),
                      ("lm-finetune", cfgmod.LMConfig)):  # fmt: skip
        fields = {f.name for f in dataclasses.fields(cls)} | {"repair_tags"}
        options = {p.name for p in commands[name].params} - {"config", "sets", "help"}
        assert options <= fields, (name, options - fields)


def test_options_are_made_from_the_settings_fields():
    """A field with help is an option with that help; no other field is one (teach adds data.repair_tags)."""
    import typer.main

    from nerdistil.cli import app

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}  # type: ignore[attr-defined]
    for name, cls in (("teach", cfgmod.TeachConfig), ("distil", cfgmod.StudentConfig),
                      ("lm-finetune", cfgmod.LMConfig)):  # fmt: skip
        helps = {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if "help" in f.metadata}
        if name == "teach":
            helps["repair_tags"] = "Turn an I-X that starts an entity into B-X."
        options = {p.name: p.help for p in commands[name].params if p.name not in ("config", "sets", "help")}
        assert options == helps, name
    assert commands["teach"].params[0].opts == ["--corpus"]
    flags = {p.name: (p.opts, p.secondary_opts) for p in commands["distil"].params}
    assert flags["label_all_subwords"] == (["--label-all-subwords"], [])
    assert flags["group_by_length"] == (["--group-by-length"], ["--no-group-by-length"])


def test_label_batch_size_flag(cli, captured, corpus_dir, tmp_path):
    code, _, err = cli("teach", "--corpus", corpus_dir, "--out", tmp_path / "o", "--label-batch-size", "64")
    assert "captured" in one_line_error(code, err)
    assert captured[0].label_batch_size == 64
    code, _, err = cli("teach", "--corpus", corpus_dir, "--out", tmp_path / "o", "--label-batch-size", "0")
    assert "--label-batch-size must be at least 1" in one_line_error(code, err)


def test_run_passes_set_items_to_their_sections(cli, monkeypatch, corpus_dir, tmp_path):
    import nerdistil.student.distil
    import nerdistil.teacher.teach

    seen = {}

    def fake(name):
        def run(cfg, *_):
            seen[name] = cfg
            return {"params": 1, "train_seconds": 0.0, "scores": {"dev": {"f1": 0.5}}}

        return run

    monkeypatch.setattr(nerdistil.teacher.teach, "run_teach", fake("teach"))
    monkeypatch.setattr(nerdistil.student.distil, "run_student", lambda cfg, d: fake(str(d))(cfg))
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text(yaml.safe_dump({"run": {"corpus": str(corpus_dir)}, "teach": {"epochs": 4},
                                        "distil": {"alpha_kd": 1.0}}))  # fmt: skip
    code, stdout, err = cli("run", cfg_file, "--set", f"run.out={tmp_path / 'r'}", "--set", "teach.epochs=2",
                            "--set", "distil.alpha_kd=3", "--set", "finetune.data.repair_tags=true")  # fmt: skip
    assert code == 0, err
    assert seen["teach"].epochs == 2 and seen["True"].alpha_kd == 3.0 and seen["False"].data.repair_tags is True
    assert seen["True"].out == str(tmp_path / "r" / "distil") and (tmp_path / "r" / "summary.json").is_file()
    for item, needle in (("epochs=2", "--set in `nerdistil run` takes SECTION.KEY=VALUE"),
                         ("teach.bogus=1", "--set teach.bogus: unknown key 'bogus'"),
                         ("lm_eval.bogus=1", "--set lm_eval.bogus: lm_eval takes models, words or corpus"),
                         ("distil.epochs=0", "--set distil.epochs must be at least 1")):  # fmt: skip
        code, _, err = cli("run", cfg_file, "--set", f"run.out={tmp_path / 'r2'}", "--set", item)
        assert needle in one_line_error(code, err), item


def test_run_checks_every_section_before_the_first_stage(cli, monkeypatch, corpus_dir, tmp_path):
    import nerdistil.teacher.teach

    called = []
    monkeypatch.setattr(nerdistil.teacher.teach, "run_teach", lambda cfg: called.append(cfg))
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text(yaml.safe_dump({"run": {"corpus": str(corpus_dir), "out": str(tmp_path / "r")},
                                        "teach": {"epochs": 1}, "export": {}, "bench": {}}))  # fmt: skip
    for item, needle in (("bench.bogus=1", "--set bench.bogus: unknown key 'bogus'"),
                         ("export.max_f1_drop=x", "--set export.max_f1_drop must be a number"),
                         ("bench.batch_sizes=0", "bench.batch_sizes takes whole numbers of at least 1"),
                         ("distil.epochs=0", "--set distil.epochs must be at least 1")):  # fmt: skip
        code, _, err = cli("run", cfg_file, "--set", item)
        assert needle in one_line_error(code, err), item
    assert called == []  # no stage started: the typo of a later stage is found first


def test_run_reuses_a_stage_only_when_its_config_and_inputs_are_unchanged(cli, monkeypatch, corpus_dir, tmp_path,
                                                                          caplog):  # fmt: skip
    """After one run, a changed key redoes its stage and every later one, never an earlier one; same config reuses."""
    import shutil

    import nerdistil.student.distil
    import nerdistil.teacher.teach

    called: list[str] = []

    def fake(name):
        def run(cfg, *_):
            called.append(name)
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            report = {"params": 1, "train_seconds": 0.0, "scores": {"dev": {"f1": 0.5}}, "epochs": cfg.epochs}
            (Path(cfg.out) / "report.json").write_text(json.dumps(report))
            return report

        return run

    monkeypatch.setattr(nerdistil.teacher.teach, "run_teach", fake("teach"))
    monkeypatch.setattr(
        nerdistil.student.distil, "run_student", lambda cfg, d: fake("distil" if d else "finetune")(cfg)
    )
    corpus = Path(shutil.copytree(corpus_dir, tmp_path / "corpus"))
    cfg_file = tmp_path / "p.yaml"
    cfg_file.write_text(yaml.safe_dump({"run": {"corpus": str(corpus), "out": str(tmp_path / "r"), "wnut16": False},
                                        "teach": {"epochs": 4}, "finetune": {"epochs": 3},
                                        "distil": {"epochs": 3}}))  # fmt: skip

    def run(*sets: str) -> tuple[list[str], str]:
        called.clear()
        caplog.clear()
        with caplog.at_level("INFO", logger="nerdistil"):
            code, _, err = cli("run", cfg_file, *[a for s in sets for a in ("--set", s)])
        assert code == 0, err
        return list(called), caplog.text

    assert run()[0] == ["teach", "finetune", "distil"]
    assert run()[0] == []  # nothing changed: every stage reused
    done, err = run("distil.epochs=2")
    assert done == ["distil"] and "epochs: 3 -> 2" in err
    assert json.loads((tmp_path / "r" / "distil" / "report.json").read_text())["epochs"] == 2
    assert run("distil.epochs=2")[0] == []  # the new finished run is what this config makes
    done, err = run("distil.epochs=2", "teach.temperature=2")
    assert done == ["teach", "finetune", "distil"] and "temperature: 1.0 -> 2" in err
    with open(corpus / "train.txt", "a") as f:  # the corpus changed under the finished stages
        f.write("\nNew\tB-person\n")
    done, err = run("distil.epochs=2", "teach.temperature=2")
    assert done == ["teach", "finetune", "distil"] and "its inputs changed" in err
    cfg = yaml.safe_load(cfg_file.read_text())  # an edited config file counts like a --set
    cfg["finetune"]["epochs"] = 5
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert run("distil.epochs=2", "teach.temperature=2")[0] == ["finetune", "distil"]
