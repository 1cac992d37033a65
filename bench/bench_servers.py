"""Benchmark: TESSY over two real servers on loopback, against the paper's lock-step schedule.

One server per role (the small pair: SmolLM2-135M student, Gemma-3-270m teacher; `--pair qwen`:
the Qwen2.5-Coder 0.5B/1.5B pair with its voices, as `tessy demo` runs it), the same
HumanEval prompts for every method, fresh servers for each method (no prefix cache carried over):

- `tessy`: tessy as it runs by default (streamed requests stopped at the cut, adaptive k, no
  step barrier);
- `tessy-no-stream`: the same without streaming or adaptive k (each step asks for all k tokens,
  then cuts: the paper's generate-then-cut), still without a barrier;
- `lockstep`: generate-then-cut with the paper's step barrier (`bench/lockstep.py`): all samples'
  requests of a step go out together, the predictor runs once every answer is in;
- `lockstep-paper`: the lock step with the paper's requests as well: every step sends the prompt
  and the response so far as text, for the server to tokenize again, and names no slot (the
  server picks one; llama-server by the cached prompt most like it). `lockstep` and tessy send
  the sample's token ids to the slot that holds its prefix;
- `teacher-only`, `student-only`: one model writes the whole response (the upper bound on
  kept tokens per second, no predictor).

Servers (`--servers`):
- `llama-server`: llama.cpp's own server (`--llama-server PATH`, or $LLAMA_SERVER, or on PATH;
  `make llama-server` builds one into .venv/bin), `--slots` parallel slots with continuous
  batching and its prompt cache (`cache_prompt`, `id_slot`; `timings.prompt_n` says how many
  prompt tokens it computed);
- `vllm`: two vLLM CPU servers (`.venv-vllm`, made by `make install`; `tests/vllm_server.py`),
  each with its own half of the cores, prefix caching in blocks of 32 tokens; the prompt tokens
  computed come from vLLM's own counters (`/metrics`), streamed requests included;
- `gpu-sim`: `bench/gpu_sim_server.py`, a scripted server whose loop charges a GPU-like cost per
  step, per running request and per uncached prompt token (simulated time: it shows scheduling
  effects at GPU-like concurrency, not a GPU's speed).

Per method: kept tokens (student tokens in records) per minute, tokens generated per kept
token, requests per kept token, prompt tokens the servers processed (and were sent) per kept
token, predictor seconds per wall second, this process's CPU time per kept token (the client,
engine and predictors: on a small machine they share the cores with the servers), teacher
share, k in effect, and the load average.

Run on purpose (not a test):
    python bench/bench_servers.py --servers llama-server --prompts 16 --max-tokens 128
    python bench/bench_servers.py --servers gpu-sim --prompts 64 --concurrency 64
    python bench/bench_servers.py --servers vllm --methods tessy,tessy-no-stream,lockstep,teacher-only,student-only --repeat 3
    python bench/bench_servers.py --predictor runs/pred/predictor   # a token classifier
    python bench/bench_servers.py --repeat 3   # median of 3 rounds, with the spread of the ratios
Prints a table and writes bench/results/servers-<servers>.json. Quote ratios from one run (or
the medians of one `--repeat` run: on shared cores one run of the same command varies by ~15%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = ("tessy", "tessy-no-stream", "lockstep", "lockstep-paper", "teacher-only", "student-only")
ROLES = ("student", "teacher")
BASELINES = ("lockstep", "lockstep-paper")  # the table shows every method's ratio to each that ran


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} not ready after {timeout_s}s:\n{log.read_text()[-3000:]}")


def llama_server_binary(given: str) -> str:
    found = given or os.environ.get("LLAMA_SERVER") or shutil.which("llama-server") \
        or str(ROOT / ".venv" / "bin" / "llama-server")
    if not Path(found).is_file():
        raise SystemExit("llama-server not found: build it with `make llama-server`, or pass --llama-server PATH")
    return found


def pair_models(args) -> dict[str, str]:
    from tessy.cli.demo import PAIRS

    pair = PAIRS[args.pair]
    return {"student": pair.student, "teacher": pair.teacher}


def server_command(kind: str, role: str, port: int, args) -> list[str]:
    from tessy.models import DEMO_MODELS

    alias = pair_models(args)[role]
    if kind == "llama-server":
        # --swa-full: Gemma 3's sliding-window cache could not be cut back to a sample's prefix, so
        # every request would compute its last answer again (the summary warns of that).
        return [llama_server_binary(args.llama_server), "-m", str(DEMO_MODELS[alias].gguf_path()), "-a", alias,
                "--host", "127.0.0.1", "--port", str(port), "--parallel", str(args.slots),
                "--ctx-size", str(args.slots * args.slot_context), "--threads", str(args.threads),
                "--threads-batch", str(args.threads), "--swa-full"]
    # gpu-sim: the demo tokenizers' script, as bench_http's fake servers write it
    from bench.bench_http import LONG_SPAN_SCRIPT, SCRIPT, server_specs

    script = LONG_SPAN_SCRIPT if args.script == "long-spans" else SCRIPT
    spec = server_specs(stop_at=10**9, script=script)[ROLES.index(role)]
    # --follow-text: each server goes on with the text it is handed, as a real model would
    command = [sys.executable, "-m", "bench.gpu_sim_server", "--port", str(port), "--follow-text"]
    for key, value in {**spec, "model": alias, "max_model_len": args.slot_context}.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def cpu_seconds(pid: int, group: bool = False) -> float:
    """CPU time (user + system) a process has used so far, from /proc (0.0 where there is none);
    `group`: of every process in the process group `pid` leads (vLLM's API server, engine core
    and workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat") if group else [Path(f"/proc/{pid}/stat")]:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if not group or int(fields[2]) == pid:  # fields[2]: the process group
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


@contextmanager
def servers(kind: str, args, logs: Path):
    """({role: url}, {role: its CPU seconds so far}): one fresh server per role, killed at the end."""
    if kind == "vllm":
        with vllm_servers(args, logs) as ready:
            yield ready
        return
    procs = []
    try:
        urls, pids = {}, {}
        for role in ROLES:
            port = free_port()
            log = logs / f"{role}.log"
            with open(log, "w") as out:
                procs.append(subprocess.Popen(server_command(kind, role, port, args), stdout=out,
                                              stderr=subprocess.STDOUT, cwd=ROOT))
            urls[role], pids[role] = f"http://127.0.0.1:{port}", procs[-1].pid
            wait_ready(urls[role], procs[-1], log)
        yield urls, {role: (lambda pid=pid: cpu_seconds(pid)) for role, pid in pids.items()}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)


