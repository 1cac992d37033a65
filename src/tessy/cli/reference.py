"""Write docs/cli.md, the CLI reference: the `--help` of `tessy` and of every command and subcommand.

    python -m tessy.cli.reference            # rewrites docs/cli.md
    python -m tessy.cli.reference --check    # exit 1 if docs/cli.md differs from the help text

The text is exactly what `--help` prints, at a fixed width (WIDTH columns, whatever the terminal),
so the file is the same on every machine; tests/test_cli_reference.py keeps it in step.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

WIDTH = 100
DEFAULT_OUTPUT = Path("docs/cli.md")
REGENERATE = "python -m tessy.cli.reference"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """The parser's subcommands in the order they were added."""
    return [(name, sub) for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()]


def _help(parser: argparse.ArgumentParser) -> str:
    """The parser's --help at WIDTH columns (its own formatter class, a fixed width)."""
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH + 2)  # argparse also reads it for nested formatters
    try:
        return parser.format_help().rstrip() + "\n"
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def _walk(parser: argparse.ArgumentParser, path: list[str]) -> list[tuple[list[str], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for name, sub in _subcommands(parser):
        found += _walk(sub, path + [name])
    return found


def render() -> str:
    """The whole reference as Markdown."""
    from tessy.cli.main import build_parser

    parsers = _walk(build_parser(), ["tessy"])
    lines = ["# tessy command-line reference", "",
             f"Generated from `--help` by `{REGENERATE}`; do not edit by hand "
             "(tests/test_cli_reference.py checks that it is current).", ""]
    lines += [f"- [`{' '.join(path)}`](#{'-'.join(path)})" for path, _ in parsers] + [""]
    for path, parser in parsers:
        lines += [f"## `{' '.join(path)}`", "",
                  "```text", _help(parser).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tessy.cli.reference", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown file to write.")
    parser.add_argument("--check", action="store_true", help="Only compare; exit 1 if the file differs.")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
