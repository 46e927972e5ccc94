"""benchmarks/cv.py: k-fold cross-validation machinery on the tiny test corpus (tiny teachers and students)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from seqeval.metrics import f1_score

from nerdistil.data import wnut16
from nerdistil.data.conll import read_conll

DATA = Path(__file__).parent / "data" / "corpus"
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import cv  # noqa: E402

CONFIGS = {
    "a": {"teacher": {}, "finetune": [{}], "distil": [{}]},
    "b": {"teacher": {"hidden_size": 16}, "distil": [{}]},
}


def key(s):
    return tuple(s.tokens), tuple(s.tags)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_student):
    root = tmp_path_factory.mktemp("cv")
    config = root / "tiny.yaml"
    student = {"student": str(tiny_student), "epochs": 1, "batch_size": 4, "lr": 1e-3, "seed": 13}
    config.write_text(json.dumps({"teach": {"embeddings": "chars", "epochs": 2, "hidden_size": 32, "seed": 1},
                                  "finetune": student, "distil": student}))  # fmt: skip
    sentences = [s for f in ("train", "dev", "test") for s in read_conll(DATA / f"{f}.txt")]
    run = dict(out=root / "out", config=config, names=["a", "b"], configs=CONFIGS, k=3, fold_seed=13,
               seeds=[13], sentences=sentences, source="tests/data/corpus", draws=1000, log=lambda _: None)  # fmt: skip
    first = cv.cross_validate(**run)
    return root, run, sentences, first


def test_plan_shares_fine_tuned_students_and_pairs():
    p = cv.plan(["quick", "default", "default-4l"])
    assert len(p["teachers"]) == 2  # default and default-4l share one teacher
    modes = sorted(s["mode"] + str(s["over"].get("student_layers", 6)) for s in p["students"].values())
    assert modes == ["distil4", "distil6", "distil6", "finetune4", "finetune6"]  # one 6-layer baseline for both
    kinds = [q["kind"] for q in p["pairs"]]
    assert kinds.count("distilled - fine-tuned") == 3 and kinds.count("teacher - teacher") == 1
    assert kinds.count("teacher B's student - teacher A's") == 1


def test_plan_pairs_the_crf_student_with_the_softmax_one():
    p = cv.plan(["crf", "crf-3l"])
    assert len(p["teachers"]) == 1
    crf_pairs = [(q["ref"], q["cand"]) for q in p["pairs"] if q["kind"] == "CRF head - softmax head"]
    assert crf_pairs == [
        ("distil__teacher", "distil_head-crf__teacher"),
        ("distil3__teacher", "distil3_head-crf__teacher"),
    ]
    # the CRF student distilled is compared with the CRF student fine-tuned (CRF without KD)
    assert {"ref": "finetune_head-crf", "cand": "distil_head-crf__teacher", "kind": "distilled - fine-tuned"} in p[
        "pairs"
    ]


def test_plan_without_baselines_runs_only_the_listed_fine_tuned_students():
    p = cv.plan(["crf-kd", "crf-kd-3l"])
    assert sorted(p["students"]) == ["distil3__teacher", "distil3_head-crf__teacher", "distil__teacher",
                                     "distil_head-crf__teacher", "finetune", "finetune3"]  # fmt: skip
    kinds = sorted((q["kind"], q["ref"], q["cand"]) for q in p["pairs"])
    assert kinds == [
        ("CRF head - softmax head", "distil3__teacher", "distil3_head-crf__teacher"),
        ("CRF head - softmax head", "distil__teacher", "distil_head-crf__teacher"),
        ("distilled - fine-tuned", "finetune", "distil__teacher"),
        ("distilled - fine-tuned", "finetune3", "distil3__teacher"),
    ]
    assert cv.partner_of("distil_head-crf__teacher", p, {}) == "distil__teacher"
    for names in (["crf"], ["crf-kd", "crf"], ["crf", "crf-kd"]):  # a configuration that runs the baseline wins
        assert cv.plan(names)["students"]["distil_head-crf__teacher"]["baseline"] == "finetune_head-crf"


def test_a_crf_student_with_its_own_kd_settings_is_paired_with_the_plain_softmax_student():
    p = cv.plan(["crf-kd", "crf-kd-cw"])
    heads = sorted((q["ref"], q["cand"]) for q in p["pairs"] if q["kind"] == "CRF head - softmax head")
    assert heads == [("distil__teacher", "distil_head-crf__teacher"),
                     ("distil__teacher", "distil_head-crf_kd_class_weights-true__teacher")]  # fmt: skip
    assert not any(q["ref"] == "finetune_head-crf" for q in p["pairs"])  # no CRF baseline without "baselines"
    assert cv.partner_of("distil_head-crf_kd_class_weights-true__teacher", p, {}) == "distil__teacher"


def test_folds_partition_the_sentences(setup):
    root, _, sentences, first = setup
    folds = json.loads((root / "out" / "folds" / "folds.json").read_text())
    index = sorted(i for f in folds["test_index"] for i in f)
    assert index == list(range(len(sentences))) == list(range(first["n_sentences"]))  # each in one test fold
    tests = []
    for i in range(3):
        parts = {n: [key(s) for s in read_conll(root / "out" / "folds" / str(i) / f"{n}.txt")] for n in
                 ("train", "dev", "test")}  # fmt: skip
        assert sorted(parts["train"] + parts["dev"] + parts["test"]) == sorted(key(s) for s in sentences)
        nxt = [key(sentences[j]) for j in folds["test_index"][(i + 1) % 3]]
        assert parts["dev"] == nxt  # dev: the next fold
        tests += parts["test"]
    assert sorted(tests) == sorted(key(s) for s in sentences)  # every sentence in exactly one test fold
    assert first["pooled_sentences"] == len(sentences)
    with pytest.raises(Exception, match="other sentences, k or seed"):
        wnut16.write_folds(root / "out" / "folds", sentences, k=4, seed=13)


def test_rerun_reuses_finished_runs(setup):
    root, run, _, first = setup
    reports = sorted((root / "out" / "folds").glob("*/*/report.json"))
    assert len(reports) == 3 * 5  # per fold: 2 teachers, 1 fine-tuned and 2 distilled students
    mtimes = [p.stat().st_mtime_ns for p in reports]
    again = cv.cross_validate(**run)
    assert [p.stat().st_mtime_ns for p in reports] == mtimes  # nothing retrained
    runs = [r for r in again["steps"] if r["fold"] is not None and r["step"] != "tag test fold"]
    assert len(runs) == 15 and all(r["reused"] for r in runs)
    assert not any(r["reused"] for r in first["steps"])
    for m in first["models"]:
        assert again["models"][m]["pooled_f1"] == first["models"][m]["pooled_f1"]
    assert [p["ci95"] for p in again["pairs"]] == [p["ci95"] for p in first["pairs"]]  # seeded bootstrap


def test_pooled_scores_and_comparisons(setup):
    _, _, _, res = setup
    gold, preds = res["_data"]["gold"], res["_data"]["preds"]
    pooled_gold = [s for f in res["folds"] for s in gold[f]]
    assert set(res["models"]) == {"teacher", "teacher_hidden_size-16", "finetune", "distil__teacher",
                                  "distil__teacher_hidden_size-16"}  # fmt: skip
    for mid, m in res["models"].items():
        (by_fold,) = preds[mid].values()  # one seed
        pooled = [s for f in res["folds"] for s in by_fold[f]]
        assert m["pooled_f1"] == pytest.approx(f1_score(pooled_gold, pooled), abs=1e-12)
        for f in res["folds"]:
            assert m["fold_f1"][f] == pytest.approx(f1_score(gold[f], by_fold[f]), abs=1e-12)
            # the tags pooled are those the run scored itself: teacher soft labels, student through load_tagger
            assert m["fold_f1"][f] == pytest.approx(m["report_test_f1"][f], abs=1e-9)
        assert m["mean_f1"] == pytest.approx(np.mean(list(m["fold_f1"].values())))
    kinds = sorted(p["kind"] for p in res["pairs"])
    assert kinds == ["distilled - fine-tuned", "distilled - fine-tuned", "teacher - teacher",
                     "teacher B's student - teacher A's"]  # fmt: skip
    for p in res["pairs"]:
        a, b = res["models"][p["ref"]], res["models"][p["cand"]]
        assert p["diff"] == pytest.approx(b["pooled_f1"] - a["pooled_f1"], abs=1e-9)
        lo, hi = p["ci95"]
        assert lo <= p["diff"] <= hi
        assert p["excludes_0"] == (lo > 0 or hi < 0)
        fold_diff = [b["fold_f1"][f] - a["fold_f1"][f] for f in res["folds"]]
        assert p["sign_held"] == sum(np.sign(d) == np.sign(p["diff"]) for d in fold_diff) and p["folds"] == 3
    pt = res["per_type"]
    assert pt["best"] in res["models"] and res["models"][pt["best"]]["kind"] != "teacher"
    assert set(pt["types"]) == set(res["models"][pt["best"]]["per_type"]) | set(
        res["models"][pt["partner"]]["per_type"]
    )
    body = cv.table({**res, "command": "x"}, "python benchmarks/cv.py")
    assert "pooled F1" in body and "sign held" in body


def test_stacked_seeds_and_signs():
    """Several seeds: one bootstrap unit per tweet holds every seed's tags; the F1 is that of all of them pooled."""
    gold = {0: [["B-x", "I-x", "O"], ["O", "B-y"]], 1: [["B-y"], ["O", "O"]]}
    ref = {"1": {0: [["B-x", "I-x", "O"], ["O", "O"]], 1: [["O"], ["O", "O"]]},
           "2": {0: [["O", "O", "O"], ["O", "B-y"]], 1: [["B-y"], ["B-x", "O"]]}}  # fmt: skip
    cand = {"1": {0: [["B-x", "I-x", "O"], ["O", "B-y"]], 1: [["B-y"], ["O", "O"]]},
            "2": {0: [["B-x", "I-x", "O"], ["O", "B-y"]], 1: [["O"], ["O", "O"]]}}  # fmt: skip
    rs, cs = cv.model_summary(gold, ref), cv.model_summary(gold, cand)
    all_gold = [s for f in (0, 1) for s in gold[f]] * 2
    assert rs["pooled_f1"] == pytest.approx(f1_score(all_gold, [s for p in ref.values() for f in (0, 1)
                                                                 for s in p[f]]))  # fmt: skip
    g, p = cv.stack([s for f in (0, 1) for s in gold[f]], [[s for f in (0, 1) for s in q[f]] for q in ref.values()])
    assert len(g) == 4 and f1_score(g, p) == pytest.approx(rs["pooled_f1"])  # the separator adds no entity
    c = cv.compare(gold, ref, cand, rs, cs, draws=500, seed=1)
    assert c["diff"] == pytest.approx(cs["pooled_f1"] - rs["pooled_f1"]) and c["diff"] > 0
    assert c["ci95"][0] <= c["diff"] <= c["ci95"][1]
    assert c["sign_held"] == sum(cs["fold_f1"][f] > rs["fold_f1"][f] for f in (0, 1))


