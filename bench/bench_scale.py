"""Benchmark: throughput at scale. 10,000 prompts through `tessy synthesize` against loopback fake
servers, with the client's memory measured against the number of prompts and records.

The servers are the fake vLLM-shaped server (tests/fake_openai_server.py), one per role, each in
its own process and answering at once (as in bench_http.py), so all the work and memory measured
is the client's: `runner.synthesize` with backend "openai" for both roles (SmolLM2 student and
Gemma teacher tokenizers, lexicon predictors), 1,024 samples in flight by default.

1. memory: one run per size (1,000, 3,000 and 10,000 prompts by default), each in a fresh process.
   A thread samples the process's anonymous RSS (RssAnon: the heap, which without swap only grows
   or shrinks with what the process holds; file-backed pages of the loaded libraries come and go
   with the machine's memory pressure) every 0.2 s against records written (counted from the newly
   appended bytes of records.jsonl). Reported: the peak anonymous RSS of the run, that less the
   value with the engine built just before the run, MB per 1,000 prompts against the smallest
   size, and the slope of anonymous RSS over records past the first quarter of the run (the pool
   is full by then): the growth per 1,000 records at steady state. Also kept: the kernel's peak
   total RSS (VmHWM) of the run, reset at its start through /proc/self/clear_refs.
2. throughput: engine steps per second (steps summed from the records) over the largest run, with
   `--concurrency` (1,024) samples in flight, and the client's CPU seconds per 1,000 steps.
3. exactly once: every run checks that each prompt's id is in records.jsonl exactly once.

Samples are kept short (`--stop-at` 60: the fake model ends its answer once a context is that many
tokens; about 17 requests, 5 spans and 30 kept tokens a sample, 73% of them the teacher's) so the
three runs take a few minutes on 2 cores. `--tracemalloc` adds, to the
largest run, the 10 source lines whose live allocations grew most between a quarter of the run and
its end, after the run (samples in flight are freed by then) (slow: for finding a leak, not for figures).

Run on purpose (not a test): `nice -n 10 python bench/bench_scale.py [--sizes 1000,3000,10000]`.
Prints a table and writes bench/results/scale.json. Quote figures with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_http import fake_servers, http_config, server_specs, write_prompts  # noqa: E402

def rss_mb() -> tuple[float, float]:
    """This process's resident set now, in MB: (total, anonymous) (from /proc; Linux)."""
    total = anon = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                total = int(line.split()[1]) / 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) / 1024
    return total, anon


