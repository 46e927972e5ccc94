#!/usr/bin/env bash
# The whole job on one device, timed step by step, one table at the end:
#
#   HF_HUB_OFFLINE=1 bash benchmarks/gpu.sh                  # one GPU (under 6 minutes on an H100 is the target)
#   HF_HUB_OFFLINE=1 bash benchmarks/gpu.sh --device cpu --smoke   # the CI-sized smoke run on the CPU
#   HF_HUB_OFFLINE=1 bash benchmarks/gpu.sh --profile        # also where each step's time goes (cProfile)
#
# Steps: the bundled split, `teach` (default config), labelling of `data augment --copies 10` tweets by that
# teacher, `finetune`, `distil` (fp32, and bf16 with batch 64 on a GPU) and `bench-latency` of teacher and
# student on the device. --smoke runs every step on the tiny test corpus with one epoch, to prove the script
# and its flags work; its numbers mean nothing. The labelling is timed again under torchrun once per count in
# `--procs N[,N...]` (default on a GPU: 4 and the machine's cores up to 16; none on the CPU): the processes share
# the machine's GPUs round robin, so Flair's per-sentence Python work (a few ms a tweet, what caps one process)
# runs on N cores, and one device session gives the scaling curve. Several GPUs: the same torchrun command.
# --profile runs each one-process step under cProfile (OUT/prof/STEP.prof; the 25 most expensive functions of
# each, and of nerdistil's own code, in OUT/profile.txt; bench-latency's models run in worker processes, so its
# profile shows only waiting).
# Where nvidia-smi is found, the GPU's utilisation is sampled every 0.5 s and averaged over each step.
# On the device tool's GPU machine (no package index there): `../shared/tools/gpu-bundle` here, then one `run`
# with carry [".gpu"] and `HF_HUB_OFFLINE=1 bash .gpu/run.sh bash benchmarks/gpu.sh --profile > "$OUT/gpu.log"
# 2>&1; cp runs/gpu/{times.tsv,profile.txt,bench.json} "$OUT"/` (gpu.sh's own OUT is a shell variable).
set -euo pipefail
DEVICE=cuda
SMOKE=0
OUT=runs/gpu
PROCS=""
PROFILE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --procs) PROCS="$2"; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    *) echo "usage: $0 [--device cuda|cpu] [--smoke] [--out DIR] [--procs N[,N...]] [--profile]" >&2; exit 2 ;;
  esac
done
if [[ -z $PROCS ]]; then  # on a GPU: 4 processes, and one per core up to 16 where the machine has more
  CORES=$(nproc)
  if [[ $DEVICE == cpu ]]; then PROCS=1; elif [[ $CORES -gt 4 ]]; then PROCS="4,$((CORES < 16 ? CORES : 16))"
  else PROCS=4; fi
fi
if [[ ! $PROCS =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]]; then
  echo "gpu.sh: --procs takes process counts separated by commas, e.g. 4,16; got '$PROCS'" >&2; exit 2
fi
PY=${PYTHON:-python3}  # the GPU image has python3 (with torch), not always python
PROFILED='import cProfile, runpy, sys
out, sys.argv = sys.argv[1], ["nerdistil", *sys.argv[2:]]
prof, code = cProfile.Profile(), 0
try:
    prof.runcall(runpy.run_module, "nerdistil", run_name="__main__", alter_sys=True)
except SystemExit as e:  # python -m cProfile would swallow the exit status
    code = e.code
finally:
    prof.dump_stats(out)
sys.exit(code)'
nd() {  # nd NAME ARGS...: `python -m nerdistil ARGS`, under cProfile (OUT/prof/NAME.prof) with --profile
  local name=$1; shift
  if [[ $PROFILE == 1 ]]; then "$PY" -c "$PROFILED" "$OUT/prof/$name.prof" "$@"; else "$PY" -m nerdistil "$@"; fi
}
FAILED=()
if [[ $SMOKE == 1 ]]; then
  CORPUS=tests/data/corpus
  TEACH=(--embeddings chars --epochs 1)
  STUDENT=(--epochs 1 --batch-size 8)
