#!/bin/bash
# torchrun on one node (or several with --nnodes/--rdzv-*): RANK, WORLD_SIZE and LOCAL_RANK
# give every process its rank and GPU; webssl needs no process group and no NCCL.
#
# Assumes: 8 GPUs, 8-12 CPU cores and ~32 GB RAM per GPU. Resume: run the same command again.
# When one rank dies, torchrun stops all the others (they exit 4, keeping finished units);
# under srun --kill-on-bad-exit=0 or `webssl extract --gpus N` the others finish its units.
set -euo pipefail
MODEL=${MODEL:-dino300m-full2b-224}
# Decoding on the CPU, one DataLoader worker per core of this rank's share less 2 (the main
# process and its threads): cores per GPU - 2. On an H100 with 16 cores, 14 CPU workers ran
# dino300m end to end at 0.95x of its model-only rate, --decode gpu at 0.73x
# (docs/performance.md). Use --decode gpu only when the node has few cores per GPU.
CORES_PER_GPU=$(( $(nproc) / 8 ))
WORKERS=${WORKERS:-$(( CORES_PER_GPU > 3 ? CORES_PER_GPU - 2 : 1 ))}
torchrun --standalone --nproc-per-node 8 -m webssl_cli extract \
    --model "$MODEL" --input "${INPUT:-shards/}" --out "${OUT:-feats/}" \
    --features cls --num-workers "$WORKERS" --decode cpu --batch-size 256
