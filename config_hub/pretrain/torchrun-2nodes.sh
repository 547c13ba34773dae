#!/usr/bin/env bash
# RoBERTa-base pretraining on 2 nodes x 8 GPUs with torchrun. Run it on every node, each with its own NODE_RANK
# (0 on the first) and the same RDZV_ENDPOINT (the first node's HOST:PORT):
#   node0$ NODE_RANK=0 RDZV_ENDPOINT=node0:29500 bash config_hub/pretrain/torchrun-2nodes.sh
#   node1$ NODE_RANK=1 RDZV_ENDPOINT=node0:29500 bash config_hub/pretrain/torchrun-2nodes.sh
# - OUT_DIR and CACHE_DIR (the tokenized corpus, built once by rank 0) must be on a filesystem every node shares.
# - A worker that dies makes torchrun restart the whole group, up to MAX_RESTARTS times; `--resume auto` continues
#   from the newest complete iter-*.pt, which holds every rank's state. A node that is lost and not restarted makes
#   the others stop after --dist_timeout seconds.
# - Arguments after the script go to `litgpt pretrain` (the last of a repeated flag wins), e.g.
#   `--data.train_data_path /shared/corpus` or `--strategy fsdp`.
set -euo pipefail
NNODES=${NNODES:-2}
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
NODE_RANK=${NODE_RANK:?set NODE_RANK: 0 on the first node, 1 on the second, ...}
RDZV_ENDPOINT=${RDZV_ENDPOINT:?set RDZV_ENDPOINT to the HOST:PORT of the first node}
MAX_RESTARTS=${MAX_RESTARTS:-3}
CONFIG=${CONFIG:-config_hub/pretrain/roberta-base.yaml}
OUT_DIR=${OUT_DIR:-out/pretrain/roberta-base}
CACHE_DIR=${CACHE_DIR:-$OUT_DIR/data_cache}
# each restart gets a fresh rendezvous store: with the shared one a restarted group can hang (pytorch issue 135712)
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

exec torchrun --nnodes "$NNODES" --nproc_per_node "$NPROC_PER_NODE" --node_rank "$NODE_RANK" \
    --rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" --rdzv_id "${RDZV_ID:-litgpt-pretrain}" \
    --max_restarts "$MAX_RESTARTS" \
    -m litgpt pretrain --config "$CONFIG" --num_nodes "$NNODES" --devices "$NPROC_PER_NODE" \
    --out_dir "$OUT_DIR" --data.cache_dir "$CACHE_DIR" --resume auto "$@"
