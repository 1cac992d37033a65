"""Benchmark: the HTTP client's own overhead, and a run through injected server faults.

The servers are the fake vLLM-shaped server (tests/fake_openai_server.py), each in its own
process and answering at once, so every second measured is the client's (and the engine's).

1. clients: 256 samples in flight against one server, each a loop of requests whose context grows
   by the 20 ids each answer returns, as TESSY's does; the client CPU (this process) per request,
   median of `--rounds`, for the backend's client (`backends/openai/client.py`, on aiohttp),
   aiohttp used plainly, httpx (one-connection clients in a free list, as the backend once used it
   for https; and one pooled client), and the hand-written HTTP/1.1 client the backend had before
   (read from git history, `--http1-rev`), and the same loop without a client ("none": answers
   made in process), the work every client's figure includes. The rule (issue 25): a hand-written
   client is kept only at 2x less CPU per request than the best library. Then the same loops through the backend's
   `generate` (bodies, parsing and accounting on top of the client).
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
import statistics
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
#: A script whose spans are as long as real TESSY data's: a style phrase (the student's span, ~5
#: tokens), then 50-64 tokens of reasoning with no style phrase (the teacher's). The Qwen pair's
#: TESSY records on reasoning-gym products (bench/table1-full) have student spans of 6.5 tokens and
#: teacher spans of 46 on average; SCRIPT hands over every ~2 tokens.
LONG_SPAN_SCRIPT = (
    "Okay, let me see. We multiply 47 by 23 in two parts: 47 times 20 is 940 and 47 times 3 is 141, and "
    "adding the two parts gives 940 plus 141, which equals 1081 in total. Wait, the second factor 23 splits "
    "as 20 plus 3, and each part times 47 was checked digit by digit: 4 times 2 is 8 and 7 times 2 is 14, "
    "giving 940 for the tens. Hmm, let me check. Taking the other order, 23 times 47 is 23 times 40 plus 23 "
    "times 7, that is 920 plus 161, and 920 plus 161 is 1081 again, matching the first result. So, the last "
    "digit of 47 times 23 must be the last digit of 7 times 3, which is 21, hence the product ends in 1, and "
    "1081 ends in 1 as required here. ")


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


#: The clients compared: the backend's own (`client.HTTPClient`, on aiohttp), aiohttp used plainly,
#: httpx as the backend used it for https (one-connection clients in a free list) and as one pooled
#: client, and the hand-written HTTP/1.1 client the backend had before (read from git history).
CLIENTS = ("tessy", "aiohttp", "httpx", "httpx-pool", "http1", "none")
#: The last commit that had the hand-written client (`git show REV:src/tessy/backends/http1.py`).
HTTP1_REV = "439c26b"


def request_body(context: list[int]) -> bytes:
    """A request as the backend sends one (token-id prompt, exact ids back)."""
    return json.dumps({"model": "student", "prompt": context, "max_tokens": 20, "temperature": 1.0, "top_p": 1.0,
                       "seed": 1, "stop_token_ids": [2], "skip_special_tokens": False,
                       "spaces_between_special_tokens": False, "return_token_ids": True},
                      separators=(",", ":")).encode()


def load_http1(rev: str):
    """The former hand-written client as a module, from `rev` (None when git cannot show it)."""
    import types

    try:
        source = subprocess.run(["git", "show", f"{rev}:src/tessy/backends/http1.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("http1_former")
    exec(compile(source, "http1_former.py", "exec"), module.__dict__)
    return module


async def make_post(client: str, url: str, samples: int, http1=None):
    """(post(payload) -> (status, body bytes), close()) for `client`; "none" answers in process
    (answers made once per prompt length, as the fake server shapes them): the loop's own work
    (bodies, parsing, task switches) without any client, to subtract."""
    if client == "none":
        answers: dict[int, bytes] = {}

        async def post(payload):
            await asyncio.sleep(0)
            prompt = json.loads(payload)["prompt"] if len(payload) not in answers else None
            if prompt is not None:
                ids = [100 + (len(prompt) + i) % 20 for i in range(20)]
                answers[len(payload)] = json.dumps({
                    "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "student",
                    "choices": [{"index": 0, "text": "".join(f" t{i}" for i in ids), "logprobs": None,
                                 "finish_reason": "length", "stop_reason": None, "token_ids": ids,
                                 "prompt_token_ids": prompt}],
                    "usage": {"prompt_tokens": len(prompt), "total_tokens": len(prompt) + 20,
                              "completion_tokens": 20, "prompt_tokens_details": None}}).encode()
            return 200, answers[len(payload)]

        async def close():
            pass
        return post, close
    headers = {"Content-Type": "application/json"}
    target = url + "/v1/completions"
    if client == "tessy":
        from tessy.backends.openai.client import HTTPClient

        tessy = HTTPClient(headers, 600.0)

        async def post(payload):
            response = await tessy.request("POST", target, payload)
            return response.status_code, response.content
        return post, tessy.aclose
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0),
                                        timeout=aiohttp.ClientTimeout(total=600))

        async def post(payload):
            async with session.post(target, data=payload) as response:
                return response.status, await response.read()
        return post, session.close
    if client in ("httpx", "httpx-pool"):
        import httpx

        def new_client(n):
            return httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(600.0),
                                     limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
        pool = new_client(samples) if client == "httpx-pool" else None
        free: list = []

        async def post(payload):
            one = pool or (free.pop() if free else new_client(1))
            response = await one.post("/v1/completions", content=payload)
            if pool is None:
                free.append(one)
            return response.status_code, response.content

        async def close():
            for one in [pool] if pool else free:
                await one.aclose()
        return post, close
    if client == "http1":
        free = []

        async def post(payload):
            connection = free.pop() if free else http1.Connection(url, headers, 600.0)
            response = await connection.post("/v1/completions", payload)
            free.append(connection)
            return response.status_code, response.content

        async def close():
            for connection in free:
                await connection.aclose()
        return post, close
    raise ValueError(client)


def bench_client(url: str, samples: int, steps: int, client: str, http1=None) -> dict:
    """`samples` loops in flight, each `steps` requests whose context grows by the 20 ids each
    answer returns (as TESSY's does); the client CPU (this process) per request, and requests/s."""

    async def run() -> tuple[float, float]:
        post, close = await make_post(client, url, samples, http1)

        async def sample(i: int) -> None:
            context = list(range(300 + i % 7))
            for _ in range(steps):
                status, content = await post(request_body(context))
                assert status == 200, status
                context = context + json.loads(content)["choices"][0]["token_ids"]

        await asyncio.gather(*(sample(i) for i in range(samples)))  # open the connections
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sample(i) for i in range(samples)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await close()
        return elapsed, cpu

    wall, cpu = asyncio.run(run())
    return {"client": client, "samples_in_flight": samples, "requests": samples * steps, "wall_s": wall,
            "requests_per_s": samples * steps / wall, "client_cpu_ms_per_request": 1000 * cpu / (samples * steps)}


async def make_stream(client: str, url: str, http1=None):
    """(post(payload) -> the answer's lines, close()) for a streamed request with `client`."""
    headers = {"Content-Type": "application/json"}
    if client == "tessy":
        from tessy.backends.openai.client import HTTPClient

        tessy = HTTPClient(headers, 600.0)

        async def post(payload):
            response = await tessy.request("POST", url + "/v1/completions", payload, stream=True)
            lines = [line async for line in response.lines()]
            response.close()
            return lines
        return post, tessy.aclose
    if client == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0),
                                        timeout=aiohttp.ClientTimeout(total=600))

        async def post(payload):
            async with session.post(url + "/v1/completions", data=payload) as response:
                return [line.rstrip(b"\r\n") async for line in response.content]
        return post, session.close
    if client == "http1":
        free = []

        async def post(payload):
            connection = free.pop() if free else http1.Connection(url, headers, 600.0)
            response = await connection.open_stream("/v1/completions", payload)
            lines = [line async for line in response.lines()]
            if response.complete:
                free.append(connection)
            return lines

        async def close():
            for connection in free:
                await connection.aclose()
        return post, close
    raise ValueError(client)


