#!/usr/bin/env bash
# Variant: DeepSeek-R1 (671B, FP8) as the teacher on one 8-GPU node (tensor parallel 8) and
# Qwen3-8B as the student on another machine or GPU (STUDENT_HOST/port 30001).
#   bash examples/sglang/serve_deepseek_r1.sh
#   tessy synthesize --config examples/sglang/deepseek_r1_qwen3.yaml --input prompts.jsonl
set -euo pipefail
LOGS=${LOGS:-logs}
mkdir -p "$LOGS"
nohup python -m sglang.launch_server --model-path deepseek-ai/DeepSeek-R1 \
    --served-model-name deepseek-r1 --tp 8 --trust-remote-code --port 30000 \
    --context-length 32768 --enable-cache-report --enable-metrics >"$LOGS/teacher.log" 2>&1 &
until curl -sf "http://localhost:30000/v1/models" >/dev/null; do sleep 10; done
echo "teacher on port 30000 is ready; start the student as in serve_gpt_oss_qwen3.sh (port 30001)"
