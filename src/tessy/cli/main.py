"""`tessy` entry point: parses the command name and hands over to that command's module.

Command modules are imported only when chosen, and they import torch/transformers only when they
run, so `tessy --help` stays fast. `tessy --version` prints the package's version (`tessy.__version__`).

Exit codes (the same for every command; `EXIT_CODES`): 0 done; 2 the command could not run or
stopped (a bad flag or setting, an unusable input, a file-system error, an unreachable server),
with a one-line message naming the field, file or path and no traceback (`-v` shows it); 3 the
run ended with prompts unfinished (failed, out of attempts or not reached), the count and where
to look printed; 130 interrupted. A traceback (exit 1) is a bug.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys

from tessy import __version__

EXIT_OK, EXIT_ERROR, EXIT_UNFINISHED, EXIT_INTERRUPTED = 0, 2, 3, 130
EXIT_CODES = (
    (EXIT_OK, "done: every prompt is in records.jsonl or rejects.jsonl"),
    (EXIT_ERROR, "could not run: a bad flag or setting, an unusable input, a file-system error or an "
                 "unreachable server (the message names it); nothing was lost"),
    (EXIT_UNFINISHED, "finished with prompts left over (failed, out of attempts or not reached): see "
                      "failures.jsonl; rerun the same command to retry them"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C): finished samples are saved; rerun to resume"),
)


def exit_codes_epilog() -> str:
    """The exit-code table for a command's --help."""
    import textwrap

    return "exit codes:\n" + "\n".join(
        textwrap.fill(text, width=78, initial_indent=f"  {code:<4}", subsequent_indent=" " * 6)
        for code, text in EXIT_CODES)


def positive_int(text: str) -> int:
    """argparse type for a count of at least 1 (a usage error, exit 2, otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer at least 1, got {value}")
    return value


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error: what went wrong and the path, without '[Errno N]'."""
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return what
    where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    hint = {errno.ENOTDIR: " (a part of this path is a file, not a folder)",
            errno.ENOSPC: " (free some space, then rerun to resume)",
            errno.EACCES: " (check the folder's permissions)",
            errno.EROFS: " (choose a writable --output)"}.get(exc.errno, "")
    return f"{what}: {where}{hint}"

COMMANDS = {
    "synthesize": ("tessy.cli.synthesize", "Turn a prompts file into TESSY records (teacher and student together)."),
    "merge": ("tessy.cli.merge", "Join the shard folders of one run (synthesize --shard I/N) into one run folder."),
    "view": ("tessy.cli.view", "Write an HTML page showing who wrote each span of each record."),
    "analyze": ("tessy.cli.analyze", "Compare data methods on the same prompts: token share, lengths, "
                "similarity, PCA, words, student NLL."),
    "demo": ("tessy.cli.demo", "Run TESSY on 8 HumanEval problems with small real models on CPU and write a view."),
    "predictor": ("tessy.cli.predictor", "Build boundary predictors: sample, annotate, train, eval."),
    "verify": ("tessy.cli.verify", "Check each record's answer (HumanEval tests, reasoning-gym scorers, "
               "numeric exact match); verdicts go to a side file."),
    "export": ("tessy.cli.export", "Write SFT data from records (messages JSONL, Parquet, datasets folder, "
               "LLaMA-Factory ShareGPT) with a dataset card."),
    "eval": ("tessy.cli.eval", "Evaluate students on held-out problems: accuracy through a verifier, "
             "NLL drift on the base student's own responses."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessy",
        description="Teacher-student cooperative data synthesis (TESSY) for reasoning models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    parser.add_argument("--version", action="version", version=f"tessy {__version__}",
                        help="Print tessy's version and exit.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(sub)
        sub.set_defaults(module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse has printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else EXIT_ERROR
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
        return EXIT_INTERRUPTED
    except (OSError, ValueError, RuntimeError) as exc:
        if args.verbose:
            raise
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
            message = describe_os_error(exc)
        else:
            message = str(exc) or type(exc).__name__
        print(f"tessy {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