@contextmanager
def vllm_servers(args, logs: Path):
    """Two vLLM CPU servers (tests/vllm_server.py: `.venv-vllm`, prefix caching, blocks of 32),
    the student's worker on the first half of the cores, the teacher's on the other (vLLM's own
    binding would put both on core 0)."""
    from tests.vllm_server import start_vllm

    cores = os.cpu_count() or 2
    half = max(1, cores // 2)
    cpus = {"student": f"0-{half - 1}" if half > 1 else "0",
            "teacher": f"{half}-{cores - 1}" if cores - half > 1 else str(min(half, cores - 1))}
    started = {}
    try:
        for role, alias in pair_models(args).items():
            started[role] = start_vllm(alias, free_port(), logs / f"{role}.log", cpu=cpus[role], wait=False)
        for server in started.values():
            server.ready()
        yield ({role: server.url for role, server in started.items()},
               {role: (lambda pid=server.process.pid: cpu_seconds(pid, group=True)) for role, server in started.items()})
    finally:
        for server in started.values():
            server.stop()


def run_method(method: str, urls: dict[str, str], server_cpu_of: dict, prompts: Path, folder: Path, args) -> dict:
    from tessy.cli.demo import PAIRS
    from tessy.config import ModelConfig, SpeedConfig, SynthesizeConfig
    from tessy.records import read_records
    from tessy.backends.openai.cache import prompt_computed
    from tessy.runner import build_engine, synthesize

    pair = PAIRS[args.pair]
    paper_cut = method in ("tessy-no-stream", "lockstep", "lockstep-paper")
    paper_requests = method == "lockstep-paper"
    roles = {role: ModelConfig(backend="openai", model=alias, url=urls[role], max_context=args.slot_context,
                               max_in_flight=args.concurrency, predictor=args.predictor, k=args.k,
                               format=pair.format, voice=pair.student_voice if role == "student" else pair.teacher_voice,
                               stream="off" if paper_cut else "auto", adaptive_k=not paper_cut,
                               prompt_mode="text" if paper_requests else "auto")
             for role, alias in pair_models(args).items()}
    config = SynthesizeConfig(input=str(prompts), output=str(folder / method), max_tokens=args.max_tokens,
                              max_answer_tokens=args.max_answer_tokens, concurrency=args.concurrency,
                              method="tessy" if paper_cut else method,
                              # the paper's scripts do not read a prompt ahead
                              speed=SpeedConfig(read_ahead=not method.startswith("lockstep")),
                              progress=False, **roles)
    engine = build_engine(config)
    lockstep = None
    if method.startswith("lockstep"):
        from bench.lockstep import LockStep

        lockstep = LockStep(engine)
    if paper_requests:
        for role in ROLES:
            engine.parties[role].backend.slots = 0  # no id_slot: the server chooses
    load = os.getloadavg()[0]
    server_cpu = {role: read() for role, read in server_cpu_of.items()}
    started, cpu = time.perf_counter(), time.process_time()
    report = synthesize(config, engine=engine)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    server_cpu = {role: read() - server_cpu[role] for role, read in server_cpu_of.items()}
    records = list(read_records(folder / method / "records.jsonl"))
    kept = sum(r["totals"]["tokens_student"] for r in records)
    stats = report.server_stats

    def per_kept(value: float) -> float | None:
        return round(value / kept, 3) if kept else None

    predictors = [engine.parties[role].predictor for role in ROLES if engine.parties[role].predictor is not None]
    predictor_busy = sum(getattr(p, "predict_seconds", 0.0) for p in {id(p): p for p in predictors}.values())
    return {
        "method": method, "samples": len(records), "failed": report.failed, "wall_s": round(wall, 2),
        "kept_tokens": kept, "kept_per_min": round(60 * kept / wall, 1) if wall else 0.0,
        "generated_per_kept": per_kept(sum(r["totals"]["generated"] for r in records)),
        "requests_per_kept": per_kept(sum(c.get("completions", 0) for c in stats.values())),
        # The servers' own count where they keep one (vLLM's /metrics: streams cut early included).
        "prompt_processed_per_kept": per_kept(sum(prompt_computed(c)[0] for c in stats.values())),
        "prompt_sent_per_kept": per_kept(sum(c.get("prompt_tokens", 0) for c in stats.values())),
        "prompt_reported": sum(c.get("prompt_reported", 0) for c in stats.values()),
        "predictor_busy_share": round(predictor_busy / wall, 3) if wall else 0.0,
        "client_cpu_ms_per_kept": round(1000 * cpu / kept, 2) if kept else None,
        # CPU seconds per wall second of each server: how busy it was kept (1.0 = one core throughout)
        **{f"{role}_server_busy": round(seconds / wall, 3) if wall else 0.0 for role, seconds in server_cpu.items()},
        "teacher_share": round(report.teacher_share, 3) if report.teacher_share is not None else None,
        "k_used": report.k_used, "lockstep_steps": lockstep.steps if lockstep else None,
        "load_at_start": round(load, 2), "load_at_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    from tests.vllm_server import vllm_available

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", choices=("llama-server", "gpu-sim", "vllm"), default="llama-server")
    parser.add_argument("--llama-server", default="", help="path of llama.cpp's llama-server binary")
    parser.add_argument("--pair", choices=("small", "qwen"), default="small",
                        help="llama-server: the small pair (SmolLM2-135M, Gemma-3-270m), or the Qwen2.5-Coder pair "
                             "of `tessy demo`")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-answer-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8, help="samples in flight")
    parser.add_argument("--slots", type=int, default=8, help="llama-server parallel slots per server")
    parser.add_argument("--slot-context", type=int, default=1024, help="context tokens per slot")
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads per server")
    parser.add_argument("--script", choices=("dense", "long-spans"), default="dense",
                        help="gpu-sim: what both servers write: a style phrase every ~2 tokens (dense), or spans "
                             "as long as real TESSY data's (long-spans: ~5-token style phrases, 50-64 tokens of "
                             "reasoning between them)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--predictor", default="lexicon", help="lexicon or a token-classifier checkpoint folder")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds: every method runs once per round, in rotating order; the table shows each "
                             "method's median run and the spread of its per-round ratio to the lock step")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.servers == "gpu-sim" and args.pair != "small":
        parser.error("--servers gpu-sim writes the small pair's script: use --pair small")
    if args.servers == "vllm" and not vllm_available():
        parser.error("--servers vllm needs .venv-vllm (make install makes it)")
    if args.servers == "gpu-sim" and "lockstep-paper" in args.methods.split(","):
        parser.error("--servers gpu-sim scripts token ids: lockstep-paper's text prompts need llama-server")
    os.chdir(ROOT)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {method: [] for method in methods}
    out = Path(args.out or ROOT / "bench" / "results" / f"servers-{args.servers}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prompts = bench_prompts(folder / "prompts.jsonl", args.prompts)
        for round_ in range(args.repeat):
            shift = round_ % len(methods)  # each method takes its turn first: slow drifts in load even out
            for method in methods[shift:] + methods[:shift]:
                where = folder / f"round-{round_}"
                (where / "logs" / method).mkdir(parents=True)
                with servers(args.servers, args, where / "logs" / method) as (urls, server_cpu_of):
                    row = run_method(method, urls, server_cpu_of, prompts, where, args)
                runs[method].append({**row, "round": round_})
                print(f"{method}: {row['samples']} samples in {row['wall_s']:.0f}s", file=sys.stderr)
                # Every run as it ends: a long benchmark stopped part-way keeps what it measured.
                out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "runs": runs}, indent=2) + "\n")
    baselines = {name: runs[name] for name in BASELINES if name in runs}
    rows = [median_run(runs[method], baselines) for method in methods]
    print_table(rows)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "rows": rows, "runs": runs}, indent=2)
                   + "\n")
    print(f"wrote {out}")