else
  CORPUS="$OUT/data"
  TEACH=()
  STUDENT=()
fi
rm -rf "$OUT/prof"  # an earlier run's profiles must not reach this run's profile.txt
mkdir -p "$OUT/prof"
TIMES="$OUT/times.tsv"
: > "$TIMES"
if command -v nvidia-smi > /dev/null; then  # the GPU's utilisation, every 0.5 s, for the whole run
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$OUT/gpu_util.csv" &
  SMI=$!
  trap 'kill $SMI 2> /dev/null || true' EXIT
fi
step() {  # step NAME COMMAND...: run it, append "NAME<TAB>seconds<TAB>start<TAB>end" (or FAILED) to the times file
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  if "$@"; then  # a failed step is reported and the others still run: one device session gives one table
    local t1; t1=$(date +%s.%N)
    echo -e "$name\t$("$PY" -c "print(round($t1 - $t0, 1))")\t$t0\t$t1" >> "$TIMES"
  else
    echo -e "$name\tFAILED\t$t0\t$(date +%s.%N)" >> "$TIMES"; FAILED+=("$name")
  fi
}
if [[ $SMOKE == 0 && ! -f "$CORPUS/train.txt" ]]; then
  step data nd data data wnut16 "$CORPUS"
fi
step teach nd teach teach --corpus "$CORPUS" --out "$OUT/teacher" --device "$DEVICE" --overwrite "${TEACH[@]}"
step augment "$PY" -m nerdistil data augment "$CORPUS/train.txt" "$OUT/augment.txt" --copies 10
step label nd label teach --corpus "$CORPUS" --teacher "$OUT/teacher/teacher.pt" --unlabeled "$OUT/augment.txt" \
  --pretokenized --out "$OUT/labelled" --device "$DEVICE" --overwrite
