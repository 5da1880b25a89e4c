#!/usr/bin/env bash
# One-node GPU smoke test of ReMemR1 on verl 0.9.1 (V1 trainer, vLLM rollouts): the first
# thing to run on a GPU box. A small model (default: the built-in SmolLM2-135M-Instruct,
# converted to a Hugging Face directory), 16 RevHop questions of ~1.5K tokens, 3 steps.
#
#   pip install -e '.[verl]' vllm        # vLLM must match verl 0.9.1's torch (verl[vllm] pins it)
#   bash bench/verl_smoke.sh              # GPUS=2 MODEL=/models/Qwen2.5-0.5B-Instruct bash bench/verl_smoke.sh
#
# It has NOT been run: the machines this project is built and tested on have no GPU with
# vLLM, Ray and verl installed together (docs/scale-out.md, "What has been run"). What it
# checks when it passes: rollouts on vLLM through the rememr1 agent loop, one training row
# per agent step, the ReMemR1 advantage (alpha 0.8) in the registered trainer, actor and
# reference passes, a checkpoint. Look for "training/global_step" reaching 3 and for
# rememr1/advantage/* and actor/pg_loss in the console log.
set -euo pipefail
GPUS=${GPUS:-1}
MODEL=${MODEL:-}
OUT=${OUT:-runs/verl-smoke}
DATA=${DATA:-data/verl-smoke}
PY=${PY:-python}

$PY -c "import verl, vllm, ray, transfer_queue" || { echo "error: needs verl, vllm, ray and transferqueue (pip install -e '.[verl]' vllm)" >&2; exit 1; }
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "error: no CUDA GPU visible" >&2; exit 1; }

rememr1 data revhop --out "$DATA" --lengths 1.5k --hops 1,2 --order reverse,forward -n 16 --format parquet --tokenizer smollm2

MODEL_SET=()
if [ -n "$MODEL" ]; then MODEL_SET=(--model "$MODEL"); fi
rememr1 train --engine verl "${MODEL_SET[@]}" --data "$DATA/train_*.parquet" --out "$OUT" \
  --steps 3 --group-size 4 --batch-size 4 --chunk-size 512 --max-new-tokens 256 --alpha 0.8 --save-every 3 \
  --set optim.mini_batch_size=2 --set rollout.temperature=0.7 \
  --set verl.n_gpus_per_node="$GPUS" --set verl.gpu_memory_utilization=0.4 \
  --set "verl.logger=[console]" --set "verl.overrides=[trainer.val_before_train=false]"
ls "$OUT"
