"""`tessy` entry point: parses the command name and hands over to that command's module.

Command modules are imported only when chosen, and they import torch/transformers only when they
run, so `tessy --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "synthesize": ("tessy.cli.synthesize", "Turn a prompts file into TESSY records (teacher and student together)."),
    "view": ("tessy.cli.view", "Write an HTML page showing who wrote each span of each record."),
    "analyze": ("tessy.cli.analyze", "Compare data methods on the same prompts: token share, lengths, "
                "similarity, PCA, words, student NLL."),
    "demo": ("tessy.cli.demo", "Run TESSY on 8 HumanEval problems with the two small CPU models."),
    "predictor": ("tessy.cli.predictor", "Build boundary predictors: sample, annotate, train, eval."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessy",
        description="Teacher-student cooperative data synthesis (TESSY) for reasoning models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.command:
        parser.print_help()
        return 0
    try:
        return importlib.import_module(args.module).run(args) or 0
    except KeyboardInterrupt:
        print("interrupted: finished samples are saved; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"tessy {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
