#!/usr/bin/env bash
# The whole job on one device, timed step by step, one table at the end:
#
#   HF_HUB_OFFLINE=1 bash benchmarks/gpu.sh                  # one GPU (under 6 minutes on an H100 is the target)
#   HF_HUB_OFFLINE=1 bash benchmarks/gpu.sh --device cpu --smoke   # the CI-sized smoke run on the CPU
#
# Steps: the bundled split, `teach` (default config), labelling of `data augment --copies 10` tweets by that
# teacher, `finetune`, `distil` (fp32, and bf16 with batch 64 on a GPU) and `bench-latency` of teacher and
# student on the device. --smoke runs every step on the tiny test corpus with one epoch, to prove the script
# and its flags work; its numbers mean nothing. The labelling is timed a second time with `--procs N` processes
# under torchrun (default 4 on a GPU, none on the CPU): they share the machine's GPUs round robin, so Flair's
# per-sentence Python work runs on N cores. Several GPUs: the same torchrun command (see the README).
set -euo pipefail
DEVICE=cuda
SMOKE=0
OUT=runs/gpu
PROCS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --procs) PROCS="$2"; shift 2 ;;
    *) echo "usage: $0 [--device cuda|cpu] [--smoke] [--out DIR] [--procs N]" >&2; exit 2 ;;
  esac
done
if [[ -z $PROCS ]]; then if [[ $DEVICE == cpu ]]; then PROCS=1; else PROCS=4; fi; fi
PY=${PYTHON:-python3}  # the GPU image has python3 (with torch), not always python
NERDISTIL=("$PY" -m nerdistil)
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
mkdir -p "$OUT"
TIMES="$OUT/times.tsv"
: > "$TIMES"
step() {  # step NAME COMMAND...: run it, append "NAME<TAB>seconds" (or FAILED) to the times file
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  if "$@"; then  # a failed step is reported and the others still run: one device session gives one table
    echo -e "$name\t$("$PY" -c "print(round($(date +%s.%N) - $t0, 1))")" >> "$TIMES"
  else
    echo -e "$name\tFAILED" >> "$TIMES"; FAILED+=("$name")
  fi
}
if [[ $SMOKE == 0 && ! -f "$CORPUS/train.txt" ]]; then
  step data "${NERDISTIL[@]}" data wnut16 "$CORPUS"
fi
step teach "${NERDISTIL[@]}" teach --corpus "$CORPUS" --out "$OUT/teacher" --device "$DEVICE" --overwrite "${TEACH[@]}"
"${NERDISTIL[@]}" data augment "$CORPUS/train.txt" "$OUT/augment.txt" --copies 10
step label "${NERDISTIL[@]}" teach --corpus "$CORPUS" --teacher "$OUT/teacher/teacher.pt" --unlabeled "$OUT/augment.txt" \
  --pretokenized --out "$OUT/labelled" --device "$DEVICE" --overwrite
if [[ $PROCS -gt 1 ]]; then
  step label-procs "$PY" -m torch.distributed.run --standalone --nproc_per_node "$PROCS" -m nerdistil teach \
    --corpus "$CORPUS" --teacher "$OUT/teacher/teacher.pt" --unlabeled "$OUT/augment.txt" --pretokenized \
    --out "$OUT/labelled_procs" --device "$DEVICE" --overwrite
fi
step finetune "${NERDISTIL[@]}" finetune --corpus "$CORPUS" --out "$OUT/finetune" --device "$DEVICE" --overwrite \
  "${STUDENT[@]}"
step distil "${NERDISTIL[@]}" distil --soft-labels "$OUT/teacher" --out "$OUT/distil" --device "$DEVICE" --overwrite \
  "${STUDENT[@]}"
if [[ $DEVICE != cpu ]]; then
  step distil-bf16 "${NERDISTIL[@]}" distil --soft-labels "$OUT/teacher" --out "$OUT/distil_bf16" --device "$DEVICE" \
    --mixed-precision bf16 --batch-size 64 --overwrite "${STUDENT[@]}"
fi
step bench "${NERDISTIL[@]}" bench-latency --teacher "$OUT/teacher/teacher.pt" --student "$OUT/distil" \
  --corpus "$CORPUS/test.txt" --batch-sizes 1,32 --repeats 1 --device "$DEVICE" --json "$OUT/bench.json"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
times = dict(line.split("\t") for line in (out / "times.tsv").read_text().splitlines())
def report(name):
    f = out / name / "report.json"
    return json.loads(f.read_text()) if f.is_file() else {}
teacher, labelled = report("teacher"), report("labelled")
rows = [("teach", times.get("teach"), "", teacher.get("scores", {}).get("test", {}).get("f1"))]
n = sum(labelled.get("soft_labels", {}).get("splits", {}).values())  # the augmented tweets and the gold splits
rate = f"{n / labelled['label_seconds']:.0f} tweets/s ({n:,} tweets)" if n and labelled.get("label_seconds") else ""
rows.append(("label (teach --unlabeled)", times.get("label"), rate, None))
procs = report("labelled_procs")
if procs.get("label_seconds"):
    rows.append((f"label, {procs.get('processes', '?')} processes (torchrun)", times.get("label-procs"),
                 f"{n / procs['label_seconds']:.0f} tweets/s", None))
for name in ("finetune", "distil", "distil_bf16"):
    r = report(name)
    if r:
        rows.append((name, times.get(name.replace("_", "-")), f"{r.get('train_seconds', 0):.1f} s in the loop",
                     r.get("scores", {}).get("test", {}).get("f1")))
bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {"results": []}
for r in bench["results"]:
    rows.append((f"bench {r['model']} batch {r['batch_size']}", None, f"p50 {r['p50_ms']:.2f} ms, "
                 f"{r['sentences_per_s']:.0f} sentences/s", r.get("f1")))
device = report("distil").get("device_name") or teacher.get("device_name") or "?"
print(f"\n| step ({device}) | wall s | throughput | test F1 |\n|---|---|---|---|")
for name, secs, what, f1 in rows:
    print(f"| {name} | {secs or '-'} | {what} | {'-' if f1 is None else f'{f1:.4f}'} |")
EOF
if [[ ${#FAILED[@]} -gt 0 ]]; then echo "gpu.sh: failed steps: ${FAILED[*]}" >&2; exit 1; fi
