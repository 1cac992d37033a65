#!/usr/bin/env bash
# Variant: Qwen3-235B-A22B-Thinking-2507 as the teacher (8 GPUs, tensor parallel) and Qwen3-8B as
# the student (one more GPU). Same tokenizer family: spans pass as token ids, no word back-off.
#   bash examples/vllm/serve_qwen3_235b_thinking.sh
#   tessy synthesize --config examples/vllm/qwen3_235b_thinking_qwen3.yaml --input prompts.jsonl
set -euo pipefail
LOGS=${LOGS:-logs}
mkdir -p "$LOGS"
CUDA_VISIBLE_DEVICES=${TEACHER_GPUS:-0,1,2,3,4,5,6,7} nohup vllm serve Qwen/Qwen3-235B-A22B-Thinking-2507 \
    --served-model-name qwen3-235b-thinking --port 8000 --tensor-parallel-size 8 \
    --enable-prefix-caching --enable-prompt-tokens-details --max-model-len 32768 >"$LOGS/teacher.log" 2>&1 &
CUDA_VISIBLE_DEVICES=${STUDENT_GPUS:-8} nohup vllm serve Qwen/Qwen3-8B \
    --served-model-name qwen3-8b --port 8001 \
    --enable-prefix-caching --enable-prompt-tokens-details --max-model-len 32768 >"$LOGS/student.log" 2>&1 &
for port in 8000 8001; do
    until curl -sf "http://localhost:$port/v1/models" >/dev/null; do sleep 5; done
    echo "server on port $port is ready"
done
