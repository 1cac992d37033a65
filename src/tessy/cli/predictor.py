"""`tessy predictor sample|annotate|train|eval`: build and measure learned boundary predictors.

Each step takes a YAML config and/or flags (flags win); `tessy predictor STEP --help` lists every
setting. The library behind each step is `tessy.predictor_training.<module>`.
"""

from __future__ import annotations

import argparse
import sys

from tessy.cli.main import EXIT_OK, EXIT_UNFINISHED, exit_codes_epilog
from tessy.predictor_training.config import AnnotateConfig, EvalConfig, SampleConfig, TrainConfig
from tessy.settings import add_dataclass_arguments, config_from_sources

STEPS = {
    "sample": (SampleConfig, "Generate responses with one model and cut random segments of its thinking text."),
    "annotate": (AnnotateConfig, "Mark the style phrases of each segment with an annotator (lexicon rules or an LLM)."),
    "train": (TrainConfig, "Fine-tune a token-classification predictor on annotated segments."),
    "eval": (EvalConfig, "Compare predictors: style-token F1 and boundary accuracy per role."),
}
_NOT_FLAGS = {"config", "command", "module", "verbose", "step"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    steps = parser.add_subparsers(dest="step", metavar="STEP")
    for name, (cls, help_text) in STEPS.items():
        sub = steps.add_parser(name, help=help_text, description=help_text, epilog=exit_codes_epilog(),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--config", metavar="YAML", help="YAML file with any of the settings below.")
        add_dataclass_arguments(sub, cls)
    parser.set_defaults(_predictor_parser=parser)


def config_from_args(args: argparse.Namespace):
    cls = STEPS[args.step][0]
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_FLAGS and not k.startswith("_")}
    return config_from_sources(cls, args.config, flags)


def run(args: argparse.Namespace) -> int:
    if not getattr(args, "step", None):
        args._predictor_parser.print_help()
        return 0
    config = config_from_args(args)
    return {"sample": _sample, "annotate": _annotate, "train": _train, "eval": _eval}[args.step](config)


def _problems(report) -> int:
    """Point at the failures and rejects of a run; exit status 3 (unfinished) when some failed."""
    if report.failed or report.rejected:
        print(f"{report.failed} failed, {report.rejected} rejected: see {report.output}/failures.jsonl, rejects.jsonl")
    if report.failed:
        print(f"tessy predictor: {report.failed} unfinished: see {report.output}/failures.jsonl; rerun the same "
              "command to retry them", file=sys.stderr)
        return EXIT_UNFINISHED
    return EXIT_OK


def _sample(config: SampleConfig) -> int:
    from tessy.predictor_training.sample import sample

    report = sample(config)
    print(f"{report.responses} responses in {report.output}/records.jsonl ({report.written} new this run); "
          f"wrote {report.segments} segments to {report.segments_path}")
    if report.too_short:
        print(f"{report.too_short} responses were shorter than --min-segment-tokens and gave no segment")
    return _problems(report)


def _annotate(config: AnnotateConfig) -> int:
    from tessy.predictor_training.annotate import annotate

    report = annotate(config)
    found = report.requested - report.not_found
    print(f"annotated {report.written} segments into {report.output}/records.jsonl "
          f"({report.spans} spans; {found} of {report.requested} listed phrases located)")
    if report.skipped_done:
        print(f"skipped {report.skipped_done} segments already annotated")
    return _problems(report)


def _train(config: TrainConfig) -> int:
    from tessy.predictor_training.train import train

    report = train(config)
    if report.already_done:
        print(f"{report.output} already holds this training ({report.steps} steps); nothing to do")
        return 0
    dev = report.dev.get("at_threshold", {})
    resumed = f", resumed from step {report.resumed_from}" if report.resumed_from else ""
    print(f"trained {report.steps} steps in {report.wall_s:.0f}s{resumed} on {report.segments['train']} segments "
          f"(dev {report.segments['dev']}, held out {report.segments['test']}); style weight {report.style_weight:.2f}, "
          f"threshold {report.threshold:.2f}, {report.dev.get('split', 'dev')} F1 {dev.get('f1', 0):.3f}")
    print(f"predictor: {report.output}  (use it as --student.predictor / --teacher.predictor)")
    return 0


def _eval(config: EvalConfig) -> int:
    from tessy.predictor_training.evaluate import evaluate, format_table

    results = evaluate(config)
    print(format_table(results))
    if config.output:
        print(f"wrote {config.output}", file=sys.stderr)
    return 0
