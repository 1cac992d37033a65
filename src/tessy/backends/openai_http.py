"""HTTP backend: a model behind an OpenAI-compatible `/v1/completions` server (vLLM, SGLang, llama.cpp).

Owns: the connections to each server replica (a free list of keep-alive connections: the lean
`http1` client for plain http, one-connection `httpx.AsyncClient`s for https or behind a proxy),
the replica each live sequence is pinned to, the bound on requests in flight, retries, and the
transport decided at start. Promises, on top of `base.Backend`:

- **Nothing re-tokenized where the server allows it.** In `token_ids` transport the prompt is the
  sample's token ids (a JSON list) and the new ids are read back from the response (vLLM / SGLang
  `return_token_ids`, or vLLM logprobs with `return_tokens_as_token_ids`). A server that takes ids
  but returns none gives `token_ids+text_out`: its returned text is tokenized locally. A server
  that takes text only (llama.cpp) gives `text`: the context is decoded, sent as text, and the
  returned text tokenized locally. `transport` says which; the runner writes it into each record.
- **Readiness at start** (`check_ready`, run by the constructor): every replica's `/v1/models` is
  asked; an unreachable server, an error status, or a server that serves another model than the
  one configured is a `ServerNotReady` naming the role, URL and what was found. In `auto` prompt
  mode one tiny completion per replica decides the transport (all replicas must agree).
- **Replicas**: a sequence (`seq_id`) is pinned to one replica, the least loaded when first seen,
  until `release`, so the server's prefix cache keeps hitting. At most `max_in_flight` requests of
  this backend (one role) are in flight at once; a request waiting out a backoff holds no slot.
- **Faults**: timeouts, connection errors (dropped connections included), 429, 5xx and malformed
  response bodies are retried with exponential backoff and full jitter, honouring `Retry-After`;
  at most `max_retries` retries per request and `max_sample_retries` per sequence id (kept after
  `release`, so a requeued sample does not start afresh); then `ServerError`. Any other 4xx is a
  `ServerError` at once, except a context-length error: the backend lowers `max_context` to the
  limit the server reports (or to a safe bound below what it refused) and answers with no tokens,
  so the engine's own context check ends the sample with finish reason "context".
- **Secrets**: the API key is sent only as an `Authorization` header; it is never logged, never in
  an exception message and never in `describe()`.
- **Tokenizers** are loaded locally (`tokenizer` or else `model`: a demo alias, a folder or a hub
  name in the local cache); a missing one is a `TokenizerNotFound` that says how to provide it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tessy.backends import http1
from tessy.backends.base import Backend, Generation, SamplingParams

log = logging.getLogger(__name__)

PROMPT_MODES = ("auto", "token_ids", "text")
#: Longest wait between retries (also caps a server's Retry-After).
MAX_BACKOFF_S = 60.0
_CONTEXT_ERROR = re.compile(
    r"context length|context window|maximum context|context_length_exceeded|too many tokens|"
    r"longer than the model|prompt is too long", re.IGNORECASE)
_REFUSED_PROMPT = re.compile(r"validation error|valid string", re.IGNORECASE)
_CONTEXT_LIMIT = [
    re.compile(r"maximum context length (?:is|of) (\d+)", re.IGNORECASE),  # vLLM, SGLang
    re.compile(r"context length \((\d+) tokens\)", re.IGNORECASE),  # SGLang
    re.compile(r"context window of (\d+)", re.IGNORECASE),  # llama.cpp (llama-cpp-python)
    re.compile(r"n_ctx[^\d]{0,12}(\d+)", re.IGNORECASE),
]


class ServerNotReady(RuntimeError):
    """A configured server is unreachable, unhealthy, or serves another model."""


class ServerError(RuntimeError):
    """A request failed for good: a non-retryable 4xx, or retries exhausted."""


class TokenizerNotFound(RuntimeError):
    """The model's tokenizer is not available locally."""