STREAMED = ("tessy", "aiohttp", "http1")


def bench_stream(url: str, samples: int, steps: int, client: str, http1=None) -> dict:
    """`bench_client` with `stream: true`: each answer is 20 server-sent events (one per token, as
    vLLM sends them), read to the end; the client CPU per request."""

    async def run() -> tuple[float, float]:
        post, close = await make_stream(client, url, http1)

        async def sample(i: int) -> None:
            context = list(range(300 + i % 7))
            for _ in range(steps):
                body = json.loads(request_body(context))
                body["stream"] = True
                for line in await post(json.dumps(body, separators=(",", ":")).encode()):
                    if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                        choices = json.loads(line[5:])["choices"]
                        context = context + (choices[0].get("token_ids") or [] if choices else [])

        await asyncio.gather(*(sample(i) for i in range(samples)))
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sample(i) for i in range(samples)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await close()
        return elapsed, cpu

    wall, cpu = asyncio.run(run())
    return {"client": client, "requests": samples * steps, "wall_s": wall, "requests_per_s": samples * steps / wall,
            "client_cpu_ms_per_request": 1000 * cpu / (samples * steps)}


def bench_backend(url: str, samples: int, steps: int) -> dict:
    """The same loops through `OpenAIHTTPBackend.generate` (bodies, parsing, accounting on top of
    the client): CPU per step."""
    from tessy.backends.base import SamplingParams
    from tessy.backends.openai import OpenAIHTTPBackend
    from tessy.models import load_tokenizer

    backend = OpenAIHTTPBackend("smollm2-135m-instruct", url, role="student",
                                tokenizer=load_tokenizer("smollm2-135m-instruct"), max_in_flight=samples)

    async def sample(i: int) -> None:
        context = list(range(300))
        for _ in range(steps):
            generation = await backend.generate(f"s{i}/student", context, 20, SamplingParams(seed=i), frozenset({2}))
            context = context + generation.token_ids
        backend.release(f"s{i}/student")

    async def run() -> tuple[float, float]:
        await asyncio.gather(*(sample(i) for i in range(samples)))
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sample(i) for i in range(samples)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await backend.aclose()
        return elapsed, cpu

    wall, cpu = asyncio.run(run())
    return {"samples_in_flight": samples, "steps": samples * steps, "wall_s": wall, "steps_per_s": samples * steps / wall,
            "client_cpu_ms_per_step": 1000 * cpu / (samples * steps)}


