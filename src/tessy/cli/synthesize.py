"""`tessy synthesize`: prompts in, records out (a YAML config and/or flags; flags win)."""

from __future__ import annotations

import argparse

from tessy.config import SynthesizeConfig, add_dataclass_arguments, config_from_sources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="YAML file with any of the settings below.")
    add_dataclass_arguments(parser, SynthesizeConfig)


def config_from_args(args: argparse.Namespace) -> SynthesizeConfig:
    flags = {key: value for key, value in vars(args).items() if key not in {"config", "command", "module", "verbose"}}
    return config_from_sources(SynthesizeConfig, args.config, flags)


def print_report(report) -> None:
    print(
        f"wrote {report.written} records to {report.output}/records.jsonl in {report.wall_s:.1f}s "
        f"(teacher share {report.teacher_share:.1%}, {report.kept_tokens} tokens, {report.spans} spans)"
    )
    if report.skipped_done:
        print(f"skipped {report.skipped_done} prompts already done")
    if report.failed or report.skipped_failed:
        print(f"{report.failed} failed this run, {report.skipped_failed} out of attempts: see {report.output}/failures.jsonl")
    if report.rejected:
        print(f"{report.rejected} prompts rejected: see {report.output}/rejects.jsonl")
    if report.finish_reasons:
        reasons = ", ".join(f"{name} {count}" for name, count in sorted(report.finish_reasons.items()))
        print(f"finish reasons: {reasons}")


def run(args: argparse.Namespace) -> int:
    from tessy.runner import synthesize

    report = synthesize(config_from_args(args))
    print_report(report)
    return 1 if report.failed else 0
