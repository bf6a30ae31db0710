#!/bin/bash
# torchrun on one node (or several with --nnodes/--rdzv-*): RANK, WORLD_SIZE and LOCAL_RANK
# give every process its rank and GPU; webssl needs no process group and no NCCL.
#
# Assumes: 8 GPUs, 8-12 CPU cores and ~32 GB RAM per GPU. Resume: run the same command again.
# When one rank dies, torchrun stops all the others (they exit 4, keeping finished units);
# under srun --kill-on-bad-exit=0 or `webssl extract --gpus N` the others finish its units.
set -euo pipefail
MODEL=${MODEL:-dino300m-full2b-224}
torchrun --standalone --nproc-per-node 8 -m webssl_cli extract \
    --model "$MODEL" --input "${INPUT:-shards/}" --out "${OUT:-feats/}" \
    --features cls --num-workers 12 --decode gpu --batch-size 256