def reset_peak_rss() -> bool:
    """Start the kernel's peak-RSS count (VmHWM) afresh from now; False where it cannot (then the
    peak includes start-up: imports and tokenizers)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the last `reset_peak_rss` (VmHWM), else since start (getrusage)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Sampler(threading.Thread):
    """RSS against records written, every `every_s` seconds, until stopped."""

    def __init__(self, records: Path, every_s: float = 0.2, trace_at: int = 0):
        super().__init__(name="rss-sampler", daemon=True)
        self.records, self.every_s, self.trace_at = records, every_s, trace_at
        self.samples: list[tuple[float, int, float, float]] = []  # (s, records written, RSS MB, anon MB)
        self.count, self.offset = 0, 0
        self.snapshot = None  # tracemalloc snapshot once `trace_at` records are written
        self.started = time.perf_counter()
        self.halt = threading.Event()

    def sample(self) -> None:
        if self.records.exists():
            with open(self.records, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            self.offset += len(data)
            self.count += data.count(b"\n")
        self.samples.append((time.perf_counter() - self.started, self.count, *rss_mb()))
        if self.trace_at and self.snapshot is None and self.count >= self.trace_at:
            import gc
            import tracemalloc

            gc.collect()  # cycles that are garbage already are not growth
            self.snapshot = tracemalloc.take_snapshot()

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            self.sample()

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.sample()


def slope_mb_per_1000(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of RSS (MB) over records, per 1,000 records."""
    if len(points) < 3 or points[-1][0] == points[0][0]:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return 1000 * sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def run_scale(urls: list[str], folder: Path, prompts: int, concurrency: int, *, max_tokens: int = 200,
              trace: bool = False) -> dict:
    """Synthesize `prompts` prompts with `concurrency` in flight against the fake servers at `urls`
    (student, teacher; `server_specs` of bench_http.py) into `folder`/run; return memory, speed and exactly-once figures."""
    from tessy.records import read_records
    from tessy.runner import build_engine, synthesize

    write_prompts(folder / "prompts.jsonl", prompts)
    config = http_config(folder, urls, prompts, concurrency)
    config.max_tokens = max_tokens
    engine = build_engine(config)
    if trace:
        import tracemalloc

        tracemalloc.start()
    before, before_anon = rss_mb()
    peak_is_run_only = reset_peak_rss()
    sampler = Sampler(folder / "run" / "records.jsonl", trace_at=prompts // 4 if trace else 0)
    sampler.start()
    started, cpu = time.perf_counter(), time.process_time()
    try:
        report = synthesize(config, engine=engine)
    finally:
        sampler.stop()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = max(peak_rss_mb(), max(mb for _, _, mb, _ in sampler.samples))  # VmHWM lags a little
    peak_anon = max(anon for *_, anon in sampler.samples)
    growth = None
    if trace and sampler.snapshot is not None:
        import gc
        import tracemalloc

        gc.collect()
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sorted((stat for stat in end.compare_to(sampler.snapshot, "lineno") if stat.size_diff > 0),
                       key=lambda stat: -stat.size_diff)
        growth = [f"{stat.size_diff / 2**10:+.1f} KB {stat.count_diff:+d} blocks {stat.traceback}"
                  for stat in grown[:10]]
    # Read back after the peak is taken; ids in a set, steps summed, no list of records.
    ids: set[str] = set()
    lines = steps = 0
    for record in read_records(folder / "run" / "records.jsonl"):
        lines += 1
        ids.add(record["id"])
        steps += record["totals"]["steps"]
    expected = {f"p{i}" for i in range(prompts)}
    steady = [(n, anon) for _, n, _, anon in sampler.samples if n >= prompts // 4]
    return {
        "prompts": prompts, "samples_in_flight": concurrency, "written": report.written, "failed": report.failed,
        "records": lines, "duplicates": lines - len(ids), "missing": len(expected - ids),
        "exactly_once": ids == expected and lines == len(ids),
        "steps": steps, "wall_s": wall, "steps_per_s": steps / wall, "samples_per_s": lines / wall,
        "client_cpu_s_per_1000_steps": 1000 * cpu / steps if steps else None,
        "anon_before_mb": before_anon, "peak_anon_mb": peak_anon, "peak_anon_over_before_mb": peak_anon - before_anon,
        "anon_end_mb": sampler.samples[-1][3],
        "rss_before_mb": before, "peak_rss_mb": peak, "peak_rss_is_run_only": peak_is_run_only,
        "rss_end_mb": sampler.samples[-1][2],
        "steady_mb_per_1000_records": slope_mb_per_1000(steady),
        "rss_samples": [(round(t, 2), n, round(mb, 1), round(anon, 1)) for t, n, mb, anon in sampler.samples],
        "tracemalloc_growth": growth,
    }


def run_child(urls: list[str], prompts: int, args: argparse.Namespace, trace: bool) -> dict:
    """`run_scale` in a fresh process, so its memory is its own."""
    command = [sys.executable, __file__, "--one", str(prompts), "--urls", ",".join(urls),
               "--concurrency", str(args.concurrency), "--stop-at", str(args.stop_at),
               "--max-tokens", str(args.max_tokens)] + (["--tracemalloc"] if trace else [])
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000,10000", help="prompt counts, one run each")
    parser.add_argument("--concurrency", type=int, default=1024, help="samples in flight")
    parser.add_argument("--stop-at", type=int, default=60, help="context length at which the fake model stops")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations in the largest run (slow)")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)  # the child: one run, JSON out
    parser.add_argument("--urls", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_scale(args.urls.split(","), Path(tmp), args.one, args.concurrency,
                               max_tokens=args.max_tokens, trace=args.tracemalloc)
        print(json.dumps(result))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()
    with fake_servers(*server_specs(stop_at=args.stop_at)) as urls:
        runs = [run_child(urls, n, args, args.tracemalloc and n == max(sizes)) for n in sizes]
    load_after = os.getloadavg()
    base = runs[0]
    for run in runs:
        run["mb_per_1000_prompts_vs_smallest"] = (
            1000 * (run["peak_anon_mb"] - base["peak_anon_mb"]) / (run["prompts"] - base["prompts"])
            if run["prompts"] != base["prompts"] else None)
    print(f"{'prompts':>8} {'in flight':>9} {'written':>8} {'once':>5} {'peak RSS MB':>11} {'peak anon MB':>12} {'over start':>11} "
          f"{'MB/1k prompts':>14} {'steady MB/1k rec':>17} {'steps/s':>8} {'CPU s/1k steps':>15}")
    for run in runs:
        per = run["mb_per_1000_prompts_vs_smallest"]
        steady = run["steady_mb_per_1000_records"]
        print(f"{run['prompts']:>8} {run['samples_in_flight']:>9} {run['written']:>8} {str(run['exactly_once']):>5} "
              f"{run['peak_rss_mb']:>11.1f} {run['peak_anon_mb']:>12.1f} {run['peak_anon_over_before_mb']:>11.1f} "
              f"{'-' if per is None else f'{per:+.2f}':>14} {'-' if steady is None else f'{steady:+.2f}':>17} "
              f"{run['steps_per_s']:>8.0f} {run['client_cpu_s_per_1000_steps']:>15.2f}")
    for run in runs:
        if run["tracemalloc_growth"]:
            print(f"allocation growth, {run['prompts']} prompts, from a quarter of the run to its end:")
            print("\n".join("  " + line for line in run["tracemalloc_growth"]))
    print(f"load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    out = ROOT / "bench" / "results" / "scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "cpus": os.cpu_count(), "load_before": load_before,
                               "load_after": load_after, "stop_at": args.stop_at, "max_tokens": args.max_tokens},
                              indent=2) + "\n")
    print(f"wrote {out}")
    if not all(run["exactly_once"] and not run["failed"] for run in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
