"""Chat formats per model family (`base.ChatFormat`): qwen3, deepseek-r1, harmony (GPT-OSS),
chatml-plain / plain (no thinking section). `get_format(name, tokenizer)` resolves "auto"."""