SEEN=" "
for P in ${PROCS//,/ }; do  # torchrun rows: label-procs-P, written to OUT/labelled_procs_P (a repeated count once)
  if [[ $P -gt 1 && $SEEN != *" $P "* ]]; then
    SEEN+="$P "
    step "label-procs-$P" "$PY" -m torch.distributed.run --standalone --nproc_per_node "$P" -m nerdistil teach \
      --corpus "$CORPUS" --teacher "$OUT/teacher/teacher.pt" --unlabeled "$OUT/augment.txt" --pretokenized \
      --out "$OUT/labelled_procs_$P" --device "$DEVICE" --overwrite
  fi
done
step finetune nd finetune finetune --corpus "$CORPUS" --out "$OUT/finetune" --device "$DEVICE" --overwrite \
  "${STUDENT[@]}"
step distil nd distil distil --soft-labels "$OUT/teacher" --out "$OUT/distil" --device "$DEVICE" --overwrite \
  "${STUDENT[@]}"
if [[ $DEVICE != cpu ]]; then
  step distil-bf16 nd distil-bf16 distil --soft-labels "$OUT/teacher" --out "$OUT/distil_bf16" --device "$DEVICE" \
    --mixed-precision bf16 --batch-size 64 --overwrite "${STUDENT[@]}"
fi
step bench nd bench bench-latency --teacher "$OUT/teacher/teacher.pt" --student "$OUT/distil" \
  --corpus "$CORPUS/test.txt" --batch-sizes 1,32 --repeats 1 --device "$DEVICE" --json "$OUT/bench.json"
"$PY" - "$OUT" <<'EOF'
import csv, datetime, json, pstats, sys
from pathlib import Path

out = Path(sys.argv[1])
spans = {f[0]: f[1:] for f in (line.split("\t") for line in (out / "times.tsv").read_text().splitlines())}
times = {name: f[0] for name, f in spans.items()}
samples = []  # (epoch seconds, utilisation %) from nvidia-smi, if it ran
if (out / "gpu_util.csv").is_file():
    for row in csv.reader((out / "gpu_util.csv").read_text().splitlines()):
        try:
            when = datetime.datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((when, float(row[1])))
        except (ValueError, IndexError):
            pass
def util(step):  # the mean GPU utilisation while a step ran
    if step not in spans or not samples:
        return "-"
    t0, t1 = map(float, spans[step][1:3])
    inside = [u for when, u in samples if t0 <= when <= t1]
    return f"{sum(inside) / len(inside):.0f}%" if inside else "-"
def ran(step):  # whether a step ran and succeeded in this run (an output folder may be an earlier run's)
    return spans.get(step, ["FAILED"])[0] != "FAILED"
STEP = {"teacher": "teach", "labelled": "label", "distil_bf16": "distil-bf16"}
procs_steps = [step for step in spans if step.startswith("label-procs-")]  # in the order they ran
STEP.update({f"labelled_procs_{step.rsplit('-', 1)[1]}": step for step in procs_steps})
def report(name):  # the report in OUT/name, only if its step ran and succeeded in this run
    f = out / name / "report.json"
    return json.loads(f.read_text()) if ran(STEP.get(name, name)) and f.is_file() else {}
teacher, labelled = report("teacher"), report("labelled")
rows = [("teach", "teach", "", teacher.get("scores", {}).get("test", {}).get("f1"))]  # (row, step, throughput, F1)
n = sum(labelled.get("soft_labels", {}).get("splits", {}).values())  # the augmented tweets and the gold splits
rate = f"{n / labelled['label_seconds']:.0f} tweets/s ({n:,} tweets)" if n and labelled.get("label_seconds") else ""
rows.append(("label (teach --unlabeled)", "label", rate, None))
for step in procs_steps:
    count = step.rsplit("-", 1)[1]
    procs = report(f"labelled_procs_{count}")
    rate = f"{n / procs['label_seconds']:.0f} tweets/s" if n and procs.get("label_seconds") else ""
    rows.append((f"label, {procs.get('processes', count)} processes (torchrun)", step, rate, None))
for name in ("finetune", "distil", "distil_bf16"):
    if STEP.get(name, name) in spans:
        r = report(name)
        loop = f"{r['train_seconds']:.1f} s in the loop" if r.get("train_seconds") is not None else ""
        rows.append((name, STEP.get(name, name), loop, r.get("scores", {}).get("test", {}).get("f1")))
bench_ok = ran("bench") and (out / "bench.json").is_file()
bench = json.loads((out / "bench.json").read_text()) if bench_ok else {"results": []}
for r in bench["results"]:
    rows.append((f"bench {r['model']} batch {r['batch_size']}", None, f"p50 {r['p50_ms']:.2f} ms, "
                 f"{r['sentences_per_s']:.0f} sentences/s", r.get("f1")))
rows += [(step, step, "", None) for step, f in spans.items() if f[0] == "FAILED" and step not in {r[1] for r in rows}]
device = report("distil").get("device_name") or teacher.get("device_name") or "?"
print(f"\n| step ({device}) | wall s | throughput | test F1 | GPU util |\n|---|---|---|---|---|")
for name, step, what, f1 in rows:
    print(f"| {name} | {times.get(step) or '-'} | {what} | {'-' if f1 is None else f'{f1:.4f}'} | {util(step)} |")
profiles = sorted((out / "prof").glob("*.prof"))
if profiles:
    with (out / "profile.txt").open("w") as f:
        for prof in profiles:
            print(f"===== {prof.stem}: the 25 functions with the most cumulative time", file=f)
            pstats.Stats(str(prof), stream=f).sort_stats("cumulative").print_stats(25)
            print(f"===== {prof.stem}: the 25 with the most time of their own", file=f)
            pstats.Stats(str(prof), stream=f).sort_stats("tottime").print_stats(25)
            # imports fill the first list on a short run: nerdistil's own functions, whatever their rank
            print(f"===== {prof.stem}: the 25 of nerdistil's own functions with the most cumulative time", file=f)
            pstats.Stats(str(prof), stream=f).sort_stats("cumulative").print_stats(r"nerdistil/[\w/]*\.py", 25)
    print(f"profiles of {len(profiles)} steps: {out / 'profile.txt'}")
EOF
if [[ ${#FAILED[@]} -gt 0 ]]; then echo "gpu.sh: failed steps: ${FAILED[*]}" >&2; exit 1; fi
