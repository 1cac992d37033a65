"""`synthesize --executor ray`: the shards of one run as Ray tasks, then merged into one folder.

Owns only the fan-out; each task is the ordinary runner (`tessy.runner.synthesize`) for one shard,
so every promise of a run holds per shard: exactly-once records, resume after a crash, rejects
written by the shard that owns them.

- `--ray-shards N` tasks run shard I/N into `OUTPUT.shards/I-of-N` (a folder of its own, kept:
  a rerun of the same command resumes every shard where it stopped), each reserving
  `--ray-num-cpus` CPUs and `--ray-num-gpus` GPUs (Ray sets CUDA_VISIBLE_DEVICES, so the
  in-process hf backend with `device: auto` lands on the task's GPU). `--concurrency` is per task.
- When every task has finished, the shard folders are merged into OUTPUT with
  `tessy.shards.merge_runs` (OUTPUT is replaced whole; it is a view of the shards). A task that
  raises stops the run with its message and merges nothing; its finished samples stay saved.
- OUTPUT is refused when it holds a run that is not such a merge (a one-process run's records
  would be lost), unless `--overwrite`, which also starts every shard afresh.
- The cluster is `--ray-address` (or $RAY_ADDRESS), else a new local one, shut down at the end;
  when the caller has already called `ray.init()`, that connection is used and left open. Every
  node needs tessy installed in the same environment (or a Ray runtime_env that installs it).

`ray` is imported only here, and only when the executor runs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from tessy.config import SynthesizeConfig
from tessy.runner import RunReport

#: RunReport counters summed over the shards.
_SUMMED = ("written", "failed", "rejected", "skipped_done", "skipped_failed", "kept_tokens", "teacher_tokens",
           "spans", "changed")


def shard_folder(output: str, index: int, count: int) -> Path:
    """Where shard `index` of `count` writes: OUTPUT.shards/I-of-N."""
    return Path(f"{output}.shards") / f"{index}-of-{count}"


def shard_configs(config: SynthesizeConfig) -> list[SynthesizeConfig]:
    """One local config per shard: the same data settings, its own shard and output folder."""
    count = config.ray_shards
    return [dataclasses.replace(config, shard=f"{index}/{count}", output=str(shard_folder(config.output, index, count)),
                                executor="local", progress=False)
            for index in range(count)]


def run_shard(config: SynthesizeConfig) -> tuple[RunReport | None, str]:
    """The body of one Ray task: (report, '') or (None, the error in one line)."""
    from tessy.runner import synthesize

    try:
        return synthesize(config), ""
    except Exception as exc:  # sent back as text: the driver names the shard
        return None, f"{type(exc).__name__}: {exc}"


def _check_output(config: SynthesizeConfig) -> None:
    run_file = Path(config.output) / "run.json"
    if config.overwrite or not run_file.exists():
        return
    try:
        merged = "merged_from" in json.loads(run_file.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        merged = False
    if not merged:
        raise RuntimeError(f"output folder {config.output} holds a run that --executor ray did not merge; its "
                           "records would be replaced: use a new output folder, or --overwrite")


def combine(reports: list[RunReport], output: str, wall_s: float) -> RunReport:
    """The shards' reports as one: counters summed (rows left to other shards dropped: each row
    is counted by the shard that owns it), server counters summed per role."""
    total = RunReport(output=output, wall_s=wall_s)
    for report in reports:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(report, name))
        for reason, count in report.finish_reasons.items():
            total.finish_reasons[reason] = total.finish_reasons.get(reason, 0) + count
        for role, counters in report.server_stats.items():
            into = total.server_stats.setdefault(role, {})
            for key, value in counters.items():
                into[key] = into.get(key, 0) + value
    return total


def synthesize_with_ray(config: SynthesizeConfig) -> RunReport:
    """Run `config` as `config.ray_shards` Ray tasks and merge them into `config.output`."""
    import os

    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]' (make install does it)") from None
    from tessy.settings import validate
    from tessy.shards import merge_runs

    validate(config)
    _check_output(config)
    configs = shard_configs(config)
    started = time.perf_counter()
    owns_cluster = not ray.is_initialized()
    if owns_cluster:
        address = config.ray_address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, **({} if address else {"include_dashboard": False}))
    try:
        task = ray.remote(num_cpus=config.ray_num_cpus, num_gpus=config.ray_num_gpus, max_retries=0)(run_shard)
        refs = [task.remote(shard) for shard in configs]
        try:
            results = ray.get(refs)
        except BaseException:  # Ctrl-C: the tasks stop too (a cluster we joined would run them on)
            for ref in refs:
                ray.cancel(ref)
            raise
    finally:
        if owns_cluster:
            ray.shutdown()
    errors = [f"shard {shard.shard} ({shard.output}): {error}" for shard, (_, error) in zip(configs, results) if error]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RuntimeError(f"{errors[0]}{more}; every shard's finished samples are saved: rerun the same command "
                           "to resume")
    merge_runs([shard.output for shard in configs], config.output, overwrite=True)
    return combine([report for report, _ in results], config.output, time.perf_counter() - started)
