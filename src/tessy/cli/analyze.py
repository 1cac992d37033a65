"""`tessy analyze RUN...`: compare the records of several data methods on the same prompts.

Writes a report folder (report.html with PNG plots, analysis.json with every number) and prints
a summary table: teacher-token share, response lengths, TF-IDF similarity to student-only, and
the student's own NLL per token of each method's responses.
"""

from __future__ import annotations

import argparse

from tessy.cli.main import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="Run output folders (or records.jsonl files), one per method.")
    parser.add_argument("-o", "--output", default="analysis", help="Report folder (default: analysis).")
    parser.add_argument("--student", help="Student model for the NLL (default: the one named in the records).")
    parser.add_argument("--student-format", help="Student chat format (default: the one named in the records).")
    parser.add_argument("--no-nll", action="store_true", help="Skip the student NLL (no model is loaded).")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="Device for the NLL model: cpu or cuda (default: cpu).")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="Responses per NLL forward pass (default: 8).")
    parser.add_argument("--max-response-tokens", type=positive_int, default=1024,
                        help="Score at most this many tokens of each response (default: 1024).")
    parser.add_argument("--all-records", action="store_true",
                        help="Use every record, not only the prompts all runs share.")
    parser.add_argument("--top-words", type=positive_int, default=15, help="Words per method in the frequency figure (default: 15).")


def run(args: argparse.Namespace) -> int:
    from tessy.analysis import analyze
    from tessy.analysis.report import summary_table

    figures = analyze(args.runs, args.output, student=args.student, student_format=args.student_format,
                      nll=not args.no_nll, device=args.device, batch_size=args.batch_size,
                      max_response_tokens=args.max_response_tokens, all_records=args.all_records, top=args.top_words)
    print(summary_table(figures))
    print(f"report: {figures['report']}")
    return 0
