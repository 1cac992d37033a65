"""`tessy view RECORDS`: an HTML page with teacher and student spans in two colours."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", help="records.jsonl, or a run's output folder.")
    parser.add_argument("-o", "--output", help="HTML file to write (default: view.html beside the records).")


def run(args: argparse.Namespace) -> int:
    from tessy.view import write_view

    records = Path(args.records)
    if records.is_dir():
        records = records / "records.jsonl"
    if not records.exists():
        raise FileNotFoundError(f"no records at {records}")
    output = Path(args.output) if args.output else records.with_name("view.html")
    write_view(records, output)
    print(f"wrote {output}")
    return 0
