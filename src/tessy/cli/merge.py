"""`tessy merge RUN... -o OUT`: join shard folders (`--shard I/N`) into one run folder.

Thin over `tessy.shards.merge_runs`: it refuses overlapping ids, folders of different configs and
a shard given twice (a one-line error naming the folders, exit code 2, OUT untouched), and writes
OUT whole or not at all. Missing shards are named on stderr; the merge still goes on.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="Run folders to join: the shards of one run.")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="The merged run folder to write.")
    parser.add_argument("--overwrite", action="store_true", help="Replace OUT if it exists.")


def run(args: argparse.Namespace) -> int:
    from tessy.shards import merge_runs

    report = merge_runs(args.runs, args.output, overwrite=args.overwrite)
    shards = f" (shards {', '.join(report.shards)})" if report.shards else ""
    print(f"merged {len(args.runs)} runs{shards} into {report.output}: {report.records} records, "
          f"{report.failures} failure lines, {report.rejects} rejects")
    if report.shards_missing:
        print(f"tessy merge: warning: shards {', '.join(report.shards_missing)} are missing; run them, then merge "
              "again with --overwrite", file=sys.stderr)
    return 0