@dataclass
class HTTPStats:
    requests: int = 0  # HTTP requests sent (retries included)
    completions: int = 0  # generate calls answered
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # retried faults by kind
    context_errors: int = 0
    prompt_tokens: int = 0  # context tokens sent
    completion_tokens: int = 0


@dataclass
class _Replica:
    """One server. Its connections are one-connection `httpx.AsyncClient`s kept in a free list:
    httpcore's pool scans every connection for every request (one pool of 256 connections
    manages ~150 requests/s), so a request takes an idle client and gives it back."""

    url: str
    idle: list = field(default_factory=list)  # clients with no request in flight (LIFO)
    loop: Any = None  # the event loop the clients belong to
    live: int = 0  # sequences pinned here


def load_http_tokenizer(spec: str, role: str = "model") -> Any:
    """The tokenizer for `spec` (demo alias, folder or cached hub name), or a clear error."""
    from transformers import AutoTokenizer

    from tessy.models import ModelNotFound, resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(spec))
    except (OSError, ValueError, ModelNotFound) as exc:
        raise TokenizerNotFound(
            f"{role}: the HTTP backend needs the tokenizer of {spec!r} locally and could not load it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Give "
            f"--{role}.tokenizer a folder holding tokenizer.json / tokenizer_config.json (for example "
            f"`huggingface-cli download {spec} --include 'tokenizer*' --local-dir DIR` on a machine "
            "with hub access, then copy DIR here), or a hub name already in the local Hugging Face cache."
        ) from None


