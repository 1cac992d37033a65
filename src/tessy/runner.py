"""From a config to a finished run: load the pair, stream prompts, run samples, write records.

The runner owns the orchestration around the engine and nothing of the loop itself: the start
checks, the pair, and the scheduler (`_schedule`: the queue, the workers, the progress line, the
journal's timer). What happens to one prompt (skip, reject, method, record, failure) is
`tessy.pipeline`, and so is the one owner keeping the store and the journal in step. Promises:

- prompts stream from the input; bad lines and prompts that do not fit a model's context go to
  `rejects.jsonl` with their line number, and the run goes on;
- a fixed pool of asyncio workers (`concurrency`) pulls samples from a queue: there is no
  step-wide barrier, and a finished sample frees its slot for the next prompt at once;
- each finished sample is written whole as one record line; a sample that raises goes to
  `failures.jsonl` with its reason and attempt number; a rerun of the same command skips done
  ids, retries failed ones (up to `max_attempts` in all) and never writes a duplicate;
- live progress shows samples, teacher-token share, spans/s and kept tokens/s;
- method tessy writes each sample's closed spans ahead in `journal.jsonl` (`tessy.journal`): a
  rerun after a crash resumes an unfinished sample from its last closed span, not from scratch;
- with `shard` I/N, only the rows this shard owns (`tessy.shards`: a hash of the id, or of the line
  number for a row without one) are run or rejected; the others are counted as `other_shards`. A
  folder is refused to another shard than the one it was made by (run.json says which).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from tessy.config import ModelConfig, SynthesizeConfig
from tessy.engine import Engine, Limits, LoopObserver, Party, Speedups
from tessy.backends.base import SamplingParams
from tessy.pipeline import Books, Pipeline, RunReport


def load_party(role: str, config: ModelConfig) -> Party:
    """Load one side: backend, chat format and boundary predictor."""
    from tessy.formats import get_format
    from tessy.predictors import DEFAULT_PREDICTOR, load_predictor
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
    options = {} if config.predictor == DEFAULT_PREDICTOR else {"cache_mb": config.predictor_cache_mb}
    predictor = load_predictor(config.predictor, **options) if config.predictor else None
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
    speedups = Speedups(**dataclasses.asdict(config.speed))
    return Engine(parties["student"], parties["teacher"], limits, seed=config.seed, speedups=speedups)


def server_counters(engine: Engine) -> dict[str, dict[str, int]]:
    """Per role served over HTTP: retries, faults and replicas down so far (live counters), and
    the prompt tokens its servers counted, computed, and the answers that said what was cached;
    of those, a sample's later requests and what they computed beyond the new tokens."""
    return {role: counters for role, party in engine.parties.items()
            if (counters := party.backend.server_counters())}


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
            if (served := party.backend.served_model)}


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
    from tessy.inputs import count_prompts, input_options, read_prompts
    from tessy.records import validate_record
    from tessy.secrets import redact_config
    from tessy.shards import owned_rows, parse_shard
    from tessy.journal import Journal
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
    journal = None
    try:
        if config.method == "tessy":  # only the cooperative loop is journaled
            journal = Journal(config.output, fingerprint, output.done_ids, config.journal_sync_s, config.overwrite)
            engine.observer = journal
        if shard:  # the rows this shard owns: one more pass over the input (only when a bar is shown)
            total = owned_rows(read_prompts(config.input, **options), shard, config.limit) if config.progress else None
        elif config.limit:
            total = min(total, config.limit)
        progress = _Progress(config.progress, total, engine)
        pipeline = Pipeline(config, engine, Books(output, journal), fingerprint, report,
                            notify=lambda: progress.update(report), shard=shard)
        await _schedule(config, items, pipeline, journal, progress)
    finally:
        if journal is not None:
            engine.observer = LoopObserver()  # no listener
            journal.close()
        output.close()
    report.wall_s = time.perf_counter() - started
    read_already: set[str] = set()  # a server both roles use is read once
    for party in engine.parties.values():
        await party.backend.read_server_counters(read_already)
    report.server_stats = server_counters(engine)
    report.k_used = engine.k_used()
    return report


async def _schedule(config: SynthesizeConfig, items: Any, pipeline: Pipeline, journal: Any,
                    progress: _Progress) -> None:
    """The scheduler: one producer admits prompts into a bounded queue, `concurrency` workers run
    them, the journal is synced on its timer; when one task fails (every server down) the others
    stop, and the record writes finish, before the output closes."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=max(1, config.concurrency))

    async def produce() -> None:
        seen = 0
        for item in items:
            if config.limit and seen >= config.limit:
                break
            seen += 1
            if (admitted := pipeline.admit(item)) is not None:
                await queue.put(admitted)
        for _ in range(config.concurrency):
            await queue.put(None)

    async def work() -> None:
        while (item := await queue.get()) is not None:
            await pipeline.run(item)

    tasks = [asyncio.create_task(produce()), *(asyncio.create_task(work()) for _ in range(config.concurrency))]
    syncer = asyncio.create_task(journal.keep_synced()) if journal is not None else None
    try:
        await asyncio.gather(*tasks)
    finally:
        if syncer is not None:
            syncer.cancel()
            await asyncio.gather(syncer, return_exceptions=True)
        # No worker may write into a closed folder.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.settle()
        progress.close()


def synthesize(config: SynthesizeConfig, engine: Engine | None = None) -> RunReport:
    return asyncio.run(synthesize_async(config, engine))
