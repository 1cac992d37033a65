"""Evaluate students (a base and its fine-tunes) on held-out problems: accuracy and NLL drift.

For each named model, `evaluate` generates one greedy response per held-out problem (its chat
template, batched with left padding, at most ``max_new_tokens``), writes them as records in
``OUT/<name>/records.jsonl`` (append-only; a rerun generates only the ids not there yet), judges
them with a verifier (`tessy.verify.verify_run`, verdicts beside them), and, when a run of the
base student's own responses is given, scores those responses with each model
(`tessy.analysis.nll.StudentScorer`): the mean NLL per token of text the base student wrote. A
fine-tune that keeps the student's distribution keeps that number close to the base model's;
one that drifts raises it. Returns one row per model and writes ``OUT/eval.json``.

Held-out means the problems' ids were never used for synthesis: `tessy.verify.reasoning_gym.
make_prompts(..., offset=N)` gives such problems of the same task and seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tessy import durable


def _problems_rows(path: Path, limit: int | None) -> list[dict]:
    from tessy.verify import load_problems

    rows = list(load_problems(path).items())
    rows = rows[:limit] if limit else rows
    out = []
    for pid, row in rows:
        if "messages" in row:
            messages = row["messages"]
        elif isinstance(row.get("prompt"), str):
            messages = [{"role": "user", "content": row["prompt"]}]
        else:
            raise ValueError(f"{path}: problem {pid!r} has neither 'prompt' nor 'messages'")
        out.append({"id": pid, "messages": messages})
    return out


def generate_answers(model: str, problems: list[dict], folder: Path, max_new_tokens: int = 256,
                     batch_size: int = 8, chat_format: str = "auto", voice: str = "") -> Path:
    """Greedy responses of `model` to `problems`, as records in `folder/records.jsonl`.

    With a `voice` (`tessy.voices`) the model sees its preamble before each prompt, as it did
    when it wrote data; the records keep the plain prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tessy.formats import get_format
    from tessy.models import resolve_model
    from tessy.voices import load_voice, with_voice

    preamble = load_voice(voice)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "records.jsonl"
    done = set()
    if path.exists():
        from tessy.export.runs import _read_records

        durable.repair_tail(path)  # a line torn by a kill: dropped (its problem is answered again)
        done = {str(r["id"]) for r in _read_records(path)}
    todo = [p for p in problems if p["id"] not in done]
    if not todo:
        return path
    resolved = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    fmt = get_format(chat_format, tokenizer)
    lm = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32).eval()
    stop = sorted(fmt.stop_token_ids(tokenizer))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    out = durable.open_append(path)
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            prompts = [fmt.prompt_ids(tokenizer, with_voice(preamble, p["messages"])) for p in batch]
            width = max(map(len, prompts))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            with torch.inference_mode():
                generated = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                        do_sample=False, eos_token_id=stop, pad_token_id=pad)
            for problem, row in zip(batch, generated[:, width:].tolist()):
                ended = next((i for i, t in enumerate(row) if t in stop), None)
                tokens = row[:ended] if ended is not None else row
                text = tokenizer.decode(tokens, skip_special_tokens=False)
                record = {"id": problem["id"], "method": "eval",
                          "messages": problem["messages"] + [{"role": "assistant", "content": text}],
                          "spans": [{"role": "student", "section": "response", "text": text,
                                     "tokens_student": len(tokens), "tokens_own": len(tokens),
                                     "generated": len(tokens), "discarded": 0, "forced": False}],
                          "totals": {"spans": 1, "tokens_student": len(tokens), "teacher_tokens_student": 0,
                                     "teacher_share": 0.0, "generated": len(tokens), "discarded": 0},
                          "finish_reason": "stop" if ended is not None else "length",
                          "models": {"student": {"model": model, "format": fmt.name, "predictor": None}}}
                durable.append(out, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"), path)
    finally:
        os.close(out)
    return path


def own_nll(model: str, records: list[dict], chat_format: str = "auto", max_response_tokens: int = 512,
            voice: str = "") -> dict:
    """Token-weighted mean NLL per token of `records`' responses under `model` (after the voice's
    preamble, when the responses were written with one)."""
    from tessy.analysis.nll import StudentScorer
    from tessy.voices import load_voice, with_voice

    preamble = load_voice(voice)
    if preamble:
        records = [{**r, "messages": with_voice(preamble, r["messages"][:-1]) + r["messages"][-1:]} for r in records]
    scored = StudentScorer(model, chat_format, max_response_tokens=max_response_tokens).score(records)
    tokens = sum(s.tokens for s in scored)
    return {"nll_per_token": sum(s.nll_sum for s in scored) / tokens if tokens else None,
            "responses": len(scored), "tokens": tokens}


def evaluate(models: dict[str, str], problems: str | Path, verifier: str, output: str | Path,
             own_responses: str | Path | None = None, max_new_tokens: int = 256, batch_size: int = 8,
             limit: int | None = None, chat_format: str = "auto", voice: str = "",
             **verifier_options: Any) -> list[dict]:
    from tessy.export.runs import load_run
    from tessy.verify import verify_run

    output, problems = Path(output), Path(problems)
    rows_in = _problems_rows(problems, limit)
    own = None
    if own_responses is not None:
        own = [r for r in load_run(own_responses).records if r.get("finish_reason") == "stop"] or \
            load_run(own_responses).records
    table = []
    for name, spec in models.items():
        folder = output / name
        generate_answers(spec, rows_in, folder, max_new_tokens, batch_size, chat_format, voice)
        result = verify_run(folder, verifier, problems=problems, **verifier_options)
        verdicts = [json.loads(line) for line in Path(result["file"]).read_text().splitlines() if line.strip()]
        passed = sum(v["status"] == "pass" for v in verdicts)
        row = {"model": name, "path": spec, "problems": len(verdicts), "passed": passed,
               "accuracy": passed / len(verdicts) if verdicts else None,
               "errors": sum(v["status"] == "error" for v in verdicts)}
        if own is not None:
            row["own_nll"] = own_nll(spec, own, chat_format, voice=voice)
        table.append(row)
    output.mkdir(parents=True, exist_ok=True)
    summary = {"problems_file": str(problems), "verifier": verifier, "max_new_tokens": max_new_tokens,
               "own_responses": str(own_responses) if own_responses else None, "voice": voice, "rows": table}
    durable.write_atomic(output / "eval.json", json.dumps(summary, indent=2) + "\n")
    return table


def format_table(rows: list[dict]) -> str:
    lines = ["| model | problems | passed | accuracy | own-response NLL / token |", "|---|---|---|---|---|"]
    for r in rows:
        nll = r.get("own_nll", {}).get("nll_per_token") if r.get("own_nll") else None
        lines.append(f"| {r['model']} | {r['problems']} | {r['passed']} | "
                     f"{r['accuracy']:.1%} | {'n/a' if nll is None else f'{nll:.3f}'} |")
    return "\n".join(lines)