def bench_prompts(path: Path, count: int) -> Path:
    """`count` HumanEval prompts (`tessy demo`'s); past the 164 problems, each again with a
    variant number, so any number of samples can be in flight."""
    from tessy import durable
    from tessy.cli.demo import write_prompts

    rows = [json.loads(line) for line in write_prompts(path, count).read_text().splitlines()]
    extra = [{"id": f"{row['id']}/v{i}", "prompt": f"{row['prompt']}\n(variant {i})"}
             for i in range(1, count // max(1, len(rows)) + 1) for row in rows]
    rows = (rows + extra)[:count]
    durable.write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def median_run(runs: list[dict], baselines: dict[str, list[dict]]) -> dict:
    """A method's run with the median kept tokens/min (the lower middle of an even count), with
    every run's kept tokens/min and, per baseline run (the lock steps), the ratio to it round by
    round (`vs_<baseline>_runs`)."""
    row = dict(sorted(runs, key=lambda run: run["kept_per_min"])[(len(runs) - 1) // 2])
    row["kept_per_min_runs"] = [run["kept_per_min"] for run in runs]
    for name, base in baselines.items():
        row[f"vs_{name}_runs"] = [round(run["kept_per_min"] / other["kept_per_min"], 3)
                                  for run, other in zip(runs, base) if other["kept_per_min"]]
    return row


def print_table(rows: list[dict]) -> None:
    columns = [("kept/min", "kept_per_min", ".0f"), ("gen/kept", "generated_per_kept", ".2f"),
               ("req/kept", "requests_per_kept", ".3f"), ("prompt proc/kept", "prompt_processed_per_kept", ".2f"),
               ("prompt sent/kept", "prompt_sent_per_kept", ".2f"), ("pred busy", "predictor_busy_share", ".1%"),
               ("client ms/kept", "client_cpu_ms_per_kept", ".2f"),
               ("student busy", "student_server_busy", ".0%"), ("teacher busy", "teacher_server_busy", ".0%"),
               ("teacher", "teacher_share", ".1%")]
    baselines = [name for name in BASELINES if rows and f"vs_{name}_runs" in rows[0]]
    header = (f"{'method':<17}{'samples':>8}" + "".join(f"{name:>18}" for name, _, _ in columns)
              + "".join(f"{'vs ' + name:>20}" for name in baselines))
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = "".join(f"{format(row[key], spec) if row[key] is not None else '-':>18}" for _, key, spec in columns)
        print(f"{row['method']:<17}{row['samples']:>8}{cells}"
              + "".join(f"{median_ratio(row[f'vs_{name}_runs']):>20}" for name in baselines))


def median_ratio(ratios: list[float]) -> str:
    """The median of per-round ratios, with their range when there are several."""
    ratios = sorted(ratios)
    if not ratios:
        return "-"
    shown = f"{ratios[(len(ratios) - 1) // 2]:.2f}x"
    return shown + (f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else "")


if __name__ == "__main__":
    main()
