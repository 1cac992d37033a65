"""Evaluate students (a base and its fine-tunes) on held-out problems: accuracy and NLL drift.

For each named model, `evaluate` generates one greedy response per held-out problem (its chat
template, continuous batching over a shared prompt prefix, at most ``max_new_tokens``), writes them as records in
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
from contextlib import contextmanager
from typing import Any, Iterator

from tessy import durable


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No transformers progress bar ("Loading weights") while a model loads: eval's bars are its own."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


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
                     batch_size: int = 8, chat_format: str = "auto", voice: str = "",
                     show_progress: bool | None = None, desc: str = "answer") -> Path:
    """Greedy responses of `model` to `problems`, as records in `folder/records.jsonl`.

    With a `voice` (`tessy.voices`) the model sees its preamble before each prompt, as it did
    when it wrote data; the records keep the plain prompt. Decoding runs on the in-process
    backend (`tessy.backends.hf`): continuous batching of `batch_size` rows, and the prompts'
    common start (the voice and the template's head) computed once and shared. Each record is
    appended as soon as its answer ends; ``show_progress`` draws a bar on stderr counting the
    problems answered (`tessy.progress.bar`: None, only on a terminal)."""
    import asyncio

    from tessy.backends.base import SamplingParams
    from tessy.backends.hf import HFBackend
    from tessy.backends.hf_cache import common_prefix
    from tessy.formats import get_format
    from tessy.progress import bar
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
    with _quiet_loading():
        backend = HFBackend(model, max_batch=batch_size)
    tokenizer = backend.tokenizer
    fmt = get_format(chat_format, tokenizer)
    stop = frozenset(fmt.stop_token_ids(tokenizer))
    prompts = {p["id"]: fmt.prompt_ids(tokenizer, with_voice(preamble, p["messages"])) for p in todo}
    shared = min(len(ids) for ids in prompts.values()) - 1
    for ids in prompts.values():
        shared = min(shared, common_prefix(prompts[todo[0]["id"]], ids))
    if len(todo) > 1:
        backend.share_prefix(prompts[todo[0]["id"]][:shared])
    greedy = SamplingParams(temperature=0.0, seed=0)

    async def answer(problem: dict) -> tuple[dict, list[int], str]:
        generation = await backend.generate(problem["id"], prompts[problem["id"]], max_new_tokens, greedy, stop)
        backend.release(problem["id"])
        return problem, generation.token_ids, generation.finish_reason

    async def run_all(out: int, shown: Any) -> None:
        try:
            for finished in asyncio.as_completed([answer(p) for p in todo]):
                problem, tokens, finish = await finished
                tokens = [t for t in tokens if t not in stop]  # the end-of-turn token is not text
                durable.append(out, (json.dumps(_answer_record(model, fmt.name, problem, tokenizer.decode(
                    tokens, skip_special_tokens=False), len(tokens), finish), ensure_ascii=False) + "\n")
                    .encode("utf-8"), path)
                shown.update(1)
        finally:
            await backend.aclose()

    out = durable.open_append(path)
    try:
        with bar(len(problems), desc, "problem", show_progress, initial=len(problems) - len(todo)) as shown:
            asyncio.run(run_all(out, shown))
    finally:
        os.close(out)
    return path


def _answer_record(model: str, format_name: str, problem: dict, text: str, tokens: int, finish: str) -> dict:
    return {"id": problem["id"], "method": "eval",
            "messages": problem["messages"] + [{"role": "assistant", "content": text}],
            "spans": [{"role": "student", "section": "response", "text": text,
                       "tokens_student": tokens, "tokens_own": tokens,
                       "generated": tokens, "discarded": 0, "forced": False}],
            "totals": {"spans": 1, "tokens_student": tokens, "teacher_tokens_student": 0,
                       "teacher_share": 0.0, "generated": tokens, "discarded": 0},
            "finish_reason": "stop" if finish == "stop" else "length",
            "models": {"student": {"model": model, "format": format_name, "predictor": None}}}


def own_nll(model: str, records: list[dict], chat_format: str = "auto", max_response_tokens: int = 512,
            voice: str = "") -> dict:
    """Token-weighted mean NLL per token of `records`' responses under `model` (after the voice's
    preamble, when the responses were written with one)."""
    from tessy.analysis.nll import StudentScorer
    from tessy.voices import load_voice, with_voice

    preamble = load_voice(voice)
    if preamble:
        records = [{**r, "messages": with_voice(preamble, r["messages"][:-1]) + r["messages"][-1:]} for r in records]
    with _quiet_loading():
        scorer = StudentScorer(model, chat_format, max_response_tokens=max_response_tokens)
    scored = scorer.score(records)
    tokens = sum(s.tokens for s in scored)
    return {"nll_per_token": sum(s.nll_sum for s in scored) / tokens if tokens else None,
            "responses": len(scored), "tokens": tokens}


def evaluate(models: dict[str, str], problems: str | Path, verifier: str, output: str | Path,
             own_responses: str | Path | None = None, max_new_tokens: int = 256, batch_size: int = 8,
             limit: int | None = None, chat_format: str = "auto", voice: str = "",
             show_progress: bool | None = None, **verifier_options: Any) -> list[dict]:
    """One row per model of `models` (name -> path), as the module docstring says; with
    ``show_progress`` (None: only on a terminal) a bar per model on stderr counts the problems
    answered, then another the answers judged."""
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
        generate_answers(spec, rows_in, folder, max_new_tokens, batch_size, chat_format, voice,
                         show_progress=show_progress, desc=f"eval {name}: answer")
        result = verify_run(folder, verifier, problems=problems, show_progress=show_progress,
                            desc=f"eval {name}: verify", **verifier_options)
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
