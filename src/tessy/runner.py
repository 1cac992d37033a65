"""From a config to a finished run: load the pair, stream prompts, run samples, write records.

The runner owns the orchestration around the engine and nothing of the loop itself:

- prompts stream from the input; bad lines and prompts that do not fit a model's context go to
  `rejects.jsonl` with their line number, and the run goes on;
- a fixed pool of asyncio workers (`concurrency`) pulls samples from a queue: there is no
  step-wide barrier, and a finished sample frees its slot for the next prompt at once;
- each finished sample is written whole as one record line; a sample that raises goes to
  `failures.jsonl` with its reason and attempt number; a rerun of the same command skips done
  ids, retries failed ones (up to `max_attempts` in all) and never writes a duplicate;
- live progress shows samples, teacher-token share, spans/s and kept tokens/s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from tessy.config import ModelConfig, SynthesizeConfig
from tessy.engine import Engine, Limits, Party, SampleResult
from tessy.backends.base import SamplingParams

log = logging.getLogger(__name__)

from tessy.methods import METHODS  # noqa: E402  (one module per data method, see tessy.methods)


@dataclass
class RunReport:
    output: str
    written: int = 0
    failed: int = 0
    rejected: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    kept_tokens: int = 0
    teacher_tokens: int = 0
    spans: int = 0
    wall_s: float = 0.0
    finish_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def teacher_share(self) -> float:
        return self.teacher_tokens / self.kept_tokens if self.kept_tokens else 0.0


def load_party(role: str, config: ModelConfig) -> Party:
    """Load one side: backend, chat format and boundary predictor."""
    from tessy.formats import get_format
    from tessy.predictors import load_predictor

    if config.backend not in ("hf", "openai"):
        raise ValueError(f"{role}.backend: unknown backend {config.backend!r}; available: hf, openai")
    if config.backend == "openai":
        from tessy.backends.openai import OpenAIHTTPBackend

        backend = OpenAIHTTPBackend.from_config(role, config)
    else:
        from tessy.backends.hf import HFBackend

        backend = HFBackend(
            config.model,
            device=config.device,
            max_context=config.max_context or None,
            max_batch=config.max_batch,
        )
    chat_format = get_format(config.format, backend.tokenizer)
    predictor = load_predictor(config.predictor) if config.predictor else None
    sampling = SamplingParams(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    return Party(role, backend, chat_format, predictor, k=config.k, sampling=sampling,
                 predictor_name=config.predictor or "none")


def build_engine(config: SynthesizeConfig, parties: dict[str, Party] | None = None) -> Engine:
    parties = parties or {role: load_party(role, getattr(config, role)) for role in ("student", "teacher")}
    limits = Limits(
        max_tokens=config.max_tokens,
        max_answer_tokens=config.max_answer_tokens,
        max_spans=config.max_spans,
    )
    return Engine(parties["student"], parties["teacher"], limits, seed=config.seed)


async def run_method(engine: Engine, method: str, sample_id: str, messages: list[dict[str, str]],
                     config: SynthesizeConfig | None = None) -> SampleResult:
    """Run one sample with the named data method (the registry in `tessy.methods`)."""
    from tessy.methods import MethodOptions
    from tessy.methods import run_method as dispatch

    options = MethodOptions(candidates=config.candidates) if config is not None else MethodOptions()
    return await dispatch(engine, method, sample_id, messages, options)


class _Progress:
    """A tqdm bar with live teacher share, spans/s and kept tokens/s (silent when disabled)."""

    def __init__(self, enabled: bool, total: int | None):
        self.started = time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="sample", desc="synthesize", dynamic_ncols=True)

    def update(self, report: RunReport, advanced: int = 1) -> None:
        if self.bar is None:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(
            teacher=f"{report.teacher_share:.0%}",
            spans_s=f"{report.spans / elapsed:.1f}",
            tok_s=f"{report.kept_tokens / elapsed:.1f}",
            failed=report.failed,
            refresh=False,
        )
        self.bar.update(advanced)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def synthesize_async(config: SynthesizeConfig, engine: Engine | None = None) -> RunReport:
    from tessy.inputs import PromptItem, Reject, count_prompts, read_prompts
    from tessy.records import build_record, validate_record
    from tessy.store import RunOutput, config_fingerprint

    if config.method not in METHODS:
        raise ValueError(f"method: unknown method {config.method!r}; available: {', '.join(METHODS)}")
    if not config.input:
        raise ValueError("input: give a prompts file (JSONL, Parquet) or a dataset folder")
    items = read_prompts(
        config.input,
        prompt_field=config.prompt_field,
        messages_field=config.messages_field,
        id_field=config.id_field,
        system_prompt=config.system_prompt or None,
    )
    shaping = config.data_fields()
    fingerprint = config_fingerprint(shaping, ignore=())
    public = dataclasses.asdict(config)
    for role in ("teacher", "student"):  # a literal API key never reaches run.json
        public[role]["api_key"] = "<redacted>" if public[role].get("api_key") else ""
    output = RunOutput(config.output, fingerprint, public, overwrite=config.overwrite, validate=validate_record)
    report = RunReport(output=config.output)
    started = time.perf_counter()
    try:
        engine = engine or build_engine(config)
        total = count_prompts(config.input)
        if config.limit:
            total = min(total, config.limit)
        progress = _Progress(config.progress, total)
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, config.concurrency))

        async def produce() -> None:
            seen = 0
            for item in items:
                if config.limit and seen >= config.limit:
                    break
                seen += 1
                if isinstance(item, Reject):
                    output.write_reject(item.line, item.reason, item.id)
                    report.rejected += 1
                    progress.update(report)
                    continue
                assert isinstance(item, PromptItem)
                if output.is_done(item.id):
                    report.skipped_done += 1
                    progress.update(report)
                    continue
                if output.failed_attempts(item.id) >= config.max_attempts:
                    report.skipped_failed += 1
                    progress.update(report)
                    continue
                try:
                    engine.prompt_ids(item.messages)
                except Exception as exc:  # too long, or a template that refuses the messages
                    output.write_reject(item.line, f"line {item.line}: {exc}", item.id)
                    report.rejected += 1
                    progress.update(report)
                    continue
                await queue.put(item)
            for _ in range(config.concurrency):
                await queue.put(None)

        async def work() -> None:
            while (item := await queue.get()) is not None:
                try:
                    result = await run_method(engine, config.method, item.id, item.messages, config)
                    record = build_record(result, engine, config.method, fingerprint)
                    # Validated (a bad record is a failure) and fsynced off the event loop.
                    written = await asyncio.to_thread(output.write_record, record)
                except Exception as exc:  # one bad sample must not stop the run
                    from tessy.backends.base import ServersUnavailable

                    if isinstance(exc, ServersUnavailable):
                        # Every server of a role is down past its wait: not this sample's fault. No
                        # failure is written (no attempt spent); the run stops with the message.
                        raise
                    attempt = output.failed_attempts(item.id) + 1
                    reason = f"{type(exc).__name__}: {exc}"
                    log.debug("sample %s failed:\n%s", item.id, traceback.format_exc())
                    output.write_failure(item.id, reason, attempt)
                    report.failed += 1
                    progress.update(report)
                    continue
                if written:
                    report.written += 1
                    report.kept_tokens += record["totals"]["tokens_student"]
                    report.teacher_tokens += record["totals"]["teacher_tokens_student"]
                    report.spans += record["totals"]["spans"]
                    reason = record["finish_reason"]
                    report.finish_reasons[reason] = report.finish_reasons.get(reason, 0) + 1
                progress.update(report)

        try:
            await asyncio.gather(produce(), *(work() for _ in range(config.concurrency)))
        finally:
            progress.close()
    finally:
        output.close()
    report.wall_s = time.perf_counter() - started
    return report


def synthesize(config: SynthesizeConfig, engine: Engine | None = None) -> RunReport:
    return asyncio.run(synthesize_async(config, engine))