class OpenAIHTTPBackend(Backend):
    """A model served over `/v1/completions` (see the module docstring)."""

    def __init__(
        self,
        model: str,
        urls: list[str] | str,
        *,
        role: str = "model",
        tokenizer: Any = None,
        served_model_name: str = "",
        api_key: str = "",
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        prompt_mode: str = "auto",
        max_context: int = 0,
        max_in_flight: int = 256,
        timeout_s: float = 600.0,
        max_retries: int = 5,
        max_sample_retries: int | None = None,
        backoff_s: float = 0.5,
        check: bool = True,
    ):
        if isinstance(urls, str):
            urls = [u for u in (part.strip() for part in urls.split(",")) if u]
        if not urls:
            raise ValueError(f"{role}.url: give the server's base URL (e.g. http://localhost:8000)")
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"{role}.prompt_mode: {prompt_mode!r}; expected one of {', '.join(PROMPT_MODES)}")
        self.role = role
        self.model_name = model
        self.tokenizer = tokenizer if tokenizer is not None and not isinstance(tokenizer, str) else \
            load_http_tokenizer(tokenizer or model, role)
        self.served_model_name = served_model_name
        self.replicas = [_Replica(_base_url(u)) for u in urls]
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.extra_body = dict(extra_body or {})
        self.prompt_mode = prompt_mode
        self.transport = "token_ids" if prompt_mode == "token_ids" else "text" if prompt_mode == "text" else ""
        self._id_readback = "return_token_ids"  # or "logprobs" or "text"
        self.max_in_flight = max(1, int(max_in_flight))
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.max_sample_retries = (4 * self.max_retries if max_sample_retries is None
                                   else max(0, int(max_sample_retries)))
        self.backoff_s = float(backoff_s)
        self.stats = HTTPStats()
        self.max_context = int(max_context or 0)
        self._pinned: dict[str, _Replica] = {}
        self._retries: dict[str, int] = {}  # seq_id -> retries spent (kept after release)
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: Any = None
        self._next = 0
        self._sleep = asyncio.sleep  # backoff waits (tests record them)
        self._ssl: Any = None
        logging.getLogger("httpx").setLevel(max(logging.getLogger("httpx").level, logging.WARNING))
        if check:
            self.check_ready()
        if not self.transport:
            self.transport = "token_ids"
        if not self.max_context:
            limit = getattr(self.tokenizer, "model_max_length", 0) or 0
            self.max_context = int(limit) if 0 < limit <= 10_000_000 else 4096
            log.info("%s: max_context %d (from the tokenizer; set max_context to override)", role, self.max_context)

    @classmethod
    def from_config(cls, role: str, config: Any) -> "OpenAIHTTPBackend":
        """Build from a `tessy.config.ModelConfig` (the `openai` backend)."""
        api_key = config.api_key
        if config.api_key_env:
            api_key = os.environ.get(config.api_key_env, "")
            if not api_key:
                raise ValueError(f"{role}.api_key_env: environment variable {config.api_key_env} is not set")
        return cls(
            config.model, config.url, role=role, tokenizer=config.tokenizer or None,
            served_model_name=config.served_model_name, api_key=api_key,
            headers=dict(config.headers or {}), extra_body=dict(config.extra_body or {}),
            prompt_mode=config.prompt_mode, max_context=config.max_context,
            max_in_flight=config.max_in_flight, timeout_s=config.timeout_s, max_retries=config.max_retries,
        )

    def describe(self) -> dict[str, Any]:
        """What a record or log may say about this backend (no secrets)."""
        return {"urls": [r.url for r in self.replicas], "served_model_name": self.served_model_name,
                "transport": self.transport, "max_context": self.max_context}

    # ---- readiness (synchronous, at start) -----------------------------------------------------

    def check_ready(self) -> None:
        import httpx

        modes = set()
        with httpx.Client(timeout=min(self.timeout_s, 30.0), headers=self._headers) as client:
            for replica in self.replicas:
                where = f"{self.role} server {replica.url}"
                try:
                    resp = client.get(replica.url + "/v1/models")
                except httpx.HTTPError as exc:
                    raise ServerNotReady(f"{where} is unreachable ({type(exc).__name__}: {exc}); start it, "
                                         f"or fix --{self.role}.url") from None
                if resp.status_code != 200:
                    raise ServerNotReady(f"{where}: GET /v1/models answered HTTP {resp.status_code}: "
                                         f"{_snippet(resp.text)}")
                try:
                    cards = [c for c in resp.json().get("data", []) if isinstance(c, dict)]
                except (ValueError, AttributeError):
                    raise ServerNotReady(f"{where}: /v1/models did not answer JSON: {_snippet(resp.text)}") from None
                served = [str(c.get("id")) for c in cards]
                wanted = self.served_model_name
                if not wanted:
                    if len(served) == 1 or self.model_name in served:
                        wanted = served[0] if len(served) == 1 else self.model_name
                    else:
                        raise ServerNotReady(f"{where} serves {served or 'no model'}; set "
                                             f"--{self.role}.served-model-name to the one to use")
                if wanted not in served:
                    raise ServerNotReady(f"{where} serves {served or 'no model'}, not {wanted!r} as "
                                         f"configured for the {self.role}")
                self.served_model_name = wanted
                card = cards[served.index(wanted)]
                if not self.max_context and isinstance(card.get("max_model_len"), int):
                    self.max_context = card["max_model_len"]
                if self.prompt_mode == "auto":
                    modes.add(self._probe(client, replica.url))
        if modes:
            if len(modes) > 1:
                raise ServerNotReady(f"{self.role}: replicas differ in what they accept ({sorted(modes)}); "
                                     f"set --{self.role}.prompt-mode")
            self.transport, self._id_readback = modes.pop()

    def _probe(self, client: Any, url: str) -> tuple[str, str]:
        """One 1-token completion: does the server take token ids, and return them?"""
        ids = self.tokenizer.encode("Hello", add_special_tokens=False)[:1] or [0]
        body = {"model": self.served_model_name, "prompt": ids, "max_tokens": 1, "temperature": 0.0,
                "return_token_ids": True}
        status, choice = self._probe_post(client, url, body)
        if status in (400, 422) or (status >= 500 and _REFUSED_PROMPT.search(str(choice))):
            return "text", "text"  # ids refused (llama.cpp answers with a validation error)
        if status != 200:
            raise ServerNotReady(f"{self.role} server {url}: probe completion answered HTTP {status}: {choice}")
        if isinstance(choice.get("token_ids"), list):
            return "token_ids", "return_token_ids"
        body.update(logprobs=0, return_tokens_as_token_ids=True)
        status, choice = self._probe_post(client, url, body)
        if status == 200 and _ids_from_logprobs(choice) is not None:
            return "token_ids", "logprobs"
        log.warning("%s server %s takes token-id prompts but returns no token ids: its text is "
                    "tokenized locally", self.role, url)
        return "token_ids+text_out", "text"

    def _probe_post(self, client: Any, url: str, body: dict) -> tuple[int, Any]:
        """POST a probe, retrying transient faults like any request: (status, first choice or error text)."""
        import httpx

        for attempt in range(self.max_retries + 1):
            try:
                resp = client.post(url + "/v1/completions", content=json.dumps(body))
            except httpx.HTTPError as exc:
                status, detail = 0, f"{type(exc).__name__}: {exc}"
            else:
                status, detail = resp.status_code, _snippet(resp.text)
                if status == 200:
                    try:
                        return 200, resp.json()["choices"][0]
                    except (ValueError, KeyError, IndexError, TypeError):
                        status = 0  # malformed: retried
                elif status != 429 and (status < 500 or _REFUSED_PROMPT.search(detail)):
                    return status, detail  # llama-cpp-python reports its validation error as a 500
            if attempt < self.max_retries:
                time.sleep(random.uniform(0.0, min(MAX_BACKOFF_S, self.backoff_s * 2 ** attempt)))
        raise ServerNotReady(f"{self.role} server {url}: probe completion failed after {self.max_retries} "
                             f"retries: {detail}")

    # ---- the interface -------------------------------------------------------------------------

    def request_body(self, context_ids: list[int], max_new_tokens: int, sampling: SamplingParams,
                     stop_token_ids: frozenset[int]) -> dict[str, Any]:
        """The JSON body of one completion request (the payload tests compare it exactly)."""
        body: dict[str, Any] = {"model": self.served_model_name, "max_tokens": int(max_new_tokens),
                                "temperature": float(sampling.temperature), "top_p": float(sampling.top_p)}
        if sampling.seed is not None:
            body["seed"] = int(sampling.seed)
        if self.transport == "text":
            ids = list(context_ids)
            bos = getattr(self.tokenizer, "bos_token_id", None)
            if ids and bos is not None and ids[0] == bos:
                ids = ids[1:]  # the server adds its own BOS to a text prompt
            body["prompt"] = self.tokenizer.decode(ids, skip_special_tokens=False)
            body["top_k"] = int(sampling.top_k)  # llama.cpp: 0 = off (its default is 40)
            body["repeat_penalty"] = 1.0  # llama.cpp's default is 1.1
            stops = sorted({self.tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids} - {None})
            if stops:
                body["stop"] = stops
        else:
            body["prompt"] = context_ids
            if sampling.top_k > 0:
                body["top_k"] = int(sampling.top_k)
            if stop_token_ids:
                body["stop_token_ids"] = sorted(stop_token_ids)
            body["skip_special_tokens"] = False
            body["spaces_between_special_tokens"] = False
            if self._id_readback == "return_token_ids":
                body["return_token_ids"] = True
            elif self._id_readback == "logprobs":
                body["logprobs"] = 0
                body["return_tokens_as_token_ids"] = True
        body.update(self.extra_body)
        return body

    async def generate(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> Generation:
        started = time.perf_counter()
        stop = frozenset(stop_token_ids)
        replica = self._replica_for(seq_id)
        n = int(max_new_tokens)
        while True:
            if n <= 0:
                return Generation([], "", "length", time.perf_counter() - started)
            body = self.request_body(context_ids, n, sampling, stop)
            outcome = await self._post(replica, seq_id, body)
            if isinstance(outcome, _ContextError):
                n = self._learn_context_limit(outcome, len(context_ids), n)
                continue
            ids, text, finish = self._parse(outcome, n, stop)
            self.stats.completions += 1
            self.stats.prompt_tokens += len(context_ids)
            self.stats.completion_tokens += len(ids)
            return Generation(ids, text, finish, time.perf_counter() - started)

    def rollback(self, seq_id: str, length: int) -> None:
        """Nothing to do: the server's prefix cache keys on the ids sent with each request."""

    def release(self, seq_id: str) -> None:
        replica = self._pinned.pop(seq_id, None)
        if replica is not None:
            replica.live -= 1

    async def aclose(self) -> None:
        for replica in self.replicas:
            if replica.loop is asyncio.get_running_loop():
                for client in replica.idle:
                    await client.aclose()  # httpx clients and http1 connections alike
            replica.idle, replica.loop = [], None

    # ---- internals -----------------------------------------------------------------------------

    def _replica_for(self, seq_id: str) -> _Replica:
        """The sequence's replica: the least loaded when first seen, then the same until release."""
        replica = self._pinned.get(seq_id)
        if replica is None:
            count = len(self.replicas)
            start, self._next = self._next, (self._next + 1) % count
            replica = min((self.replicas[(start + i) % count] for i in range(count)), key=lambda r: r.live)
            replica.live += 1
            self._pinned[seq_id] = replica
        return replica

    def _take_client(self, replica: _Replica) -> Any:
        """An idle one-connection client of the replica (a new one when none is idle; at most
        `max_in_flight` are ever busy, the semaphore sees to that)."""
        loop = asyncio.get_running_loop()
        if replica.loop is not loop:  # clients belong to one event loop
            replica.idle, replica.loop = [], loop
        if replica.idle:
            return replica.idle.pop()
        if _direct_http(replica.url):
            return http1.Connection(replica.url, self._headers, self.timeout_s, min(self.timeout_s, 30.0))
        import httpx

        if self._ssl is None:
            import ssl

            self._ssl = ssl.create_default_context()  # one context for all clients (each costs ~20 ms)
        return httpx.AsyncClient(
            base_url=replica.url, headers=self._headers, verify=self._ssl,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 30.0)))

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.max_in_flight), loop
        return self._slots

    async def _post(self, replica: _Replica, seq_id: str, body: dict[str, Any]) -> "dict | _ContextError":
        import httpx

        payload = json.dumps(body, separators=(",", ":")).encode()
        attempt = 0
        while True:
            retry_after = None
            async with self._semaphore():
                self.stats.requests += 1
                client = self._take_client(replica)
                try:
                    try:
                        if isinstance(client, http1.Connection):
                            resp = await client.post("/v1/completions", payload)
                        else:
                            resp = await client.post("/v1/completions", content=payload)
                    except (httpx.TimeoutException, http1.Timeout) as exc:
                        fault = f"timeout ({type(exc).__name__})"
                    except (httpx.TransportError, http1.TransportError) as exc:  # refused, reset, dropped
                        fault = f"connection error ({type(exc).__name__}: {exc})"
                    else:
                        status = resp.status_code
                        if status == 200:
                            try:
                                data = json.loads(resp.content)
                                if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]:
                                    return data
                                fault = f"unexpected response shape: {_snippet(resp.text)}"
                            except ValueError:
                                fault = f"malformed JSON in the response: {_snippet(resp.text)}"
                        elif status == 429 or status >= 500:
                            fault = f"HTTP {status}: {_snippet(resp.text)}"
                            retry_after = _retry_after(resp.headers.get("retry-after"))
                        else:
                            message = _error_message(resp)
                            if status in (400, 413, 422) and _CONTEXT_ERROR.search(message):
                                self.stats.context_errors += 1
                                return _ContextError(message)
                            raise ServerError(f"{self.role} server {replica.url}: HTTP {status} (not retried): "
                                              f"{_snippet(message)}")
                finally:
                    if replica.loop is asyncio.get_running_loop():
                        replica.idle.append(client)  # reusable: httpx closes a broken connection
            kind = fault.split(" ")[0] if not fault.startswith("HTTP") else fault[:8]
            self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
            attempt += 1
            spent = self._retries[seq_id] = self._retries.get(seq_id, 0) + 1
            if attempt > self.max_retries or spent > self.max_sample_retries:
                bound = (f"{self.max_retries} retries" if attempt > self.max_retries
                         else f"{self.max_sample_retries} retries for this sample")
                raise ServerError(f"{self.role} server {replica.url}: gave up after {bound}; last error: {fault}")
            self.stats.retries += 1
            delay = retry_after if retry_after is not None else \
                random.uniform(0.0, min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)))
            log.debug("%s %s: %s; retry %d in %.2fs", self.role, replica.url, fault, attempt, delay)
            await self._sleep(delay)

    def _learn_context_limit(self, error: "_ContextError", context_len: int, n: int) -> int:
        """After a context-length refusal: the server's limit (never above what it refused), and
        how many tokens may still be asked for (<= 0: none, the engine ends the sample)."""
        limit = context_len + n - 1  # it refused context_len + n
        for pattern in _CONTEXT_LIMIT:
            match = pattern.search(error.message)
            if match:
                limit = min(limit, int(match.group(1)))
                break
        if limit < self.max_context:
            log.warning("%s: the server's context is %s tokens at most (max_context was %d)",
                        self.role, limit, self.max_context)
            self.max_context = limit
        return limit - context_len

    def _parse(self, data: dict, n: int, stop: frozenset[int]) -> tuple[list[int], str, str]:
        choice = data["choices"][0]
        text = choice.get("text") or ""
        finish = "stop" if choice.get("finish_reason") == "stop" else "length"
        ids = None
        if self._id_readback == "return_token_ids" and isinstance(choice.get("token_ids"), list):
            ids = [int(i) for i in choice["token_ids"]]
        elif self._id_readback == "logprobs":
            ids = _ids_from_logprobs(choice)
        if ids is None:  # text transport, or a server that returned no ids
            ids = self.tokenizer.encode(text, add_special_tokens=False) if text else []
            if len(ids) > n:
                ids = ids[:n]
                text = self.tokenizer.decode(ids, skip_special_tokens=False)
        else:
            ids = ids[:n]
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if finish == "stop" and (not ids or ids[-1] not in stop):
            # Stopped on a token the server does not echo back: put it last, as `base` promises.
            matched = choice.get("stop_reason", choice.get("matched_stop"))
            eos = getattr(self.tokenizer, "eos_token_id", None)
            if isinstance(matched, int) and matched in stop:
                token = matched
            elif eos in stop:
                token = eos
            else:
                token = min(stop) if stop else None
            if token is not None and len(ids) < n:
                ids.append(token)
                text = self.tokenizer.decode(ids, skip_special_tokens=False)
            else:  # no room (text re-tokenized longer) or no stop id known: the model goes on next call
                finish = "length"
        return ids, text, finish


@dataclass
class _ContextError:
    message: str


def _ids_from_logprobs(choice: dict) -> list[int] | None:
    tokens = (choice.get("logprobs") or {}).get("tokens") if isinstance(choice.get("logprobs"), dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    return [int(t[len("token_id:"):]) for t in tokens]


def _direct_http(url: str) -> bool:
    """Whether `url` is plain http reached without a proxy (then the lean `http1` client serves it)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    return "http" not in urllib.request.getproxies() or bool(urllib.request.proxy_bypass(parts.hostname or ""))


def _base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_BACKOFF_S)


def _error_message(resp: Any) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or data.get("message") or data.get("detail") or data)
        if isinstance(data.get("detail"), (list, dict)):
            return json.dumps(data["detail"])
        return str(error)
    return str(data)


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"
