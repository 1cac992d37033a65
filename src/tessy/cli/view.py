"""`tessy view RECORDS`: an HTML page with teacher and student spans in two colours.

Thin over `tessy.view.write_view`. ``--method``, ``--ids``, ``--sample`` and ``--limit`` choose the
records shown (in that order); an unknown method or id, or a sample larger than the records,
stops with a one-line error (exit 2) and writes nothing. A record line that cannot be shown
(hand-edited, truncated, a field of the wrong type) is skipped with a warning on stderr naming
its line; the others are rendered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tessy.cli.main import positive_int

LARGE_PAGE = 512 * 2**20  # bytes; a browser still opens it, but slowly


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", help="records.jsonl, or a run's output folder.")
    parser.add_argument("-o", "--output", help="HTML file to write (default: view.html beside the records).")
    parser.add_argument("--method", action="append", metavar="M",
                        help="Show only records of these methods (comma-separated or repeated), e.g. tessy.")
    parser.add_argument("--ids", action="append", metavar="ID,...",
                        help="Show only these record ids, in this order (comma-separated or repeated).")
    parser.add_argument("--sample", type=positive_int, metavar="N",
                        help="Show N records drawn at random (see --seed), in file order.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of --sample (default 0).")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="Show at most the first N records.")
    parser.add_argument("--title", default=None, help="Page title (default: the records' path).")


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

    counts: dict = {}
    write_view(records, output, title=args.title, warn=warn, limit=args.limit, sample=args.sample, ids=args.ids,
               method=args.method, seed=args.seed, counts=counts)
    print(f"wrote {output}: {counts['shown']} of {counts['records']} records, {counts['bytes'] / 2**20:.1f} MB"
          + (f" ({len(skipped)} record lines skipped, see the warnings)" if skipped else ""))
    if counts["bytes"] > LARGE_PAGE:
        print(f"tessy view: note: the page is {counts['bytes'] / 2**30:.1f} GB; a browser opens it slowly. "
              "Show fewer records with --sample N or --limit N.", file=sys.stderr)
    return 0
