"""A fake vLLM-shaped OpenAI-compatible server for tests and benchmarks (standard library only).

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) on 127.0.0.1 to stand in for
`vllm serve`: `GET /v1/models` returns a model card with `max_model_len`, and
`POST /v1/completions` takes a prompt as token ids (or text, unless `accept_token_ids=False`, which
answers a list prompt with llama.cpp's 422 validation error) and answers with vLLM's response shape:
`choices[0]` has `text`, `finish_reason`, `stop_reason`, and with `return_token_ids` the new
`token_ids` and the `prompt_token_ids`. A stop token is the last returned id (`stop_reason` is its
id), its text is not in `text`. A prompt plus `max_tokens` over `max_model_len` gets vLLM's 400
context-length error.

What it writes: `responder(prompt_ids, max_tokens) -> ids` decides the tokens (default: a cycling
script continued from the prompt length; the stop id once the prompt reaches `stop_at`).

Faults, for the client's retry tests: `inject(kind, ...)` queues faults for the next completion
requests, and `fault_rate` fails that share of them at random (`fault_kinds` mixed, `seed`):
`latency` (answer after `latency_s`), `429` (with `Retry-After`), `500`, `drop` (close the
connection without an answer), `malformed` (200 with a body that is not JSON), `timeout` (sleep
past the client's timeout, then drop).

llama.cpp's side (`total_slots`): `GET /props` answers `total_slots` (else 404, like vLLM). With
`cache_style` the server keeps each slot's last prompt (the request's `id_slot`, else slot 0) as
its prefix cache and reports how much of a prompt it found there: "vllm" as
`usage.prompt_tokens_details.cached_tokens`, "llama.cpp" as `timings.prompt_n` (tokens
processed) and `tokens_cached`; `cache_lag` drops that many tokens from the end of what a slot
keeps (llama.cpp serving a sliding-window model without `--swa-full` computes them again).
With "vllm" it also serves vLLM's own counters at `GET /metrics` (`vllm:prompt_tokens_total`,
`vllm:prompt_tokens_cached_total`), counted when a prompt is taken in, streamed or not.

Streaming (`stream: true`): the same answer as server-sent events over a chunked body, one event
per token (`text` delta, `token_ids` / logprobs of that token when asked), then one with
`finish_reason` (and llama.cpp's `timings`), a usage event when `stream_options.include_usage`,
and `data: [DONE]`; `stream_delay_s` between events. Usage so far rides on every token event when
asked (vLLM's `stream_options.continuous_usage_stats`, llama.cpp's `timings_per_token`). A client
that closes the connection mid-stream stops it: `counts["stream_cancelled"]`, and `streamed` lists how many token events
each stream sent. `streaming=False` answers a stream request as if `stream` were not set.

Every request is kept in `requests` (method, path, headers, parsed body) for payload tests.
`stop()` then `start()` restarts it on the same port (a server that died and came back).
Run `python -m tests.fake_openai_server --help` to serve it from its own process (benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from collections import deque
from typing import Any, Callable

FAULT_KINDS = ("429", "500", "drop", "malformed", "timeout")


class FakeOpenAIServer:
    def __init__(
        self,
        model: str = "fake-model",
        *,
        max_model_len: int = 4096,
        script: list[int] | None = None,
        stop_id: int | None = None,
        stop_at: int = 10**9,
        decode: Callable[[list[int]], str] | None = None,
        accept_token_ids: bool = True,
        refuse_status: int = 422,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: tuple[str, ...] = FAULT_KINDS,
        retry_after: str = "0",
        timeout_sleep_s: float = 2.0,
        seed: int = 0,
        owned_by: str = "vllm",
        root: str = "",
        keep_requests: bool = True,
        total_slots: int | None = None,
        cache_style: str = "",
        cache_lag: int = 0,
        streaming: bool = True,
        stream_delay_s: float = 0.0,
        returns_token_ids: bool = True,
    ):
        self.model = model
        self.max_model_len = max_model_len
        self.script = script or list(range(100, 120))
        self.stop_id = stop_id
        self.stop_at = stop_at
        self.decode = decode or (lambda ids: "".join(f" t{i}" for i in ids))
        self.accept_token_ids = accept_token_ids
        self.refuse_status = refuse_status  # llama-cpp-python answers 422, or 500 under recent FastAPI
        self.latency_s = latency_s
        self.fault_rate = fault_rate
        self.fault_kinds = fault_kinds
        self.retry_after = retry_after
        self.timeout_sleep_s = timeout_sleep_s
        self.owned_by = owned_by
        self.root = root or model  # vLLM's card: the weights' path or hub name
        self.keep_requests = keep_requests
        self.total_slots = total_slots
        self.cache_style = cache_style
        self.prompt_taken = self.prompt_cached = 0  # vLLM's /metrics counters (cache_style "vllm")
        self.cache_lag = cache_lag  # tokens at the end of each request the slot does not keep
        self.slot_cache: dict[int, list[int]] = {}  # slot -> its last prompt
        self.streaming = streaming
        self.returns_token_ids = returns_token_ids  # False: ignore `return_token_ids` (older vLLM)
        self.stream_delay_s = stream_delay_s
        self.streamed: list[int] = []  # token events sent, per stream
        self.random = random.Random(seed)
        self.injected: deque[str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {"completions": 0, "answered": 0}
        self.in_flight = 0  # completion requests being answered now, and the most seen at once
        self.max_in_flight_seen = 0
        self.intervals: list[tuple[float, float]] = []  # (start, end) of each completion request
        self._answered_at = 0.0  # when the last plain answer was written
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- control -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, *kinds: str) -> None:
        """Fail the next completion requests, one fault each, in order."""
        self.injected.extend(kinds)

    def responder(self, prompt_ids: list[int], max_tokens: int) -> list[int]:
        if self.stop_id is not None and len(prompt_ids) >= self.stop_at:
            return [self.stop_id]
        start = len(prompt_ids)
        return [self.script[(start + i) % len(self.script)] for i in range(max_tokens)]

    def start(self) -> "FakeOpenAIServer":
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fake-openai-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- HTTP --------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
                self._reader = reader
                keep = await self._respond(writer, method, path, headers, body)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(self, writer, method: str, path: str, headers: dict, raw: bytes) -> bool:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if self.keep_requests:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
        if method == "GET" and path == "/v1/models":
            card = {"id": self.model, "object": "model", "created": 0, "owned_by": self.owned_by,
                    "root": self.root, "parent": None, "max_model_len": self.max_model_len}
            return self._send(writer, 200, {"object": "list", "data": [card]})
        if method == "GET" and path == "/props" and self.total_slots is not None:
            return self._send(writer, 200, {"total_slots": self.total_slots, "build_info": "fake"})
        if method == "GET" and path == "/metrics" and self.cache_style == "vllm":
            labels = f'{{engine="0",model_name="{self.model}"}}'
            page = (f"# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{labels} {self.prompt_taken}.0\n"
                    f"vllm:prompt_tokens_cached_total{labels} {self.prompt_cached}.0\n")
            return self._send_raw(writer, 200, page.encode())
        if method != "POST" or path != "/v1/completions":
            return self._send(writer, 404, {"detail": "Not Found"})
        self.counts["completions"] += 1
        self.in_flight += 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        started = self._answered_at = time.perf_counter()
        try:
            return await self._completion(writer, body)
        finally:
            self.in_flight -= 1
            if self.keep_requests:
                # Ends when the answer was written (nothing awaits in between): another thread may
                # run between the write and here, and its requests must not seem to overlap this one.
                end = self._answered_at if self._answered_at > started else time.perf_counter()
                self.intervals.append((started, end))

    async def _completion(self, writer, body: Any) -> bool:
        fault = self.injected.popleft() if self.injected else None
        if fault is None and self.fault_rate and self.random.random() < self.fault_rate:
            fault = self.random.choice(self.fault_kinds)
        if fault:
            self.counts[fault] = self.counts.get(fault, 0) + 1
        if fault == "latency" or self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            return self._send(writer, 429, _error("Too many requests", "TooManyRequests", 429),
                              {"Retry-After": self.retry_after})
        if fault == "500":
            return self._send(writer, 500, _error("Internal server error", "InternalServerError", 500))
        if fault == "drop":
            writer.transport.abort()
            return False
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
            writer.transport.abort()
            return False
        if fault == "malformed":
            return self._send_raw(writer, 200, b'{"id": "cmpl-x", "choices": [{"text": "unfinish')
        status, answer = self._complete(body)
        if status == 200 and self.streaming and isinstance(body, dict) and body.get("stream"):
            return await self._stream(writer, self._reader, body, answer)
        return self._send(writer, status, answer)

    async def _stream(self, writer, reader, body: dict, answer: dict) -> bool:
        choice = answer["choices"][0]
        ids = list(choice.get("token_ids") or [])
        if not ids:  # the ids were not asked for: recover them from the logprobs or the script
            ids = answer.pop("_ids")
        answer.pop("_ids", None)
        text_ids = ids[:-1] if choice["finish_reason"] == "stop" else ids
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

        def event(data: Any) -> None:
            raw = b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"
            writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")

        base = {key: answer[key] for key in ("id", "object", "created", "model")}
        shown, sent = "", 0
        self.streamed.append(0)
        for index in range(len(ids)):
            if self.stream_delay_s:
                await asyncio.sleep(self.stream_delay_s)
            if reader.at_eof() or writer.is_closing():
                self.counts["stream_cancelled"] = self.counts.get("stream_cancelled", 0) + 1
                return False
            data, shown = self.token_event(body, answer, base, ids, text_ids, index, shown)
            event(data)
            self.streamed[-1] += 1
            await writer.drain()
        last = {"index": 0, "text": "", "logprobs": None, "finish_reason": choice["finish_reason"],
                "stop_reason": choice["stop_reason"]}
        final = {**base, "choices": [last]}
        if "timings" in answer:
            final["timings"] = answer["timings"]
        event(final)
        if (body.get("stream_options") or {}).get("include_usage"):
            event({**base, "choices": [], "usage": answer["usage"]})
        event(b"[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def token_event(self, body: dict, answer: dict, base: dict, ids: list[int], text_ids: list[int], index: int,
                    shown: str) -> tuple[dict, str]:
        """The stream event of token `index`, and the text shown once it is sent. With vLLM's
        `stream_options.continuous_usage_stats` it carries the usage so far (no cache figure); with llama.cpp's
        `timings_per_token`, the timings (so a client that closes a stream early still knows
        what the prompt cost)."""
        text = self.decode(text_ids[: index + 1]) if index < len(text_ids) else shown
        delta = ""
        if not text.endswith("\ufffd"):
            delta, shown = text[len(shown):], text
        part: dict[str, Any] = {"index": 0, "text": delta, "logprobs": None, "finish_reason": None}
        if body.get("return_token_ids") and self.returns_token_ids:
            part["token_ids"] = [ids[index]]
        if body.get("logprobs") is not None and body.get("return_tokens_as_token_ids"):
            part["logprobs"] = {"tokens": [f"token_id:{ids[index]}"], "token_logprobs": [0.0]}
        data = {**base, "choices": [part]}
        if (body.get("stream_options") or {}).get("continuous_usage_stats") and "usage" in answer:
            # As vLLM: the usage so far, without `prompt_tokens_details` (only the last event has it).
            prompt = answer["usage"]["prompt_tokens"]
            data["usage"] = {"prompt_tokens": prompt, "completion_tokens": index + 1, "total_tokens": prompt + index + 1}
        if body.get("timings_per_token") and "timings" in answer:
            data["timings"] = {**answer["timings"], "predicted_n": index + 1}
        return data, shown

    def _complete(self, body: Any) -> tuple[int, dict]:
        if not isinstance(body, dict) or "prompt" not in body:
            return 400, _error("prompt is required", "BadRequestError", 400)
        if body.get("model") != self.model:
            return 404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404)
        prompt = body["prompt"]
        if isinstance(prompt, list):
            if not self.accept_token_ids:  # llama-cpp-python's pydantic validation
                return self.refuse_status, {"detail": [{"type": "string_type", "loc": ["body", "prompt", "str"],
                                         "msg": "Input should be a valid string", "input": prompt}]}
            prompt_ids = [int(i) for i in prompt]
        else:
            prompt_ids = [ord(c) for c in str(prompt)]  # text prompts: one "token" per character
        max_tokens = int(body.get("max_tokens", 16))
        if len(prompt_ids) + max_tokens > self.max_model_len:
            return 400, _error(
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the messages, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion.", "BadRequestError", 400)
        ids = self.responder(prompt_ids, max_tokens)[:max_tokens]
        stops = set(body.get("stop_token_ids") or []) | ({self.stop_id} if self.stop_id is not None else set())
        finish, stop_reason = "length", None
        for index, token in enumerate(ids):
            if token in stops:
                ids = ids[: index + 1]
                finish = "stop"
                stop_reason = token if token != self.stop_id or token in (body.get("stop_token_ids") or []) else None
                break
        text_ids = ids[:-1] if finish == "stop" else ids
        choice: dict[str, Any] = {"index": 0, "text": self.decode(text_ids), "logprobs": None,
                                  "finish_reason": finish, "stop_reason": stop_reason}
        if body.get("return_token_ids") and self.returns_token_ids:
            choice["token_ids"] = ids
            choice["prompt_token_ids"] = prompt_ids
        if body.get("logprobs") is not None and body.get("return_tokens_as_token_ids"):
            choice["logprobs"] = {"text_offset": [0] * len(ids), "token_logprobs": [0.0] * len(ids),
                                  "tokens": [f"token_id:{i}" for i in ids], "top_logprobs": None}
        self.counts["answered"] += 1
        answer = {"_ids": ids, "id": f"cmpl-{self.counts['completions']}", "object": "text_completion",
                  "created": int(time.time()), "model": self.model, "choices": [choice],
                  "usage": {"prompt_tokens": len(prompt_ids), "total_tokens": len(prompt_ids) + len(ids),
                            "completion_tokens": len(ids), "prompt_tokens_details": None}}
        if self.cache_style:
            slot = int(body.get("id_slot", 0) or 0)
            last = self.slot_cache.get(slot, [])
            cached = 0
            while cached < min(len(last), len(prompt_ids)) and last[cached] == prompt_ids[cached]:
                cached += 1
            held = prompt_ids + ids
            self.slot_cache[slot] = held[: max(0, len(held) - self.cache_lag)]
            if self.cache_style == "vllm":
                answer["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
                self.prompt_taken += len(prompt_ids)
                self.prompt_cached += cached
            else:
                answer["timings"] = {"prompt_n": len(prompt_ids) - cached, "predicted_n": len(ids)}
                answer["tokens_cached"] = cached
        if not body.get("stream"):
            answer.pop("_ids")
        return 200, answer

    def _send(self, writer, status: int, payload: dict, headers: dict | None = None) -> bool:
        self._answered_at = time.perf_counter()
        return self._send_raw(writer, status, json.dumps(payload).encode(), headers)

    @staticmethod
    def _send_raw(writer, status: int, data: bytes, headers: dict | None = None) -> bool:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 422: "Unprocessable Entity",
                  429: "Too Many Requests", 500: "Internal Server Error"}.get(status, "Error")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(data)}\r\n{extra}\r\n".encode() + data)
        return True


def _error(message: str, kind: str, code: int) -> dict:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


def add_script_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every scripted server process takes (this one and bench/gpu_sim_server.py)."""
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", default="", help="comma-separated token ids the model cycles through")
    parser.add_argument("--stop-id", type=int, default=None)
    parser.add_argument("--stop-at", type=int, default=10**9, help="answer the stop id once a prompt is this long")
    parser.add_argument("--max-model-len", type=int, default=1 << 20)
    parser.add_argument("--seed", type=int, default=0)


def script_options(args: argparse.Namespace) -> dict[str, Any]:
    """`add_script_arguments`' values as server keyword arguments (the model name aside)."""
    return {"max_model_len": args.max_model_len, "stop_id": args.stop_id, "stop_at": args.stop_at, "seed": args.seed,
            "script": [int(i) for i in args.script.split(",")] if args.script else None}


def serve_until_killed(server: FakeOpenAIServer, port: int) -> None:
    """Start `server` on `port` (0: any), print the port on the first line of stdout, wait."""
    server.port = port
    server.start()
    print(server.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake vLLM-shaped server until killed; "
                                                 "prints its port on the first line.")
    add_script_arguments(parser)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    parser.add_argument("--timeout-sleep-s", type=float, default=2.0)
    parser.add_argument("--latency-s", type=float, default=0.0, help="seconds before each completion answer")
    args = parser.parse_args()
    server = FakeOpenAIServer(
        args.model, **script_options(args), fault_rate=args.fault_rate,
        fault_kinds=tuple(k for k in args.fault_kinds.split(",") if k), timeout_sleep_s=args.timeout_sleep_s,
        latency_s=args.latency_s, keep_requests=False)
    serve_until_killed(server, args.port)


if __name__ == "__main__":
    main()
