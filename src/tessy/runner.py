"""From a config to a finished run: load the pair, stream prompts, run samples, write records.

The runner owns the orchestration around the engine and nothing of the loop itself:

- prompts stream from the input; bad lines and prompts that do not fit a model's context go to
  `rejects.jsonl` with their line number, and the run goes on;
- a fixed pool of asyncio workers (`concurrency`) pulls samples from a queue: there is no
  step-wide barrier, and a finished sample frees its slot for the next prompt at once;
- each finished sample is written whole as one record line; a sample that raises goes to
  `failures.jsonl` with its reason and attempt number; a rerun of the same command skips done
  ids, retries failed ones (up to `max_attempts` in all) and never writes a duplicate;
- live progress shows samples, teacher-token share, spans/s and kept tokens/s;
- with `shard` I/N, only the rows this shard owns (`tessy.shards`: a hash of the id, or of the line
  number for a row without one) are run or rejected; the others are counted as `other_shards`. A
  folder is refused to another shard than the one it was made by (run.json says which).
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
    changed: int = 0  # ids whose record was written for another prompt (not redone)
    other_shards: int = 0  # input rows left to the other shards (with --shard)
    shard: str = ""
    server_stats: dict[str, Any] = field(default_factory=dict)  # role -> retries, faults, replicas down
    k_used: dict[str, float] = field(default_factory=dict)  # role -> mean tokens asked per cooperative request

    @property
    def teacher_share(self) -> float:
        return self.teacher_tokens / self.kept_tokens if self.kept_tokens else 0.0


def load_party(role: str, config: ModelConfig) -> Party:
    """Load one side: backend, chat format and boundary predictor."""
    from tessy.formats import get_format
    from tessy.predictors import load_predictor
    from tessy.voices import load_voice

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
    return Party(role, backend, chat_format, predictor, k=config.k, adaptive_k=config.adaptive_k, sampling=sampling,
                 predictor_name=config.predictor or "none", preamble=load_voice(config.voice))


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


def server_counters(engine: Engine) -> dict[str, dict[str, int]]:
    """Per role served over HTTP: retries, faults and replicas down so far (live counters)."""
    counters = {}
    for role, party in engine.parties.items():
        stats = getattr(party.backend, "stats", None)
        if hasattr(stats, "faults_total"):  # only the HTTP backend counts faults; in-process stats differ
            counters[role] = {"retries": stats.retries, "faults": stats.faults_total, "down": stats.replicas_down}
    return counters


class _Progress:
    """A tqdm bar with live teacher share, spans/s, kept tokens/s and server faults (silent when disabled)."""

    def __init__(self, enabled: bool, total: int | None, engine: Engine):
        self.started = time.perf_counter()
        self.engine = engine
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="sample", desc="synthesize", dynamic_ncols=True)

    def update(self, report: RunReport, advanced: int = 1) -> None:
        if self.bar is None:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        servers = {}
        for counters in server_counters(self.engine).values():
            for key, value in counters.items():
                servers[key] = servers.get(key, 0) + value
        self.bar.set_postfix(
            teacher=f"{report.teacher_share:.0%}",
            spans_s=f"{report.spans / elapsed:.1f}",
            tok_s=f"{report.kept_tokens / elapsed:.1f}",
            failed=report.failed,
            **servers,
            refresh=False,
        )
        self.bar.update(advanced)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def served_models(engine: Engine) -> dict[str, str]:
    """The model id each server reports, per role (empty for in-process models)."""
    return {role: served for role, party in engine.parties.items()
            if (served := getattr(party.backend, "served_model", ""))}


def check_served_models(output_folder: str, served: dict[str, str], overwrite: bool) -> None:
    """Refuse to resume a folder whose records came from other served models (unless overwriting)."""
    import json
    from pathlib import Path

    run_file = Path(output_folder) / "run.json"
    if overwrite or not run_file.exists():
        return
    try:
        before = json.loads(run_file.read_text(encoding="utf-8"))["config"].get("served_models") or {}
    except (ValueError, AttributeError, KeyError, TypeError, OSError):
        return  # the store names an unreadable run.json
    changed = [f"{role}: {before[role]!r} before, {served.get(role)!r} now" for role in before
               if before[role] != served.get(role)]
    if changed:
        raise RuntimeError(f"output folder {output_folder} holds records of other served models ({'; '.join(changed)}); "
                           "use a new output folder, or --overwrite to start it afresh")


def check_shard(output_folder: str, shard: str, overwrite: bool) -> None:
    """Refuse to write one shard's prompts into a folder made by another shard (unless overwriting)."""
    import json
    from pathlib import Path

    run_file = Path(output_folder) / "run.json"
    if overwrite or not run_file.exists():
        return
    try:
        before = json.loads(run_file.read_text(encoding="utf-8"))["config"].get("shard") or ""
    except (ValueError, AttributeError, KeyError, TypeError, OSError):
        return  # the store names an unreadable run.json
    if before != shard:
        def words(spec: str) -> str:
            return f"shard {spec}" if spec else "every prompt (no shard)"

        raise RuntimeError(f"output folder {output_folder} holds {words(before)}, this run is {words(shard)}; "
                           "give each shard its own --output, or --overwrite to start it afresh")


