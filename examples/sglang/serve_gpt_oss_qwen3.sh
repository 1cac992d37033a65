#!/usr/bin/env bash
# The paper's pair on SGLang: GPT-OSS-120B (teacher, GPU 0) and Qwen3-8B (student, GPU 1).
# SGLang's radix cache (prefix caching) is on by default; do not pass --disable-radix-cache.
# Needs an SGLang whose /v1/completions has `return_token_ids` (otherwise tessy reads the text
# back and tokenizes it locally; the record's models.<role>.transport then says token_ids+text_out).
#   bash examples/sglang/serve_gpt_oss_qwen3.sh
#   tessy synthesize --config examples/sglang/gpt_oss_qwen3.yaml --input prompts.jsonl
set -euo pipefail
LOGS=${LOGS:-logs}
mkdir -p "$LOGS"
CUDA_VISIBLE_DEVICES=${TEACHER_GPUS:-0} nohup python -m sglang.launch_server \
    --model-path openai/gpt-oss-120b --served-model-name gpt-oss-120b --port 30000 \
    --context-length 32768 --mem-fraction-static 0.88 --enable-cache-report --enable-metrics >"$LOGS/teacher.log" 2>&1 &
CUDA_VISIBLE_DEVICES=${STUDENT_GPUS:-1} nohup python -m sglang.launch_server \
    --model-path Qwen/Qwen3-8B --served-model-name qwen3-8b --port 30001 \
    --context-length 32768 --mem-fraction-static 0.88 --enable-cache-report --enable-metrics >"$LOGS/student.log" 2>&1 &
for port in 30000 30001; do
    until curl -sf "http://localhost:$port/v1/models" >/dev/null; do sleep 5; done
    echo "server on port $port is ready"
done
