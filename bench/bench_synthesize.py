"""Benchmark: TESSY vs teacher-only vs student-only generation on the same backend and prompts.

Each method runs in its own process (so peak memory is its own) on the same HumanEval prompts
with the CPU demo pair, and reports:

- kept tokens/s: response tokens (student tokenizer) written to records per second of wall time,
  and per CPU second of the process (steadier when other jobs share the machine);
- generated per kept: tokens the models generated per token kept (TESSY's roll-back cost);
- requests per kept: generate requests (steps) per token kept;
- prefill per kept: prompt tokens the models processed (KV-cache misses) per token kept;
- predictor share: time spent in boundary predictors / wall time;
- peak RSS of the process.

Run on purpose (not a test): `python bench/bench_synthesize.py [--prompts 8 --max-tokens 128]
[--predictor runs/pred/predictor]` (a token classifier instead of the lexicon).
Prints a table and writes bench/results/synthesize.json. Quote ratios from one run; absolute
times on shared machines are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("tessy", "teacher-only", "student-only")


def run_one(method: str, prompts: int, max_tokens: int, concurrency: int, predictor: str = "lexicon") -> dict:
    from tessy.cli.demo import write_prompts
    from tessy.config import ModelConfig, SynthesizeConfig
    from tessy.models import STUDENT_DEMO, TEACHER_DEMO
    from tessy.records import read_records
    from tessy.runner import build_engine, synthesize

    with tempfile.TemporaryDirectory() as folder:
        prompts_path = write_prompts(Path(folder) / "prompts.jsonl", prompts)
        config = SynthesizeConfig(
            input=str(prompts_path), output=f"{folder}/run", method=method,
            max_tokens=max_tokens, concurrency=concurrency, progress=False,
            student=ModelConfig(model=STUDENT_DEMO, predictor=predictor),
            teacher=ModelConfig(model=TEACHER_DEMO, predictor=predictor),
        )
        engine = build_engine(config)  # loading is not part of the measured time
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        report = synthesize(config, engine=engine)
        wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        records = list(read_records(f"{folder}/run/records.jsonl"))
    prefill = sum(getattr(getattr(party.backend, "stats", None), "prefill_tokens", 0) for party in engine.parties.values())
    kept = sum(r["totals"]["tokens_student"] for r in records)
    steps = sum(r["totals"]["steps"] for r in records)
    generated = sum(r["totals"]["generated"] for r in records)
    predict = sum(r["timings"]["predict_s"] for r in records)
    return {
        "method": method,
        "samples": len(records),
        "failed": report.failed,
        "wall_s": wall,
        "kept_tokens": kept,
        "generated_tokens": generated,
        "kept_tokens_per_s": kept / wall if wall else 0.0,
        "cpu_s": cpu,
        "kept_tokens_per_cpu_s": kept / cpu if cpu else 0.0,
        "generated_per_kept": generated / kept if kept else None,
        "requests_per_kept": steps / kept if kept else None,
        "prefill_per_kept": prefill / kept if kept else None,
        "predictor_share": predict / wall if wall else 0.0,
        "teacher_share": (sum(r["totals"]["teacher_tokens_student"] for r in records) / kept) if kept else 0.0,
        "k_used": getattr(report, "k_used", {}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (steadier than wall time on a shared machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--predictor", default="lexicon", help="lexicon or a token-classifier checkpoint folder")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one method, print JSON
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "synthesize.json"))
    args = parser.parse_args()
    if not args.one:
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    if args.one:
        print(json.dumps(run_one(args.one, args.prompts, args.max_tokens, args.concurrency, args.predictor)))
        return
    rows = []
    for method in args.methods.split(","):
        command = [sys.executable, __file__, "--one", method, "--prompts", str(args.prompts),
                   "--max-tokens", str(args.max_tokens), "--concurrency", str(args.concurrency),
                   "--predictor", args.predictor]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"{method}: done in {rows[-1]['wall_s']:.1f}s", file=sys.stderr)
    base = {row["method"]: row for row in rows}
    header = (f"{'method':<14}{'samples':>8}{'kept tok/s':>12}{'vs teacher':>12}{'tok/cpu-s':>11}{'vs teacher':>12}"
              f"{'gen/kept':>10}{'req/kept':>10}"
              f"{'prefill/kept':>14}{'pred share':>12}{'teacher %':>11}{'peak MB':>9}")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row["kept_tokens_per_s"] / base["teacher-only"]["kept_tokens_per_s"] if "teacher-only" in base and base["teacher-only"]["kept_tokens_per_s"] else float("nan")
        gpk = row["generated_per_kept"] or float("nan")
        teacher_cpu = base.get("teacher-only", {}).get("kept_tokens_per_cpu_s")
        cpu_ratio = row["kept_tokens_per_cpu_s"] / teacher_cpu if teacher_cpu else float("nan")
        print(f"{row['method']:<14}{row['samples']:>8}{row['kept_tokens_per_s']:>12.2f}{ratio:>12.2f}"
              f"{row['kept_tokens_per_cpu_s']:>11.2f}{cpu_ratio:>12.2f}{gpk:>10.2f}"
              f"{row['requests_per_kept'] or float('nan'):>10.3f}{row['prefill_per_kept'] or float('nan'):>14.2f}"
              f"{row['predictor_share']:>12.2%}{row['teacher_share']:>11.1%}{row['peak_rss_mb']:>9.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
