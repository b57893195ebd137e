#!/usr/bin/env bash
# The paper-scale job on one GPU before downloading any weight (README, "Before you download the
# weights"): DualReal, then LoRA, on the published CogVideoX-5B architecture with random weights
# (--backbone cogvideox-5b-random, bf16), 49 frames at 480x720 on the built-in sample, 2 training
# steps, 4 denoising steps, one video each, scored with all seven metrics on the full-size random
# encoders (RAFT-large, AMT-S, CLIP ViT-B/32, DINO ViT-S/16). Prints, per method, the time and the
# peak GPU memory of each phase (fit / generate / score) from the run's record, and the total time.
# Target: under 8 minutes on one H200-class GPU. Every number it prints comes from random weights:
# it measures fit and speed, not quality.
#
# Usage:
#   bash scripts/gpu_smoke.sh                     # on a machine with a CUDA GPU
#   bash scripts/gpu_smoke.sh --dry-run           # print the commands only (no GPU needed)
#   bash scripts/gpu_smoke.sh --out /tmp/smoke    # keep the runs there (default: a new temp folder)
#   bash scripts/gpu_smoke.sh --report /tmp/smoke # print the phase table of finished runs again
# Environment: PYTHON (default: the repository's .venv/bin/python if present, else python3),
#   CUDA_VISIBLE_DEVICES as usual.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
METHODS=(dualreal lora)
DRY_RUN=0
OUT=""
REPORT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --report) REPORT="${2:?--report needs a runs folder}"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "gpu_smoke.sh: unknown argument '$1' (use --dry-run, --out DIR, --report DIR)" >&2; exit 2 ;;
    esac
done
if [[ -z "$OUT" ]]; then
    if [[ $DRY_RUN -eq 1 ]]; then OUT="<new temp folder>"; else OUT="$(mktemp -d -t dualbench-gpu-smoke-XXXXXX)"; fi
fi

run_command() {  # the dualbench run of one method, as an array in CMD
    CMD=("$PYTHON" -m benchmark.cli run --method "$1" --backbone cogvideox-5b-random --device cuda --dtype bf16
         --train-steps 2 --steps 4 --max-prompts 1 --random-arch full --grid smoke --out "$OUT")
}

report() {  # the phase table of the runs in folder $1, from their records
"$PYTHON" - "$1" "${METHODS[@]}" <<'PY'
import json
import sys
from pathlib import Path

out, methods = Path(sys.argv[1]), sys.argv[2:]
print("\nRANDOM WEIGHTS: times and memory are real, the metric values mean nothing.")
print(f"{'method':10s} {'phase':9s} {'seconds':>9s} {'peak GiB':>9s}")
worst = 0.0
for method in methods:
    paths = sorted((out / method).glob("*/records/*.json"))
    if not paths:
        sys.exit(f"no records of {method} under {out}")
    for path in paths:
        rec = json.loads(path.read_text())
        if rec.get("status") != "ok":
            sys.exit(f"{path}: status {rec.get('status')}: {rec.get('error')}")
        for phase in ("fit", "generate", "score"):
            peak = rec.get(f"{phase}_peak_memory_gb")
            worst = max(worst, peak or 0.0)
            print(f"{method:10s} {phase:9s} {rec.get(phase + '_seconds', float('nan')):9.1f} "
                  f"{'n/a' if peak is None else f'{peak:.2f}':>9s}")
        print(f"{method:10s} {rec['num_frames']}x{rec['height']}x{rec['width']}, {rec['num_inference_steps']} steps, "
              f"backbone {rec['backbone']} ({rec['backbone_dtype']}), spacing {rec['scheduler_timestep_spacing']}")
print(f"peak GPU memory over all phases: {worst:.2f} GiB")
PY
}

if [[ -n "$REPORT" ]]; then
    report "$REPORT"
    exit 0
fi

if [[ $DRY_RUN -eq 1 ]]; then
    echo "# would first check: $PYTHON -c 'import torch; assert torch.cuda.is_available()'"
    for method in "${METHODS[@]}"; do
        run_command "$method"
        echo "(cd $REPO && PYTHONPATH=$REPO ${CMD[*]})"
    done
    exit 0
fi

# 1. A GPU, or a loud failure
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_smoke.sh: ERROR: no CUDA GPU is visible to torch ($PYTHON: torch.cuda.is_available() is False)." >&2
    echo "  This script measures the paper-scale job (CogVideoX-5B at 49x480x720) and needs one GPU." >&2
    echo "  Without one: bash scripts/gpu_smoke.sh --dry-run (the commands), or dualbench run --backbone tiny." >&2
    exit 1
fi
"$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB")'

# 2. The two runs, each timed
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
START=$SECONDS
for method in "${METHODS[@]}"; do
    run_command "$method"
    echo "== $method: ${CMD[*]}"
    t0=$SECONDS
    "${CMD[@]}"
    echo "== $method finished in $((SECONDS - t0)) s"
done

# 3. Phase times and peak GPU memory, from the records
report "$OUT"
TOTAL=$((SECONDS - START))
echo "total: ${TOTAL} s (target: under 480 s on one H200-class GPU)"
if [[ $TOTAL -gt 480 ]]; then
    echo "gpu_smoke.sh: WARNING: slower than the 8-minute target" >&2
fi
