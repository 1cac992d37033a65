"""`OpenAIHTTPBackend`: a model behind an OpenAI-compatible `/v1/completions` server (vLLM, SGLang,
llama.cpp), built on `client` (the one HTTP client), `probe` (readiness), `exchange` (the one
request path: the bound on requests in flight, faults and retries, after `retry`'s policy),
`stream` (streamed answers), `parse` (answers), `replicas` (pinning, circuit breaker), `cache`
(prompt usage) and `stats` (counters).

Owns one role's requests: their bodies, the transport and readiness, llama.cpp's slots, and what
an answer teaches (the context limit, the prompt usage). Promises, on top of `base.Backend`:

- **Nothing re-tokenized where the server allows it.** In `token_ids` transport the prompt is the
  sample's token ids and the new ids are read back exactly (`return_token_ids`, or logprobs);
  their text is for show, the engine decodes ids itself. A server that takes ids but returns none
  gives `token_ids+text_out`; one that takes text only (llama.cpp) gives `text`: the context is
  decoded and sent as text and the returned text is tokenized locally, cut back to a whole
  character (see `parse.ids_from_text`). `transport` says which.
- **Readiness at start** (`check_ready`, run by the constructor; see `probe`). `served_model` is the
  model id the server reports (`served_root` its weights, when the server says), also when no
  `served_model_name` is configured; `describe()` carries both.
- **At most `max_in_flight` requests** of this role at once across replicas; a request waiting out
  a backoff or waiting for a server holds no slot (see `exchange`).
- **Faults** are retried by `retry.RetryPolicy` (see `exchange`); a dead server trips its replica's breaker and
  `generate` waits for a server (up to `unavailable_wait_s`, then `base.ServersUnavailable`)
  instead of spending retries (see `replicas`). A context-length refusal lowers `max_context` to
  the server's limit and answers with no tokens, so the engine ends the sample with "context".
- **Connections** are reused only after a complete exchange: a cancelled or failed request closes
  its connection (see `client`).
- **Secrets**: the API key travels only in the `Authorization` header, URL userinfo only as Basic
  auth; `describe()`, log lines and exception messages show URLs redacted and run error text
  through `tessy.secrets.redact_text`.
- **Cache-friendly requests on llama.cpp** (a server `probe` detects as llama.cpp or
  llama-cpp-python): every request says `cache_prompt: true`, and, when the server's slot count
  is known (`/props` `total_slots`, or the `slots` option), `id_slot`: each sequence keeps one
  slot for its life (the least used slot when it first asks, freed by `release`), so its next
  request finds its prefix in that slot's cache. llama-cpp-python has one context and no slots
  (it ignores both fields): start it with `--cache true` so a sample's prefix survives the other
  samples' requests.
- **Live counters** in `stats` (`stats.HTTPStats`): requests, retries, faults by kind, replicas
  down, breaker trips, requests waiting for a server; `server_counters()` shows them, with the
  servers' own prompt-cache counters once `read_server_counters` has read them (`metrics`).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from typing import Any

from tessy.backends.base import Backend, Generation, SamplingParams, TokenStream
from tessy.backends.openai import parse, probe
from tessy.backends.openai.cache import PromptMeter
from tessy.backends.openai.client import HTTPClient
from tessy.backends.openai.exchange import Exchange
from tessy.backends.openai.metrics import ServerCounters
from tessy.backends.openai.replicas import Replica, ReplicaSet, base_url
from tessy.backends.openai.retry import RetryPolicy
from tessy.backends.openai.stats import HTTPStats
from tessy.backends.openai.stream import HTTPTokenStream
from tessy.backends.openai.tokenizer import load_http_tokenizer
from tessy.secrets import header_secrets, redact_url

log = logging.getLogger(__name__)

PROMPT_MODES = ("auto", "token_ids", "text")


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
        unavailable_wait_s: float = 300.0,
        slots: int = 0,
        stream: bool | None = None,
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
        self.served_model = served_model_name  # what the server reports, once checked
        self.served_root = ""
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        replicas, userinfos = [], []
        for url in urls:
            url, userinfo = base_url(url)
            if userinfo:  # sent as Basic auth (the first replica's, when several give one)
                userinfos += [userinfo, userinfo.partition(":")[2]]
                if not any(k.lower() == "authorization" for k in self._headers):
                    self._headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
            replicas.append(Replica(url, redact_url(url)))
        # Every value that must never reach a message: the key, secret headers, URL userinfo.
        self._secrets = [api_key, *header_secrets(self._headers), *userinfos]
        self.extra_body = dict(extra_body or {})
        self.prompt_mode = prompt_mode
        self.transport = "token_ids" if prompt_mode == "token_ids" else "text" if prompt_mode == "text" else ""
        self.readback = "return_token_ids"  # how ids come back: or "logprobs", or "text" (tokenized here)
        self.timeout_s = float(timeout_s)
        self.retry = RetryPolicy(max_retries, max_sample_retries, backoff_s)
        self.stats = HTTPStats()
        self.prompt_meter = PromptMeter(self.stats)
        self.client = HTTPClient(self._headers, self.timeout_s)
        self.replicas = ReplicaSet(replicas, role=role, stats=self.stats, ping=self._ping, wait_s=unavailable_wait_s)
        self.exchange = Exchange(role, self.replicas, self.client, self.stats, self.retry, max_in_flight,
                                 self._secrets)
        self.max_context = int(max_context or 0)
        self.server = ""  # the server's kind, as `probe` tells it ("llama.cpp", "vllm", ...)
        self.slots = max(0, int(slots or 0))  # llama.cpp slots per server (0: unknown, no id_slot)
        self._slot_of: dict[str, int] = {}  # seq_id -> its llama.cpp slot
        self._slot_use: list[int] = []  # sequences holding each slot
        if check:
            self.check_ready()
        if not self.transport:
            self.transport = "token_ids"
        # Streaming: as configured, else when every replica streamed a probe request as asked.
        self.streams_tokens = bool(stream) if stream is not None or not check else self._probe_stream()
        self.server_metrics = ServerCounters(self.stats)
        if check and not self.llama_cpp:  # llama.cpp's answers say it all (`timings`)
            self.server_metrics.begin([r.url for r in self.replicas.replicas], self._headers)
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
            unavailable_wait_s=config.unavailable_wait_s, slots=getattr(config, "slots", 0),
            stream={"on": True, "off": False}.get(getattr(config, "stream", "auto")),
        )

    def describe(self) -> dict[str, Any]:
        """What a record or log may say about this backend (no secrets)."""
        return {"urls": [r.shown for r in self.replicas.replicas], "served_model": self.served_model,
                "served_root": self.served_root, "served_model_name": self.served_model_name,
                "transport": self.transport, "max_context": self.max_context}

    @property
    def llama_cpp(self) -> bool:
        return self.server in probe.LLAMA_CPP

    def check_ready(self) -> None:
        """Ask every replica what it serves, and (auto mode) which transport it speaks; see `probe`."""
        ready = probe.check_ready(
            self.replicas.replicas, role=self.role, headers=self._headers, timeout_s=self.timeout_s,
            model_name=self.model_name, served_model_name=self.served_model_name,
            probe_transport=self.prompt_mode == "auto",
            probe_ids=self.tokenizer.encode("Hello", add_special_tokens=False)[:1] or [0],
            max_retries=self.retry.max_retries, backoff_s=self.retry.backoff_s, secrets=self._secrets)
        self.served_model_name = self.served_model = ready.served_model
        self.served_root = ready.served_root
        if not self.max_context and ready.max_model_len:
            self.max_context = ready.max_model_len
        if ready.transport:
            self.transport, self.readback = ready.transport, ready.readback
        self.server = ready.server
        if ready.slots and not self.slots:
            self.slots = ready.slots

    # ---- the interface -------------------------------------------------------------------------

    def request_body(self, context_ids: list[int], max_new_tokens: int, sampling: SamplingParams,
                     stop_token_ids: frozenset[int], seq_id: str = "") -> dict[str, Any]:
        """The JSON body of one completion request of `seq_id` (the payload tests compare it exactly)."""
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
            if self.readback == "return_token_ids":
                body["return_token_ids"] = True
            elif self.readback == "logprobs":
                body["logprobs"] = 0
                body["return_tokens_as_token_ids"] = True
        if self.llama_cpp:
            body["cache_prompt"] = True
            if self.slots and seq_id:
                body["id_slot"] = self._slot(seq_id)
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
        n, answer = await self.complete(seq_id, context_ids, max_new_tokens, sampling, stop)
        if answer is None:
            return Generation([], "", "length", time.perf_counter() - started)
        ids, text, finish = parse.parse_choice(answer["choices"][0], self.readback, self.tokenizer, n, stop)
        self.answered(seq_id, answer, context_ids, ids)
        return Generation(ids, text, finish, time.perf_counter() - started)

    async def complete(self, seq_id: str, context_ids: list[int], max_new_tokens: int, sampling: SamplingParams,
                       stop_token_ids: frozenset[int], *, stream: bool = False) -> tuple[int, Any]:
        """The one request path (`generate`, `stream`, `warm`): (the tokens asked for, the answer).

        The answer is the parsed JSON (`stream` false) or an open `exchange.Events` (`stream` true,
        with usage on every event: llama.cpp's `timings_per_token`, vLLM's and SGLang's
        `stream_options`, whose last event says how much of the prompt was cached), or None when
        no token fits the server's context. A context-length refusal teaches the server's limit and
        asks again for what fits; faults are retried by `exchange`."""
        n = int(max_new_tokens)
        while n > 0:
            body = self.request_body(context_ids, n, sampling, stop_token_ids, seq_id)
            if stream:
                body["stream"] = True
                if self.llama_cpp:
                    body["timings_per_token"] = True
                else:
                    body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
            outcome = await self.exchange.send(seq_id, body, stream=stream)
            if not isinstance(outcome, str):
                return n, outcome
            n = self._learn_context_limit(outcome, len(context_ids), n)
        return n, None

    def stream(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> TokenStream:
        """`generate` as server-sent events, stopped when the caller closes it (see `stream`);
        one chunk when this server does not stream (`streams_tokens` false)."""
        if not self.streams_tokens:
            return super().stream(seq_id, context_ids, max_new_tokens, sampling, stop_token_ids)
        return HTTPTokenStream(self, seq_id, context_ids, max_new_tokens, sampling, stop_token_ids)

    @property
    def warms_prompts(self) -> bool:
        """Whether `warm` pays: a server that keeps a sample's prefix (llama.cpp with slots; vLLM
        and SGLang cache prefixes by default), until its answers show that it found none."""
        if self.llama_cpp and not self.slots:  # llama-cpp-python: one context for every sample
            return False
        return not self.prompt_meter.never_hits

    async def warm(self, seq_id: str, context_ids: list[int]) -> None:
        """A one-token request, so the server reads `context_ids` into `seq_id`'s slot or prefix
        cache; the token is dropped. A failure is only logged: the sample's own requests retry."""
        try:
            _, answer = await self.complete(seq_id, context_ids, 1, SamplingParams(temperature=0.0, top_p=1.0),
                                            frozenset())
        except Exception as exc:  # noqa: BLE001 - reading ahead is an optimisation, never a fault
            log.debug("%s: reading %s's prompt ahead failed: %s", self.role, seq_id, self.exchange.redact(exc))
            return
        if answer is not None:
            self.answered(seq_id, answer, context_ids, [], generated=1)

    def server_counters(self) -> dict[str, int]:
        return self.stats.counters()

    async def read_server_counters(self, read_already: set[str]) -> None:
        await self.server_metrics.add_since(self.client, [r.url for r in self.replicas.replicas], read_already)

    def rollback(self, seq_id: str, length: int) -> None:
        """Nothing to do: the server's prefix cache keys on the ids sent with each request."""

    def release(self, seq_id: str) -> None:
        self.replicas.release(seq_id)
        self.prompt_meter.release(seq_id)
        slot = self._slot_of.pop(seq_id, None)
        if slot is not None and slot < len(self._slot_use):
            self._slot_use[slot] -= 1

    def _slot(self, seq_id: str) -> int:
        """The llama.cpp slot of `seq_id`: the one it has, else the least used (lowest first)."""
        slot = self._slot_of.get(seq_id)
        if slot is None or slot >= self.slots:
            if len(self._slot_use) != self.slots:
                self._slot_use = (self._slot_use + [0] * self.slots)[: self.slots]
            slot = min(range(self.slots), key=lambda i: self._slot_use[i])
            self._slot_use[slot] += 1
            self._slot_of[seq_id] = slot
        return slot

    async def aclose(self) -> None:
        await self.replicas.aclose()
        await self.client.aclose()

    def _probe_stream(self) -> bool:
        """Whether every replica streams a 2-token completion in the form this transport needs."""
        ids = self.tokenizer.encode("Hello", add_special_tokens=False)[:1] or [0]
        body = self.request_body(ids, 2, SamplingParams(temperature=0.0), frozenset())
        body.pop("seed", None)
        body["stream"] = True
        ok = probe.probe_stream(self.replicas.replicas, body, headers=self._headers,
                                timeout_s=min(self.timeout_s, 60.0),
                                needs_ids=self.readback if self.readback != "text" else "")
        log.info("%s: %s", self.role, "streams tokens (requests stop at the cut)" if ok else
                 "the server does not stream as needed: each request generates all its tokens")
        return ok

    # ---- internals -----------------------------------------------------------------------------

    async def _ping(self, replica: Replica) -> bool:
        # Not the request timeout: a busy server may answer completions slowly and still be up.
        return await probe.ping(self.client, replica.url, 10.0)

    def answered(self, seq_id: str, answer: dict, context_ids: list[int], ids: list[int],
                 generated: int | None = None, whole: bool = True) -> None:
        """Count one answered request: its prompt (`cache.PromptMeter`; `answer` is the JSON
        answer or a stream's last event with usage) and the tokens generated (`generated`, when
        more than the `ids` it answered with: a stream stopped early). `whole` false: a stream
        stopped before its end, so before the server's last word on its prompt's cache."""
        self.stats.completions += 1
        self.prompt_meter.count(seq_id, answer, context_ids, ids, whole=whole)
        self.stats.completion_tokens += len(ids) if generated is None else generated

    def _learn_context_limit(self, message: str, context_len: int, n: int) -> int:
        """After a context-length refusal: the server's limit (never above what it refused), and
        how many tokens may still be asked for (<= 0: none, the engine ends the sample)."""
        limit = parse.context_limit(message, context_len + n)
        if limit < self.max_context:
            log.warning("%s: the server's context is %s tokens at most (max_context was %d)",
                        self.role, limit, self.max_context)
            self.max_context = limit
        return limit - context_len

