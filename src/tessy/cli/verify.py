"""`tessy verify RUN... --with VERIFIER`: a verdict per record in RUN/verdicts-VERIFIER.jsonl.

Thin over `tessy.verify.verify_run`; records are never rewritten, and a rerun judges only the
responses without a verdict (exactly-once, like synthesize). A progress bar on stderr counts the
records to judge, with its ETA, when stderr is a terminal (``--no-progress`` hides it).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tessy.verify import VERIFIERS

    parser.add_argument("runs", nargs="+", metavar="RUN", help="Run output folders (or their records.jsonl).")
    parser.add_argument("--with", dest="verifier", required=True, metavar="VERIFIER",
                        help=f"{', '.join(VERIFIERS)}, or module:Class of your own Verifier.")
    parser.add_argument("--problems", default=None,
                        help="JSONL of problems with reference answers / tests, by id (default: HumanEval's own "
                             "for humaneval; else the run's input file named in run.json).")
    parser.add_argument("--id-field", default=None, help="Id field of the problems file (default: id or task_id).")
    parser.add_argument("--timeout", type=float, default=10.0, help="Seconds per HumanEval program (default 10).")
    parser.add_argument("--min-score", type=float, default=1.0,
                        help="reasoning-gym score that counts as a pass (default 1.0).")
    parser.add_argument("--workers", type=int, default=2, help="Records judged at once (default 2).")
    parser.add_argument("--redo-errors", action="store_true", help="Judge again responses whose verdict was error.")
    parser.add_argument("--no-progress", action="store_true",
                        help="Hide the progress bar (it shows only when stderr is a terminal).")


def run(args: argparse.Namespace) -> int:
    from tessy.verify import verify_run

    for path in args.runs:
        result = verify_run(path, args.verifier, problems=args.problems, id_field=args.id_field,
                            workers=args.workers, redo_errors=args.redo_errors, timeout=args.timeout,
                            min_score=args.min_score, show_progress=False if args.no_progress else None,
                            desc=f"verify {path}" if len(args.runs) > 1 else None)
        judged = result["judged"] + result["already"]
        rate = result["pass"] / result["judged"] if result["judged"] else None
        print(f"{path}: {result['verifier']} judged {result['judged']} new ({result['already']} already done): "
              f"pass {result['pass']}, fail {result['fail']}, error {result['error']}"
              + (f" (pass rate {rate:.1%})" if rate is not None else "") + f"; verdicts in {result['file']}",
              file=sys.stdout)
        if judged < result["records"]:
            print(f"{path}: {result['records'] - judged} records left unjudged", file=sys.stderr)
    return 0
