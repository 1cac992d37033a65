"""`tessy eval --model NAME=PATH... --problems FILE --with VERIFIER`: accuracy and NLL drift of students.

Thin over `tessy.verify.evaluate.evaluate`: greedy answers to held-out problems, judged by a
verifier, and (with ``--own RUN``) each model's NLL of the base student's own responses. Per
model, progress bars on stderr count the problems answered and judged, with their ETA, when stderr
is a terminal (``--no-progress`` hides them).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="A model to evaluate (repeat): a folder, hub name or demo alias, e.g. "
                             "base=smollm2-135m-instruct tessy=runs/sft-tessy.")
    parser.add_argument("--problems", required=True, help="Held-out problems JSONL (prompt + reference answers).")
    parser.add_argument("--with", dest="verifier", required=True, metavar="VERIFIER",
                        help="humaneval, reasoning-gym, math, or module:Class.")
    parser.add_argument("-o", "--output", default="eval", help="Folder for answers, verdicts and eval.json.")
    parser.add_argument("--own", default=None, metavar="RUN",
                        help="A run of the base student's own responses (student-only) on held-out prompts: "
                             "each model's NLL of them measures drift.")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="Response budget (default 256).")
    parser.add_argument("--batch-size", type=int, default=8, help="Problems generated at once (default 8).")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N problems.")
    parser.add_argument("--format", default="auto", help="Chat format of the models (default: auto).")
    parser.add_argument("--voice", default="", help="The student's voice (tessy.voices), seen before every prompt as "
                                                    "when it wrote data and was fine-tuned (default: none).")
    parser.add_argument("--no-progress", action="store_true",
                        help="Hide the progress bars (they show only when stderr is a terminal).")


def run(args: argparse.Namespace) -> int:
    from tessy.verify.evaluate import evaluate, format_table

    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--model expects NAME=PATH, got {item!r}")
        if name in models:
            raise ValueError(f"--model name {name!r} given twice")
        models[name] = path
    rows = evaluate(models, args.problems, args.verifier, args.output, own_responses=args.own,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
                    chat_format=args.format, voice=args.voice,
                    show_progress=False if args.no_progress else None)
    print(format_table(rows))
    print(f"details: {args.output}/eval.json")
    return 0