def compare_clients(samples: int, steps: int, rounds: int, http1_rev: str) -> dict:
    """Every client available here, `rounds` times in turn against one fake server process; the
    median CPU per request of each, and the issue's rule: keep a hand-written client only at
    2x less CPU per request than the best library."""
    import importlib.util

    http1 = load_http1(http1_rev)
    installed = {"tessy": True, "none": True, "http1": http1 is not None, "aiohttp": importlib.util.find_spec("aiohttp") is not None}
    installed["httpx"] = installed["httpx-pool"] = importlib.util.find_spec("httpx") is not None
    available = [c for c in CLIENTS if installed[c]]
    runs: dict[str, list[dict]] = {c: [] for c in available}
    streamed: dict[str, list[dict]] = {c: [] for c in STREAMED if c in available}
    with fake_servers({"model": "student"}) as (url,):
        for _ in range(rounds):
            for client in available:
                runs[client].append(bench_client(url, samples, steps, client, http1))
            for client in streamed:
                streamed[client].append(bench_stream(url, samples, steps, client, http1))
        backend = bench_backend(url, samples, steps)
    stream_medians = {c: statistics.median(r["client_cpu_ms_per_request"] for r in rs) for c, rs in streamed.items()}
    medians = {c: statistics.median(r["client_cpu_ms_per_request"] for r in rs) for c, rs in runs.items()}
    # Libraries: tessy's client is aiohttp with the timeouts and fault mapping http1 also has.
    libraries = {c: ms for c, ms in medians.items() if c in ("tessy", "aiohttp", "httpx", "httpx-pool")}
    best = min(libraries, key=libraries.get) if libraries else None
    verdict = {"best_library": best}
    if best and "http1" in medians:
        verdict["best_library_over_http1_cpu"] = libraries[best] / medians["http1"]
        verdict["keep_hand_written"] = libraries[best] >= 2 * medians["http1"]
        loop = medians.get("none", 0.0)  # what every client's loop does besides the client
        if medians["http1"] > loop:
            verdict["net_of_loop_best_library_over_http1"] = (libraries[best] - loop) / (medians["http1"] - loop)
    if "http1" in stream_medians:
        best_streamed = min(ms for c, ms in stream_medians.items() if c != "http1")
        verdict["streamed_best_library_over_http1"] = best_streamed / stream_medians["http1"]
    return {"runs": runs, "median_cpu_ms_per_request": medians, "streamed_runs": streamed,
            "streamed_median_cpu_ms_per_request": stream_medians, "verdict": verdict, "backend": backend,
            "http1_rev": http1_rev if http1 is not None else None}


