"""Benchmark: the HTTP client's own overhead, and a run through injected server faults.

The servers are the fake vLLM-shaped server (tests/fake_openai_server.py), each in its own
process and answering at once, so every second measured is the client's (and the engine's).

1. clients: 256 samples in flight against one server, each a loop of `generate` calls whose
   context grows by 20 tokens a step as TESSY's does; steps (requests answered) per second, for
   the hand-written HTTP/1.1 client (`backends/http1.py`), httpx as the backend uses it for https
   (one-connection clients in a free list) and httpx as one pooled client. The project keeps
   `http1` only while it is at least 2x faster than the better httpx way.
2. engine: TESSY end to end over HTTP (`runner.synthesize`, backend "openai" for both roles,
   SmolLM2 student and Gemma teacher tokenizers, lexicon predictors), 256 samples in flight;
   engine steps per second, from the records.
3. faults: 200 prompts, both servers failing 20% of completion requests in mixed ways (429 with
   Retry-After, 500, dropped connection, malformed JSON, timeout); then a rerun of the same
   command. Checks that every prompt ends up in records.jsonl or failures.jsonl and none twice.

Run on purpose (not a test): `python bench/bench_http.py [--quick] [--clients-only]`. Prints a table and writes
bench/results/http.json. The two processes share the machine's cores: quote the figures with
the machine they came from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRIPT = ("Okay, let me see. The sum of 3 and 4 is 7, because 3 + 4 = 7. Wait, so we also need "
          "to check 7 - 4 = 3. Hmm, so the answer is 7. ")


@contextmanager
def fake_servers(*specs: dict):
    """Start one fake server process per spec; yield their URLs; kill them at the end."""
    procs = []
    try:
        urls = []
        for spec in specs:
            args = [sys.executable, "-m", "tests.fake_openai_server"]
            for key, value in spec.items():
                args += [f"--{key.replace('_', '-')}", str(value)]
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{int(proc.stdout.readline())}")
        yield urls
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


CLIENTS = ("http1", "httpx", "httpx-pool")


def bench_client(samples: int, steps: int, client: str = "http1") -> dict:
    """`client`: "http1" (the backend's client for plain http), "httpx" (what it uses for https and
    proxies: a free list of one-connection `httpx.AsyncClient`s) or "httpx-pool" (one
    `httpx.AsyncClient` per replica whose pool holds `samples` connections, httpx's usual use)."""
    from tessy.backends.base import SamplingParams
    from tessy.backends.openai import OpenAIHTTPBackend, replicas as replicas_module
    from tessy.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    with fake_servers({"model": "student"}) as (url,):
        backend = OpenAIHTTPBackend("smollm2-135m-instruct", url, role="student", tokenizer=tokenizer,
                                    max_in_flight=samples)
        direct = replicas_module.direct_http
        if client != "http1":  # as for an https server
            replicas_module.direct_http = lambda u: False
        if client == "httpx-pool":
            import httpx

            pool = httpx.AsyncClient(base_url=url, headers=backend._headers,
                                     limits=httpx.Limits(max_connections=samples, max_keepalive_connections=samples),
                                     timeout=httpx.Timeout(600.0))
            backend.replicas.take = lambda replica: pool
            backend.replicas.give_back = lambda replica, connection: None
            backend.replicas.discard = lambda connection: None  # httpcore closes a broken connection itself

        async def sample(i: int) -> None:
            context = list(range(300))
            for _ in range(steps):
                generation = await backend.generate(f"s{i}/student", context, 20, SamplingParams(seed=i),
                                                    frozenset({2}))
                context = context + generation.token_ids
            backend.release(f"s{i}/student")

        async def run() -> tuple[float, float]:
            await asyncio.gather(*(sample(i) for i in range(samples)))  # open the connections
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(sample(i) for i in range(samples)))
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            await (pool.aclose() if client == "httpx-pool" else backend.aclose())
            return elapsed, cpu

        try:
            wall, cpu = asyncio.run(run())
        finally:
            replicas_module.direct_http = direct
    # CPU time of this process per step: the client's own cost, less sensitive than wall time to
    # what else runs on the machine (the server's process is not counted).
    return {"client": client, "samples_in_flight": samples, "steps": samples * steps, "wall_s": wall,
            "steps_per_s": samples * steps / wall, "client_cpu_ms_per_step": 1000 * cpu / (samples * steps)}


def write_prompts(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "prompt": f"What is {i} plus {i + 3}? Explain."}) + "\n")


def server_specs(fault_rate: float = 0.0, stop_at: int = 260) -> tuple[dict, dict]:
    from tessy.models import load_tokenizer

    specs = []
    for name, alias in (("student", "smollm2-135m-instruct"), ("teacher", "gemma3-270m")):
        tokenizer = load_tokenizer(alias)
        ids = tokenizer.encode(SCRIPT, add_special_tokens=False)
        spec = {"model": name, "script": ",".join(map(str, ids)), "stop_id": tokenizer.eos_token_id,
                "stop_at": stop_at, "seed": len(specs)}
        if fault_rate:
            spec.update(fault_rate=fault_rate, fault_kinds="429,500,drop,malformed,timeout", timeout_sleep_s=1.5)
        specs.append(spec)
    return specs[0], specs[1]


def http_config(folder: Path, urls: list[str], prompts: int, concurrency: int, timeout_s: float = 600.0):
    from tessy.config import ModelConfig, SynthesizeConfig

    roles = {}
    for role, alias, url in (("student", "smollm2-135m-instruct", urls[0]), ("teacher", "gemma3-270m", urls[1])):
        roles[role] = ModelConfig(backend="openai", model=alias, url=url, timeout_s=timeout_s,
                                  max_in_flight=concurrency)
    return SynthesizeConfig(input=str(folder / "prompts.jsonl"), output=str(folder / "run"), max_tokens=400,
                            max_answer_tokens=32, concurrency=concurrency, progress=False, limit=prompts, **roles)