async def synthesize_async(config: SynthesizeConfig, engine: Engine | None = None) -> RunReport:
    """Run `config`. Nothing is written before the start checks pass: the config, the input, the
    models (and every server's readiness)."""
    from tessy.settings import validate
    from tessy.inputs import PromptItem, Reject, count_prompts, input_options, read_prompts
    from tessy.records import build_record, prompt_sha256, validate_record
    from tessy.secrets import redact_config
    from tessy.shards import parse_shard, row_key
    from tessy.store import RunOutput, config_fingerprint

    validate(config)
    if not config.input:
        raise ValueError("input: give a prompts file (JSONL, Parquet) or a dataset folder")
    shard = parse_shard(config.shard) if config.shard else None
    options = input_options(config)
    items = read_prompts(config.input, **options)
    total = count_prompts(config.input, split=options["split"])
    engine = engine or build_engine(config)
    served = served_models(engine)
    check_served_models(config.output, served, config.overwrite)
    check_shard(config.output, config.shard, config.overwrite)
    shaping = config.data_fields()
    if served:  # the model a server really serves shapes the data
        shaping["served_models"] = served
    fingerprint = config_fingerprint(shaping)
    public = {**redact_config(dataclasses.asdict(config)), "served_models": served}
    output = RunOutput(config.output, fingerprint, public, overwrite=config.overwrite, validate=validate_record)
    report = RunReport(output=config.output, shard=config.shard)
    started = time.perf_counter()
    try:
        if config.limit:
            total = min(total, config.limit)
        progress = _Progress(config.progress, None if shard else total, engine)  # a shard's size is unknown
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, config.concurrency))

        async def produce() -> None:
            seen = 0
            for item in items:
                if config.limit and seen >= config.limit:
                    break
                seen += 1
                if shard is not None and not shard.owns(row_key(item.id, item.line)):
                    report.other_shards += 1
                    continue
                if isinstance(item, Reject):
                    output.write_reject(item.line, item.reason, item.id)
                    report.rejected += 1
                    progress.update(report)
                    continue
                assert isinstance(item, PromptItem)
                if output.is_done(item.id):
                    recorded = output.done_prompt_hash(item.id)
                    if recorded is not None and recorded != prompt_sha256(item.messages):
                        # Same id, another prompt: the record does not answer this prompt.
                        log.warning("line %d: id %r is done but its prompt changed since", item.line, item.id)
                        report.changed += 1
                    else:
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

        writes: set[asyncio.Future] = set()  # record writes running in threads

        async def work() -> None:
            while (item := await queue.get()) is not None:
                try:
                    result = await run_method(engine, config.method, item.id, item.messages, config)
                    record = build_record(result, engine, config.method, fingerprint)
                    # Validated (a bad record is a failure) and fsynced off the event loop.
                    write = asyncio.ensure_future(asyncio.to_thread(output.write_record, record))
                    writes.add(write)
                    write.add_done_callback(writes.discard)
                    written = await asyncio.shield(write)  # a cancelled worker leaves its write to finish
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

        tasks = [asyncio.create_task(produce()), *(asyncio.create_task(work()) for _ in range(config.concurrency))]
        try:
            await asyncio.gather(*tasks)
        finally:
            # When one task fails (every server down), the others stop before the output closes:
            # no worker may write into a closed folder.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*writes, return_exceptions=True)
            progress.close()
    finally:
        output.close()
    report.wall_s = time.perf_counter() - started
    report.server_stats = server_counters(engine)
    report.k_used = engine.k_used()
    return report


def synthesize(config: SynthesizeConfig, engine: Engine | None = None) -> RunReport:
    return asyncio.run(synthesize_async(config, engine))