def write_prompts(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "prompt": f"What is {i} plus {i + 3}? Explain."}) + "\n")


def server_specs(fault_rate: float = 0.0, stop_at: int = 260, script: str = SCRIPT) -> tuple[dict, dict]:
    from tessy.models import load_tokenizer

    specs = []
    for name, alias in (("student", "smollm2-135m-instruct"), ("teacher", "gemma3-270m")):
        tokenizer = load_tokenizer(alias)
        ids = tokenizer.encode(script, add_special_tokens=False)
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
    parser.add_argument("--steps", type=int, default=20, help="requests per sample in the client bench")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the client bench (the median is kept)")
    parser.add_argument("--http1-rev", default=HTTP1_REV, help="git revision to read the former client from")
    parser.add_argument("--engine-prompts", type=int, default=512)
    parser.add_argument("--fault-prompts", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the script)")
    parser.add_argument("--clients-only", action="store_true",
                        help="only compare the clients; skip the engine and fault runs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.engine_prompts, args.fault_prompts = 5, 1, 64, 40
    os.chdir(ROOT)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    clients = compare_clients(args.samples, args.steps, args.rounds, args.http1_rev)
    print(f"{'measure':<52}{'value':>12}")
    for name, ms in clients["median_cpu_ms_per_request"].items():
        rate = statistics.median(r["requests_per_s"] for r in clients["runs"][name])
        print(f"{'client CPU ms per request, ' + name:<52}{ms:>12.3f}   ({rate:.0f} requests/s)")
    for name, ms in clients["streamed_median_cpu_ms_per_request"].items():
        print(f"{'  streamed (20 events), ' + name:<52}{ms:>12.3f}")
    verdict = clients["verdict"]
    if "best_library_over_http1_cpu" in verdict:
        print(f"{'best library (' + verdict['best_library'] + ') / hand-written, CPU':<52}"
              f"{verdict['best_library_over_http1_cpu']:>11.2f}x")
        print(f"{'keep the hand-written client (>= 2x)':<52}{str(verdict['keep_hand_written']):>12}")
    if "net_of_loop_best_library_over_http1" in verdict:
        print(f"{'  the same, net of the loop without a client (none)':<52}"
              f"{verdict['net_of_loop_best_library_over_http1']:>11.2f}x")
    if "streamed_best_library_over_http1" in verdict:
        print(f"{'  streamed: best library / hand-written, CPU':<52}"
              f"{verdict['streamed_best_library_over_http1']:>11.2f}x")
    backend = clients["backend"]
    print(f"{'backend generate: CPU ms per step (' + str(args.samples) + ' in flight)':<52}"
          f"{backend['client_cpu_ms_per_step']:>12.3f}   ({backend['steps_per_s']:.0f} steps/s)")
    engine = faults = None
    if not args.clients_only:
        engine = bench_engine(args.engine_prompts, args.samples)
        faults = bench_faults(args.fault_prompts, 64)
        print(f"{'engine steps/s, TESSY over HTTP':<52}{engine['steps_per_s']:>12.0f}")
        print(f"{'engine samples written / failed':<52}{engine['samples']:>8} / {engine['failed']}")
        for run in faults["runs"]:
            print(f"{'fault run ' + str(run['run']) + ': written / failed / retries':<52}"
                  f"{run['written']:>6} / {run['failed']} / {run['retries']}")
            print(f"{'  faults seen':<52}{json.dumps(run['faults_seen']):>12}")
            print(f"{'  breaker trips':<52}{run['breaker_trips']:>12}")
        print(f"{'fault run: records / failed only / missing / dup':<52}"
              f"{faults['records']:>6} / {faults['failed_only']} / {faults['missing']} / {faults['duplicates']}")
        print(f"{'every prompt exactly once':<52}{str(faults['ok']):>12}")
    out = ROOT / "bench" / "results" / "http.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"clients": clients, "engine": engine, "faults": faults, "cpus": os.cpu_count(),
                               "load": os.getloadavg()}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
