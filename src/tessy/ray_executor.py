"""`synthesize --executor ray`: the shards of one run as Ray tasks, then merged into one folder.

Owns only the fan-out; each task is the ordinary runner (`tessy.runner.synthesize`) for one shard,
so every promise of a run holds per shard: exactly-once records, resume after a crash, rejects
written by the shard that owns them.

- `--ray-shards N` tasks run shard I/N into `OUTPUT.shards/I-of-N` (a folder of its own, kept:
  a rerun of the same command resumes every shard where it stopped), each reserving
  `--ray-num-cpus` CPUs and `--ray-num-gpus` GPUs (Ray sets CUDA_VISIBLE_DEVICES, so the
  in-process hf backend with `device: auto` lands on the task's GPU). `--concurrency` is per task.
- Fail fast: the driver waits on the tasks (`ray.wait`, every `POLL_S`); the first shard that
  fails (an error it returns or raises, or a worker that died more often than
  `--ray-max-retries` allows) stops the run at once: the other tasks are cancelled (Ctrl-C, then
  their workers killed after `CANCEL_GRACE_S`), so each shard folder is left as a Ctrl-C'ed or
  killed local run leaves it, resumable, and nothing is merged: OUTPUT is untouched. The error
  names the shard and its folder, in one line. Ctrl-C of the driver stops the tasks the same way.
- A worker or node that dies: Ray starts the task again (`max_retries` = `--ray-max-retries`,
  for system failures only, never for an error); the shard resumes from its folder (exactly-once
  records, the journal mid-trace), so no prompt is written twice. The driver says so in a line.
- Progress: one bar across the shards (total: the input's rows), fed from the shard folders by
  `tessy.ray_progress.ShardWatch`; each task writes `OUTPUT.shards/I-of-N/.worker.json` (its pid,
  node and attempt).
- When every task has finished, the shard folders are merged into OUTPUT with
  `tessy.shards.merge_runs` (OUTPUT is replaced whole; it is a view of the shards).
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
from typing import Any

from tessy.config import SynthesizeConfig
from tessy.runner import RunReport

#: Seconds between the driver's looks at the shards (progress, a task that ended).
POLL_S = 0.5
#: Seconds a cancelled shard has to stop on its own (Ctrl-C) before its worker is killed.
CANCEL_GRACE_S = 5.0

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


def run_shard(config: SynthesizeConfig, run: str = "") -> tuple[RunReport | None, str]:
    """The body of one Ray task: (report, '') or (None, the error in one line). It first writes
    its worker file (`tessy.ray_progress`), so the driver knows its process and attempt."""
    from tessy.ray_progress import write_worker_file
    from tessy.runner import synthesize

    try:
        write_worker_file(config.output, run)
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
    is counted by the shard that owns it), server counters summed per role (but for the servers'
    own counters, which every shard read whole)."""
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
    for counters in total.server_stats.values():
        # Each shard read the servers' own counters, which the shards share: their sum would count
        # every shard's traffic once per shard. The answers' figures stand instead.
        for key in ("server_prompt_tokens", "server_prompt_cached", "server_counted", "server_shared"):
            counters.pop(key, None)
    return total


def _one_line(exc: BaseException) -> str:
    """A Ray error in one line: its kind (the task's own error inside a RayTaskError), and the
    first line of what it says (no traceback)."""
    from ray.exceptions import TaskCancelledError

    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(exc, TaskCancelledError):
        exc = cause
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _stop(ray: Any, refs: list) -> None:
    """Stop the running shards: Ctrl-C first (a run closes its folder as on a terminal's Ctrl-C),
    then, for any still running after `CANCEL_GRACE_S`, the worker is killed (a resume repairs
    what a kill leaves, as after a local kill -9). Ray does not retry a cancelled task."""
    for ref in refs:
        ray.cancel(ref)
    _, running = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S, fetch_local=False)
    for ref in running:
        ray.cancel(ref, force=True)
    if running:
        ray.wait(running, num_returns=len(running), timeout=CANCEL_GRACE_S, fetch_local=False)


def _total(config: SynthesizeConfig) -> int | None:
    from tessy.inputs import count_prompts

    try:
        total = count_prompts(config.input, split=config.split or None)
    except (OSError, ValueError):  # the shards will say what is wrong with the input
        return None
    return min(total, config.limit) if config.limit else total


def synthesize_with_ray(config: SynthesizeConfig) -> RunReport:
    """Run `config` as `config.ray_shards` Ray tasks and merge them into `config.output`; the first
    shard that fails stops the others and the run (see the module docstring)."""
    import os
    import uuid

    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]' (make install does it)") from None
    from ray.exceptions import NodeDiedError, WorkerCrashedError

    from tessy.ray_progress import ShardWatch
    from tessy.settings import validate
    from tessy.shards import merge_runs

    validate(config)
    _check_output(config)
    configs = shard_configs(config)
    started = time.perf_counter()
    run = uuid.uuid4().hex[:12]
    watch = ShardWatch([shard.output for shard in configs], [shard.shard for shard in configs], _total(config),
                       run, True if config.progress else False, config.ray_max_retries + 1)
    owns_cluster = not ray.is_initialized()
    if owns_cluster:
        address = config.ray_address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, **({} if address else {"include_dashboard": False}))
    reports: dict[int, RunReport] = {}
    try:
        # max_retries: Ray starts a task again when its worker or node dies (never for an error the
        # task returns or raises); the shard's exactly-once resume makes that safe.
        task = ray.remote(num_cpus=config.ray_num_cpus, num_gpus=config.ray_num_gpus,
                          max_retries=config.ray_max_retries, retry_exceptions=False)(run_shard)
        index_of = {task.remote(shard, run): index for index, shard in enumerate(configs)}
        pending = list(index_of)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S, fetch_local=False)
                for ref in ready:
                    index = index_of[ref]
                    try:
                        report, error = ray.get(ref)
                    except (WorkerCrashedError, NodeDiedError) as exc:
                        report, error = None, (f"its worker died and --ray-max-retries {config.ray_max_retries} "
                                               f"allows no more attempts ({_one_line(exc)})")
                    except Exception as exc:  # raised past run_shard, out of memory, ...
                        report, error = None, _one_line(exc)
                    watch.shard_ended(index)
                    if error:
                        raise _ShardFailed(configs[index], error, bool(pending))
                    reports[index] = report
                watch.poll()
        except BaseException:  # a failed shard, or Ctrl-C: the other tasks stop (a joined cluster would run them on)
            if pending:
                _stop(ray, pending)
            raise
        finally:
            watch.close()
    except _ShardFailed as failed:
        raise RuntimeError(str(failed)) from None
    finally:
        if owns_cluster:
            ray.shutdown()
    merge_runs([shard.output for shard in configs], config.output, overwrite=True)
    return combine([reports[index] for index in range(len(configs))], config.output, time.perf_counter() - started)


class _ShardFailed(Exception):
    def __init__(self, shard: SynthesizeConfig, error: str, stopped_others: bool):
        others = "the other shards were stopped; " if stopped_others else ""
        super().__init__(f"shard {shard.shard} ({shard.output}): {error}; {others}every shard's finished samples "
                         "are saved and nothing was merged: rerun the same command to resume")
