"""`tessy export RUN... --to FORMAT -o OUT`: SFT data from records, with a dataset card.

Thin over `tessy.export.export_runs`; see that module for the promises (deterministic, written to a
temporary folder and renamed, records only read).
"""

from __future__ import annotations

import argparse


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, got {text!r}")
    try:
        return float(low or 0.0), float(high or 1.0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers in MIN:MAX, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="Run output folders (or their records.jsonl).")
    parser.add_argument("--to", default="messages", metavar="FORMAT",
                        help="messages (conversational JSONL for TRL's SFTTrainer), parquet, hf (a datasets "
                             "save_to_disk folder) or sharegpt (LLaMA-Factory, with dataset_info.json). "
                             "Default: messages.")
    parser.add_argument("-o", "--output", required=True, help="Output folder (written whole, then renamed into place).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output folder.")
    parser.add_argument("--finish-reasons", type=_csv, default=("stop",), metavar="R1,R2",
                        help="Finish reasons to keep (default: stop; also: length, max_spans, repetition, context).")
    parser.add_argument("--method", type=_csv, default=None, metavar="M1,M2",
                        help="Keep only these methods (default: any).")
    parser.add_argument("--teacher-share", type=_range, default=(0.0, 1.0), metavar="MIN:MAX",
                        help="Keep responses whose teacher-token share is in [MIN, MAX] (default 0:1).")
    parser.add_argument("--verification", type=_csv, default=None, metavar="S1,S2",
                        help="Keep only these verdicts from `tessy verify`: pass, fail, error, unverified "
                             "(default: no filter). With several verifiers a record passes only if all passed it.")
    parser.add_argument("--verifier", default=None, help="Use this verifier's verdicts only (default: all of the run's).")
    parser.add_argument("--validation-fraction", type=float, default=0.05,
                        help="Share of ids in the validation split, chosen by a hash of the id (default 0.05).")
    parser.add_argument("--split-seed", type=int, default=0, help="Seed of the id hash for the split (default 0).")
    parser.add_argument("--name", default="tessy", help="Dataset name (card title, LLaMA-Factory entries).")
    parser.add_argument("--no-spans", action="store_true", help="Leave the per-span provenance column out.")
    parser.add_argument("--check-template", nargs="?", const="student", default=None, metavar="TOKENIZER",
                        help="Drop conversations that do not round-trip through this tokenizer's chat template "
                             "(default when given bare: the student model named in the records).")


def run(args: argparse.Namespace) -> int:
    from tessy.export import Filters, export_runs

    filters = Filters(finish_reasons=args.finish_reasons, methods=args.method, teacher_share=args.teacher_share,
                      verification=args.verification, verifier=args.verifier)
    tokenizer = None
    if args.check_template:
        from tessy.export.runs import load_run
        from tessy.models import load_tokenizer

        spec = args.check_template
        if spec == "student":
            records = load_run(args.runs[0]).records
            spec = next((r["models"]["student"]["model"] for r in records if r.get("models", {}).get("student")), None)
            if not spec:
                raise ValueError("the records name no student model; give --check-template TOKENIZER")
        tokenizer = load_tokenizer(spec)
    result = export_runs(args.runs, args.output, to=args.to, filters=filters,
                         validation_fraction=args.validation_fraction, split_seed=args.split_seed,
                         dataset_name=args.name, spans=not args.no_spans, tokenizer=tokenizer,
                         overwrite=args.overwrite)
    splits = ", ".join(f"{k} {v}" for k, v in result["splits"].items()) or "nothing"
    dropped = ", ".join(f"{k} {v}" for k, v in result["dropped"].items()) or "none"
    print(f"exported {result['kept']} of {result['records_read']} records ({splits}) as {result['format']} "
          f"to {result['output']}; dropped: {dropped}")
    return 0
