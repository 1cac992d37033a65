"""`tessy synthesize`: prompts in, records out (a YAML config and/or flags; flags win).

Before anything is written, the settings are validated (`tessy.settings.validate`) and the input
is checked (`tessy.inputs.read_prompts` reads its schema and first rows); either failure is a
one-line error and exit code 2. After the run the exit code says whether every prompt is
accounted for (see `exit_code` and `tessy.cli.main.EXIT_CODES`).

Test hook: `ENGINE_FACTORY`, when set (by a test), builds the engine from the config instead of
loading models, so the whole command can be driven with scripted backends (not with `--executor
ray`, whose tasks load their models in their own processes).
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path
from typing import Any, Callable

from tessy.cli.main import EXIT_ERROR, EXIT_OK, EXIT_UNFINISHED, exit_codes_epilog
from tessy.config import SynthesizeConfig
from tessy.settings import add_dataclass_arguments, config_from_sources

#: Tests only: `config -> Engine`, used instead of loading the configured models.
ENGINE_FACTORY: Callable[[SynthesizeConfig], Any] | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = exit_codes_epilog()
    parser.add_argument("--config", metavar="YAML", help="YAML file with any of the settings below.")
    add_dataclass_arguments(parser, SynthesizeConfig)


def config_from_args(args: argparse.Namespace) -> SynthesizeConfig:
    flags = {key: value for key, value in vars(args).items() if key not in {"config", "command", "module", "verbose"}}
    return config_from_sources(SynthesizeConfig, args.config, flags)


def check_input(config: SynthesizeConfig) -> int:
    """Raise (ValueError / FileNotFoundError, naming the file) unless the input can be read; return
    how many prompts (rows) this run should account for, `limit` applied."""
    from tessy.inputs import count_prompts, input_options, read_prompts

    if not config.input:
        raise ValueError("input: give a prompts file with --input (JSONL, JSON or Parquet) or a dataset folder")
    options = input_options(config)
    read_prompts(config.input, **options)  # checks the source up front; rows are read by the run
    total = count_prompts(config.input, split=options["split"])
    return min(total, config.limit) if config.limit else total


def print_report(report) -> None:
    print(
        f"wrote {report.written} records to {report.output}/records.jsonl in {report.wall_s:.1f}s "
        f"(teacher share {report.teacher_share:.1%}, {report.kept_tokens} tokens, {report.spans} spans; "
        f"{report.generated} tokens generated)"
    )
    if report.resumed:
        print(f"resumed {report.resumed} samples mid-trace from {report.output}/journal.jsonl: "
              f"{report.resumed_tokens} tokens they had generated before were not generated again")
    if report.skipped_done:
        print(f"skipped {report.skipped_done} prompts already done")
    if report.other_shards:
        print(f"shard {report.shard}: left {report.other_shards} prompts to the other shards")
    if report.failed or report.skipped_failed:
        print(f"{report.failed} failed this run, {report.skipped_failed} out of attempts: see {report.output}/failures.jsonl")
    if report.rejected:
        print(f"{report.rejected} prompts rejected: see {report.output}/rejects.jsonl")
    if report.changed:
        print(f"{report.changed} ids are done but their prompt changed since: their records answer the old "
              "prompt; give the new prompts new ids, or write to a new output folder")
    for role, counters in report.server_stats.items():
        if counters.get("retries") or counters.get("faults") or counters.get("down"):
            print(f"{role} servers: {counters['retries']} retries, {counters['faults']} faults, "
                  f"{counters['down']} replicas down at the end")
    line = prompt_tokens_line(report)
    if line:
        print(line)
    from tessy.backends.openai.cache import recompute_warning, server_cache_warning

    for role, counters in sorted(report.server_stats.items()):
        for warning in (recompute_warning(role, counters), server_cache_warning(role, counters)):
            if warning:
                print(f"warning: {warning}")
    if report.k_used:
        k_used = ", ".join(f"{role} {k:g}" for role, k in sorted(report.k_used.items()))
        print(f"k per request or step (adaptive k): {k_used}")
    if report.finish_reasons:
        reasons = ", ".join(f"{name} {count}" for name, count in sorted(report.finish_reasons.items()))
        print(f"finish reasons: {reasons}")


def prompt_tokens_line(report) -> str:
    """'prompt tokens processed per kept token: ...' for roles served over HTTP ('' when none).

    A role's figure is its servers' own count (`backends.openai.metrics`) where they keep one, else
    what the answers said (streams stopped at the cut say nothing: counted as computed)."""
    from tessy.backends.openai.cache import prompt_computed

    stats = {role: c for role, c in sorted(report.server_stats.items()) if c.get("prompt_tokens")}
    if not stats or not report.kept_tokens:
        return ""
    kept = report.kept_tokens
    shared = any(c.get("server_shared") for c in stats.values())
    processed, parts = 0, []
    for role, c in stats.items():
        computed, note = prompt_computed(c, shared)
        processed += computed
        parts.append(f"{role} {computed / kept:.2f}" + (f" ({note})" if note else ""))
    sent = sum(c["prompt_tokens"] for c in stats.values())
    return (f"prompt tokens processed per kept token: {processed / kept:.2f} ({', '.join(parts)}; "
            f"{sent / kept:.2f} sent)")


def _first_reject(output: str) -> str:
    """The reason of the first line of rejects.jsonl ('' when unreadable)."""
    try:
        with open(Path(output) / "rejects.jsonl", encoding="utf-8") as f:
            return str(json.loads(f.readline()).get("reason", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def exit_code(report, expected: int | None = None, max_attempts: int | None = None, out=None) -> int:
    """The exit code of a finished run, with a line on stderr saying why when it is not 0.

    0 when every prompt read is in records or rejects; 3 (EXIT_UNFINISHED) when some failed this
    run, are out of attempts, or were not reached (`expected` rows but fewer accounted for);
    2 (EXIT_ERROR) when every prompt was rejected, so that an unusable input never passes as done."""
    out = out or sys.stderr
    accounted = (report.written + report.failed + report.rejected + report.skipped_done + report.skipped_failed
                 + report.changed + report.other_shards)
    not_reached = max(0, expected - accounted) if expected is not None else 0
    unfinished = report.failed + report.skipped_failed + report.changed + not_reached
    if unfinished:
        parts = [f"{report.failed} failed this run"] if report.failed else []
        if report.skipped_failed:
            more = f" (max_attempts {max_attempts}; raise --max-attempts to retry them)" if max_attempts else ""
            parts.append(f"{report.skipped_failed} out of attempts{more}")
        if report.changed:
            parts.append(f"{report.changed} with a changed prompt")
        if not_reached:
            parts.append(f"{not_reached} not reached")
        print(f"tessy synthesize: {unfinished} prompts unfinished ({', '.join(parts)}): see "
              f"{report.output}/failures.jsonl (or rerun with -v); rerun the same command to retry",
              file=out)
        return EXIT_UNFINISHED
    if report.rejected and not (report.written or report.skipped_done):
        first = _first_reject(report.output)
        print(f"tessy synthesize: error: all {report.rejected} prompts were rejected, nothing to do"
              f"{f' (first: {first})' if first else ''}: see {report.output}/rejects.jsonl", file=out)
        return EXIT_ERROR
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from tessy.runner import synthesize

    config = config_from_args(args)
    expected = check_input(config)
    engine = ENGINE_FACTORY(config) if ENGINE_FACTORY is not None and config.executor == "local" else None
    try:
        if config.executor == "ray":  # the shards as Ray tasks, merged into config.output
            from tessy.ray_executor import synthesize_with_ray

            report = synthesize_with_ray(config)
        else:
            report = synthesize(config, engine=engine)
    except OSError as exc:  # disk full while writing: name the output folder the error left out
        if exc.filename is None and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
            raise OSError(exc.errno, exc.strerror, config.output) from exc
        raise
    print_report(report)
    return exit_code(report, expected, config.max_attempts)
