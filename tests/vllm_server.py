"""A real vLLM OpenAI-compatible server on loopback, for the tests (`tests/test_vllm_server.py`)
and the benchmark (`bench/bench_servers.py --servers vllm`).

vLLM lives in its own virtual environment, `.venv-vllm` (made by `make install`: it pins a
transformers older than tessy's). `start_vllm` launches one server for one model folder (a
cached safetensors conversion from `tessy.models.resolve_model`) and returns once it answers
`/v1/models`; `VllmServer.stop` kills it. The flags are those the README's recipe gives, which
tessy needs: prefix caching (in blocks of 32 tokens, not the CPU default of 128), cached-token
counts in `usage.prompt_tokens_details`, and a
prefill batch large enough that vLLM's CPU worker never splits a seeded request (it crashes
with "CPU Generator does not use offset" when chunked prefill splits one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = Path(os.environ.get("TESSY_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))


def vllm_available() -> bool:
    return VLLM_PYTHON.is_file()


def vllm_command(model_dir: str, name: str, port: int, max_model_len: int = 2048) -> list[str]:
    return [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--enforce-eager", "--max-model-len", str(max_model_len),
            # vLLM caches whole blocks, 128 tokens by default on CPU: 32 lets the short test prompts hit.
            "--enable-prefix-caching", "--enable-prompt-tokens-details", "--block-size", "32",
            "--max-num-batched-tokens", "16384", "--max-num-seqs", "64", "--seed", "0",
            "--disable-uvicorn-access-log"]


@dataclass
class VllmServer:
    name: str
    url: str
    port: int
    process: subprocess.Popen
    log: Path
    command: list[str]
    env: dict

    def stop(self) -> None:
        """Kill the server and its engine and worker processes (its own process group: killing
        only the API process leaves them running, holding gigabytes)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=60)

    def restart(self, timeout_s: float = 300.0) -> None:
        """Start the same server again on the same port (after `stop`)."""
        self.stop()
        self.process = _spawn(self.command, self.env, self.log)
        self.ready(timeout_s)

    def ready(self, timeout_s: float = 300.0) -> None:
        """Return once the server answers `/v1/models` (raise with its log's tail if it dies)."""
        wait_ready(self.url, self.process, self.log, timeout_s)


def _spawn(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"vLLM at {url} not ready after {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")


def start_vllm(model: str, port: int, log: Path, cpu: str | None = None, kv_cache_gib: int = 1,
               timeout_s: float = 300.0, wait: bool = True) -> VllmServer:
    """One vLLM server for the tessy model `model` (an alias or a folder) on 127.0.0.1:`port`.
    `cpu` binds its worker threads (e.g. "0" or "0-1"): vLLM's automatic binding puts every
    server on core 0, so two servers would never compute at once. With `wait=False` it returns
    at once (start several, then `ready` each: they load side by side)."""
    from tessy.models import resolve_model

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    if cpu is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu
    env.pop("VIRTUAL_ENV", None)
    command = vllm_command(resolve_model(model), model, port)
    log.write_text("")
    server = VllmServer(model, f"http://127.0.0.1:{port}", port, _spawn(command, env, log), log, command, env)
    if wait:
        server.ready(timeout_s)
    return server