def test_command_line_reuses_runs_and_writes_results(setup, capsys):
    """``--configs default`` with the tiny base config names the same teacher and students as configuration a."""
    root, run, _, first = setup
    out_json, md = root / "cv.json", root / "RESULTS.md"
    res = cv.main(["--configs", "default", "--config", str(run["config"]), "--out", str(run["out"]), "--k", "3",
                   "--corpus-files", *(str(DATA / f"{f}.txt") for f in ("train", "dev", "test")), "--json",
                   str(out_json), "--results-md", str(md), "--draws", "1000"])  # fmt: skip
    runs = [r for r in res["steps"] if r["fold"] is not None and r["step"] != "tag test fold"]
    assert len(runs) == 9 and all(r["reused"] for r in runs)  # teacher, fine-tuned and distilled: 3 folds
    for m in ("teacher", "finetune", "distil__teacher"):
        assert res["models"][m]["pooled_f1"] == first["models"][m]["pooled_f1"]
    saved = json.loads(out_json.read_text())
    assert saved["command"].startswith("HF_HUB_OFFLINE=1 python benchmarks/cv.py --configs default")
    text = md.read_text()
    assert "<!-- cv:start -->" in text and saved["command"] in text and "| teacher[default]" in text
    assert "total" in capsys.readouterr().out