def bench_engine(prompts: int, concurrency: int) -> dict:
    from tessy.records import read_records
    from tessy.runner import build_engine, synthesize

    with tempfile.TemporaryDirectory() as tmp, fake_servers(*server_specs()) as urls:
        folder = Path(tmp)
        write_prompts(folder / "prompts.jsonl", prompts)
        config = http_config(folder, urls, prompts, concurrency)
        engine = build_engine(config)
        started = time.perf_counter()
        report = synthesize(config, engine=engine)
        wall = time.perf_counter() - started
        records = list(read_records(folder / "run" / "records.jsonl"))
    steps = sum(r["totals"]["steps"] for r in records)
    return {"samples": len(records), "failed": report.failed, "samples_in_flight": concurrency, "steps": steps,
            "wall_s": wall, "steps_per_s": steps / wall,
            "teacher_share": report.teacher_share, "spans": report.spans}


def bench_faults(prompts: int, concurrency: int) -> dict:
    from tessy.records import read_records
    from tessy.runner import build_engine, synthesize

    with tempfile.TemporaryDirectory() as tmp, fake_servers(*server_specs(fault_rate=0.2)) as urls:
        folder = Path(tmp)
        write_prompts(folder / "prompts.jsonl", prompts)
        config = http_config(folder, urls, prompts, concurrency, timeout_s=1.0)
        runs = []
        for attempt in (1, 2):  # the rerun retries what failed, skips what is done
            engine = build_engine(config)
            started = time.perf_counter()
            report = synthesize(config, engine=engine)
            stats = {role: party.backend.stats for role, party in engine.parties.items()}
            runs.append({"run": attempt, "written": report.written, "failed": report.failed,
                         "skipped_done": report.skipped_done, "wall_s": time.perf_counter() - started,
                         "requests": sum(s.requests for s in stats.values()),
                         "retries": sum(s.retries for s in stats.values()),
                         "breaker_trips": sum(s.breaker_trips for s in stats.values()),
                         "faults_seen": {k: sum(s.faults.get(k, 0) for s in stats.values())
                                         for k in sorted({k for s in stats.values() for k in s.faults})}})
        ids = [r["id"] for r in read_records(folder / "run" / "records.jsonl")]
        failures = [json.loads(line) for line in open(folder / "run" / "failures.jsonl")] \
            if (folder / "run" / "failures.jsonl").exists() else []
    failed_ids = {f["id"] for f in failures} - set(ids)
    expected = {f"p{i}" for i in range(prompts)}
    return {"prompts": prompts, "fault_rate": 0.2, "runs": runs, "records": len(ids), "unique_records": len(set(ids)),
            "failed_only": len(failed_ids), "missing": len(expected - set(ids) - failed_ids),
            "duplicates": len(ids) - len(set(ids)),
            "ok": set(ids) | failed_ids == expected and len(ids) == len(set(ids))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256, help="samples in flight")
    parser.add_argument("--steps", type=int, default=20, help="steps per sample in the client bench")
    parser.add_argument("--engine-prompts", type=int, default=512)
    parser.add_argument("--fault-prompts", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the script)")
    parser.add_argument("--clients-only", action="store_true",
                        help="only compare the clients (http1, httpx, httpx-pool); skip the engine and fault runs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.engine_prompts, args.fault_prompts = 5, 64, 40
    os.chdir(ROOT)
    clients = {name: bench_client(args.samples, args.steps, name) for name in CLIENTS}
    best_httpx = max(clients["httpx"]["steps_per_s"], clients["httpx-pool"]["steps_per_s"])
    print(f"{'measure':<44}{'value':>12}")
    for name, result in clients.items():
        print(f"{'client steps/s, ' + name + ' (' + str(args.samples) + ' in flight)':<44}"
              f"{result['steps_per_s']:>12.0f}")
    for name, result in clients.items():
        print(f"{'  client CPU ms per step, ' + name:<44}{result['client_cpu_ms_per_step']:>12.3f}")
    print(f"{'http1 / best httpx (steps/s)':<44}{clients['http1']['steps_per_s'] / best_httpx:>11.2f}x")
    engine = faults = None
    if not args.clients_only:
        engine = bench_engine(args.engine_prompts, args.samples)
        faults = bench_faults(args.fault_prompts, 64)
        print(f"{'engine steps/s, TESSY over HTTP':<44}{engine['steps_per_s']:>12.0f}")
        print(f"{'engine samples written / failed':<44}{engine['samples']:>8} / {engine['failed']}")
        for run in faults["runs"]:
            print(f"{'fault run ' + str(run['run']) + ': written / failed / retries':<44}"
                  f"{run['written']:>6} / {run['failed']} / {run['retries']}")
            print(f"{'  faults seen':<44}{json.dumps(run['faults_seen']):>12}")
            print(f"{'  breaker trips':<44}{run['breaker_trips']:>12}")
        print(f"{'fault run: records / failed only / missing / dup':<44}"
              f"{faults['records']:>6} / {faults['failed_only']} / {faults['missing']} / {faults['duplicates']}")
        print(f"{'every prompt exactly once':<44}{str(faults['ok']):>12}")
    out = ROOT / "bench" / "results" / "http.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"clients": clients, "engine": engine, "faults": faults, "cpus": os.cpu_count()},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
