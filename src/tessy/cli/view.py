"""`tessy view RECORDS`: an HTML page with teacher and student spans in two colours.

A record line that cannot be shown (hand-edited, truncated, a field of the wrong type) is
skipped with a warning on stderr naming its line; the others are rendered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", help="records.jsonl, or a run's output folder.")
    parser.add_argument("-o", "--output", help="HTML file to write (default: view.html beside the records).")


def run(args: argparse.Namespace) -> int:
    from tessy.view import write_view

    records = Path(args.records)
    if records.is_dir():
        records = records / "records.jsonl"
    if not records.is_file():
        raise FileNotFoundError(f"no records at {records}")
    output = Path(args.output) if args.output else records.with_name("view.html")
    skipped = []

    def warn(message: str) -> None:
        skipped.append(message)
        print(f"tessy view: warning: {message}", file=sys.stderr)

    write_view(records, output, warn=warn)
    print(f"wrote {output}" + (f" ({len(skipped)} record lines skipped, see the warnings)" if skipped else ""))
    return 0
