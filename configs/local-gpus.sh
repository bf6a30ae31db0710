#!/bin/bash
# One workstation, all its GPUs, no launcher: webssl starts one worker per GPU itself.
# Ctrl-C stops all workers cleanly; rerun to resume.
set -euo pipefail
webssl extract --gpus "${GPUS:-$(nvidia-smi -L | wc -l)}" \
    --model "${MODEL:-dino1b-full2b-224}" --input "${INPUT:-images/}" --out "${OUT:-feats/}"
