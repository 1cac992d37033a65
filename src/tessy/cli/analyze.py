"""`tessy analyze RUN...`: compare the records of several data methods on the same prompts.

Writes a report folder (report.html with PNG plots, analysis.json with every number) and prints
a summary table: teacher-token share, response lengths, TF-IDF similarity to student-only, and
the student's own NLL per token of each method's responses. Progress bars (with totals and ETA)
go to stderr; the table and the report's path to stdout.
"""

from __future__ import annotations

import argparse

from tessy.cli.main import positive_int

#: Kept here (not imported from tessy.analysis) so that `tessy --help` imports no numpy.
MAX_FEATURES = 2**18
DEVICES = ("auto", "cpu", "cuda")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="Run output folders (or records.jsonl files), one per method.")
    parser.add_argument("-o", "--output", default="analysis", help="Report folder (default: analysis).")
    parser.add_argument("--student", help="Student model for the NLL (default: the one named in the records).")
    parser.add_argument("--student-format", help="Student chat format (default: the one named in the records).")
    parser.add_argument("--no-nll", action="store_true", help="Skip the student NLL (no model is loaded).")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="Device for the NLL model: auto (cuda when available, else cpu), cpu or cuda (default: auto).")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="Responses per NLL forward pass (default: 8).")
    parser.add_argument("--max-batch-tokens", type=positive_int, default=8192,
                        help="Input tokens (rows x longest row) per NLL forward pass at most (default: 8192).")
    parser.add_argument("--max-response-tokens", type=positive_int, default=1024,
                        help="Score at most this many tokens of each response (default: 1024).")
    parser.add_argument("--all-records", action="store_true",
                        help="Use every record, not only the prompts all runs share.")
    parser.add_argument("--top-words", type=positive_int, default=15, help="Words per method in the frequency figure (default: 15).")
    parser.add_argument("--max-features", type=positive_int, default=MAX_FEATURES,
                        help=f"TF-IDF vocabulary cap: the most frequent words are kept (default: {MAX_FEATURES:,}).")
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")


def run(args: argparse.Namespace) -> int:
    from tessy.analysis import analyze
    from tessy.analysis.report import summary_table

    figures = analyze(args.runs, args.output, student=args.student, student_format=args.student_format,
                      nll=not args.no_nll, device=args.device, batch_size=args.batch_size,
                      max_batch_tokens=args.max_batch_tokens, max_response_tokens=args.max_response_tokens,
                      all_records=args.all_records, top=args.top_words, max_features=args.max_features,
                      progress=not args.no_progress)
    print(summary_table(figures))
    print(f"report: {figures['report']}")
    return 0
