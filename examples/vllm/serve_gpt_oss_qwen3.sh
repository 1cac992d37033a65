#!/usr/bin/env bash
# The paper's pair on vLLM: GPT-OSS-120B (teacher, GPU 0) and Qwen3-8B (student, GPU 1), both with
# automatic prefix caching, so each TESSY step re-uses the sample's cached prefix and prefills
# only the new span. Needs vLLM >= 0.10.2 (`return_token_ids`, GPT-OSS support).
#   bash examples/vllm/serve_gpt_oss_qwen3.sh            # starts both, waits until they answer
#   tessy synthesize --config examples/vllm/gpt_oss_qwen3.yaml --input prompts.jsonl
set -euo pipefail
TEACHER_PORT=${TEACHER_PORT:-8000}
STUDENT_PORT=${STUDENT_PORT:-8001}
MAX_LEN=${MAX_LEN:-32768}
LOGS=${LOGS:-logs}
mkdir -p "$LOGS"
# Optional: export VLLM_API_KEY=...; both servers then require it and tessy reads it (api_key_env).
KEY_ARGS=()
[[ -n "${VLLM_API_KEY:-}" ]] && KEY_ARGS=(--api-key "$VLLM_API_KEY")

CUDA_VISIBLE_DEVICES=${TEACHER_GPUS:-0} nohup vllm serve openai/gpt-oss-120b \
    --served-model-name gpt-oss-120b --port "$TEACHER_PORT" \
    --enable-prefix-caching --enable-prompt-tokens-details --max-model-len "$MAX_LEN" --gpu-memory-utilization 0.92 \
    "${KEY_ARGS[@]}" >"$LOGS/teacher.log" 2>&1 &
CUDA_VISIBLE_DEVICES=${STUDENT_GPUS:-1} nohup vllm serve Qwen/Qwen3-8B \
    --served-model-name qwen3-8b --port "$STUDENT_PORT" \
    --enable-prefix-caching --enable-prompt-tokens-details --max-model-len "$MAX_LEN" --gpu-memory-utilization 0.92 \
    "${KEY_ARGS[@]}" >"$LOGS/student.log" 2>&1 &

for port in "$TEACHER_PORT" "$STUDENT_PORT"; do
    until curl -sf ${VLLM_API_KEY:+-H "Authorization: Bearer $VLLM_API_KEY"} "http://localhost:$port/v1/models" >/dev/null; do
        sleep 5
    done
    echo "server on port $port is ready"
done
